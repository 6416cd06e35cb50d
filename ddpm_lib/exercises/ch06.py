"""Checks for the code exercises of chapter 06 (sampling: Algorithm 4 and the exact denoiser of a Gaussian mixture).

Both checks run the reader's function in float64 on the 8-Gaussian mixture of the chapter and on an uneven mixture,
compare it with the library (``p_sample`` and ``GaussianMixture.posterior_mean_x0``) and name the mistake when the
answer reproduces a plausible slip.
"""

from __future__ import annotations

import torch

from ..data import GaussianMixture, make_gaussian_mixture
from ..exact import OracleDenoiser
from ..samplers import p_sample
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["check_ancestral_loop", "check_mixture_posterior_mean"]


def _slipped_loop(eps_model, sched, x_T, zs, sigma2, *, upwards=False, std_is_variance=False, noise_at_0=False,
                  cumulative_alpha=False):
    """Algorithm 4 with one of the slips that the check recognises switched on (all off: the correct loop)."""
    steps = range(sched.T) if upwards else range(sched.T - 1, -1, -1)
    one_step = sched.alphas_cumprod if cumulative_alpha else sched.alphas
    x = x_T
    for t in steps:
        eps = eps_model(x, torch.full((x.shape[0],), t))
        x = (x - sched.betas[t] / sched.sqrt_one_minus_alphas_cumprod[t] * eps) / one_step[t].sqrt()
        if t > 0 or noise_at_0:
            x = x + (sigma2[t] if std_is_variance else sigma2[t].sqrt()) * zs[t]
    return x


def check_ancestral_loop(fn) -> None:
    """Exercise ``ex-06-ancestral-loop``: ``fn(eps_model, sched, x_T, zs, sigma2)`` must run Algorithm 4 (chapter 06,
    eq. ``eq-algorithm-4-step``) from ``x_T`` at code indices t = T-1, ..., 0 with the noise ``zs[t]`` and the variance
    ``sigma2[t]``, without clipping and with no noise at the last step (t = 0), and return x_0.

    Tried with σ_t² = β_t and β̃_t on two short schedules, the exact denoiser of the 8 Gaussians as ``eps_model``;
    the reference is :func:`ddpm_lib.p_sample` (``variance="fixed_large"`` / ``"fixed_small"``) fed the same noises."""
    mixture = make_gaussian_mixture("8gaussians")
    g = torch.Generator().manual_seed(0)
    for sched in (NoiseSchedule.linear(10, beta_start=0.01, beta_end=0.2), NoiseSchedule.cosine(30)):
        eps_model = OracleDenoiser(mixture, sched)
        for variance, sigma2 in (("fixed_large", sched.betas), ("fixed_small", sched.posterior_variance)):
            x_T = torch.randn(64, 2, generator=g, dtype=torch.float64)
            zs = torch.randn(sched.T, 64, 2, generator=g, dtype=torch.float64)
            what = f"ancestral_loop (T = {sched.T}, sigma2 = {'beta' if variance == 'fixed_large' else 'beta_tilde'})"
            got = call(fn, what, eps_model, sched, x_T, zs, sigma2.clone(),
                       hint="call eps_model(x, t_batch) with t_batch = torch.full((B,), t).")
            want = x_T
            for t in range(sched.T - 1, -1, -1):
                want, _ = p_sample(eps_model, sched, want, t, variance_noise=zs[t], variance=variance,
                                   clip_denoised=False)
            args = (eps_model, sched, x_T, zs, sigma2)
            mistakes = {
                "the chain runs backwards in time: code indices T-1, T-2, ..., 0.": _slipped_loop(*args, upwards=True),
                "sigma2[t] is a variance: the noise term is sqrt(sigma2[t]) * z.":
                    _slipped_loop(*args, std_is_variance=True),
                "the mean divides by sqrt(alpha_t) of one step, not sqrt(alphabar_t) (the source's printed eq. (7)).":
                    _slipped_loop(*args, cumulative_alpha=True),
            }
            if variance == "fixed_large":  # beta_tilde_1 = 0 hides this one
                mistakes["no noise at the last step (code index 0): it returns the mean."] = (
                    _slipped_loop(*args, noise_at_0=True))
            assert_close(got, want, what,
                         "x_{t-1} = (x_t - beta_t / sqrt(1 - alphabar_t) eps) / sqrt(alpha_t) + sqrt(sigma2[t]) zs[t] "
                         "for t = T-1, ..., 1, and the mean alone at t = 0.", mistakes, rtol=1e-9, atol=1e-10)


def _uneven_mixture() -> GaussianMixture:
    """Three components with different weights and widths: slips that the 8 equal Gaussians hide show here."""
    return GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 0.5], [0.0, 2.0]], dtype=torch.float64),
                           torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64),
                           torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


def _slipped_posterior_mean(mixture, x_t, alpha_bar, *, scaled_means=True, noisy_variance=True, weights=True,
                            root_in_gain=True):
    """E[x_0 | x_t] of a mixture with one of the recognised slips (all defaults: the correct formula)."""
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    var0 = mixture.stds**2
    v = ab * var0 + 1 - ab if noisy_variance else var0
    centres = ab.sqrt() * mixture.means if scaled_means else mixture.means
    sq = (x_t[:, None, :] - centres[None]).pow(2).sum(-1)
    log_r = -sq / (2 * v) - mixture.dim / 2 * v.log() + (mixture.weights.log() if weights else 0)
    resp = torch.softmax(log_r, dim=1)
    gain = (ab.sqrt() if root_in_gain else 1) * var0 / (ab * var0 + 1 - ab)
    cond = mixture.means[None] + gain[None, :, None] * (x_t[:, None, :] - ab.sqrt() * mixture.means[None])
    return (resp[:, :, None] * cond).sum(1)


def check_mixture_posterior_mean(fn) -> None:
    """Exercise ``ex-06-exact-denoiser``: ``fn(mixture, x_t, alpha_bar)`` must return E[x_0 | x_t] for x_t =
    √ᾱ x_0 + √(1-ᾱ) ε and x_0 from a :class:`ddpm_lib.data.GaussianMixture` (its ``means``, ``stds`` and
    ``weights``), for a batch ``x_t`` of shape (B, d) and one number ``alpha_bar``: the exact denoiser of chapter 06.

    Tried on the 8 Gaussians and on an uneven three-component mixture at three noise levels, with a point far from
    every component among the inputs (where exp of the log-densities underflows); the reference is
    :meth:`GaussianMixture.posterior_mean_x0`, the formula behind :class:`ddpm_lib.exact.OracleDenoiser`."""
    g = torch.Generator().manual_seed(0)
    for name, mixture in (("8 Gaussians", make_gaussian_mixture("8gaussians")), ("uneven mixture", _uneven_mixture())):
        for alpha_bar in (0.9, 0.3, 0.02):
            x_0 = mixture.sample(255, generator=g, dtype=torch.float64)
            x_t = alpha_bar**0.5 * x_0 + (1 - alpha_bar) ** 0.5 * torch.randn(x_0.shape, generator=g,
                                                                              dtype=torch.float64)
            x_t = torch.cat([x_t, torch.tensor([[40.0, -40.0]], dtype=torch.float64)])  # far from every component
            what = f"mixture_posterior_mean ({name}, alpha_bar = {alpha_bar})"
            got = call(fn, what, mixture, x_t, alpha_bar)
            args = (mixture, x_t, alpha_bar)
            mistakes = {
                "compare x_t with the noised centres sqrt(alphabar) mu_k in the responsibilities.":
                    _slipped_posterior_mean(*args, scaled_means=False),
                "the responsibilities use the variance of x_t given the component, alphabar s_k^2 + 1 - alphabar.":
                    _slipped_posterior_mean(*args, noisy_variance=False),
                "each component's responsibility includes its weight w_k.": _slipped_posterior_mean(*args, weights=False),
                "the gain of a component is sqrt(alphabar) s_k^2 / (alphabar s_k^2 + 1 - alphabar).":
                    _slipped_posterior_mean(*args, root_in_gain=False),
            }
            if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
                raise AssertionError(f"{what}: the result is not finite. Hint: compute the responsibilities with a "
                                     "softmax of the log-densities (log-sum-exp); exp of the log-densities underflows "
                                     "to 0/0 for a point far from every component.")
            assert_close(got, mixture.posterior_mean_x0(x_t, alpha_bar), what,
                         "E[x_0 | x_t] = sum_k r_k(x_t) (mu_k + gain_k (x_t - sqrt(alphabar) mu_k)), with r_k the "
                         "posterior probability of component k given x_t.", mistakes, rtol=1e-9, atol=1e-10)
