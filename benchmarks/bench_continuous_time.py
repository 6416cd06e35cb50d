"""Chapter 11's measurements: the ODE solvers' orders of convergence, sample quality against the number of network
evaluations (NFE), the likelihood through the probability-flow ODE, Langevin and predictor–corrector sampling, and
flow matching against the ε-model.

Every model is trained here by the shared recipes of :mod:`ddpm_lib.recipes` at their default budgets (the mixture
MLP, 8000 steps; the digits UNet, 1600 steps, on Ho et al.'s T = 1000 schedule for sampling and on the recipe's
T = 100 schedule, chapter 07's network, for the likelihood) or, for the flow-matching MLP, with the same network,
steps, batch, learning rate and EMA as the mixture recipe. One CPU thread; times are CPU seconds of this process.
Spreads (±) are the standard deviation over sampling seeds unless a table says otherwise.

Tables written to ``book/results/`` (markdown, and CSV beside each):

- ``ch11_convergence``: error of x_0 against NFE for Euler (= DDIM η = 0), Heun and DPM-Solver++(2M) with the
  exact denoiser of the 2-D mixture, against a reference solution with 2048 Heun steps; on a continuous grid uniform
  in log σ, on the integer timesteps with linspace spacing (error at t = 0) and with trailing spacing (error at
  σ = 0); the fitted slope of log error against log NFE over the last three points.
- ``ch11_nfe``: sample quality at NFE 5, 10, 20, 50 (Heun: 3, 5, 10, 25 steps = 5, 9, 19, 49 NFE) on the mixture
  (exact denoiser, trained MLP) and the digits UNet (x̂_0 clipped, and not), trailing spacing.
- ``ch11_nfe_fashion``: the same for the shipped Fashion-MNIST UNet (``ddpm_lib.pretrained.load("fashion_mnist")``),
  measured only when its weights exist (a note otherwise).
- ``ch11_likelihood``: the ODE log-likelihood of the mixture with the exact trace against the true log-density, by
  step count; the digits UNet (T = 100) in bits/dim through the ODE (Hutchinson, dequantized) beside its variational
  bound.
- ``ch11_langevin``: predictor–corrector and annealed Langevin sampling with the exact score of the mixture at a
  fixed NFE, beside the ODE and the ancestral sampler.
- ``ch11_flow``: flow matching (Euler and Heun on the flow ODE) against the ε- and v-models (DDIM, DPM-Solver++),
  trained with the same budget, and the exact velocity against the exact ε.

Run: ``python benchmarks/bench_continuous_time.py [--part convergence nfe fashion likelihood langevin flow]
[--quick]`` (``--quick``: tiny budgets, a smoke test of about a minute that writes nothing).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from _common import RESULTS, pm, publish, timed  # first: puts the repository on sys.path
from ddpm_lib import ddim_sample, ddim_timesteps, vlb_bits_per_dim
from ddpm_lib import recipes as R
from ddpm_lib.classifiers import classifier_fid, get_digits_classifier
from ddpm_lib.data import DIGITS_LEVELS, MIXTURE, load_digits, make_gaussian_mixture
from ddpm_lib.evaluation import digits_floor, markdown_table, off_mode_fraction
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.flow_matching import exact_velocity_model, flow_matching_loss, flow_sample
from ddpm_lib.langevin import annealed_langevin_sample, pc_sample
from ddpm_lib.metrics import data_floor, sliced_wasserstein
from ddpm_lib.models import MLPDenoiser
from ddpm_lib.ode import (dequantize, dequantized_bits_per_dim, karras_sigmas, mixture_eps_fn, model_eps_fn,
                          ode_log_likelihood, timestep_sigmas)
from ddpm_lib.solvers import dpm_solver_sample, heun_sample, solve_pf_ode, solver_nfe
from ddpm_lib.train import train

NFES = (5, 10, 20, 50)
SOLVERS = (("DDIM η = 0 (Euler)", "ddim"), ("Heun", "heun"), ("DPM-Solver++(2M)", "dpm_solver"))


# ---------------------------------------------------------------------------------------------- shared helpers






def ode_sample(model, sched, shape, solver: str, nfe: int, *, seed: int, clip: bool = False, y=None):
    """Samples with at most ``nfe`` network evaluations: DDIM η = 0 / DPM-Solver++(2M) with nfe steps, Heun with
    (nfe + 1) // 2 steps (2·steps - 1 evaluations); trailing spacing (the grid starts at t = T-1)."""
    kw = dict(generator=torch.Generator().manual_seed(seed), progress=False, clip_denoised=clip, y=y)
    if solver == "ddim":
        return ddim_sample(model, sched, shape, steps=nfe, eta=0.0, spacing="trailing", **kw)
    if solver == "heun":
        return heun_sample(model, sched, shape, steps=(nfe + 1) // 2, **kw)
    return dpm_solver_sample(model, sched, shape, steps=nfe, **kw)


def nfe_label(solver: str, nfe: int) -> int:
    return solver_nfe("heun", (nfe + 1) // 2) if solver == "heun" else nfe


class MixtureMetric:
    """SW2 ×100 against a fixed draw of the data, the off-mode percentage and the within-mode spread (the rms
    distance of the on-mode samples to their nearest mean, per coordinate, over the components' std: 1 for the
    data; the final x̂_0 = E[x_0 | x_t] of a sampler shrinks it)."""

    def __init__(self, n: int):
        self.mixture = make_gaussian_mixture(MIXTURE)
        self.reference = self.mixture.sample(n, generator=torch.Generator().manual_seed(2))
        gen = torch.Generator().manual_seed(10)
        self.floor = data_floor(lambda k: self.mixture.sample(k, generator=gen), n, self.sw2, repeats=3)

    @staticmethod
    def sw2_of(x, reference):
        return sliced_wasserstein(x.float(), reference, n_projections=256, generator=torch.Generator().manual_seed(0))

    def sw2(self, x, reference):
        return self.sw2_of(x, reference)

    def spread(self, x) -> float:
        d = torch.cdist(x.double(), self.mixture.means)
        dist, k = d.min(dim=1)
        on = dist <= 4 * self.mixture.stds.max()
        res = x.double()[on] - self.mixture.means[k[on]]
        return (res.pow(2).mean().sqrt() / self.mixture.stds.max()).item()

    def __call__(self, xs) -> str:
        """``SW2 / off-mode % / spread``, each mean ± std over the list of sample sets ``xs``."""
        sw = [100 * self.sw2(x, self.reference) for x in xs]
        off = [100 * off_mode_fraction(x, self.mixture) for x in xs]
        return f"{pm(sw, 1)} / {pm(off, 2)} / {pm([self.spread(x) for x in xs], 2)}"

    def note(self) -> str:
        return (f"SW2 ×100 / off-mode % / within-mode spread of {self.reference.shape[0]} samples (SW2 against a fixed "
                f"draw of the data; off-mode: farther than 4 std from every mean; spread: rms distance of the on-mode "
                f"samples to their nearest mean over the components' std 0.1, 1.00 for the data); floor, two draws of "
                f"the data: SW2 ×100 = {100 * self.floor.mean:.1f} ± {100 * self.floor.std:.1f}, off-mode 0.0 %.")


def slope(nfes, errors) -> float:
    """The slope of log error against log NFE over the last three points."""
    return float(np.polyfit(np.log(nfes[-3:]), np.log(errors[-3:]), 1)[0])


# ---------------------------------------------------------------------------------------------- parts


def convergence_part(quick: bool):
    mixture = make_gaussian_mixture(MIXTURE)
    sched = R.make_schedule(1000)
    sig = sched.sqrt_recipm1_alphas_cumprod
    s_max, s_min = sig[-1].item(), sig[0].item()
    eps_fn, oracle = mixture_eps_fn(mixture), OracleDenoiser(mixture, sched)
    x_T = torch.randn(64 if quick else 1000, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x_bar = x_T * math.sqrt(1 + s_max**2)

    def log_grid(n, end_zero=False):
        grid = torch.logspace(math.log10(s_max), math.log10(s_min), n + 1, dtype=torch.float64).tolist()
        return grid + [0.0] if end_zero else grid

    ref_steps = 256 if quick else 2048
    ref_t0 = solve_pf_ode(eps_fn, x_bar, log_grid(ref_steps), solver="heun") / math.sqrt(1 + s_min**2)
    ref_data = solve_pf_ode(eps_fn, x_bar, log_grid(ref_steps, True), solver="heun")
    steps = (8, 16, 32) if quick else (16, 32, 64, 128, 256)
    int_steps = (25, 50, 100) if quick else (50, 100, 200, 400, 800)

    def integer_run(solver, n, spacing):
        kw = dict(spacing=spacing, x_T=x_T, progress=False, return_all_timesteps=True)
        if solver == "ddim":
            xs, _ = ddim_sample(oracle, sched, x_T.shape, steps=n, eta=0.0, clip_denoised=False, **kw)
        elif solver == "heun":
            xs, _ = heun_sample(oracle, sched, x_T.shape, steps=n, **kw)
        else:
            xs, _ = dpm_solver_sample(oracle, sched, x_T.shape, steps=n, **kw)
        return xs[-2] if spacing == "linspace" else xs[-1]

    rows = []
    for grid_name in ("continuous, log-uniform σ, error at σ(0)", "integer t, linspace, error at t = 0",
                      "integer t, trailing, error at σ = 0"):
        for name, solver in SOLVERS:
            nfes, errors = [], []
            for n in (steps if grid_name.startswith("continuous") else int_steps):
                n_run = max(n // 2, 2) if solver == "heun" else n  # Heun: the same NFE range
                if grid_name.startswith("continuous"):
                    solver_key = "euler" if solver == "ddim" else solver
                    out = solve_pf_ode(eps_fn, x_bar, log_grid(n_run), solver=solver_key) / math.sqrt(1 + s_min**2)
                    ref, nfe = ref_t0, 2 * n_run if solver == "heun" else n_run
                else:
                    spacing = "linspace" if "linspace" in grid_name else "trailing"
                    out = integer_run(solver, n_run, spacing)
                    ref = ref_t0 if spacing == "linspace" else ref_data
                    nfe = solver_nfe("euler" if solver == "ddim" else solver, n_run)
                nfes.append(nfe)
                errors.append((out - ref).abs().mean().item())
            rows.append([grid_name, name] + [f"{e:.2e} ({k})" for e, k in zip(errors, nfes)]
                        + [f"{slope(nfes, errors):.2f}"])
            print(rows[-1], flush=True)
    width = max(len(r) for r in rows) - 3
    header = ["grid", "solver"] + [f"error (NFE) {i + 1}" for i in range(width)] + ["slope (last 3)"]
    md = (f"Mean absolute error of x_0 (per coordinate) over {x_T.shape[0]} starting noises, exact denoiser of the 2-D "
          f"mixture, linear schedule (T = 1000, σ from {s_max:.0f} to σ(0) = {s_min:.3f}); reference: Heun with "
          f"{ref_steps} steps uniform in log σ. Expected slopes: -1 (Euler = DDIM η = 0) and -2 (Heun, "
          "DPM-Solver++(2M)).\n\n" + markdown_table(header, rows))
    return [("ch11_convergence", md, header, rows)]


def train_flow_mlp(data, steps: int, seed: int = 0):
    """The mixture recipe's MLP (hidden 128, 3 blocks, batch 256, lr 1e-3, EMA 0.999) trained with the flow-matching
    loss; returns its EMA copy in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPDenoiser(2, hidden_dim=128, num_layers=3)
    res = train(model, None, data, steps=steps, batch_size=256, lr=1e-3, ema_decay=0.999, seed=seed, progress=False,
                loss_fn=lambda m, x0, y, g: flow_matching_loss(m, x0, generator=g, reduction="none"))
    return res.ema_model.eval()


class Models:
    """The trained models, made once and shared by the parts."""

    def __init__(self, quick: bool):
        self.quick = quick
        self._cache, self.cpu = {}, {}

    def get(self, name):
        if name not in self._cache:
            mix_steps = 100 if self.quick else R.MIXTURE_STEPS
            makers = {
                "mix_eps": lambda: R.train_mixture_model(steps=mix_steps, progress=False),
                "mix_v": lambda: R.train_mixture_model(steps=mix_steps, objective="pred_v", progress=False),
                "mix_flow": lambda: train_flow_mlp(self.get("mix_eps").data, mix_steps),
                "digits_1000": lambda: R.train_digits_model(steps=20 if self.quick else R.DIGITS_STEPS, T=1000,
                                                            progress=False),
                "digits_100": lambda: R.train_digits_model(steps=20 if self.quick else R.DIGITS_STEPS, progress=False),
            }
            self._cache[name], self.cpu[name] = timed(makers[name])
            print(f"trained {name} in {self.cpu[name]:.0f} s of CPU", flush=True)
        return self._cache[name]


def nfe_part(quick: bool, models: Models):
    seeds = (1, 2) if quick else (1, 2, 3)
    nfes = (5, 10) if quick else NFES
    metric = MixtureMetric(400 if quick else 4000)
    mix_eps = models.get("mix_eps")
    digits = models.get("digits_1000")
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    n_dig = 100 if quick else 500
    mix_shape = (len(metric.reference), 2)
    cases = [("2-D mixture, exact denoiser", OracleDenoiser(metric.mixture, mix_eps.sched), mix_eps.sched, mix_shape,
              False),
             ("2-D mixture, trained MLP", mix_eps.model, mix_eps.sched, mix_shape, False),
             ("digits UNet, x̂_0 clipped", digits.model, digits.sched, (n_dig, 1, 8, 8), True),
             ("digits UNet, not clipped", digits.model, digits.sched, (n_dig, 1, 8, 8), False)]
    rows = []
    for case, model, sched, shape, clip in cases:
        for name, solver in SOLVERS:
            cells, secs = [], []
            for nfe in nfes:
                xs, cpu = zip(*(timed(lambda s=s: ode_sample(model, sched, shape, solver, nfe, seed=s, clip=clip))
                                for s in seeds))
                secs.append(sum(cpu) / len(cpu))
                if shape[-1] == 2:
                    cells.append(metric(xs))
                else:
                    cells.append(pm([classifier_fid(x.clamp(-1, 1), test_x, classifier) for x in xs], 1))
            rows.append([case, name] + cells + [" / ".join(f"{s:.1f}" for s in secs)])
            print(rows[-1], flush=True)
    header = ["model", "solver"] + [f"NFE {n} (Heun {nfe_label('heun', n)})" for n in nfes] + ["CPU s per run"]
    floor = digits_floor(n_dig, repeats=3, seed=0)
    md = (f"Trailing spacing; mean ± std over {len(seeds)} sampling seeds. Mixture: {metric.note()} Digits: Fréchet "
          f"distance of {n_dig} samples (clamped to [-1, 1]) to the 360 test digits in the features of the fixed "
          f"digits classifier; floor ({n_dig} training digits) {floor.mean:.1f} ± {floor.std:.1f}. Models: the mixture "
          f"MLP of the recipe ({mix_eps.config['steps']} steps), the digits UNet of the recipe on the T = 1000 "
          f"schedule ({digits.config['steps']} steps). Heun's NFE is 2·steps - 1. CPU seconds of one run at each "
          "NFE, in the order of the columns.\n\n" + markdown_table(header, rows))
    return [("ch11_nfe", md, header, rows)]


def fashion_part(quick: bool):
    from ddpm_lib.data import load_fashion_mnist
    from ddpm_lib.pretrained import WEIGHTS_DIR, load, load_fashion_classifier

    weights = WEIGHTS_DIR / "fashion_mnist.pt"
    header = ["model", "solver"] + [f"NFE {n} (Heun {nfe_label('heun', n)})" for n in NFES] + ["CPU s per run"]
    if not weights.exists() or not (WEIGHTS_DIR / "fashion_mnist.json").exists():
        where = weights.relative_to(RESULTS.parents[1])
        msg = (f"The Fashion-MNIST rows are not measured yet: the shipped weights {where} do not exist on the machine "
               "that ran the benchmark (they are made by benchmarks/train_fashion_mnist.py). "
               "Rerun `python benchmarks/bench_continuous_time.py --part fashion` once they exist.\n")
        print("SKIPPED the Fashion-MNIST part: " + msg, flush=True)
        return [("ch11_nfe_fashion", msg, header, [])]
    pre = load("fashion_mnist")
    classifier, accuracy = load_fashion_classifier()
    train_x, _ = load_fashion_mnist("train")
    test_x, _ = load_fashion_mnist("test")
    n, seeds = (20, (1,)) if quick else (300, (1, 2))
    nfes = (5,) if quick else NFES
    test_x = test_x[:1000] if quick else test_x
    gen = torch.Generator().manual_seed(0)
    floor = [classifier_fid(train_x[torch.randperm(train_x.shape[0], generator=gen)[:n]], test_x, classifier)
             for _ in range(1 if quick else 3)]
    rows = []
    for name, solver in SOLVERS:
        cells, secs = [], []
        for nfe in nfes:
            xs, cpu = zip(*(timed(lambda s=s: ode_sample(pre.model, pre.sched, (n, 1, 28, 28), solver, nfe, seed=s,
                                                         clip=True)) for s in seeds))
            secs.append(sum(cpu) / len(cpu))
            cells.append(pm([classifier_fid(x.clamp(-1, 1), test_x, classifier) for x in xs], 2))
            print(name, nfe, cells[-1], flush=True)
        rows.append(["Fashion-MNIST UNet (shipped), x̂_0 clipped", name] + cells
                    + [" / ".join(f"{s:.0f}" for s in secs)])
    md = (f"The shipped Fashion-MNIST UNet, unconditional through the null label, cosine schedule (T = 1000), trailing "
          f"spacing, x̂_0 clipped. Fréchet distance of {n} samples to the 10 000 test images in the features of the "
          f"fixed Fashion-MNIST classifier (test accuracy {accuracy:.3f}); floor ({n} training images, 3 draws) "
          f"{pm(floor, 2)}. Mean ± std over {len(seeds)} sampling seeds.\n\n" + markdown_table(header, rows))
    return [("ch11_nfe_fashion", md, header, rows)]


def likelihood_part(quick: bool, models: Models):
    mixture = make_gaussian_mixture(MIXTURE)
    s_max = R.make_schedule(1000).sqrt_recipm1_alphas_cumprod[-1].item()
    rows = []
    draws = (0,) if quick else (0, 1, 2, 3)
    for steps in ((8, 16) if quick else (8, 16, 32, 64, 128)):
        grid = torch.cat([torch.zeros(1, dtype=torch.float64), karras_sigmas(steps, 0.01, s_max).flip(0)])
        errs = []
        for d in draws:
            x = mixture.sample(200, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
            res = ode_log_likelihood(mixture_eps_fn(mixture), x, grid, progress=False)
            errs.append((res.log_prob - mixture.log_prob(x)).abs().mean().item())
        rows.append(["2-D mixture, exact denoiser, exact trace", f"{steps} Heun steps ({2 * steps} NFE)",
                     f"{pm(errs, 4)} nats/point (mean abs. error)", "", ""])
        print(rows[-1], flush=True)
    dig = models.get("digits_100")
    test_x, _ = load_digits("test")
    x = test_x[:16] if quick else test_x
    probes = 2 if quick else 4
    for steps in ((10,) if quick else (25, 50, dig.sched.T)):
        g = torch.Generator().manual_seed(5)
        xd = dequantize(x, DIGITS_LEVELS, generator=g)
        sig = timestep_sigmas(dig.sched, ddim_timesteps(dig.sched.T, steps, "linspace").flip(0))
        res, cpu = timed(lambda: ode_log_likelihood(model_eps_fn(dig.model, dig.sched), xd, sig,  # noqa: B023
                                                    divergence_method="hutchinson", num_probes=probes, generator=g,
                                                    progress=False))
        bpd = dequantized_bits_per_dim(res.log_prob.double(), DIGITS_LEVELS, 64)
        se_probe = (res.std_error.double() / (64 * math.log(2))).pow(2).mean().sqrt().item() / math.sqrt(len(x))
        se_data = bpd.std().item() / math.sqrt(len(x))
        rows.append([f"digits UNet (T = {dig.sched.T}), ODE, Hutchinson ({probes} probes), dequantized",
                     f"{steps - 1} Heun steps ({res.nfe} NFE)", f"{bpd.mean().item():.3f} bits/dim",
                     f"± {se_probe:.3f} (probes) ± {se_data:.3f} (test digits)", f"{cpu:.0f}"])
        print(rows[-1], flush=True)
    for variance, label in (("fixed_large", "σ_t² = β_t"), ("fixed_small", "σ_t² = β̃_t")):
        r, cpu = timed(lambda: vlb_bits_per_dim(dig.model, dig.sched, x, num_bins=DIGITS_LEVELS,  # noqa: B023
                                                variance=variance, clip_denoised=True,  # noqa: B023
                                                generator=torch.Generator().manual_seed(3), progress=False))
        total = r["total"]
        rows.append([f"digits UNet (T = {dig.sched.T}), variational bound, {label}", f"all {dig.sched.T} terms",
                     f"{total.mean().item():.3f} bits/dim", f"± {total.std().item() / math.sqrt(len(x)):.3f} (test digits)",
                     f"{cpu:.0f}"])
        print(rows[-1], flush=True)
    header = ["model", "discretization", "value", "standard error", "CPU s"]
    md = ("Top: the 2-D mixture (8 Gaussians of std 0.1), log-density through the probability-flow ODE with the exact "
          f"denoiser and the exact divergence, on Karras' ρ = 7 grid from σ = 0.01 to {s_max:.0f} (plus σ = 0), "
          f"against the closed-form log-density; mean ± std over {len(draws)} draws of 200 points. Bottom: the digits "
          f"UNet of the recipe (T = 100, {dig.config['steps']} steps: chapter 7's network) on the {len(x)} test "
          f"digits, through the ODE on its integer timesteps (σ(0) = "
          f"{dig.sched.sqrt_recipm1_alphas_cumprod[0].item():.4f} up to σ(T-1)), uniform dequantization over the 17 "
          "grey levels, beside its variational bound (discretized decoder with 17 bins, x̂_0 clipped, as in chapter 7). "
          "Standard errors: over the Hutchinson probes, and over the test digits.\n\n" + markdown_table(header, rows))
    return [("ch11_likelihood", md, header, rows)]


def langevin_part(quick: bool, models: Models):
    metric = MixtureMetric(400 if quick else 4000)
    sched = R.make_schedule(1000)
    oracle = OracleDenoiser(metric.mixture, sched)
    shape = (len(metric.reference), 2)
    seeds = (1, 2) if quick else (1, 2, 3)
    sig = sched.sqrt_recipm1_alphas_cumprod
    wanted = torch.logspace(math.log10(sig[-1].item()), math.log10(0.05), 10, dtype=torch.float64)
    levels = torch.searchsorted(sig, wanted).clamp(max=sched.T - 1).unique().flip(0)
    step_size = sig[levels[-1]].item() ** 2

    def run(fn):
        return metric([fn(torch.Generator().manual_seed(s)) for s in seeds])

    rows = []
    for nfe in ((20,) if quick else (50, 100, 200)):
        samplers = [("ODE: DPM-Solver++(2M)", lambda g: dpm_solver_sample(oracle, sched, shape, steps=nfe, generator=g,
                                                                          progress=False))]
        for k in (0, 1, 3):
            label = "ancestral predictor only (DDIM η = 1)" if k == 0 else f"predictor + {k} corrector step(s), r = 0.16"
            samplers.append((label, lambda g, k=k: pc_sample(oracle, sched, shape, steps=nfe // (k + 1),
                                                              corrector_steps=k, generator=g, progress=False)))
        samplers.append((f"annealed Langevin, {len(levels)} levels × {nfe // len(levels)} steps",
                         lambda g: annealed_langevin_sample(oracle, sched, shape, timesteps=levels,
                                                            steps_per_level=max(nfe // len(levels), 1),
                                                            step_size=step_size, generator=g, progress=False)))
        for label, fn in samplers:
            rows.append([nfe, label, run(fn)])
            print(rows[-1], flush=True)
    for snr in ((0.5,) if quick else (0.05, 0.16, 0.5)):
        rows.append([100, f"predictor + 1 corrector step, r = {snr}",
                     run(lambda g: pc_sample(oracle, sched, shape, steps=50, corrector_steps=1, snr=snr,  # noqa: B023
                                             generator=g, progress=False))])
        print(rows[-1], flush=True)
    for c in ((1.0,) if quick else (0.1, 0.4)):
        rows.append([100, f"annealed Langevin, {len(levels)} × 10 steps, α_L = {c} σ_L²",
                     run(lambda g: annealed_langevin_sample(oracle, sched, shape, timesteps=levels, steps_per_level=10,
                                                            step_size=c * step_size, generator=g,  # noqa: B023
                                                            progress=False, check_finite=False))])
        print(rows[-1], flush=True)
    header = ["NFE", "sampler (exact score)", "SW2 ×100 / off-mode % / spread"]
    md = (f"The 2-D mixture with its exact score (the oracle denoiser), linear schedule T = 1000, trailing spacing; "
          f"mean ± std over {len(seeds)} seeds. {metric.note()} Predictor–corrector: k Langevin corrector steps "
          "(signal-to-noise ratio r) before each ancestral step, steps = NFE/(k + 1). Annealed Langevin (Song & Ermon): "
          f"{len(levels)} levels geometric in σ from {sig[-1].item():.0f} to σ_L = {sig[levels[-1]].item():.3f}, step "
          "α_i = α_L σ_i²/σ_L² with α_L = σ_L² unless the row says otherwise, then the Tweedie denoising step (one more "
          "evaluation).\n\n" + markdown_table(header, rows))
    return [("ch11_langevin", md, header, rows)]


def flow_part(quick: bool, models: Models):
    metric = MixtureMetric(400 if quick else 4000)
    seeds = (1, 2) if quick else (1, 2, 3)
    nfes = (5, 10) if quick else NFES
    eps_model, v_model, flow = models.get("mix_eps"), models.get("mix_v"), models.get("mix_flow")
    sched = eps_model.sched
    shape = (len(metric.reference), 2)

    def flow_run(model, solver, nfe, seed):
        return flow_sample(model, shape, steps=nfe if solver == "euler" else max(nfe // 2, 1), solver=solver,
                           generator=torch.Generator().manual_seed(seed), progress=False)

    cases = [("flow-matching MLP", flow, "flow"), ("ε-MLP (pred_noise)", eps_model.model, "pred_noise"),
             ("v-MLP (pred_v)", v_model.model, "pred_v"), ("exact velocity", exact_velocity_model(metric.mixture), "flow"),
             ("exact ε (oracle)", OracleDenoiser(metric.mixture, sched), "pred_noise")]
    rows = []
    for name, model, kind in cases:
        if kind == "flow":
            runs = [("Euler", lambda nfe, s, m=model: flow_run(m, "euler", nfe, s)),
                    ("Heun (NFE = 2·steps)", lambda nfe, s, m=model: flow_run(m, "heun", nfe, s))]
        else:
            runs = [(label, lambda nfe, s, m=model, k=kind, solver=solver: _eps_run(m, sched, shape, solver, nfe, s, k))
                    for label, solver in (("DDIM η = 0", "ddim"), ("DPM-Solver++(2M)", "dpm_solver"))]
        for label, fn in runs:
            rows.append([name, label] + [metric([fn(nfe, s) for s in seeds]) for nfe in nfes])
            print(rows[-1], flush=True)
    header = ["model", "sampler"] + [f"NFE {n}" for n in nfes]
    md = (f"The 2-D mixture; the three MLPs have the recipe's network (hidden 128, 3 residual blocks), batch 256, "
          f"lr 1e-3, EMA 0.999 and {eps_model.config['steps']} training steps each: the ε- and v-models with "
          "Algorithm 3, the flow model with the rectified-flow loss. The flow ODE is integrated on the uniform grid in "
          "s from 1 to 0; the ε- and v-models' ODE with DDIM η = 0 or DPM-Solver++(2M) (trailing spacing). Heun on the "
          "flow ODE uses NFE/2 steps of 2 evaluations. Mean ± std over "
          f"{len(seeds)} seeds. {metric.note()}\n\n" + markdown_table(header, rows))
    return [("ch11_flow", md, header, rows)]


def _eps_run(model, sched, shape, solver, nfe, seed, objective):
    kw = dict(generator=torch.Generator().manual_seed(seed), progress=False, objective=objective)
    if solver == "ddim":
        return ddim_sample(model, sched, shape, steps=nfe, eta=0.0, spacing="trailing", clip_denoised=False, **kw)
    return dpm_solver_sample(model, sched, shape, steps=nfe, **kw)


PARTS = ("convergence", "nfe", "fashion", "likelihood", "langevin", "flow")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = None if args.quick else RESULTS
    models = Models(args.quick)
    start = time.process_time()
    for part in args.part:
        part_start = time.process_time()
        if part == "convergence":
            tables = convergence_part(args.quick)
        elif part == "fashion":
            tables = fashion_part(args.quick)
        else:
            tables = {"nfe": nfe_part, "likelihood": likelihood_part, "langevin": langevin_part,
                      "flow": flow_part}[part](args.quick, models)
        for name, md, header, rows in tables:
            publish(out_dir, name, md, header, rows)
        print(f"=== part {part}: {time.process_time() - part_start:.0f} s of CPU ===", flush=True)
    print(f"total: {time.process_time() - start:.0f} s of CPU", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
