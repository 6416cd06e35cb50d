"""ODE samplers of chapter 11 (ddpm_lib.solvers): DDIM η = 0 as Euler, Heun, DPM-Solver++(2M).

What is proved here:
- parity: dpm_solver_sample equals diffusers' DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
  solver_order=2) over whole loops in float64 to 1e-10 (linear and cosine schedules, the three prediction types);
  heun_sample equals diffusers' HeunDiscreteScheduler on the same timesteps (whole loop for the linear schedule,
  every step for both);
- DDIM η = 0 is Euler's method in (x̄, σ): ddim_sample equals a hand-written Euler loop, euler_step equals ddim_step,
  and DPM-Solver++ of order 1 equals DDIM;
- the network evaluations: Heun makes 2·steps - 1 calls, the others steps;
- the orders of convergence on 1-D Gaussian data, whose probability-flow ODE has the closed-form solution
  x̄(σ) - μ = (x̄(σ_1) - μ) √((s² + σ²)/(s² + σ_1²)): slopes of log error against log steps within ±0.3 of 1
  (Euler/DDIM) and 2 (Heun, DPM-Solver++(2M)), on the integer-timestep grid and on continuous σ grids;
- bad arguments raise errors that name them.
"""

import math

import numpy as np
import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_sample, ddim_step, ddim_timesteps
from ddpm_lib.data import GaussianMixture
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.ode import mixture_eps_fn, timestep_sigmas
from ddpm_lib.solvers import (
    dpm_solver_sample,
    dpm_solver_step,
    euler_step,
    heun_sample,
    heun_step,
    solve_pf_ode,
    solver_nfe,
)
from helpers import F64, gen

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000
SCHEDS = {"linear": NoiseSchedule.linear(T), "squaredcos_cap_v2": NoiseSchedule.cosine(T)}
OBJECTIVE = {"epsilon": "pred_noise", "sample": "pred_x0", "v_prediction": "pred_v"}


def toy_model(x, t):
    """A smooth, fixed function of (x_t, t) standing in for a network (the brief's toy)."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.sin(1.3 * x + 0.002 * tt) * 0.9 + 0.05 * x


class Counting:
    """Wraps a model and counts its calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        return self.model(x, t)


# ---------------------------------------------------------------- parity with diffusers


class _Float64Torch:
    """Stands in for ``torch`` inside diffusers' DPM-Solver module: its ``step`` casts the sample to float32
    ("upcast to avoid precision issues", meant for fp16 pipelines), which would cap the comparison at float32
    precision; here that cast is a cast to float64, and nothing else changes."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("beta_schedule", sorted(SCHEDS))
@pytest.mark.parametrize("prediction", sorted(OBJECTIVE))
@pytest.mark.parametrize("steps,spacing", [(10, "trailing"), (25, "trailing"), (12, "linspace")])
def test_dpm_solver_loop_equals_diffusers(beta_schedule, prediction, steps, spacing, monkeypatch):
    """A whole DPM-Solver++(2M) loop equals diffusers' DPMSolverMultistepScheduler to 1e-10 in float64.

    diffusers' configuration: algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint" (Algorithm 2),
    lower_order_final True, euler_at_final False, final_sigmas_type "zero" (the last step goes to σ = 0 and is
    first order), thresholding off. Its trailing timesteps are ddim_timesteps(T, steps, "trailing") (checked); other
    spacings are passed as custom timesteps. Its σ buffer is replaced by the float64 σ of the same betas, followed
    by 0, as tests/test_parity_diffusers.py does for DDPM/DDIM (its own betas agree with ours at float32 precision,
    tested there).
    """
    diffusers = pytest.importorskip("diffusers")
    from diffusers.schedulers import scheduling_dpmsolver_multistep as dpm_module

    monkeypatch.setattr(dpm_module, "torch", _Float64Torch())
    sched = SCHEDS[beta_schedule]
    s = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_schedule=beta_schedule, algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", prediction_type=prediction, lower_order_final=True, euler_at_final=False,
        final_sigmas_type="zero", thresholding=False, timestep_spacing="trailing")
    ts = ddim_timesteps(T, steps, spacing).tolist()
    if spacing == "trailing":
        s.set_timesteps(steps)
    else:
        s.set_timesteps(timesteps=ts)
    assert s.timesteps.tolist() == ts
    s.sigmas = torch.cat([timestep_sigmas(sched, ts), torch.zeros(1, **F64)])
    s.alphas_cumprod = sched.alphas_cumprod.clone()
    s.alpha_t, s.sigma_t = sched.sqrt_alphas_cumprod.clone(), sched.sqrt_one_minus_alphas_cumprod.clone()
    s.lambda_t = s.alpha_t.log() - s.sigma_t.log()

    x_T = torch.randn(16, 3, generator=gen(steps), **F64)
    x, states = x_T.clone(), [x_T]
    for t in ts:
        x = s.step(toy_model(x, torch.full((16,), t)), t, x).prev_sample
        states.append(x)
    xs, _ = dpm_solver_sample(toy_model, sched, x_T.shape, steps=steps, spacing=spacing, x_T=x_T,
                              objective=OBJECTIVE[prediction], progress=False, return_all_timesteps=True)
    assert x.dtype == torch.float64
    torch.testing.assert_close(xs, torch.stack(states), rtol=1e-10, atol=1e-10)


def _heun_scheduler(diffusers, beta_schedule, prediction, ts):
    sched = SCHEDS[beta_schedule]
    s = diffusers.HeunDiscreteScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, prediction_type=prediction)
    s.set_timesteps(timesteps=ts)
    sig = torch.cat([timestep_sigmas(sched, ts), torch.zeros(1, **F64)])
    s.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]])  # its own interleaving, in float64
    return s, sig


@pytest.mark.parametrize("beta_schedule", sorted(SCHEDS))
@pytest.mark.parametrize("prediction", sorted(OBJECTIVE))
def test_heun_equals_diffusers_heun_discrete_scheduler(beta_schedule, prediction):
    """heun_sample = diffusers' HeunDiscreteScheduler set to the same (custom) timesteps, float64 σ.

    diffusers works in x̄ = x √(1 + σ²) (Karras' variables) and feeds the network x̄/√(1 + σ²) = x; its timesteps are
    t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}: one Euler stage and one Heun correction per step, and the last step (to
    σ = 0) has no correction — 2n - 1 calls, as Algorithm 1 of Karras et al. and heun_step.

    Every step from the same state agrees to 1e-10 relative to the state's size. The whole loop agrees to 1e-10
    for the linear schedule; for the cosine schedule the first step leaps from σ = 2.0e4 (β clipped at 0.999 at
    t = 999) to σ ≈ 6, and this toy model's 0.05 x term then makes the states of order 1e6, so the rounding of
    that step (identical formulas, different association) is not 1e-10 absolute there.
    """
    diffusers = pytest.importorskip("diffusers")
    sched = SCHEDS[beta_schedule]
    objective = OBJECTIVE[prediction]
    ts = ddim_timesteps(T, 10, "trailing").tolist()
    s, sig = _heun_scheduler(diffusers, beta_schedule, prediction, ts)
    x_T = torch.randn(16, 3, generator=gen(1), **F64)
    x_bar = start = x_T * math.sqrt(1 + sig[0].item() ** 2)
    calls, done, worst = 0, [], 0.0
    for i, t in enumerate(s.timesteps.tolist()):
        model_input = s.scale_model_input(x_bar, t)
        x_bar = s.step(toy_model(model_input, torch.full((16,), int(t))), t, x_bar).prev_sample
        calls += 1
        if s.state_in_first_order or i == len(s.timesteps) - 1:  # a whole step is done (the last has no correction)
            k = len(done)
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            ours, _ = heun_step(sched, toy_model, ts[k], t_prev, start / math.sqrt(1 + sig[k].item() ** 2),
                                objective=objective)
            ref = x_bar / math.sqrt(1 + sig[k + 1].item() ** 2)
            worst = max(worst, ((ours - ref).abs().max() / ref.abs().max().clamp(min=1)).item())
            done.append(ts[k])
            start = x_bar
    assert done == ts and calls == solver_nfe("heun", len(ts))
    assert worst < 1e-10
    if beta_schedule == "linear":
        ours = heun_sample(toy_model, sched, x_T.shape, steps=10, spacing="trailing", x_T=x_T, objective=objective,
                           progress=False)
        torch.testing.assert_close(ours, x_bar, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- DDIM η = 0 is Euler


@pytest.mark.parametrize("name", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("spacing,steps", [("trailing", 10), ("leading", 20), ("linspace", 7)])
def test_ddim_eta0_is_an_euler_loop_in_xbar_sigma(name, spacing, steps):
    """ddim_sample(eta=0) = x̄ ← x̄ + (σ_prev - σ) ε̂ with x̄ = x/√ᾱ, written out here by hand (chapter 11 proves the
    identity in SymPy); euler_step is the same step."""
    sched = SCHEDS[name]
    x_T = torch.randn(32, 2, generator=gen(0), **F64)
    ours = ddim_sample(toy_model, sched, x_T.shape, steps=steps, eta=0.0, spacing=spacing, x_T=x_T,
                       clip_denoised=False, progress=False)
    ts = ddim_timesteps(T, steps, spacing).tolist()
    ab = sched.alphas_cumprod
    x = x_T.clone()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        a, a_prev = ab[t].item(), ab[t_prev].item() if t_prev >= 0 else 1.0
        sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)
        x_bar = x / math.sqrt(a) + (sigma_prev - sigma) * toy_model(x, torch.full((32,), t))
        x_new = math.sqrt(a_prev) * x_bar
        step, _ = euler_step(sched, toy_model(x, torch.full((32,), t)), t, t_prev, x)
        torch.testing.assert_close(step, x_new, rtol=1e-12, atol=1e-12)
        x = x_new
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("clip", [False, True])
def test_euler_step_and_first_order_dpm_solver_equal_ddim_step(objective, clip):
    """One step, every pair (t, t_prev) of a grid: euler_step and dpm_solver_step(order=1) = ddim_step(eta=0)."""
    sched = SCHEDS["linear"]
    ts = ddim_timesteps(T, 8, "trailing").tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        x = 1.3 * torch.randn(8, 3, generator=gen(t), **F64)
        out = toy_model(x, torch.full((8,), t))
        ref, ref0 = ddim_step(sched, out, t, t_prev, x, objective=objective, clip_denoised=clip)
        for step, x0 in (euler_step(sched, out, t, t_prev, x, objective=objective, clip_denoised=clip),
                         dpm_solver_step(sched, out, t, t_prev, x, order=1, objective=objective,
                                         clip_denoised=clip)):
            torch.testing.assert_close(step, ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(x0, ref0, rtol=0, atol=0)


def test_dpm_solver_order_one_loop_is_ddim_and_order_two_differs():
    sched = SCHEDS["squaredcos_cap_v2"]
    x_T = torch.randn(16, 2, generator=gen(2), **F64)
    kw = dict(steps=12, spacing="trailing", x_T=x_T, progress=False)
    ddim = ddim_sample(toy_model, sched, x_T.shape, eta=0.0, clip_denoised=False, **kw)
    first = dpm_solver_sample(toy_model, sched, x_T.shape, order=1, **kw)
    second = dpm_solver_sample(toy_model, sched, x_T.shape, order=2, **kw)
    torch.testing.assert_close(first, ddim, rtol=1e-10, atol=1e-10)
    assert (second - ddim).abs().max() > 1e-3


def test_dpm_solver_step_second_order_formula():
    """The multistep update written out: x̄' = (σ'/σ) x̄ + (1 - σ'/σ)((1 + 1/2r) x̂_0 - (1/2r) x̂_0^last)."""
    sched = SCHEDS["linear"]
    t_last, t, t_prev = 700, 500, 300
    x = torch.randn(8, 2, generator=gen(3), **F64)
    prev = torch.randn(8, 2, generator=gen(4), **F64)
    out = toy_model(x, torch.full((8,), t))
    got, x0 = dpm_solver_step(sched, out, t, t_prev, x, prev_x_start=prev, t_last=t_last)
    sig = timestep_sigmas(sched, [t_last, t, t_prev]).tolist()
    r = math.log(sig[0] / sig[1]) / math.log(sig[1] / sig[2])
    d = (1 + 0.5 / r) * x0 - 0.5 / r * prev
    a_t, a_prev = sched.alphas_cumprod[t].item(), sched.alphas_cumprod[t_prev].item()
    want = math.sqrt(a_prev) * (sig[2] / sig[1] * x / math.sqrt(a_t) + (1 - sig[2] / sig[1]) * d)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the step to the data is first order whatever the history: x_prev = x̂_0
    last, x0_last = dpm_solver_step(sched, out, t, -1, x, prev_x_start=prev, t_last=t_last)
    torch.testing.assert_close(last, x0_last, rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_network_evaluations(steps):
    sched = SCHEDS["linear"]
    x_T = torch.randn(4, 2, generator=gen(0), **F64)
    for name, run in (("heun", heun_sample), ("dpm_solver", dpm_solver_sample)):
        model = Counting(toy_model)
        run(model, sched, x_T.shape, steps=steps, x_T=x_T, progress=False)
        assert model.calls == solver_nfe(name, steps)
    model = Counting(toy_model)
    ddim_sample(model, sched, x_T.shape, steps=steps, x_T=x_T, progress=False)
    assert model.calls == solver_nfe("euler", steps) == steps
    assert solver_nfe("heun", steps) == 2 * steps - 1


def test_step_functions_take_every_timestep_form():
    """t, t_prev and t_last accept an int, a NumPy int and a one-element integer tensor, with the same result; a
    tensor of several timesteps is a TypeError (one step for the whole batch), as for ddim_step."""
    sched = SCHEDS["linear"]
    x = torch.randn(4, 2, generator=gen(5), **F64)
    out, prev = toy_model(x, torch.full((4,), 500)), torch.randn(4, 2, generator=gen(6), **F64)
    forms = (500, np.int64(500), torch.tensor(500), torch.tensor([500]))
    ref = dpm_solver_step(sched, out, 500, 300, x, prev_x_start=prev, t_last=700)
    for t in forms:
        got = dpm_solver_step(sched, out, t, np.int32(300), x, prev_x_start=prev, t_last=torch.tensor(700))
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
        torch.testing.assert_close(euler_step(sched, out, t, 300, x), euler_step(sched, out, 500, 300, x),
                                   rtol=0, atol=0)
        torch.testing.assert_close(heun_step(sched, toy_model, t, 300, x), heun_step(sched, toy_model, 500, 300, x),
                                   rtol=0, atol=0)
    with pytest.raises(TypeError, match="one timestep"):
        euler_step(sched, out, torch.tensor([500, 400]), 300, x)


def test_loops_return_trajectories_and_accept_a_generator():
    sched = SCHEDS["linear"]
    for run in (heun_sample, dpm_solver_sample):
        xs, x0s = run(toy_model, sched, (5, 2), steps=6, generator=gen(9), dtype=torch.float64, progress=False,
                      return_all_timesteps=True)
        assert xs.shape == (7, 5, 2) and x0s.shape == (6, 5, 2)
        again = run(toy_model, sched, (5, 2), steps=6, generator=gen(9), dtype=torch.float64, progress=False)
        torch.testing.assert_close(again, xs[-1], rtol=0, atol=0)


# ---------------------------------------------------------------- orders of convergence

MU, S = 0.3, 0.5  # 1-D Gaussian data N(μ, s²): E[x_0 | x_t] is linear and the ODE solvable in closed form


def _exact_xbar(x_bar_start, sigma_start, sigma):
    return MU + (x_bar_start - MU) * math.sqrt((S**2 + sigma**2) / (S**2 + sigma_start**2))


def _slope(steps, errors):
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def test_orders_of_convergence_on_the_integer_timestep_grid():
    """The library loops with the exact denoiser (OracleDenoiser) on the linear schedule, linspace spacing (the grid
    runs from t = T-1 to t = 0). The error is measured at t = 0, before the last step to σ = 0: that step is the
    same for every step count (σ(0) = 0.01 to 0), a fixed O(σ(0)²) error that would otherwise floor the curves.

    Measured slopes of log error against log steps for steps = 50, 100, 200: Euler -1.00, Heun -2.01,
    DPM-Solver++(2M) -2.03. Not used here, and why: with trailing spacing the last step goes from σ(T/steps - 1),
    which shrinks only like steps^-1/2, to 0, and the error at σ = 0 falls more slowly than steps^-2 and irregularly
    (measured slopes Euler -0.98, Heun -1.41, DPM-Solver++(2M) -0.68); the cosine schedule's first step leaps from
    σ = 2.0e4 (β clipped at 0.999) to σ(T - T/steps), and Heun stays pre-asymptotic (local slopes ≈ -3) up to 200
    steps.
    """
    sched = SCHEDS["linear"]
    oracle = OracleDenoiser(GaussianMixture([[MU]], S), sched)
    x_T = torch.linspace(-2.5, 2.5, 11, **F64)[:, None]
    sig = sched.sqrt_recipm1_alphas_cumprod
    x_bar_T = x_T * math.sqrt(1 + sig[-1].item() ** 2)
    exact = _exact_xbar(x_bar_T, sig[-1].item(), sig[0].item()) / math.sqrt(1 + sig[0].item() ** 2)
    runs = {"euler": lambda n: ddim_sample(oracle, sched, x_T.shape, steps=n, eta=0.0, spacing="linspace", x_T=x_T,
                                           clip_denoised=False, progress=False, return_all_timesteps=True),
            "heun": lambda n: heun_sample(oracle, sched, x_T.shape, steps=n, spacing="linspace", x_T=x_T,
                                          progress=False, return_all_timesteps=True),
            "dpm_solver": lambda n: dpm_solver_sample(oracle, sched, x_T.shape, steps=n, spacing="linspace",
                                                      x_T=x_T, progress=False, return_all_timesteps=True)}
    steps = [50, 100, 200]
    slopes = {}
    for name, run in runs.items():
        errors = [(run(n)[0][-2] - exact).abs().max().item() for n in steps]
        slopes[name] = _slope(steps, errors)
    assert abs(slopes["euler"] + 1) < 0.3, slopes
    assert abs(slopes["heun"] + 2) < 0.3, slopes
    assert abs(slopes["dpm_solver"] + 2) < 0.3, slopes


@pytest.mark.parametrize("name", ["linear", "squaredcos_cap_v2"])
def test_orders_of_convergence_on_continuous_sigma_grids(name):
    """solve_pf_ode with the exact drift at any σ (mixture_eps_fn of a one-component mixture), on grids uniform in
    log σ (DPM-Solver's uniform log-SNR) from σ(T-1) to σ(0), steps = 32..256; error at σ(0) against the closed-form
    solution. Measured slopes: linear -0.98 / -2.03 / -1.99, cosine -0.98 / -2.05 / -1.96 (Euler / Heun /
    DPM-Solver++(2M)); Karras' ρ = 7 grid gives the same within 0.1. Below 32 steps DPM-Solver++(2M) is
    pre-asymptotic (its error is already small)."""
    sched = SCHEDS[name]
    eps_fn = mixture_eps_fn(GaussianMixture([[MU]], S))
    sig_max, sig_min = sched.sqrt_recipm1_alphas_cumprod[-1].item(), sched.sqrt_recipm1_alphas_cumprod[0].item()
    x_bar = torch.linspace(-2.5, 2.5, 11, **F64)[:, None] * math.sqrt(1 + sig_max**2)
    exact = _exact_xbar(x_bar, sig_max, sig_min)
    steps = [32, 64, 128, 256]
    for solver, order in (("euler", 1), ("heun", 2), ("dpm_solver", 2)):
        errors = []
        for n in steps:
            grid = torch.logspace(math.log10(sig_max), math.log10(sig_min), n + 1, dtype=torch.float64)
            errors.append((solve_pf_ode(eps_fn, x_bar, grid, solver=solver) - exact).abs().max().item())
        assert abs(_slope(steps, errors) + order) < 0.3, (solver, errors)


def test_solve_pf_ode_to_zero_and_trajectories():
    """Ending at σ = 0 returns x̂_0 of the last level for DPM-Solver (first-order last step) and the Euler step for
    Heun; return_all_timesteps gives every state and x̂_0 = x̄ - σ ε̂."""
    eps_fn = mixture_eps_fn(GaussianMixture([[MU]], S))
    x_bar = torch.linspace(-3, 3, 7, **F64)[:, None] * 10
    grid = [10.0, 1.0, 0.1, 0.0]
    for solver in ("euler", "heun", "dpm_solver"):
        xs, x0s = solve_pf_ode(eps_fn, x_bar, grid, solver=solver, return_all_timesteps=True)
        assert xs.shape == (4, 7, 1) and x0s.shape == (3, 7, 1)
        torch.testing.assert_close(x0s[-1], xs[-2] - 0.1 * eps_fn(xs[-2], 0.1), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xs[-1], x0s[-1], rtol=1e-12, atol=1e-12)  # σ' = 0: x̄' = x̂_0 for all three


# ---------------------------------------------------------------- bad input


def test_bad_arguments_name_themselves():
    sched = SCHEDS["linear"]
    x = torch.zeros(2, 2, **F64)
    out = torch.zeros(2, 2, **F64)
    with pytest.raises(ValueError, match="t_prev"):
        euler_step(sched, out, 10, 10, x)
    with pytest.raises(ValueError, match="order"):
        dpm_solver_step(sched, out, 10, 5, x, order=3)
    with pytest.raises(ValueError, match="prev_x_start and t_last"):
        dpm_solver_step(sched, out, 10, 5, x, prev_x_start=x)
    with pytest.raises(ValueError, match="t_last"):
        dpm_solver_step(sched, out, 10, 5, x, prev_x_start=x, t_last=10)
    with pytest.raises(ValueError, match="prev_x_start"):
        dpm_solver_step(sched, out, 10, 5, x, prev_x_start=torch.zeros(3, 2, **F64), t_last=20)
    with pytest.raises(ValueError, match="objective"):
        dpm_solver_sample(toy_model, sched, (2, 2), steps=3, objective="eps", progress=False)
    with pytest.raises(ValueError, match="steps"):
        heun_sample(toy_model, sched, (2, 2), steps=T + 1, progress=False)
    with pytest.raises(ValueError, match="spacing"):
        heun_sample(toy_model, sched, (2, 2), steps=3, spacing="even", progress=False)
    with pytest.raises(TypeError, match="model"):
        heun_sample("net", sched, (2, 2), steps=3, progress=False)
    with pytest.raises(TypeError, match="sched"):
        dpm_solver_sample(toy_model, "linear", (2, 2), steps=3, progress=False)
    with pytest.raises(ValueError, match="solver"):
        solver_nfe("rk4", 3)
    with pytest.raises(ValueError, match="sigmas"):
        solve_pf_ode(lambda x, s: x, x, [1.0, 2.0])
    with pytest.raises(ValueError, match="sigmas"):
        solve_pf_ode(lambda x, s: x, x, [1.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="eps_fn"):
        solve_pf_ode(None, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="solver"):
        solve_pf_ode(lambda x, s: x, x, [1.0, 0.0], solver="rk4")


def test_non_finite_model_output_names_the_step():
    sched = SCHEDS["linear"]
    bad = lambda x, t: torch.full_like(x, float("nan"))  # noqa: E731
    for run in (heun_sample, dpm_solver_sample):
        with pytest.raises(FloatingPointError, match="t = 999"):
            run(bad, sched, (2, 2), steps=3, dtype=torch.float64, generator=gen(0), progress=False)
    with pytest.raises(FloatingPointError, match="sigma = 1"):
        solve_pf_ode(lambda x, s: x / 0.0 * s, torch.ones(2, 2, **F64), [1.0, 0.0])
