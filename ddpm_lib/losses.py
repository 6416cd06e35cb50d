"""The training loss of Algorithm 3 and its per-timestep weights (chapter 04; chapter 05 trains with it).

- :func:`p_losses` — Algorithm 3 of the source 000 (chapter 04, eq. ``eq-eps-loss-weight`` without its weight:
  L_simple), for the three objectives and with optional SNR-based weights.
- :func:`loss_weight` — those weights, λ(t), for each objective.

The Gaussian KL, the discretized decoder and the variational bound are in :mod:`ddpm_lib.likelihood`.
"""

from __future__ import annotations

import torch

from ._checks import LOSS_WEIGHTINGS, OBJECTIVES, check_batch, check_choice, check_timesteps
from .diffusion import call_model, predict_v, q_sample
from .schedules import NoiseSchedule

__all__ = ["loss_weight", "p_losses"]


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
             min_snr_gamma: float = 5.0, reduction: str = "mean") -> torch.Tensor:
    """The training loss of Algorithm 3 (source 000; chapter 04, eq. ``eq-eps-loss-weight`` with its weight dropped).

    x_t = q_sample(x_0, t, ε); the model's output is compared with ε (``pred_noise``), x_0 (``pred_x0``) or
    v = √ᾱ ε - √(1-ᾱ) x_0 (``pred_v``) by a mean squared error over the non-batch dimensions, multiplied by
    :func:`loss_weight`. ``reduction="mean"`` returns a scalar, ``"none"`` the per-example losses of shape (B,).
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
    out = call_model(model, x_t, t, y)
    target = {"pred_noise": noise, "pred_x0": x_start}.get(objective)
    if target is None:
        target = predict_v(sched, x_start, t, noise)
    mse = ((out - target) ** 2).flatten(1).mean(dim=1)
    losses = mse * loss_weight(sched, t, objective, loss_weighting, min_snr_gamma).to(mse)
    return losses.mean() if reduction == "mean" else losses
