"""ODE samplers: Euler (= DDIM η = 0), Heun (Karras et al. 2022) and DPM-Solver++(2M) (Lu et al. 2022) (chapter 11).

All three integrate the probability-flow ODE in the variables x̄ = x/√ᾱ and σ = √((1-ᾱ)/ᾱ), where it reads
dx̄/dσ = ε̂ (:mod:`ddpm_lib.ode`; chapter 11, eq. ``eq-pf-ode-sigma``), from σ(T-1) down to σ = 0:

- Euler: x̄' = x̄ + (σ' - σ) ε̂ (:func:`euler_step`). Written back in x it is DDIM's η = 0 update
  √ᾱ' x̂_0 + √(1-ᾱ') ε̂, so ``ddim_sample(eta=0, clip_denoised=False)`` is the Euler sampler (chapter 11,
  eq. ``eq-ddim-euler``, checks the identity in SymPy). First order: error ∝ 1/steps.
- Heun (Karras et al. 2022, Algorithm 1, deterministic, no churn): an Euler predictor, then the average of the
  slopes at both ends (:func:`heun_step`); the last step, to σ = 0, stays Euler, as in Algorithm 1. Second order,
  2 network evaluations per step except the last: NFE = 2·steps - 1 (:func:`solver_nfe`). Equal to diffusers'
  ``HeunDiscreteScheduler`` run on the same timesteps.
- DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, data prediction, multistep, "midpoint" form): with the log-SNR
  λ = -log σ and h = λ' - λ, x̄' = (σ'/σ) x̄ + (1 - σ'/σ) D with D = x̂_0 at the first step (first order, which is
  DDIM again) and D = (1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0^{last}, r = h_last/h, after it; the step to σ = 0 is first
  order (x̄' = x̂_0), as diffusers' ``lower_order_final`` / ``final_sigmas_type="zero"``. One evaluation per
  step; second order (:func:`dpm_solver_step`). Equal to diffusers' ``DPMSolverMultistepScheduler``
  (``algorithm_type="dpmsolver++"``, ``solver_order=2``) on the same timesteps.

The networks are defined only at the integer timesteps 0..T-1, so every grid here is the σ of
:func:`ddpm_lib.ddim.ddim_timesteps` followed by σ = 0 (t_prev = -1, ᾱ = 1). :func:`solve_pf_ode` runs the same
updates on any σ grid for a drift defined at every σ (an exact denoiser; the convergence study of chapter 11).

Defaults, deliberately unlike :func:`ddpm_lib.ddim.ddim_sample`'s: ``spacing="trailing"`` (the grid starts at
t = T-1, the only level where x_T ~ N(0, I) is the right start; "leading" never reaches it) and
``clip_denoised=False`` (clamping x̂_0 changes the ODE being solved and destroys the order of convergence; the
2-D mixture also lives outside [-1, 1]). With trailing spacing the last step starts at σ(T/steps - 1), which shrinks
only like steps^-1/2, so the error at σ = 0 does not show the solvers' asymptotic orders: a convergence study uses
``spacing="linspace"`` (measured at t = 0) or :func:`solve_pf_ode` on a continuous grid (tests/test_solvers.py).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ._checks import OBJECTIVES, assert_finite, check_choice, check_int, check_same_shape
from ._loop import initial_noise, run_steps
from .ddim import _alphas_cumprod_pair, _pairs, ddim_timesteps
from .diffusion import call_model, model_predictions
from .ode import _assert_finite_at, _check_eps_fn
from .schedules import NoiseSchedule

__all__ = ["SOLVERS", "solver_nfe", "euler_step", "heun_step", "dpm_solver_step", "heun_sample",
           "dpm_solver_sample", "solve_pf_ode"]

SOLVERS = ("euler", "heun", "dpm_solver")
"""The ODE solvers of this module; ``"euler"`` is DDIM with η = 0."""


def solver_nfe(solver: str, steps: int) -> int:
    """Network evaluations of a ``steps``-step run (chapter 11): ``steps`` for Euler/DDIM and DPM-Solver++(2M)
    (one per step; the multistep reuses the previous x̂_0), ``2·steps - 1`` for Heun (two per step, one on the last
    Euler step to σ = 0)."""
    check_choice("solver", solver, SOLVERS)
    steps = check_int("steps", steps)
    return 2 * steps - 1 if solver == "heun" else steps


# ------------------------------------------------------------------ the updates in (x̄, σ)


def _sigma(alpha_bar: float) -> float:
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def _dpm_solver_update(x_bar, x_start, sigma: float, sigma_next: float, prev_x_start=None,
                       sigma_last: float | None = None):
    """x̄' = (σ'/σ) x̄ + (1 - σ'/σ) D (Lu et al. 2022, Algorithm 2 divided by α'): first order (D = x̂_0) without a
    previous x̂_0 or when σ' = 0, else D = (1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0^{last} with r = h_last/h,
    h = log(σ/σ'), h_last = log(σ_last/σ)."""
    ratio = sigma_next / sigma  # e^{-h}
    d = x_start
    if prev_x_start is not None and sigma_next > 0:
        r = math.log(sigma_last / sigma) / math.log(sigma / sigma_next)
        d = (1 + 0.5 / r) * x_start - (0.5 / r) * prev_x_start
    return ratio * x_bar + (1 - ratio) * d


def _slope(sched: NoiseSchedule, model_output, t: int, x_t, objective: str, clip_denoised: bool,
           check_finite: bool):
    """(ε̂, x̂_0) at (x_t, t) from the model output: ε̂ is the slope dx̄/dσ of the ODE."""
    if check_finite:
        assert_finite(model_output, "the model output", t)
    return model_predictions(None, sched, x_t, t, objective, clip_x_start=clip_denoised, model_output=model_output)


# ------------------------------------------------------------------ step functions on integer timesteps


def euler_step(sched: NoiseSchedule, model_output: torch.Tensor, t, t_prev, x_t: torch.Tensor, *,
               objective: str = "pred_noise", clip_denoised: bool = False, check_finite: bool = True):
    """One Euler step of dx̄/dσ = ε̂ from code index ``t`` to ``t_prev`` (t_prev = -1: σ = 0, the data) (chapter 11,
    eq. ``eq-ddim-euler``).

    x̄ = x_t/√ᾱ_t, x̄' = x̄ + (σ_prev - σ_t) ε̂, x_prev = √ᾱ_prev x̄'. The same map as
    :func:`ddpm_lib.ddim.ddim_step` with η = 0 (equal up to rounding), written as the ODE step. ε̂ and x̂_0 come from
    :func:`ddpm_lib.diffusion.model_predictions` (with ``clip_denoised``, ε̂ is re-derived from the clamped x̂_0).
    Returns ``(x_prev, x_start)``.
    """
    t, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    eps, x_start = _slope(sched, model_output, t, x_t, objective, clip_denoised, check_finite)
    x_bar = x_t / math.sqrt(a_t) + (_sigma(a_prev) - _sigma(a_t)) * eps
    x_prev = math.sqrt(a_prev) * x_bar
    if check_finite:
        assert_finite(x_prev, "the sample", t)
    return x_prev, x_start


def heun_step(sched: NoiseSchedule, model, t, t_prev, x_t: torch.Tensor, *, y=None, objective: str = "pred_noise",
              clip_denoised: bool = False, check_finite: bool = True):
    """One step of Heun's method for dx̄/dσ = ε̂ from ``t`` to ``t_prev`` (Karras et al. 2022, Algorithm 1 without
    churn; chapter 11, eq. ``eq-heun-step``).

    A second-order step needs the network at both ends, so unlike :func:`ddim_step` this takes the ``model`` (a
    callable ``model(x_t, t[, y])``) and calls it itself: at (x_t, t), then at the Euler prediction
    (x_euler, t_prev), and x̄' = x̄ + (σ_prev - σ_t)(ε̂_t + ε̂_prev)/2. To t_prev = -1 (σ = 0, where the network is
    not defined) it is the Euler step alone, as in Algorithm 1. Network calls: 2, or 1 on the last step.
    ``x_start`` is the network's x̂_0 at (x_t, t). Returns ``(x_prev, x_start)``.
    """
    t, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    out = call_model(model, x_t, t, y)
    x_euler, x_start = euler_step(sched, out, t, t_prev, x_t, objective=objective, clip_denoised=clip_denoised,
                                  check_finite=check_finite)
    if t_prev < 0:
        return x_euler, x_start
    eps, _ = _slope(sched, out, t, x_t, objective, clip_denoised, False)
    eps_next, _ = _slope(sched, call_model(model, x_euler, t_prev, y), t_prev, x_euler, objective, clip_denoised,
                         check_finite)
    sigma, sigma_prev = _sigma(a_t), _sigma(a_prev)
    x_bar = x_t / math.sqrt(a_t) + (sigma_prev - sigma) * 0.5 * (eps + eps_next)
    x_prev = math.sqrt(a_prev) * x_bar
    if check_finite:
        assert_finite(x_prev, "the sample", t)
    return x_prev, x_start


def dpm_solver_step(sched: NoiseSchedule, model_output: torch.Tensor, t, t_prev, x_t: torch.Tensor, *,
                    prev_x_start: torch.Tensor | None = None, t_last=None, order: int = 2,
                    objective: str = "pred_noise", clip_denoised: bool = False, check_finite: bool = True):
    """One DPM-Solver++ step from ``t`` to ``t_prev`` (Lu et al. 2022, Algorithm 2; chapter 11,
    eq. ``eq-dpm-solver-2m``).

    In x̄ = x/√ᾱ and σ = e^{-λ}: x̄' = (σ_prev/σ_t) x̄ + (1 - σ_prev/σ_t) D, x_prev = √ᾱ_prev x̄'.

    - First order (``order=1``, or no previous step, or t_prev = -1): D = x̂_0 — DDIM η = 0 once more.
    - Second order, multistep: the previous step's x̂_0 and timestep are passed explicitly as ``prev_x_start`` and
      ``t_last`` (> t; no hidden state), and D = (1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0^{last} with r = h_last/h,
      h = log(σ_t/σ_prev), h_last = log(σ_last/σ_t).

    The step to t_prev = -1 (σ = 0) is first order whatever ``order`` is: h is infinite there, and the update is
    x_prev = x̂_0 (diffusers' ``final_sigmas_type="zero"``, which forces ``lower_order_final``). With
    ``clip_denoised`` x̂_0 is clamped to [-1, 1] before the update (a static stand-in for the paper's
    thresholding; it makes the ODE solution inexact). Returns ``(x_prev, x_start)``; pass ``x_start`` and ``t`` as
    the next step's ``prev_x_start`` and ``t_last``.
    """
    t, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    order = check_int("order", order, 1, 2)
    if (prev_x_start is None) != (t_last is None):
        raise ValueError("pass both prev_x_start and t_last (the x_start and t of the previous step) or neither")
    sigma_last = None
    if t_last is not None:
        if isinstance(t_last, torch.Tensor) and t_last.numel() == 1 and not t_last.is_floating_point():
            t_last = int(t_last.item())
        t_last = check_int("t_last", t_last, t + 1, sched.T - 1)
        check_same_shape(prev_x_start, x_t, "prev_x_start", "x_t")
        sigma_last = _sigma(sched.alphas_cumprod[t_last].item())
    _, x_start = _slope(sched, model_output, t, x_t, objective, clip_denoised, check_finite)
    previous = prev_x_start if order == 2 else None
    x_bar = _dpm_solver_update(x_t / math.sqrt(a_t), x_start, _sigma(a_t), _sigma(a_prev), previous, sigma_last)
    x_prev = math.sqrt(a_prev) * x_bar
    if check_finite:
        assert_finite(x_prev, "the sample", t)
    return x_prev, x_start


# ------------------------------------------------------------------ loops


def _check_loop(model, sched, objective: str):
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    check_choice("objective", objective, OBJECTIVES)
    if not callable(model):
        raise TypeError(f"model must be callable model(x_t, t[, y]), got {type(model).__name__}")


@torch.no_grad()
def heun_sample(model, sched: NoiseSchedule, shape, *, steps: int = 20, spacing: str = "trailing",
                x_T: torch.Tensor | None = None, objective: str = "pred_noise", clip_denoised: bool = False, y=None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32, progress: bool = True,
                return_all_timesteps: bool = False, check_finite: bool = True):
    """Heun's method (Karras et al. 2022, Algorithm 1, deterministic) on the timesteps of
    :func:`ddpm_lib.ddim.ddim_timesteps` and then σ = 0 (chapter 11, eq. ``eq-heun-step``).

    Each step is :func:`heun_step`; the last one (to σ = 0) is Euler. NFE = 2·steps - 1 (:func:`solver_nfe`): the
    default 20 steps cost 39 evaluations. Starts from ``x_T`` (drawn with ``generator`` if None) at t = T-1 with
    the default ``spacing="trailing"``. Returns x_0, or with ``return_all_timesteps`` the pair ``(xs, x_starts)`` of
    shapes (steps+1, *shape) and (steps, *shape).
    """
    _check_loop(model, sched, objective)
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    x = initial_noise(shape, x_T, generator, device, dtype)

    def step(x, t, t_prev):
        return heun_step(sched, model, t, t_prev, x, y=y, objective=objective, clip_denoised=clip_denoised,
                         check_finite=check_finite)

    return run_steps(step, x, _pairs(timesteps), progress=progress, desc="Heun sampling",
                     return_all_timesteps=return_all_timesteps)


@torch.no_grad()
def dpm_solver_sample(model, sched: NoiseSchedule, shape, *, steps: int = 20, order: int = 2,
                      spacing: str = "trailing", x_T: torch.Tensor | None = None, objective: str = "pred_noise",
                      clip_denoised: bool = False, y=None, generator: torch.Generator | None = None, device=None,
                      dtype=torch.float32, progress: bool = True, return_all_timesteps: bool = False,
                      check_finite: bool = True):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) on the timesteps of :func:`ddpm_lib.ddim.ddim_timesteps` and
    then σ = 0 (chapter 11, eq. ``eq-dpm-solver-2m``).

    Each step is :func:`dpm_solver_step`, fed the previous step's x̂_0 and t (held by this loop, nowhere else): the
    first step is first order (nothing before it), the middle ones second order, the last (to σ = 0) first order.
    One network evaluation per step; Lu et al. find 15-20 steps enough for high-quality samples, hence the default
    ``steps=20``. ``order=1`` is DDIM η = 0. Equal to diffusers' ``DPMSolverMultistepScheduler(
    algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")`` set to the same timesteps. Returns
    x_0, or with ``return_all_timesteps`` the pair ``(xs, x_starts)``.
    """
    _check_loop(model, sched, objective)
    order = check_int("order", order, 1, 2)
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    x = initial_noise(shape, x_T, generator, device, dtype)
    last = {"x_start": None, "t": None}  # the multistep memory: x̂_0 and t of the previous step

    def step(x, t, t_prev):
        out = call_model(model, x, t, y)
        x_prev, x_start = dpm_solver_step(sched, out, t, t_prev, x, prev_x_start=last["x_start"], t_last=last["t"],
                                          order=order, objective=objective, clip_denoised=clip_denoised,
                                          check_finite=check_finite)
        last["x_start"], last["t"] = x_start, t
        return x_prev, x_start

    return run_steps(step, x, _pairs(timesteps), progress=progress, desc="DPM-Solver++ sampling",
                     return_all_timesteps=return_all_timesteps)


def _check_descending_sigmas(sigmas) -> list:
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    if sig.ndim != 1 or sig.numel() < 2:
        raise ValueError("sigmas must be a 1-D sequence of at least 2 noise levels")
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()) or bool((sig[1:] >= sig[:-1]).any()):
        raise ValueError("sigmas must be finite, >= 0 and strictly decreasing (from sigma_max down to the data)")
    if bool((sig[:-1] == 0).any()):
        raise ValueError("only the last sigma may be 0")
    return sig.tolist()


@torch.no_grad()
def solve_pf_ode(eps_fn: Callable, x_bar: torch.Tensor, sigmas: Sequence[float], *, solver: str = "heun",
                 progress: bool = False, return_all_timesteps: bool = False, check_finite: bool = True):
    """Integrate dx̄/dσ = ε̂(x̄, σ) over any decreasing σ grid with the updates of this module (chapter 11,
    eq. ``eq-pf-ode-sigma``, and the measured orders of convergence).

    ``eps_fn(x_bar, sigma)`` must be defined at every σ of the grid (an exact denoiser such as
    :func:`ddpm_lib.ode.mixture_eps_fn`; for a network, which is defined only at its integer timesteps, use
    :func:`heun_sample` / :func:`dpm_solver_sample` / :func:`ddpm_lib.ddim.ddim_sample`). ``x_bar`` is x̄ at
    ``sigmas[0]`` (x_T·√(1 + σ_max²) for x_T in x-space); the last σ may be 0 (the data). ``solver``: ``"euler"``,
    ``"heun"`` (the step to σ = 0 stays Euler, as in Algorithm 1) or ``"dpm_solver"`` (2M). Returns x̄ at
    ``sigmas[-1]``, or with ``return_all_timesteps`` ``(xs, x_starts)`` with x̂_0 = x̄ - σ ε̂ of each step.
    """
    _check_eps_fn(eps_fn)
    check_choice("solver", solver, SOLVERS)
    if not isinstance(x_bar, torch.Tensor) or not x_bar.is_floating_point():
        raise TypeError("x_bar must be a floating-point tensor")
    sig = _check_descending_sigmas(sigmas)
    last = {"x_start": None, "sigma": None}

    def eps_at(x, s):
        eps = eps_fn(x, s)
        if check_finite:
            _assert_finite_at(eps, "eps_fn's output", f"sigma = {s:.6g}")
        return eps

    def step(x, s, s_next):
        eps = eps_at(x, s)
        x_start = x - s * eps
        if solver == "dpm_solver":
            x_next = _dpm_solver_update(x, x_start, s, s_next, last["x_start"], last["sigma"])
            last["x_start"], last["sigma"] = x_start, s
        else:
            x_next = x + (s_next - s) * eps
            if solver == "heun" and s_next > 0:
                x_next = x + (s_next - s) * 0.5 * (eps + eps_at(x_next, s_next))
        if check_finite:
            _assert_finite_at(x_next, "the ODE state x_bar", f"sigma = {s_next:.6g}")
        return x_next, x_start

    return run_steps(step, x_bar, list(zip(sig[:-1], sig[1:])), progress=progress, desc=f"{solver} ODE",
                     return_all_timesteps=return_all_timesteps)
