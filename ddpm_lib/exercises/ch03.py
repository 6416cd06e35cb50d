"""Checks for the code exercises of chapter 03 (the posterior q(x_{t-1} | x_t, x_0) and Algorithm 2)."""

from __future__ import annotations

import torch

from ..diffusion import q_posterior
from ..samplers import ddpm_step
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["check_posterior_mean_variance", "check_x0_sample_step"]


def _col(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """a[t] reshaped to (B, 1, ..., 1) for a batch with ``ndim`` dimensions."""
    return a[t].reshape(-1, *([1] * (ndim - 1)))


def check_posterior_mean_variance(fn) -> None:
    """Exercise ``ex-03-q-posterior``: ``fn(sched, x_start, x_t, t)`` must return the mean and the variance of
    q(x_{t-1} | x_t, x_0) (chapter 03, eqs. ``eq-posterior-mean`` and ``eq-posterior-variance``) for a batch with
    one code timestep per example, the variance of shape (B, 1, ..., 1) or anything that broadcasts to the batch.
    The reference is :func:`ddpm_lib.q_posterior`, which reads the schedule's precomputed posterior buffers."""
    g = torch.Generator().manual_seed(0)
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(50)):
        for shape in ((8, 1, 8, 8), (6, 2), (1, 3)):
            x0 = torch.randn(shape, generator=g, dtype=torch.float64)
            xt = torch.randn(shape, generator=g, dtype=torch.float64)
            t = torch.randint(0, sched.T, (shape[0],), generator=g)
            t[0] = 0  # the first step, where alphabar_{t-1} = 1
            what = f"posterior_mean_variance (T = {sched.T}, batch of shape {shape})"
            got = call(fn, what, sched, x0, xt, t)
            if not (isinstance(got, (tuple, list)) and len(got) == 2):
                raise AssertionError(f"{what}: return a pair (mean, variance), got {type(got).__name__}")
            mean_lib, var_lib, _ = q_posterior(sched, x0, xt, t)
            a, b, ab = (_col(v, t, len(shape)) for v in (sched.alphas, sched.betas, sched.alphas_cumprod))
            ab_prev = _col(sched.alphas_cumprod_prev, t, len(shape))
            c1, c2 = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
            slipped = ab.sqrt() * b / (1 - ab) * x0 + a.sqrt() * (1 - ab) / (1 - ab) * xt  # alphabar_t for _{t-1}
            assert_close(got[0], mean_lib, what + ": the mean",
                         "mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) * x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / "
                         "(1 - abar_t) * x_t, with abar_{t-1} = alphas_cumprod_prev[t].",
                         {"the two coefficients are swapped: sqrt(abar_{t-1}) beta_t / (1 - abar_t) multiplies x_0.":
                              c2 * x0 + c1 * xt,
                          "the x_t coefficient has sqrt(alpha_t), not alpha_t.":
                              c1 * x0 + a * (1 - ab_prev) / (1 - ab) * xt,
                          "abar_{t-1} is alphas_cumprod_prev[t] (alphas_cumprod[t] is abar_t).": slipped})
            var = torch.as_tensor(got[1], dtype=torch.float64)
            try:
                var = torch.broadcast_to(var, shape)
            except RuntimeError as err:
                raise AssertionError(f"{what}: the variance has shape {tuple(var.shape)}, which does not broadcast "
                                     f"to the batch {shape}; give it shape (B, 1, ..., 1).") from err
            assert_close(var, torch.broadcast_to(torch.as_tensor(var_lib, dtype=torch.float64), shape), what + ": the variance",
                         "beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t (0 at the first step).",
                         {"the ratio is (1 - abar_{t-1}) / (1 - abar_t), not its inverse.":
                              torch.broadcast_to((1 - ab) / (1 - ab_prev) * b, shape)})


def check_x0_sample_step(fn) -> None:
    """Exercise ``ex-03-x0-step``: ``fn(sched, x_t, t, x0_hat, z)`` must return one step of Algorithm 2 for a
    batch at the code timestep ``t`` (an int): clip x̂_0 to [-1, 1], take the posterior mean μ̃_t(x_t, x̂_0) of eq.
    ``eq-x0-sample-step`` and add √β̃_t z, except at the last step (code index 0), which returns the mean. The
    reference is :func:`ddpm_lib.ddpm_step` with ``objective="pred_x0"`` and ``clip_denoised=True``."""
    g = torch.Generator().manual_seed(1)
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(20)):
        for t in (sched.T - 1, sched.T // 2, 1, 0):
            x_t = torch.randn(64, 2, generator=g, dtype=torch.float64)
            x0_hat = 1.8 * torch.randn(64, 2, generator=g, dtype=torch.float64)  # partly outside [-1, 1]
            z = torch.randn(64, 2, generator=g, dtype=torch.float64)
            what = f"x0_sample_step (T = {sched.T}, code index t = {t})"
            got = call(fn, what, sched, x_t, t, x0_hat, z)
            want, _ = ddpm_step(sched, x0_hat, t, x_t, variance="fixed_small", objective="pred_x0",
                                clip_denoised=True, variance_noise=z)
            c1, c2 = sched.posterior_mean_coef1[t], sched.posterior_mean_coef2[t]
            mean = c1 * x0_hat.clamp(-1, 1) + c2 * x_t
            mistakes = {"clip x0_hat to [-1, 1] before forming the mean.":
                            c1 * x0_hat + c2 * x_t + (sched.posterior_variance[t].sqrt() * z if t > 0 else 0),
                        "the variance of Algorithm 2 is beta_tilde_t (posterior_variance), not beta_t.":
                            mean + (sched.betas[t].sqrt() * z if t > 0 else 0),
                        "the swapped coefficients: posterior_mean_coef1 multiplies x0_hat, coef2 multiplies x_t.":
                            c2 * x0_hat.clamp(-1, 1) + c1 * x_t + (sched.posterior_variance[t].sqrt() * z if t > 0 else 0)}
            if t == 0:
                mistakes["no noise at the last step (code index 0): return the mean."] = (
                    mean + (0.5 * sched.posterior_log_variance_clipped[0]).exp() * z)
            assert_close(got, want, what,
                         "x_{t-1} = posterior_mean_coef2[t] x_t + posterior_mean_coef1[t] clip(x0_hat) "
                         "+ sqrt(posterior_variance[t]) z, and no noise at t = 0.", mistakes, rtol=1e-9, atol=1e-10)
