"""DDIM quality against the number of steps, DDIM inversion, and guidance sweeps (chapters 08 and 09).

Every model is trained here, from scratch, by the shared recipes of :mod:`ddpm_lib.experiments` with their default
budgets and architectures (the mixture MLP; the digits UNet), on Ho et al.'s T = 1000 schedule for the digits too
(``T=1000``: DDIM is about sampling with S << T; the recipe's default T = 100 is chosen for chapter 07's likelihood).
One CPU thread; times are CPU seconds of this process.

Tables written to ``book/results/`` (markdown, and CSV beside each):

- ``ch08_ddim_table``: the DDIM paper's Table 1 on our data. Sample quality at S = 10, 20, 50, 100, 1000 steps
  (leading spacing, the paper's "linear" subsequence) for η = 0, 0.5, 1 and for σ̂ (σ_t² = 1 - ᾱ_t/ᾱ_prev, the β of
  the skipped step: the DDPM "large variance" row, written η̂), on the 2-D mixture (with the exact denoiser and
  with the trained MLP: SW2 ×100 against a fresh draw, and the off-mode percentage, samples farther than 4 standard
  deviations from every mean) and on the digits (classifier-feature Fréchet distance of 500 samples to the test
  split). CPU seconds of each sampling run beside it.
- ``ch08_ddim_spacings``: leading / trailing / linspace at S = 10, 20, 50 with η = 0.
- ``ch08_inversion``: DDIM inversion x_0 → x_T → x_0 with η = 0; per-dimension MSE of the reconstruction against S
  (the paper's Table 2), for the exact mixture denoiser and the digits model.
- ``ch09_guidance``: classifier-free guidance (weight w) and classifier guidance (scale s) on a class-conditional
  digits model: accuracy of the samples under the fixed digits classifier, diversity (mean pairwise distance between
  samples of the same class), Fréchet distance to the test split, with DDIM (50 steps, η = 0) for every scale and
  with DDPM ancestral sampling (all T = 1000 steps) for two scales of each method.

Run: ``python benchmarks/bench_ddim_guidance.py [--part ddim|guidance|all] [--quick]`` (``--quick``: tiny budgets,
a smoke test that writes nothing).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib import (  # noqa: E402
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    p_sample_loop,
)
from ddpm_lib import experiments as E  # noqa: E402
from ddpm_lib.data import OracleDenoiser, load_digits, make_gaussian_mixture  # noqa: E402
from ddpm_lib.diffusion import call_model  # noqa: E402
from ddpm_lib.metrics import (  # noqa: E402
    classifier_accuracy,
    digits_fid,
    get_digits_classifier,
    mean_confidence,
    sliced_wasserstein,
)
from ddpm_lib.noisy_classifier import NoisyClassifier, train_noisy_classifier  # noqa: E402

RESULTS = ROOT / "book" / "results"
STEPS = (10, 20, 50, 100, 1000)
VARIANTS = (("η = 0", 0.0), ("η = 0.5", 0.5), ("η = 1", 1.0), ("η̂ (σ̂² = β of the skipped step)", "hat"))
CFG_WEIGHTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
CLF_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
P_UNCOND = 0.2
MIX_SEEDS = 3
MIX_TRAIN_STEPS = 3000  # the mixture MLP of the DDIM table (chapter 05's bar uses the recipe's default, 8000)


# ---------------------------------------------------------------------------------------------
# samplers


@torch.no_grad()
def ddim_sample_sigma_hat(model, sched, shape, steps, spacing="leading", *, noise=None, generator=None,
                          clip_denoised=True, y=None, objective="pred_noise"):
    """DDIM's σ̂ row (chapter 08, eq. ``eq-sigma-hat``): the η = 1 mean (the skipped step's DDPM posterior mean) plus
    noise of variance σ̂² = 1 - ᾱ_t/ᾱ_prev, none at the last step (as the DDIM paper's code, whose ``ddpm_steps``
    uses the posterior mean with log-variance log β of the skipped step)."""
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    x = torch.randn(shape, generator=generator) if noise is None else noise
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = call_model(model, x, t, y)
        mean, _ = ddim_step(sched, out, t, t_prev, x, eta=1.0, noise=torch.zeros_like(x), objective=objective,
                            clip_denoised=clip_denoised)
        if t_prev >= 0:
            a_t, a_prev = sched.alphas_cumprod[t].item(), sched.alphas_cumprod[t_prev].item()
            mean = mean + math.sqrt(1.0 - a_t / a_prev) * torch.randn(shape, generator=generator)
        x = mean
    return x


def sample(model, sched, n_shape, steps, variant, *, seed, clip_denoised, spacing="leading", y=None):
    gen = torch.Generator().manual_seed(seed)
    if variant == "hat":
        return ddim_sample_sigma_hat(model, sched, n_shape, steps, spacing, generator=gen,
                                     clip_denoised=clip_denoised, y=y)
    return ddim_sample(model, sched, n_shape, steps=steps, eta=variant, spacing=spacing, generator=gen,
                       clip_denoised=clip_denoised, y=y, progress=False)


def timed(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


# ---------------------------------------------------------------------------------------------
# metrics


def off_mode_percent(x: torch.Tensor, mixture) -> float:
    """Percentage of samples farther than 4 standard deviations from every mixture mean (data: e^-8 = 0.03 %)."""
    d = torch.cdist(x.double(), mixture.means.double()).min(dim=1).values
    return 100.0 * (d > 4 * mixture.stds.double().max()).double().mean().item()


def within_class_distance(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Diversity: the mean Euclidean distance between two different samples of the same class, averaged over classes."""
    flat = samples.reshape(samples.shape[0], -1).double()
    values = []
    for c in labels.unique():
        group = flat[labels == c]
        if group.shape[0] < 2:
            continue
        d = torch.cdist(group, group)
        n = group.shape[0]
        values.append((d.sum() / (n * (n - 1))).item())
    return sum(values) / len(values)


def digits_floor(n: int, repeats: int = 3):
    """Fréchet distance of n training images (drawn without replacement) to the test split: what real digits score.
    Returns (mean, std) over ``repeats`` draws; the std is the scale of the metric's sampling noise."""
    classifier, _ = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    gen = torch.Generator().manual_seed(0)
    n = min(n, train_x.shape[0])
    vals = torch.tensor([digits_fid(train_x[torch.randperm(train_x.shape[0], generator=gen)[:n]], test_x, classifier)
                         for _ in range(repeats)])
    return vals.mean().item(), vals.std().item()


def _markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write(name: str, md: str, header, rows, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
    with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# chapter 08


def ddim_part(quick: bool, out_dir: Path | None):
    steps_list = (10, 20) if quick else STEPS
    n_mix = 400 if quick else 4000
    n_dig = 100 if quick else 500
    mixture = make_gaussian_mixture(E.MIXTURE)
    (mix_model, mix_cpu) = timed(lambda: E.train_mixture_model(steps=50 if quick else MIX_TRAIN_STEPS))
    (dig_model, dig_cpu) = timed(lambda: E.train_digits_model(steps=20 if quick else E.DIGITS_STEPS, T=1000))
    oracle = OracleDenoiser(mixture, mix_model.sched)
    models = [
        ("2-D mixture, exact denoiser", oracle, mix_model.sched, (n_mix, 2), False, "mix"),
        ("2-D mixture, trained MLP", mix_model.model, mix_model.sched, (n_mix, 2), False, "mix"),
        ("digits, trained UNet", dig_model.model, dig_model.sched, (n_dig, 1, 8, 8), True, "fd"),
    ]
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    reference = mixture.sample(n_mix, generator=torch.Generator().manual_seed(2))
    floor_sw = torch.tensor([sliced_wasserstein(mixture.sample(n_mix, generator=torch.Generator().manual_seed(10 + i)),
                                                reference, n_projections=256, generator=torch.Generator().manual_seed(0))
                             for i in range(MIX_SEEDS)])
    floor_off = off_mode_percent(mixture.sample(n_mix, generator=torch.Generator().manual_seed(20)), mixture)
    fd_floor, fd_floor_std = digits_floor(n_dig)

    def run(model, sched, shape, s, variant, clip, metric, spacing="leading"):
        """Quality string and CPU seconds; on the mixture, mean over MIX_SEEDS sampling seeds."""
        seeds = range(1, 1 + (MIX_SEEDS if metric == "mix" else 1))
        xs, secs = zip(*(timed(lambda: sample(model, sched, shape, s, variant, seed=seed, clip_denoised=clip,
                                                 spacing=spacing)) for seed in seeds))
        if metric == "mix":
            sw = sum(sliced_wasserstein(x, reference, n_projections=256, generator=torch.Generator().manual_seed(0))
                     for x in xs) / len(xs)
            off = sum(off_mode_percent(x, mixture) for x in xs) / len(xs)
            return f"{100 * sw:.1f} / {off:.1f}", secs[0]
        return f"{digits_fid(xs[0], test_x, classifier):.1f}", secs[0]

    header = ["model", "sampler"] + [f"S = {s}" for s in steps_list] + [f"CPU s, S = {s}" for s in steps_list]
    rows = []
    for name, model, sched, shape, clip, metric in models:
        for vname, variant in VARIANTS:
            vals, seconds = [], []
            for s in steps_list:
                val, sec = run(model, sched, shape, s, variant, clip, metric)
                vals.append(val)
                seconds.append(f"{sec:.1f}")
                print(name, vname, s, vals[-1], seconds[-1], flush=True)
            rows.append([name, vname] + vals + seconds)
    note = (f"Mixture: SW2 ×100 / off-mode % (samples farther than 4 standard deviations from every mean) of {n_mix} "
            f"samples against a fixed draw of the data, mean over {MIX_SEEDS} sampling seeds; floor, fresh draws of the "
            f"data: SW2 ×100 = {100 * floor_sw.mean():.1f} ± {100 * floor_sw.std():.1f} (the ± is the noise of one SW2 "
            f"value), off-mode {floor_off:.2f} %. Digits: Fréchet distance of {n_dig} samples to the 360 test "
            f"digits in the features of the fixed digits classifier; floor ({n_dig} training digits) {fd_floor:.1f} ± "
            f"{fd_floor_std:.1f}. Leading spacing. CPU seconds of one thread for one sampling run. Training: mixture MLP "
            f"{mix_model.config['steps']} steps ({mix_cpu:.0f} s), digits UNet {dig_model.config['steps']} steps "
            f"({dig_cpu:.0f} s of CPU).")
    md = note + "\n\n" + _markdown_table(header, rows)
    print(md)
    if out_dir is not None:
        _write("ch08_ddim_table", md, header, rows, out_dir)

    # spacings
    sp_steps = (10, 20) if quick else (10, 20, 50)
    header_sp = ["model", "spacing"] + [f"S = {s}" for s in sp_steps]
    rows_sp = []
    for name, model, sched, shape, clip, metric in models:
        for spacing in ("leading", "trailing", "linspace"):
            vals = [run(model, sched, shape, s, 0.0, clip, metric, spacing)[0] for s in sp_steps]
            rows_sp.append([name, spacing] + vals)
            print(name, spacing, vals, flush=True)
    md_sp = "η = 0; metrics and floors as in the DDIM table.\n\n" + _markdown_table(header_sp, rows_sp)
    print(md_sp)
    if out_dir is not None:
        _write("ch08_ddim_spacings", md_sp, header_sp, rows_sp, out_dir)

    # inversion
    inv_steps = (10, 20) if quick else (10, 20, 50, 100, 200, 500, 1000)
    x_mix = mixture.sample(200 if quick else 2000, generator=torch.Generator().manual_seed(5))
    x_dig = test_x[:20 if quick else 100]
    header_inv = ["model"] + [f"S = {s}" for s in inv_steps]
    rows_inv = []
    for name, model, sched, x0 in (("2-D mixture, exact denoiser", oracle, mix_model.sched, x_mix),
                                   ("2-D mixture, trained MLP", mix_model.model, mix_model.sched, x_mix),
                                   ("digits, trained UNet", dig_model.model, dig_model.sched, x_dig)):
        vals = []
        for s in inv_steps:
            x_T = ddim_invert(model, sched, x0, steps=s, progress=False)
            rec = ddim_sample(model, sched, tuple(x0.shape), steps=s, eta=0.0, noise=x_T, clip_denoised=False,
                              progress=False)
            vals.append(f"{((rec - x0) ** 2).mean().item():.1e}")
        rows_inv.append([name] + vals)
        print(name, vals, flush=True)
    md_inv = ("Per-dimension mean squared error of x_0 → x_T → x_0 with η = 0, leading spacing, no clipping "
              f"({x_mix.shape[0]} mixture points, the first {x_dig.shape[0]} digits of the test split; the data "
              "lie in [-1.6, 1.6] and [-1, 1]).\n\n" + _markdown_table(header_inv, rows_inv))
    print(md_inv)
    if out_dir is not None:
        _write("ch08_inversion", md_inv, header_inv, rows_inv, out_dir)


# ---------------------------------------------------------------------------------------------
# chapter 09


def guidance_part(quick: bool, out_dir: Path | None):
    per_class = 5 if quick else 30
    labels = torch.arange(10).repeat_interleave(per_class)
    n = labels.shape[0]
    (cond, cond_cpu) = timed(lambda: E.train_digits_model(steps=20 if quick else E.DIGITS_STEPS, T=1000, num_classes=10,
                                                          p_uncond=P_UNCOND))
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    torch.manual_seed(0)
    clf = NoisyClassifier()
    clf_res = train_noisy_classifier(clf, cond.sched, train_x, train_y, steps=50 if quick else 3000, seed=0)
    classifier, clf_acc = get_digits_classifier()
    ref_div = within_class_distance(test_x, test_y)
    methods = [("classifier-free", "w", w) for w in ((-1.0, 0.0, 2.0) if quick else CFG_WEIGHTS)]
    methods += [("classifier", "s", s) for s in ((0.0, 4.0) if quick else CLF_SCALES)]
    ddpm_rows = {("classifier-free", 0.0), ("classifier-free", 2.0), ("classifier", 0.0), ("classifier", 8.0)}
    header = ["guidance", "scale", "sampler", "accuracy", "confidence", "within-class distance", "Fréchet distance",
              "CPU s"]
    rows = []
    for method, sym, scale in methods:
        if method == "classifier-free":
            guided = ClassifierFreeGuidance(cond.model, scale)
        else:
            guided = ClassifierGuidance(cond.model, clf, cond.sched, scale)
        samplers = [("DDIM, 50 steps, η = 0", "ddim")]
        if (method, scale) in ddpm_rows and not quick:
            samplers.append(("DDPM, 1000 steps", "ddpm"))
        for sname, kind in samplers:
            gen = torch.Generator().manual_seed(5)
            if kind == "ddpm":
                fn = lambda: p_sample_loop(guided, cond.sched, (n, 1, 8, 8), y=labels, generator=gen,  # noqa: E731
                                           progress=False)
            else:
                fn = lambda: ddim_sample(guided, cond.sched, (n, 1, 8, 8), steps=50, eta=0.0, y=labels,  # noqa: E731
                                         generator=gen, progress=False)
            x, sec = timed(fn)
            row = [method, f"{sym} = {scale:g}", sname, f"{classifier_accuracy(x, labels, classifier):.3f}",
                   f"{mean_confidence(x, classifier):.3f}", f"{within_class_distance(x, labels):.2f}",
                   f"{digits_fid(x, test_x, classifier):.1f}", f"{sec:.0f}"]
            rows.append(row)
            print(row, flush=True)
    floor, floor_std = digits_floor(n)
    note = (f"{n} samples ({per_class} per class, the same noises for every row) from the class-conditional digits "
            f"UNet of the recipe, trained with label dropout p_uncond = {P_UNCOND} on the T = 1000 schedule "
            f"({cond_cpu:.0f} s of CPU); the noise-aware classifier of chapter 9 trained for {clf_res.meta['steps']} "
            f"steps ({clf_res.seconds:.0f} s). Accuracy and confidence under the fixed digits classifier (test accuracy "
            f"{clf_acc:.3f}); within-class distance of the test digits: {ref_div:.2f}; Fréchet distance of {n} "
            f"training digits to the test split (the floor): {floor:.1f} ± {floor_std:.1f}. w = -1 and s = 0 are the "
            "unconditional model, w = 0 the conditional one.")
    md = note + "\n\n" + _markdown_table(header, rows)
    print(md)
    if out_dir is not None:
        _write("ch09_guidance", md, header, rows, out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("ddim", "guidance", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = None if args.quick else RESULTS
    if args.part in ("ddim", "all"):
        ddim_part(args.quick, out_dir)
    if args.part in ("guidance", "all"):
        guidance_part(args.quick, out_dir)


if __name__ == "__main__":
    main()
