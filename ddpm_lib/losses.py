"""The training loss of Algorithm 3 and its per-timestep weights (chapter 04; chapter 05 trains with it).

- :func:`p_losses` — Algorithm 3 of the source 000 (chapter 04, eq. ``eq-eps-loss-weight`` without its weight:
  L_simple), for the three objectives and with optional SNR-based weights.
- :func:`loss_weight` — those weights, λ(t), for each objective.
- :func:`vlb_term_bits` — one term of the bound, the second half of the hybrid loss of a network that learns its
  variance (chapter 07).

The Gaussian KL, the discretized decoder and the variational bound are in :mod:`ddpm_lib.likelihood`.
"""

from __future__ import annotations

import math

import torch

from ._checks import LOSS_WEIGHTINGS, OBJECTIVES, check_batch, check_choice, check_positive, check_timesteps
from .diffusion import call_model, p_mean_variance, predict_v, q_posterior, q_sample, split_variance_output
from .likelihood import discretized_gaussian_log_likelihood, normal_kl
from .schedules import NoiseSchedule

__all__ = ["loss_weight", "p_losses", "vlb_term_bits"]


def loss_weight(sched: NoiseSchedule, t: torch.Tensor, objective: str, loss_weighting: str | None,
                min_snr_gamma: float = 5.0) -> torch.Tensor:
    """Per-timestep weight λ(t) of the mean squared error of ``objective`` (chapter 04, relative loss weights).

    The weighting is stated as a weight w(t) on ‖x̂_0 - x_0‖²; since ‖x̂_0-x_0‖² = ‖ε̂-ε‖²/SNR = ‖v̂-v‖²/(SNR+1)
    at fixed x_t, the weight on each objective's own error is w for pred_x0, w/SNR for pred_noise and
    w/(SNR+1) for pred_v (lucidrains' ``loss_weight``):

    - ``None``: 1 for every objective (each objective's own L_simple);
    - ``"snr"``: w = SNR, which turns every objective into the ε-prediction loss L_simple;
    - ``"min_snr"``: w = min(SNR, γ) (Hang et al. 2023).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
    snr = sched.snr[t.cpu()]
    if loss_weighting is None:
        return torch.ones_like(snr)
    w = snr if loss_weighting == "snr" else snr.clamp(max=min_snr_gamma)
    return {"pred_x0": w, "pred_noise": w / snr, "pred_v": w / (snr + 1)}[objective]


def p_losses(model, sched: NoiseSchedule, x_start: torch.Tensor, t, noise: torch.Tensor | None = None,
             objective: str = "pred_noise", loss_weighting: str | None = None, y=None, *,
             min_snr_gamma: float = 5.0, learned_variance: bool = False, vlb_weight: float = 1e-3,
             num_bins: int = 256, reduction: str = "mean") -> torch.Tensor:
    """The training loss of Algorithm 3 (source 000; chapter 04, eq. ``eq-eps-loss-weight`` with its weight dropped).

    x_t = q_sample(x_0, t, ε); the model's output is compared with ε (``pred_noise``), x_0 (``pred_x0``) or
    v = √ᾱ ε - √(1-ᾱ) x_0 (``pred_v``) by a mean squared error over the non-batch dimensions, multiplied by
    :func:`loss_weight`. ``reduction="mean"`` returns a scalar, ``"none"`` the per-example losses of shape (B,).

    With ``learned_variance`` the network also outputs its variance (twice the channels, chapter 07) and the loss is
    the hybrid L_simple + λ L_vlb of Nichol & Dhariwal (2021, eq. 16; chapter 07, eq. ``eq-hybrid-loss``):
    :func:`vlb_term_bits` at each example's t, times T (the one-sample estimate of the sum over t), times λ =
    ``vlb_weight``, with the mean of p_θ computed from the *detached* prediction, so that the bound trains only the
    variance and L_simple alone trains the mean. For T = 1000 and λ = 0.001 this is improved-diffusion's
    ``rescaled_mse`` + ``vb``; lucidrains' ``LearnedGaussianDiffusion`` leaves out the factor T.
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("reduction", reduction, ("mean", "none"))
    if not isinstance(x_start, torch.Tensor) or x_start.ndim < 2:
        raise ValueError("x_start must be a tensor of shape (B, ...) with a batch dimension")
    t = check_timesteps(t, sched.T)
    if isinstance(t, int):  # one timestep for the whole batch
        t = torch.full((x_start.shape[0],), t, dtype=torch.long, device=x_start.device)
    check_batch(t, x_start, "t", "x_start")
    if noise is None:
        noise = torch.randn_like(x_start)
    x_t = q_sample(sched, x_start, t, noise)
    out = call_model(model, x_t, t, y, learned_variance=learned_variance)
    if learned_variance:
        out, variance_values = split_variance_output(out, x_t)
    target = {"pred_noise": noise, "pred_x0": x_start}.get(objective)
    if target is None:
        target = predict_v(sched, x_start, t, noise)
    mse = ((out - target) ** 2).flatten(1).mean(dim=1)
    losses = mse * loss_weight(sched, t, objective, loss_weighting, min_snr_gamma).to(mse)
    if learned_variance:
        check_positive("vlb_weight", vlb_weight, allow_zero=True)
        frozen = torch.cat([out.detach(), variance_values], dim=1)  # stop-gradient on the mean
        vb = vlb_term_bits(sched, x_start, x_t, t, frozen, objective=objective, num_bins=num_bins)
        losses = losses + vlb_weight * sched.T * vb.to(losses)
    return losses.mean() if reduction == "mean" else losses


def vlb_term_bits(sched: NoiseSchedule, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                  model_output: torch.Tensor, *, objective: str = "pred_noise", num_bins: int = 256) -> torch.Tensor:
    """The term of the bound at each example's t, averaged over dimensions, in bits (chapter 07): KL(q(x_{t-1}|x_t,x_0)
    ‖ p_θ(x_{t-1}|x_t)) for t > 0 and the decoder's -log p_θ(x_0|x_1) (``num_bins`` grey levels) at t = 0, with the
    learned variance of ``model_output`` (twice the channels of ``x_t``, ``variance="learned_range"``)."""
    mean, _, log_var, _ = p_mean_variance(None, sched, x_t, t, variance="learned_range", clip_denoised=False,
                                          objective=objective, model_output=model_output)
    true_mean, _, true_log_var = q_posterior(sched, x_start, x_t, t)
    kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1)
    nll = -discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_var, num_bins=num_bins).flatten(1).mean(1)
    return torch.where(t == 0, nll, kl) / math.log(2.0)
