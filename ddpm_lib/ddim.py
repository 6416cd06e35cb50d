"""DDIM (Song et al. 2021): the non-Markovian sampler, its timestep spacings and deterministic inversion (chapter 08).

One step from code index t to t_prev (t_prev = -1 means ᾱ_prev = 1, i.e. the clean data):

    x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ_t²) ε̂ + σ_t z,
    σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)                     (chapter 08, eqs. ``eq-ddim-step``, ``eq-ddim-sigma``)

η = 1 gives the DDPM posterior variance between the two steps, η = 0 a deterministic map. η > 1 adds more noise
than DDPM; it is allowed as long as σ_t² ≤ 1 - ᾱ_prev, the condition for the family to keep the marginals
q(x_t | x_0) (chapter 08, eq. ``eq-ddim-family``), and rejected beyond.
Unlike diffusers' ``DDIMScheduler`` (which takes ``t - T // steps`` as the previous step), the previous step is the
actual next entry of the timestep list, which is what the update needs for trailing/linspace spacings and for
step counts that do not divide T.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import OBJECTIVES, SPACINGS, assert_finite, check_choice, check_int, check_positive, check_timestep
from ._loop import initial_noise, randn, run_steps
from .diffusion import call_model, model_predictions
from .schedules import NoiseSchedule

__all__ = ["ddim_timesteps", "ddim_sigma", "ddim_sigma_hat", "ddim_step", "ddim_sample", "ddim_invert"]


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> torch.Tensor:
    """The descending code indices visited by a ``steps``-step sampler (equal to diffusers' ``timestep_spacing``).

    - ``leading``: 0, r, 2r, ..., (steps-1) r with r = T // steps — never reaches T-1 when r > 1;
    - ``trailing``: round(T - k T/steps) - 1 for k = 0..steps-1 — always starts at T-1 (Lin et al. 2024); equal to
      diffusers' entries, without the spurious last entry -1 that its ``np.arange`` produces for some (T, steps);
    - ``linspace``: round(linspace(0, T-1, steps)) — both ends included.
    """
    T = check_int("T", T)
    steps = check_int("steps", steps, 1, T)
    check_choice("spacing", spacing, SPACINGS)
    if spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1]
    elif spacing == "trailing":
        # diffusers' np.arange(T, 0, -T/steps), cut to `steps` entries: float rounding can lengthen the range
        # by one entry, index -1 (e.g. T=15, steps=13), which diffusers keeps and we drop.
        ts = (np.round(np.arange(T, 0, -T / steps)) - 1)[:steps]
    else:
        ts = np.linspace(0, T - 1, steps).round()[::-1]
    return torch.from_numpy(ts.astype(np.int64).copy())


def _alphas_cumprod_pair(sched: NoiseSchedule, t, t_prev) -> tuple:
    """Checked (t, t_prev, ᾱ_t, ᾱ_prev) for a step from ``t`` to ``t_prev`` (``t_prev = -1``: ᾱ_prev = 1)."""
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    t = check_timestep(t, sched.T)
    if isinstance(t_prev, torch.Tensor):
        if t_prev.numel() != 1 or t_prev.is_floating_point() or t_prev.dtype == torch.bool:
            raise TypeError(f"t_prev must be an int or a one-element integer tensor, got {t_prev!r}")
        t_prev = int(t_prev.item())
    t_prev = check_int("t_prev", t_prev, -1, t - 1)
    a_t = sched.alphas_cumprod[t].item()
    a_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    return t, t_prev, a_t, a_prev


def ddim_sigma(sched: NoiseSchedule, t, t_prev, eta: float) -> float:
    """σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_prev)) (chapter 08, eq. ``eq-ddim-sigma``).

    ``ValueError`` if η makes σ_t² larger than 1 - ᾱ_prev, where the family no longer exists (possible for η > 1).
    """
    eta = check_positive("eta", eta, allow_zero=True)
    t, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    if sigma ** 2 > (1 - a_prev) * (1 + 1e-12):
        eta_max = math.sqrt((1 - a_t) / (1 - a_t / a_prev))
        raise ValueError(f"eta = {eta} gives sigma_t^2 = {sigma ** 2:.4g} > 1 - abar_prev = {1 - a_prev:.4g} for the "
                         f"step t = {t} -> {t_prev}: the DDIM family needs sigma_t^2 <= 1 - abar_prev, i.e. "
                         f"eta <= {eta_max:.4g} here")
    return sigma


def ddim_sigma_hat(sched: NoiseSchedule, t, t_prev) -> float:
    """σ̂_t = √(1 - ᾱ_t/ᾱ_prev), the β of the skipped step: the noise of the DDIM paper's σ̂ row (chapter 08,
    eq. ``eq-sigma-hat``), and 0 at the last step (t_prev = -1), which outputs the mean as DDPM's last step does.
    Not a member of the family: σ̂_t² can exceed 1 - ᾱ_prev."""
    _, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    return math.sqrt(1 - a_t / a_prev) if t_prev >= 0 else 0.0


def ddim_step(sched: NoiseSchedule, model_output: torch.Tensor, t, t_prev, x_t: torch.Tensor, *,
              eta: float = 0.0, sigma_hat: bool = False, variance_noise: torch.Tensor | None = None,
              objective: str = "pred_noise", clip_denoised: bool = True, generator: torch.Generator | None = None,
              check_finite: bool = True):
    """One DDIM update from x_t (code index ``t``) to x_{t_prev} (chapter 08, eq. ``eq-ddim-step``).

    x̂_0 and ε̂ come from :func:`ddpm_lib.diffusion.model_predictions`; with ``clip_denoised`` x̂_0 is clamped and
    ε̂ re-derived from it (diffusers' ``use_clipped_model_output=True``). ``variance_noise`` is z (drawn with
    ``generator`` if None), used only when σ_t > 0. With ``sigma_hat=True`` the step is the DDIM paper's σ̂ row:
    the η = 1 mean plus noise of standard deviation :func:`ddim_sigma_hat` (``eta`` must then be left at 0).
    With ``check_finite`` a model output or result that is not finite raises ``FloatingPointError`` naming t.
    Returns ``(x_prev, x_start)``.
    """
    t, t_prev, a_t, a_prev = _alphas_cumprod_pair(sched, t, t_prev)
    if sigma_hat and eta != 0:
        raise ValueError(f"sigma_hat=True takes the eta = 1 mean and sigma-hat noise; leave eta at 0, got {eta!r}")
    sigma = ddim_sigma(sched, t, t_prev, 1.0 if sigma_hat else eta)
    if check_finite:
        assert_finite(model_output, "the model output", t)
    pred_noise, x_start = model_predictions(None, sched, x_t, t, objective, clip_x_start=clip_denoised,
                                            model_output=model_output)
    x_prev = math.sqrt(a_prev) * x_start + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * pred_noise
    noise_std = ddim_sigma_hat(sched, t, t_prev) if sigma_hat else sigma
    if noise_std > 0:
        if variance_noise is None:
            variance_noise = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        elif variance_noise.shape != x_t.shape:
            raise ValueError(f"variance_noise has shape {tuple(variance_noise.shape)} but x_t has shape "
                             f"{tuple(x_t.shape)}; they must match")
        x_prev = x_prev + noise_std * variance_noise
    if check_finite:
        assert_finite(x_prev, "the sample", t)
    return x_prev, x_start


def _pairs(timesteps: list) -> list:
    """(t, t_prev) for consecutive entries of a descending timestep list, the last going to -1 (the data)."""
    return list(zip(timesteps, timesteps[1:] + [-1]))


@torch.no_grad()
def ddim_sample(model, sched: NoiseSchedule, shape, *, steps: int = 50, eta: float = 0.0, sigma_hat: bool = False,
                spacing: str = "leading", x_T: torch.Tensor | None = None, objective: str = "pred_noise",
                clip_denoised: bool = True, y=None, generator: torch.Generator | None = None, device=None,
                dtype=torch.float32, progress: bool = True, return_all_timesteps: bool = False,
                check_finite: bool = True):
    """DDIM sampling with ``steps`` steps on the timesteps of :func:`ddim_timesteps` (chapter 08).

    ``x_T`` is the starting noise (drawn with ``generator`` if None); each step is :func:`ddim_step` with the next
    entry of the list as t_prev, the last going to t_prev = -1 (ᾱ = 1). Returns x_0, or with
    ``return_all_timesteps`` the pair ``(xs, x_starts)`` of shapes (steps+1, *shape) and (steps, *shape).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_positive("eta", eta, allow_zero=True)
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    x = initial_noise(shape, x_T, generator, device, dtype)

    def step(x, t, t_prev):
        out = call_model(model, x, t, y)
        return ddim_step(sched, out, t, t_prev, x, eta=eta, sigma_hat=sigma_hat, objective=objective,
                         clip_denoised=clip_denoised, generator=generator, check_finite=check_finite)

    return run_steps(step, x, _pairs(timesteps), progress=progress, desc="DDIM sampling",
                     return_all_timesteps=return_all_timesteps)


@torch.no_grad()
def ddim_invert(model, sched: NoiseSchedule, x_start: torch.Tensor, *, steps: int = 50, spacing: str = "leading",
                objective: str = "pred_noise", y=None, progress: bool = True, return_all_timesteps: bool = False,
                check_finite: bool = True):
    """Deterministic DDIM inversion x_0 → x_T: the η = 0 update run forwards in time (chapter 08, eq. ``eq-ddim-invert``).

    The timesteps of :func:`ddim_timesteps` are visited in increasing order. Going from level ``s`` (s = -1 is the
    data, ᾱ = 1) to the next ``t``, the network is evaluated at (x_s, t) and its output converted to ε̂ with ᾱ_t
    (:func:`ddpm_lib.diffusion.model_predictions` at ``t``, no clipping): the update would need ε̂ at x_t, which is
    unknown, and this is the usual first-order approximation. Then x̂_0 = (x_s - √(1-ᾱ_s) ε̂)/√ᾱ_s and
    x_t = √ᾱ_t x̂_0 + √(1-ᾱ_t) ε̂. For ``pred_noise`` this is diffusers' ``DDIMInverseScheduler``; for ``pred_x0`` and
    ``pred_v`` diffusers converts the output with ᾱ_s instead, which is undefined for ``pred_x0`` at the first step
    (ᾱ_s = 1). ``ddim_sample(..., x_T=result, eta=0)`` with the same steps and spacing maps the result back close
    to x_0; the error shrinks as ``steps`` grows. Returns x_T, or with ``return_all_timesteps`` the pair
    ``(xs, x_starts)``: the states x_0, ..., x_T (steps+1 of them) and the x̂_0 of each step.
    """
    check_choice("objective", objective, OBJECTIVES)
    if not isinstance(x_start, torch.Tensor):
        raise TypeError(f"x_start must be a torch.Tensor, got {type(x_start).__name__}")
    timesteps = ddim_timesteps(sched.T, steps, spacing).flip(0).tolist()

    def step(x, s, t):
        out = call_model(model, x, t, y)
        if check_finite:
            assert_finite(out, "the model output", t)
        pred_noise, _ = model_predictions(None, sched, x, t, objective, clip_x_start=False, model_output=out)
        a_s = sched.alphas_cumprod[s].item() if s >= 0 else 1.0
        a_t = sched.alphas_cumprod[t].item()
        x0 = (x - math.sqrt(1 - a_s) * pred_noise) / math.sqrt(a_s)
        x_next = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * pred_noise
        if check_finite:
            assert_finite(x_next, "the sample", t)
        return x_next, x0

    pairs = list(zip([-1] + timesteps[:-1], timesteps))
    return run_steps(step, x_start, pairs, progress=progress, desc="DDIM inversion",
                     return_all_timesteps=return_all_timesteps)
