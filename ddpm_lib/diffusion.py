"""The forward process, the three parameterizations of the network's output, and the reverse-step distribution.

- :func:`q_sample` draws x_t ~ q(x_t | x_0) (chapter 01, eq. ``eq-q-xt-x0``).
- :func:`q_posterior` is q(x_{t-1} | x_t, x_0) (chapter 03, eqs. ``eq-posterior-mean``, ``eq-posterior-variance``).
- :func:`predict_start_from_noise` / :func:`predict_noise_from_start` convert between x_0 and ε
  (chapter 04, eq. ``eq-x0-from-eps``); :func:`predict_v` / :func:`predict_start_from_v` /
  :func:`predict_noise_from_v` do the same for v = √ᾱ ε - √(1-ᾱ) x_0 (chapter 04, eq. ``eq-v-def``).
- :func:`model_predictions` turns a model's output into the pair (ε̂, x̂_0) for any objective.
- :func:`p_mean_variance` is p_θ(x_{t-1} | x_t): the posterior mean at x̂_0 and the chosen variance σ_t²
  (chapter 06); the DDPM step (:func:`ddpm_lib.samplers.ddpm_step`) and the bound
  (:func:`ddpm_lib.likelihood.vlb_terms`) both use it.

``t`` is one timestep for the whole batch (an int, a NumPy int, a 0-d or one-element integer tensor) or an integer
tensor of shape (B,) with values 0..T-1; index t is the paper's t+1. Names follow lucidrains' ``GaussianDiffusion``.
"""

from __future__ import annotations

import math

import torch

from ._checks import OBJECTIVES, VARIANCES, check_batch, check_choice, check_same_shape, check_timesteps
from .schedules import NoiseSchedule, extract

__all__ = [
    "q_sample",
    "q_posterior",
    "predict_start_from_noise",
    "predict_noise_from_start",
    "predict_v",
    "predict_start_from_v",
    "predict_noise_from_v",
    "call_model",
    "split_variance_output",
    "model_predictions",
    "model_log_variance",
    "p_mean_variance",
]


def _at(a: torch.Tensor, t, x: torch.Tensor):
    """a[t] as a Python float (t an int) or as a (B, 1, ..., 1) tensor in x's dtype (t a tensor)."""
    if isinstance(t, int):
        return a[t].item()
    return extract(a, t, x)


def _prepare(sched: NoiseSchedule, t, x: torch.Tensor, x_name: str = "x_t"):
    """Check ``sched``, ``x`` and ``t``; return ``t`` as an int (one step) or a long tensor of shape (B,)."""
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{x_name} must be a torch.Tensor, got {type(x).__name__}")
    t = check_timesteps(t, sched.T)
    if isinstance(t, torch.Tensor):
        check_batch(t, x, "t", x_name)
    return t


def q_sample(sched: NoiseSchedule, x_start: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (chapter 01, eq. ``eq-q-xt-x0``; source 000, eq. 3).

    ``noise`` is ε; if None it is drawn with ``torch.randn_like``.
    """
    t = _prepare(sched, t, x_start, "x_start")
    if noise is None:
        noise = torch.randn_like(x_start)
    check_same_shape(noise, x_start, "noise", "x_start")
    return _at(sched.sqrt_alphas_cumprod, t, x_start) * x_start + _at(sched.sqrt_one_minus_alphas_cumprod, t, x_start) * noise


def q_posterior(sched: NoiseSchedule, x_start: torch.Tensor, x_t: torch.Tensor, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0).

    μ̃_t = β_t √ᾱ_{t-1}/(1-ᾱ_t) x_0 + (1-ᾱ_{t-1}) √α_t/(1-ᾱ_t) x_t and β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t)
    (chapter 03, eqs. ``eq-posterior-mean`` and ``eq-posterior-variance``). The variance terms have shape
    (B, 1, ..., 1) (or are floats when ``t`` is one timestep).
    """
    t = _prepare(sched, t, x_t)
    check_same_shape(x_start, x_t, "x_start", "x_t")
    mean = _at(sched.posterior_mean_coef1, t, x_t) * x_start + _at(sched.posterior_mean_coef2, t, x_t) * x_t
    return mean, _at(sched.posterior_variance, t, x_t), _at(sched.posterior_log_variance_clipped, t, x_t)


def predict_start_from_noise(sched: NoiseSchedule, x_t: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """x_0 = x_t/√ᾱ_t - √(1/ᾱ_t - 1) ε (chapter 04, eq. ``eq-x0-from-eps``; the source 000's eq. 4 has the wrong sign).

    ``noise`` is ε, or the network's estimate ε̂ of it."""
    t = _prepare(sched, t, x_t)
    check_same_shape(noise, x_t, "noise", "x_t")
    return _at(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _at(sched.sqrt_recipm1_alphas_cumprod, t, x_t) * noise


def predict_noise_from_start(sched: NoiseSchedule, x_t: torch.Tensor, t, x_start: torch.Tensor) -> torch.Tensor:
    """ε = (x_t/√ᾱ_t - x_0) / √(1/ᾱ_t - 1), eq. ``eq-x0-from-eps`` solved for ε (chapter 04)."""
    t = _prepare(sched, t, x_t)
    check_same_shape(x_start, x_t, "x_start", "x_t")
    return (_at(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / _at(sched.sqrt_recipm1_alphas_cumprod, t, x_t)


def predict_v(sched: NoiseSchedule, x_start: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022; chapter 04, eq. ``eq-v-def``)."""
    t = _prepare(sched, t, x_start, "x_start")
    check_same_shape(noise, x_start, "noise", "x_start")
    return _at(sched.sqrt_alphas_cumprod, t, x_start) * noise - _at(sched.sqrt_one_minus_alphas_cumprod, t, x_start) * x_start


def predict_start_from_v(sched: NoiseSchedule, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """x_0 = √ᾱ_t x_t - √(1-ᾱ_t) v (chapter 04, eq. ``eq-v-def`` solved for x_0)."""
    t = _prepare(sched, t, x_t)
    check_same_shape(v, x_t, "v", "x_t")
    return _at(sched.sqrt_alphas_cumprod, t, x_t) * x_t - _at(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def predict_noise_from_v(sched: NoiseSchedule, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """ε = √ᾱ_t v + √(1-ᾱ_t) x_t (chapter 04, eq. ``eq-v-def`` solved for ε)."""
    t = _prepare(sched, t, x_t)
    check_same_shape(v, x_t, "v", "x_t")
    return _at(sched.sqrt_alphas_cumprod, t, x_t) * v + _at(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t


def call_model(model, x_t: torch.Tensor, t, y=None, *, learned_variance: bool = False) -> torch.Tensor:
    """Evaluate ``model(x_t, t)`` or, when a label is given, ``model(x_t, t, y)``; ``t`` is passed as a (B,) tensor.

    The output must have the shape of ``x_t``, or twice its channels (dimension 1) with ``learned_variance``
    (a network that also predicts its variance, chapter 07).
    """
    if isinstance(t, int):
        t = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    out = model(x_t, t) if y is None else model(x_t, t, y)
    expected = tuple(x_t.shape)
    if learned_variance:
        expected = (expected[0], 2 * expected[1]) + expected[2:]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model output must be a tensor of shape {expected} "
                         f"({'twice the channels of' if learned_variance else 'the shape of'} x_t), got {shape}")
    return out


def split_variance_output(model_output: torch.Tensor, x_t: torch.Tensor):
    """Split the output of a network that learns its variance (2C channels) into the prediction (first C channels)
    and the interpolation value v ∈ [-1, 1] of eq. ``eq-learned-range`` (last C channels) (chapter 07)."""
    expected = (x_t.shape[0], 2 * x_t.shape[1]) + tuple(x_t.shape[2:])
    if not isinstance(model_output, torch.Tensor) or tuple(model_output.shape) != expected:
        got = tuple(model_output.shape) if isinstance(model_output, torch.Tensor) else type(model_output).__name__
        raise ValueError(f"model_output of a learned-variance model must have shape {expected} "
                         f"(twice the channels of x_t), got {got}")
    return model_output.chunk(2, dim=1)


def model_predictions(model, sched: NoiseSchedule, x_t: torch.Tensor, t, objective: str = "pred_noise",
                      clip_x_start: bool = False, y=None, model_output: torch.Tensor | None = None):
    """(ε̂, x̂_0) from the model's output under ``objective`` (chapter 04, the three objectives).

    - ``pred_noise``: the output is ε̂; x̂_0 from eq. ``eq-x0-from-eps``;
    - ``pred_x0``: the output is x̂_0; ε̂ from the same equation solved for ε;
    - ``pred_v``: the output is v̂; x̂_0 = √ᾱ x_t - √(1-ᾱ) v̂, then ε̂ from x̂_0.

    With ``clip_x_start`` x̂_0 is clamped to [-1, 1] and ε̂ is re-derived from the clamped x̂_0, so the
    pair stays consistent with x_t (lucidrains' ``rederive_pred_noise``; diffusers' ``use_clipped_model_output``).
    ``model_output`` may be passed to skip the model call (then ``model`` may be None).
    """
    check_choice("objective", objective, OBJECTIVES)
    t = _prepare(sched, t, x_t)
    out = call_model(model, x_t, t, y) if model_output is None else model_output
    check_same_shape(out, x_t, "model_output", "x_t")
    if objective == "pred_noise":
        pred_noise = out
        x_start = predict_start_from_noise(sched, x_t, t, pred_noise)
    elif objective == "pred_x0":
        x_start = out
        pred_noise = None
    else:
        x_start = predict_start_from_v(sched, x_t, t, out)
        pred_noise = None
    if clip_x_start:
        x_start = x_start.clamp(-1.0, 1.0)
        pred_noise = None
    if pred_noise is None:
        pred_noise = predict_noise_from_start(sched, x_t, t, x_start)
    return pred_noise, x_start


def model_log_variance(sched: NoiseSchedule, t, x: torch.Tensor, variance: str,
                       variance_values: torch.Tensor | None = None):
    """log σ_t² of p_θ(x_{t-1} | x_t) (chapter 06; chapter 07 for ``learned_range``).

    - ``fixed_small``: log β̃_t, clipped at the first step to log β̃ of the second (β̃ of the first step is 0);
    - ``fixed_large``: log β_t, with β̃ of the second step at the first step (Ho et al.'s code);
    - ``learned_range``: v log β_t + (1 - v) log β̃_t with v = (``variance_values`` + 1)/2 per element, the
      network's interpolation between the two (Nichol & Dhariwal 2021, eq. 15; chapter 07, eq. ``eq-learned-range``;
      β̃ clipped as in ``fixed_small``).

    A float when ``t`` is one timestep and the variance is fixed; a tensor otherwise.
    """
    check_choice("variance", variance, VARIANCES)
    if variance == "fixed_small":
        return _at(sched.posterior_log_variance_clipped, t, x)
    if variance == "fixed_large":
        large = torch.cat([sched.posterior_variance[1:2], sched.betas[1:]]) if sched.T > 1 else sched.betas
        return _at(large.log(), t, x)
    if variance_values is None:
        raise ValueError("variance='learned_range' needs the network's variance_values (its second half of channels)")
    check_same_shape(variance_values, x, "variance_values", "x")
    frac = (variance_values + 1) / 2
    return frac * _at(sched.betas.log(), t, x) + (1 - frac) * _at(sched.posterior_log_variance_clipped, t, x)


def p_mean_variance(model, sched: NoiseSchedule, x: torch.Tensor, t, *, variance: str = "fixed_small",
                    clip_denoised: bool = True, objective: str = "pred_noise", y=None,
                    model_output: torch.Tensor | None = None):
    """Mean, variance and log-variance of p_θ(x_{t-1}|x_t), and the predicted x̂_0 (chapter 06).

    The mean is the posterior mean μ̃_t(x_t, x̂_0) of eq. ``eq-posterior-mean`` evaluated at the model's x̂_0
    (clamped to [-1, 1] when ``clip_denoised``); the variance is :func:`model_log_variance`. ``model_output`` may be
    passed to skip the model call (then ``model`` may be None); with ``variance="learned_range"`` it has twice the
    channels of ``x``. Returns ``(model_mean, model_variance, model_log_variance, x_start)``.
    """
    check_choice("variance", variance, VARIANCES)
    check_choice("objective", objective, OBJECTIVES)
    t = _prepare(sched, t, x, "x")
    learned = variance == "learned_range"
    if model_output is None:
        model_output = call_model(model, x, t, y, learned_variance=learned)
    variance_values = None
    if learned:
        model_output, variance_values = split_variance_output(model_output, x)
    _, x_start = model_predictions(None, sched, x, t, objective, clip_x_start=clip_denoised,
                                   model_output=model_output)
    model_mean, _, _ = q_posterior(sched, x_start, x, t)
    log_var = model_log_variance(sched, t, x, variance, variance_values)
    var = torch.exp(log_var) if isinstance(log_var, torch.Tensor) else math.exp(log_var)
    return model_mean, var, log_var, x_start
