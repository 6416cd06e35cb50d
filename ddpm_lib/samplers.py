"""Ancestral (DDPM) sampling: Algorithm 2 (x0-prediction) and Algorithm 4 (ε-prediction) of the source series.

One step draws x_{t-1} ~ p_θ(x_{t-1}|x_t) = N(μ̃(x_t, x̂_0), σ_t² I) where x̂_0 comes from the model
(chapter 04, eqs. ``eq-mu-from-eps`` and ``eq-sample-step-eps``; chapter 03 writes it with x̂_0, eq. ``eq-x0-sample-step``).
σ_t² is β̃_t (``"fixed_small"``) or β_t (``"fixed_large"``), the two choices of Ho et al. (2020), §3.2, or the
network's own interpolation between them (``"learned_range"``, chapter 07).

As in diffusers, the step is a function of the model's output (:func:`ddpm_step`, the twin of
:func:`ddpm_lib.ddim.ddim_step`); :func:`p_sample` is one network call followed by :func:`ddpm_step`, and
:func:`p_sample_loop` runs it from t = T-1 down to 0.
"""

from __future__ import annotations

import math

import torch

from ._checks import OBJECTIVES, VARIANCES, assert_finite, check_choice, check_timestep
from ._loop import initial_noise, randn, run_steps
from .diffusion import _prepare, call_model, p_mean_variance
from .schedules import NoiseSchedule

__all__ = ["ddpm_step", "p_sample", "p_sample_loop"]


def ddpm_step(sched: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor, *,
              variance: str = "fixed_small", objective: str = "pred_noise", clip_denoised: bool = True,
              variance_noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
              check_finite: bool = True):
    """One step of Algorithm 4 from the model's output: x_{t-1} = μ_θ(x_t, t) + σ_t z (chapter 06).

    ``t`` is one timestep for the whole batch. The mean is :func:`ddpm_lib.diffusion.p_mean_variance` at
    ``model_output`` (twice the channels of ``x_t`` with ``variance="learned_range"``); z is ``variance_noise``
    or, if None, drawn with ``generator``. At the last step (code index t = 0) no noise is added and the step
    returns the mean (source 000, section 2). Equal to diffusers' ``DDPMScheduler.step`` (``prediction_type``
    epsilon / sample / v_prediction for ``objective`` pred_noise / pred_x0 / pred_v, ``variance_type`` =
    ``variance``, ``clip_sample`` = ``clip_denoised``). With ``check_finite`` a model output or a result that is
    not finite raises ``FloatingPointError`` naming t. Returns ``(x_prev, x_start)``.
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("objective", objective, OBJECTIVES)
    t = check_timestep(t, sched.T)
    _prepare(sched, t, x_t)
    if check_finite:
        assert_finite(model_output, "the model output", t)
    mean, _, log_var, x_start = p_mean_variance(None, sched, x_t, t, variance=variance, clip_denoised=clip_denoised,
                                                objective=objective, model_output=model_output)
    if t == 0:
        x_prev = mean  # the last step outputs the mean (source 000, section 2)
    else:
        if variance_noise is None:
            variance_noise = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        elif variance_noise.shape != x_t.shape:
            raise ValueError(f"variance_noise has shape {tuple(variance_noise.shape)} but x_t has shape "
                             f"{tuple(x_t.shape)}; they must match")
        # σ_t = exp(½ log σ_t²)
        sigma = torch.exp(0.5 * log_var) if isinstance(log_var, torch.Tensor) else math.exp(0.5 * log_var)
        x_prev = mean + sigma * variance_noise
    if check_finite:
        assert_finite(x_prev, "the sample", t)
    return x_prev, x_start


@torch.no_grad()
def p_sample(model, sched: NoiseSchedule, x: torch.Tensor, t, *, variance_noise: torch.Tensor | None = None,
             variance: str = "fixed_small", clip_denoised: bool = True, objective: str = "pred_noise", y=None,
             generator: torch.Generator | None = None, check_finite: bool = True):
    """One step of Algorithm 4 with the network: ``model(x, t[, y])``, then :func:`ddpm_step` (chapter 06).

    ``t`` is one timestep for the whole batch (as in lucidrains' ``p_sample``). Returns ``(x_prev, x_start)``.
    """
    check_choice("variance", variance, VARIANCES)
    t = check_timestep(t, sched.T)
    out = call_model(model, x, t, y, learned_variance=variance == "learned_range")
    return ddpm_step(sched, out, t, x, variance=variance, objective=objective, clip_denoised=clip_denoised,
                     variance_noise=variance_noise, generator=generator, check_finite=check_finite)


@torch.no_grad()
def p_sample_loop(model, sched: NoiseSchedule, shape, *, x_T: torch.Tensor | None = None,
                  variance: str = "fixed_small", clip_denoised: bool = True, objective: str = "pred_noise", y=None,
                  generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                  progress: bool = True, return_all_timesteps: bool = False, check_finite: bool = True):
    """Algorithm 4 from x_T ~ N(0, I) down to x_0 (chapter 06).

    ``x_T`` is the starting noise (drawn with ``generator`` if None); every step's z is drawn with ``generator`` in
    order. Returns x_0, or with ``return_all_timesteps`` the pair ``(xs, x_starts)``: ``xs`` of shape (T+1, *shape)
    holds x_T, ..., x_0 and ``x_starts`` of shape (T, *shape) the predicted x̂_0 at each step (progressive
    generation). ``progress`` shows a tqdm bar; ``check_finite`` stops at the first step whose model output or
    sample is not finite.
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("objective", objective, OBJECTIVES)
    x = initial_noise(shape, x_T, generator, device, dtype)

    def step(x, t, _t_next):
        return p_sample(model, sched, x, t, variance=variance, clip_denoised=clip_denoised, objective=objective,
                        y=y, generator=generator, check_finite=check_finite)

    pairs = [(t, t - 1) for t in range(sched.T - 1, -1, -1)]
    return run_steps(step, x, pairs, progress=progress, desc="DDPM sampling",
                     return_all_timesteps=return_all_timesteps)
