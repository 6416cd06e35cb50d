"""DDIM (Song et al. 2021): the non-Markovian sampler, its timestep spacings and deterministic inversion (chapter 08).

One step from code index t to t_prev (t_prev = -1 means ᾱ_prev = 1, i.e. the clean data):

    x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ_t²) ε̂ + σ_t z,
    σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_prev)                     (chapter 08, eqs. ``eq-ddim-step``, ``eq-ddim-sigma``)

η = 1 gives the DDPM posterior variance between the two steps, η = 0 a deterministic map.
Unlike diffusers' ``DDIMScheduler`` (which takes ``t - T // steps`` as the previous step), the previous step is the
actual next entry of the timestep list, which is what the update needs for trailing/linspace spacings and for
step counts that do not divide T.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import check_choice, check_timesteps
from .diffusion import OBJECTIVES, model_predictions
from .samplers import _progress, randn
from .schedules import NoiseSchedule

__all__ = ["SPACINGS", "ddim_timesteps", "ddim_sigma", "ddim_step", "ddim_sample", "ddim_invert"]

SPACINGS = ("leading", "trailing", "linspace")


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> torch.Tensor:
    """The descending code indices visited by a ``steps``-step sampler (equal to diffusers' ``timestep_spacing``).

    - ``leading``: 0, r, 2r, ..., (steps-1) r with r = T // steps — never reaches T-1 when r > 1;
    - ``trailing``: round(T - k T/steps) - 1 for k = 0..steps-1 — always starts at T-1 (Lin et al. 2024); equal to
      diffusers' entries, without the spurious last entry -1 that its ``np.arange`` produces for some (T, steps);
    - ``linspace``: round(linspace(0, T-1, steps)) — both ends included.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..T = 1..{T}, got {steps!r}")
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


def ddim_sigma(sched: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_prev)) (chapter 08, eq. ``eq-ddim-sigma``)."""
    a_t = sched.alphas_cumprod[t].item()
    a_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    return eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))


def _check_step(sched: NoiseSchedule, t, t_prev, eta) -> None:
    check_timesteps(t, sched.T)
    if isinstance(t_prev, bool) or not isinstance(t_prev, int) or not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be an int with -1 <= t_prev < t = {t}, got {t_prev!r}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")


def ddim_step(sched: NoiseSchedule, model_output: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, *,
              eta: float = 0.0, noise: torch.Tensor | None = None, objective: str = "pred_noise",
              clip_denoised: bool = True, generator: torch.Generator | None = None):
    """One DDIM update from x_t (code index ``t``) to x_{t_prev} (chapter 08, eq. ``eq-ddim-step``).

    x̂_0 and ε̂ come from :func:`ddpm_lib.diffusion.model_predictions`; with ``clip_denoised`` x̂_0 is clamped and
    ε̂ re-derived from it (diffusers' ``use_clipped_model_output=True``). ``noise`` is z, used only when σ_t > 0.
    Returns ``(x_prev, x_start)``.
    """
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise TypeError(f"t must be an int (one step for the whole batch), got a tensor of shape {tuple(t.shape)}")
        t = int(t)
    if isinstance(t_prev, torch.Tensor):
        t_prev = int(t_prev)
    _check_step(sched, t, t_prev, eta)
    pred_noise, x_start = model_predictions(None, sched, x_t, t, objective, clip_x_start=clip_denoised,
                                            model_output=model_output)
    a_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    sigma = ddim_sigma(sched, t, t_prev, eta)
    x_prev = math.sqrt(a_prev) * x_start + math.sqrt(max(1.0 - a_prev - sigma ** 2, 0.0)) * pred_noise
    if sigma > 0:
        if noise is None:
            noise = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        elif noise.shape != x_t.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x_t has shape {tuple(x_t.shape)}; they must match")
        x_prev = x_prev + sigma * noise
    return x_prev, x_start


def _model_output(model, x, t: int, y):
    from .diffusion import call_model
    return call_model(model, x, t, y)


@torch.no_grad()
def ddim_sample(model, sched: NoiseSchedule, shape, steps: int = 50, eta: float = 0.0, spacing: str = "leading", *,
                noise: torch.Tensor | None = None, objective: str = "pred_noise", clip_denoised: bool = True, y=None,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32, progress: bool = True,
                return_all_timesteps: bool = False):
    """DDIM sampling with ``steps`` steps on the timesteps of :func:`ddim_timesteps` (chapter 08).

    ``noise`` is x_T (drawn with ``generator`` if None). The last step goes to t_prev = -1 (ᾱ = 1). Returns x_0, or
    with ``return_all_timesteps`` the pair ``(xs, x_starts)`` of shapes (steps+1, *shape) and (steps, *shape).
    """
    check_choice("objective", objective, OBJECTIVES)
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    shape = tuple(shape)
    if noise is None:
        x = randn(shape, generator, device, dtype)
    else:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise (x_T) has shape {tuple(noise.shape)} but shape is {shape}")
        x = noise
    xs, x_starts = [x], []
    for i in _progress(range(len(timesteps)), progress, "DDIM sampling"):
        t = timesteps[i]
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = _model_output(model, x, t, y)
        x, x_start = ddim_step(sched, out, t, t_prev, x, eta=eta, objective=objective, clip_denoised=clip_denoised,
                               generator=generator)
        if return_all_timesteps:
            xs.append(x)
            x_starts.append(x_start)
    if return_all_timesteps:
        return torch.stack(xs), torch.stack(x_starts)
    return x


@torch.no_grad()
def ddim_invert(model, sched: NoiseSchedule, x_start: torch.Tensor, steps: int = 50, spacing: str = "leading", *,
                objective: str = "pred_noise", y=None, progress: bool = True,
                return_all_timesteps: bool = False) -> torch.Tensor:
    """Deterministic DDIM inversion x_0 → x_T: the η = 0 update run forwards in time (chapter 08, inversion).

    The timesteps of :func:`ddim_timesteps` are visited in increasing order; going from level ``s`` (s = -1 is the
    data) to the next ``t``, ε̂ = model(x_s, t) is evaluated at the target step t (the update would need ε̂ at x_t,
    which is unknown; this is the usual first-order approximation) and x_t = √ᾱ_t x̂_0 + √(1-ᾱ_t) ε̂ with
    x̂_0 = (x_s - √(1-ᾱ_s) ε̂)/√ᾱ_s. No clipping. ``ddim_sample(..., noise=x_T, eta=0)`` with the same steps
    and spacing maps the result back close to x_0; the error shrinks as ``steps`` grows.
    """
    check_choice("objective", objective, OBJECTIVES)
    timesteps = ddim_timesteps(sched.T, steps, spacing).flip(0).tolist()
    x = x_start
    xs = [x]
    s = -1
    for t in _progress(timesteps, progress, "DDIM inversion"):
        out = _model_output(model, x, t, y)
        pred_noise, _ = model_predictions(None, sched, x, t, objective, clip_x_start=False, model_output=out)
        a_s = sched.alphas_cumprod[s].item() if s >= 0 else 1.0
        a_t = sched.alphas_cumprod[t].item()
        x0 = (x - math.sqrt(1 - a_s) * pred_noise) / math.sqrt(a_s)
        x = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * pred_noise
        xs.append(x)
        s = t
    return torch.stack(xs) if return_all_timesteps else x
