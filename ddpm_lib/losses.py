"""Losses: the Gaussian KL, the discretized decoder, the training loss and the variational bound.

- :func:`normal_kl` — KL between two Gaussians (chapter 03, eq. ``eq-gauss-kl``).
- :func:`discretized_gaussian_log_likelihood` — the decoder L_0 of Ho et al. (2020), eq. 13, with the exact
  normal CDF and any number of grey levels (chapter 07).
- :func:`p_losses` — Algorithm 3 of the source 000 (chapter 04, eq. ``eq-eps-loss-weight`` without its weight:
  L_simple), for the three objectives and with optional SNR-based weights.
- :func:`vlb_terms` / :func:`vlb_bits_per_dim` — L = L_T + Σ L_{t-1} + L_0 (chapter 02, eq. ``eq-elbo-terms``).
"""

from __future__ import annotations

import math

import torch

from ._checks import check_batch, check_choice, check_same_shape, check_timesteps
from .diffusion import OBJECTIVES, call_model, predict_v, q_posterior, q_sample
from .schedules import NoiseSchedule, extract

__all__ = [
    "normal_kl",
    "standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "LOSS_WEIGHTINGS",
    "loss_weight",
    "p_losses",
    "vlb_terms",
    "vlb_bits_per_dim",
]

LOSS_WEIGHTINGS = (None, "snr", "min_snr")


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) element-wise, in nats (chapter 03, eq. ``eq-gauss-kl``).

    ½ (-1 + logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)² e^(-logvar2)). Arguments broadcast;
    at least one must be a tensor.
    """
    tensor = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)), None)
    if tensor is None:
        raise TypeError("normal_kl needs at least one torch.Tensor argument")
    logvar1, logvar2 = (a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=tensor.dtype) for a in (logvar1, logvar2))
    try:
        torch.broadcast_shapes(*(a.shape for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)))
    except RuntimeError:
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else () for a in (mean1, logvar1, mean2, logvar2)]
        raise ValueError(f"mean1, logvar1, mean2, logvar2 must broadcast, got shapes {shapes}") from None
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) = ½ (1 + erf(x/√2)), exact (Ho et al.'s code used a tanh approximation)."""
    return torch.special.ndtr(x)


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                        num_bins: int = 256) -> torch.Tensor:
    """log P(x) where x ∈ [-1, 1] takes ``num_bins`` evenly spaced values and P integrates N(means, e^(2 log_scales))
    over the bin of x; the first and last bins extend to ∓∞ (Ho et al. 2020, eq. 13; chapter 07).

    Bin k is centred at -1 + 2k/(num_bins-1) with half-width δ = 1/(num_bins-1); 8-bit images have 256 bins,
    scikit-learn's digits 17. Computed in float64 with log-CDF tails, so the probabilities of all bins sum to 1.
    Returns element-wise log-likelihoods (nats) in x's dtype.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    check_same_shape(means, x, "means", "x")
    log_scales = torch.as_tensor(log_scales, dtype=x.dtype, device=x.device)
    try:
        log_scales = log_scales.expand_as(x)
    except RuntimeError:
        raise ValueError(f"log_scales of shape {tuple(log_scales.shape)} does not broadcast to x of shape {tuple(x.shape)}") from None
    if (x.abs() > 1 + 1e-6).any():
        raise ValueError("x must lie in [-1, 1] (data scaled from its grey levels)")
    dtype = x.dtype
    x, means, log_scales = x.double(), means.double(), log_scales.double()
    k = torch.round((x + 1) / 2 * (num_bins - 1))
    half_width = 1.0 / (num_bins - 1)
    inv_stdv = torch.exp(-log_scales)
    upper = (x + half_width - means) * inv_stdv
    lower = (x - half_width - means) * inv_stdv
    log_cdf_upper = torch.special.log_ndtr(upper)               # log Φ(upper): first bin
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)    # log (1 - Φ(lower)): last bin
    # Middle bins: log(Φ(upper) - Φ(lower)) = log Φ(a) + log(1 - exp(log Φ(b) - log Φ(a))), taken in the tail on
    # the side of the mean where it does not cancel (a = upper, b = lower below the mean; a = -lower, b = -upper above).
    below = (x - means) <= 0
    log_a = torch.where(below, log_cdf_upper, log_one_minus_cdf_lower)
    log_b = torch.where(below, torch.special.log_ndtr(lower), torch.special.log_ndtr(-upper))
    log_mid = log_a + torch.log(-torch.expm1(log_b - log_a))
    out = torch.where(k <= 0, log_cdf_upper, torch.where(k >= num_bins - 1, log_one_minus_cdf_lower, log_mid))
    return out.to(dtype)


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


def p_losses(model, sched: NoiseSchedule, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
             objective: str = "pred_noise", loss_weighting: str | None = None, y=None, *,
             min_snr_gamma: float = 5.0, reduction: str = "mean") -> torch.Tensor:
    """The training loss of Algorithm 3 (source 000; chapter 04, eq. ``eq-eps-loss-weight`` with its weight dropped).

    x_t = q_sample(x_0, t, ε); the model's output is compared with ε (``pred_noise``), x_0 (``pred_x0``) or
    v = √ᾱ ε - √(1-ᾱ) x_0 (``pred_v``) by a mean squared error over the non-batch dimensions, multiplied by
    :func:`loss_weight`. ``reduction="mean"`` returns a scalar, ``"none"`` the per-example losses of shape (B,).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("reduction", reduction, ("mean", "none"))
    t = check_timesteps(t, sched.T)
    if not isinstance(t, torch.Tensor):
        raise TypeError("t must be an integer tensor of shape (B,) in p_losses")
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


@torch.no_grad()
def vlb_terms(model, sched: NoiseSchedule, x_start: torch.Tensor, *, objective: str = "pred_noise",
              variance: str = "fixed_small", clip_denoised: bool = False, num_bins: int = 256, y=None,
              generator: torch.Generator | None = None, progress: bool = False) -> dict:
    """The variational bound L = L_T + Σ_{t=2}^T L_{t-1} + L_0 per example, in nats (chapter 02, eq. ``eq-elbo-terms``;
    chapter 07 reports it in bits/dim).

    - ``prior`` (B,): L_T = KL(q(x_T|x_0) || N(0, I));
    - ``terms`` (B, T-1): column j is L_{j} = KL(q(x_j|x_{j+1},x_0) || p_θ(x_j|x_{j+1})) in the paper's indices,
      i.e. code index t = j (x_t drawn from q(x_t|x_0) with fresh noise from ``generator``);
    - ``decoder`` (B,): L_0 = -log p_θ(x_0|x_1) with the discretized decoder of ``num_bins`` levels;
    - ``total`` (B,): their sum, an upper bound on -log p(x_0) of the discretized data.

    All T steps are evaluated exactly (T network passes of the batch).
    """
    from .samplers import p_mean_variance  # local import: samplers imports this module's dependencies

    if x_start.ndim < 2:
        raise ValueError(f"x_start must have a batch dimension and data dimensions, got shape {tuple(x_start.shape)}")
    B = x_start.shape[0]
    x64 = x_start.double()
    t_last = torch.full((B,), sched.T - 1, dtype=torch.long)
    mean_T = extract(sched.sqrt_alphas_cumprod, t_last, x64) * x64
    logvar_T = torch.log(extract(1.0 - sched.alphas_cumprod, t_last, x64)).expand_as(x64)
    prior = normal_kl(mean_T, logvar_T, torch.zeros_like(x64), torch.zeros_like(x64)).flatten(1).sum(1)
    terms = torch.zeros(B, max(sched.T - 1, 0), dtype=torch.float64)
    decoder = torch.zeros(B, dtype=torch.float64)
    steps = range(sched.T)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="VLB")
    for t in steps:
        tt = torch.full((B,), t, dtype=torch.long, device=x_start.device)
        noise = torch.randn(x_start.shape, generator=generator, dtype=x_start.dtype).to(x_start.device)
        x_t = q_sample(sched, x_start, tt, noise)
        mean, _, log_var, _ = p_mean_variance(model, sched, x_t, tt, variance=variance, clip_denoised=clip_denoised,
                                              objective=objective, y=y)
        if t == 0:
            ll = discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_var, num_bins=num_bins)
            decoder = -ll.double().flatten(1).sum(1).cpu()
        else:
            true_mean, _, true_log_var = q_posterior(sched, x_start, x_t, tt)
            kl = normal_kl(true_mean.double(), true_log_var.double(), mean.double(), log_var.double())
            terms[:, t - 1] = kl.flatten(1).sum(1).cpu()
    prior = prior.cpu()
    return {"prior": prior, "terms": terms, "decoder": decoder, "total": prior + terms.sum(1) + decoder}


def vlb_bits_per_dim(model, sched: NoiseSchedule, x_start: torch.Tensor, **kwargs) -> dict:
    """:func:`vlb_terms` divided by (number of dimensions × ln 2): bits per dimension, per example (chapter 07).

    Keys: ``prior`` (L_T), ``terms`` (each L_{t-1}), ``terms_sum`` (Σ L_{t-1}), ``decoder`` (L_0), ``total``.
    """
    out = vlb_terms(model, sched, x_start, **kwargs)
    scale = x_start[0].numel() * math.log(2.0)
    res = {k: v / scale for k, v in out.items()}
    res["terms_sum"] = res["terms"].sum(1)
    return res
