"""Checks for the code exercises of chapter 04 (predicting the noise; the v-parameterization)."""

from __future__ import annotations

import torch

from ..diffusion import predict_noise_from_v, predict_start_from_v
from ..samplers import ddpm_step
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["check_x0_eps_from_v", "check_eps_sample_step"]


def check_x0_eps_from_v(fn) -> None:
    """Exercise ``ex-04-from-v``: ``fn(sched, x_t, t, v)`` must return the pair (x̂_0, ε̂) that a v-prediction
    determines (chapter 04, eq. ``eq-conversions``), for a batch with one code timestep per example. The references
    are :func:`ddpm_lib.predict_start_from_v` and :func:`ddpm_lib.predict_noise_from_v`."""
    g = torch.Generator().manual_seed(0)
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(100)):
        for shape in ((8, 1, 8, 8), (5, 2)):
            x_t = torch.randn(shape, generator=g, dtype=torch.float64)
            v = torch.randn(shape, generator=g, dtype=torch.float64)
            t = torch.randint(0, sched.T, (shape[0],), generator=g)
            what = f"x0_eps_from_v (T = {sched.T}, batch of shape {shape})"
            got = call(fn, what, sched, x_t, t, v,
                       hint="reshape the (B,) coefficients to (B, 1, ..., 1) before multiplying the batch.")
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise AssertionError(f"{what}: return a pair (x0, eps), got {type(got).__name__}")
            c = sched.sqrt_alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
            s = sched.sqrt_one_minus_alphas_cumprod[t].reshape(c.shape)
            a = sched.alphas[t].sqrt().reshape(c.shape)
            mistakes = {"sign error: x_0 = sqrt(abar_t) x_t MINUS sqrt(1 - abar_t) v.": c * x_t + s * v,
                        "the coefficients are swapped: sqrt(abar_t) multiplies x_t.": s * x_t - c * v,
                        "use alphas_cumprod (abar_t), not the one-step alphas.": a * x_t - (1 - a**2).sqrt() * v}
            if shape[0] == shape[-1]:  # B equals the image width: a missing reshape broadcasts silently
                mistakes["reshape the (B,) coefficients to (B, 1, ..., 1); here B equals the image width, so "
                         "without it they broadcast along the width."] = c.flatten() * x_t - s.flatten() * v
            assert_close(got[0], predict_start_from_v(sched, x_t, t, v), what + ": x0",
                         "x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (rotate (x_t, v) back by -phi).", mistakes)
            assert_close(got[1], predict_noise_from_v(sched, x_t, t, v), what + ": eps",
                         "eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v.",
                         {"sign error: eps = sqrt(1 - abar_t) x_t PLUS sqrt(abar_t) v.": s * x_t - c * v,
                          "the coefficients are swapped: sqrt(1 - abar_t) multiplies x_t.": c * x_t + s * v})


def check_eps_sample_step(fn) -> None:
    """Exercise ``ex-04-eps-step``: ``fn(sched, x_t, t, eps_hat, z)`` must return one step of Algorithm 4 at the code
    timestep ``t`` (an int), eq. ``eq-sample-step-eps`` with σ_t² = β̃_t, and no noise at the last step (code index
    0). No clipping. The reference is :func:`ddpm_lib.ddpm_step` with ``objective="pred_noise"``,
    ``clip_denoised=False``, which computes the same mean through x̂_0 and the posterior mean."""
    g = torch.Generator().manual_seed(1)
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(20)):
        for t in (sched.T - 1, sched.T // 2, 1, 0):
            x_t = torch.randn(64, 2, generator=g, dtype=torch.float64)
            eps_hat = torch.randn(64, 2, generator=g, dtype=torch.float64)
            z = torch.randn(64, 2, generator=g, dtype=torch.float64)
            what = f"eps_sample_step (T = {sched.T}, code index t = {t})"
            got = call(fn, what, sched, x_t, t, eps_hat, z)
            want, _ = ddpm_step(sched, eps_hat, t, x_t, variance="fixed_small", objective="pred_noise",
                                clip_denoised=False, variance_noise=z)
            a, ab, b = sched.alphas[t], sched.alphas_cumprod[t], sched.betas[t]
            noise = sched.posterior_variance[t].sqrt() * z
            mistakes = {
                "source 000's printed eq. (7): the factor of x_t is 1/sqrt(alpha_t) and the noise term has a minus sign.":
                    x_t / ab.sqrt() + b / ((1 - ab) * a).sqrt() * eps_hat + noise,
                "sign error: subtract beta_t / sqrt(1 - abar_t) * eps_hat.":
                    (x_t + b / (1 - ab).sqrt() * eps_hat) / a.sqrt() + noise,
                "the factor of x_t is 1/sqrt(alpha_t), not 1/sqrt(abar_t).":
                    x_t / ab.sqrt() - b / ((1 - ab) * a).sqrt() * eps_hat + noise,
                "the step variance here is beta_tilde_t (posterior_variance), not beta_t.":
                    (x_t - b / (1 - ab).sqrt() * eps_hat) / a.sqrt() + (b.sqrt() * z if t > 0 else 0),
            }
            if t == 0:
                mistakes["no noise at the last step (code index 0): return the mean."] = (
                    (x_t - b / (1 - ab).sqrt() * eps_hat) / a.sqrt()
                    + (0.5 * sched.posterior_log_variance_clipped[0]).exp() * z)
            assert_close(got, want, what,
                         "x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + sqrt(beta_tilde_t) z, "
                         "with z dropped at t = 0.", mistakes, rtol=1e-8, atol=1e-9)
