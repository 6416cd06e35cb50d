"""Ancestral (DDPM) sampling: Algorithm 2 (x0-prediction) and Algorithm 4 (ε-prediction) of the source series.

One step draws x_{t-1} ~ p_θ(x_{t-1}|x_t) = N(μ̃(x_t, x̂_0), σ_t² I) where x̂_0 comes from the model
(chapter 04, eqs. ``eq-mu-from-eps`` and ``eq-sample-step-eps``; chapter 03 writes it with x̂_0, eq. ``eq-x0-sample-step``).
σ_t² is β̃_t (``"fixed_small"``) or β_t (``"fixed_large"``), the two choices of Ho et al. (2020), §3.2.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_choice, check_timesteps
from .diffusion import OBJECTIVES, _at, _prepare, model_predictions, q_posterior
from .schedules import NoiseSchedule

__all__ = ["VARIANCES", "p_mean_variance", "p_sample", "p_sample_loop", "randn"]

VARIANCES = ("fixed_small", "fixed_large")


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn with ``generator`` (on the generator's device), then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _log_variance(sched: NoiseSchedule, t, x: torch.Tensor, variance: str):
    """log σ_t²: log β̃_t (clipped at the first step) or log β_t (with β̃_1 at the first step, as in Ho et al.'s code)."""
    if variance == "fixed_small":
        return _at(sched.posterior_log_variance_clipped, t, x)
    if isinstance(t, int):
        return math.log((sched.posterior_variance[1] if t == 0 and sched.T > 1 else sched.betas[t]).item())
    large = torch.cat([sched.posterior_variance[1:2], sched.betas[1:]]) if sched.T > 1 else sched.betas
    return _at(large.log(), t, x)


def p_mean_variance(model, sched: NoiseSchedule, x: torch.Tensor, t, *, variance: str = "fixed_small",
                    clip_denoised: bool = True, objective: str = "pred_noise", y=None,
                    model_output: torch.Tensor | None = None):
    """Mean, variance and log-variance of p_θ(x_{t-1}|x_t), and the predicted x̂_0 (chapter 06).

    The mean is the posterior mean μ̃_t(x_t, x̂_0) of eq. ``eq-posterior-mean`` evaluated at the model's x̂_0
    (clamped to [-1, 1] when ``clip_denoised``). Returns ``(model_mean, model_variance, model_log_variance, x_start)``.
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("objective", objective, OBJECTIVES)
    t = _prepare(sched, t, x, "x")
    _, x_start = model_predictions(model, sched, x, t, objective, clip_x_start=clip_denoised, y=y,
                                   model_output=model_output)
    model_mean, _, _ = q_posterior(sched, x_start, x, t)
    log_var = _log_variance(sched, t, x, variance)
    var = torch.exp(log_var) if isinstance(log_var, torch.Tensor) else math.exp(log_var)
    return model_mean, var, log_var, x_start


@torch.no_grad()
def p_sample(model, sched: NoiseSchedule, x: torch.Tensor, t: int, *, noise: torch.Tensor | None = None,
             variance: str = "fixed_small", clip_denoised: bool = True, objective: str = "pred_noise", y=None,
             generator: torch.Generator | None = None):
    """One step of Algorithm 4: x_{t-1} = μ_θ(x_t, t) + σ_t z, with z = 0 at the last step (code index t = 0).

    ``t`` is an int (as in lucidrains' ``p_sample``). ``noise`` is z; if None it is drawn with ``generator``.
    Returns ``(x_prev, x_start)``.
    """
    if isinstance(t, torch.Tensor):
        raise TypeError("t must be an int in p_sample (one step for the whole batch)")
    t = check_timesteps(t, sched.T)
    mean, _, log_var, x_start = p_mean_variance(model, sched, x, t, variance=variance, clip_denoised=clip_denoised,
                                                objective=objective, y=y)
    if t == 0:
        return mean, x_start  # the last step outputs the mean (source 000, section 2)
    if noise is None:
        noise = randn(x.shape, generator, x.device, x.dtype)
    elif noise.shape != x.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x has shape {tuple(x.shape)}; they must match")
    sigma = math.exp(0.5 * log_var)  # σ_t = exp(½ log σ_t²)
    return mean + sigma * noise, x_start


def _progress(iterable, progress: bool, desc: str, total: int | None = None):
    if not progress:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False)


@torch.no_grad()
def p_sample_loop(model, sched: NoiseSchedule, shape, *, noise: torch.Tensor | None = None,
                  variance: str = "fixed_small", clip_denoised: bool = True, objective: str = "pred_noise", y=None,
                  generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                  progress: bool = True, return_all_timesteps: bool = False):
    """Algorithm 4 from x_T ~ N(0, I) down to x_0 (chapter 06).

    ``noise`` is x_T (drawn with ``generator`` if None); every step's z is drawn with ``generator`` in order.
    Returns x_0, or with ``return_all_timesteps`` the pair ``(xs, x_starts)``: ``xs`` of shape (T+1, *shape)
    holds x_T, ..., x_0 and ``x_starts`` of shape (T, *shape) the predicted x̂_0 at each step (progressive generation).
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("objective", objective, OBJECTIVES)
    shape = tuple(shape)
    if noise is None:
        x = randn(shape, generator, device, dtype)
    else:
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise (x_T) has shape {tuple(noise.shape)} but shape is {shape}")
        x = noise
    xs, x_starts = [x], []
    for t in _progress(range(sched.T - 1, -1, -1), progress, "DDPM sampling", sched.T):
        x, x_start = p_sample(model, sched, x, t, variance=variance, clip_denoised=clip_denoised,
                              objective=objective, y=y, generator=generator)
        if return_all_timesteps:
            xs.append(x)
            x_starts.append(x_start)
    if return_all_timesteps:
        return torch.stack(xs), torch.stack(x_starts)
    return x
