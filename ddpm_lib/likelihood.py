"""Likelihood: the Gaussian KL, the discretized decoder, the variational bound, and the baselines it is
compared with (chapters 02, 03 and 07).

- :func:`normal_kl` — KL between two Gaussians (chapter 03, eq. ``eq-gauss-kl``).
- :func:`discretized_gaussian_log_likelihood` — the decoder L_0 of Ho et al. (2020), eq. 13, with the exact
  normal CDF and any number of grey levels (chapter 07).
- :func:`vlb_terms` / :func:`vlb_bits_per_dim` — L = L_T + Σ L_{t-1} + L_0 (chapter 02, eq. ``eq-elbo-terms``),
  term by term, in nats or in bits per dimension (:func:`bits_per_dim`).
- :func:`uniform_bits_per_dim`, :func:`categorical_bits_per_dim` — what a model that knows nothing, or only the
  grey-level histogram of each pixel, achieves (chapter 07).

Grey levels are mapped to [-1, 1] and back by :func:`ddpm_lib.postprocess.to_levels` / ``from_levels``.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import check_int, check_positive, check_same_shape
from .diffusion import p_mean_variance, q_posterior, q_sample
from .postprocess import to_levels
from .schedules import NoiseSchedule, extract

__all__ = [
    "gaussian_log_density",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "vlb_terms",
    "vlb_bits_per_dim",
    "bits_per_dim",
    "uniform_bits_per_dim",
    "categorical_bits_per_dim",
]


def gaussian_log_density(x, mean, var) -> torch.Tensor:
    """log N(x; mean, var) = -½ log(2π var) - (x - mean)²/(2 var), element-wise, in nats (chapter 02).

    Arguments broadcast; ``var`` may be a number or a tensor.
    """
    var = torch.as_tensor(var, dtype=x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else None)
    return -0.5 * torch.log(2 * math.pi * var) - (x - mean) ** 2 / (2 * var)


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


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                        num_bins: int = 256) -> torch.Tensor:
    """log P(x) where x ∈ [-1, 1] takes ``num_bins`` evenly spaced values and P integrates N(means, e^(2 log_scales))
    over the bin of x; the first and last bins extend to ∓∞ (Ho et al. 2020, eq. 13; chapter 07).

    Bin k is centred at -1 + 2k/(num_bins-1) with half-width δ = 1/(num_bins-1); 8-bit images have 256 bins,
    scikit-learn's digits 17. Computed in float64 with log-CDF tails, so the probabilities of all bins sum to 1.
    Returns element-wise log-likelihoods (nats) in x's dtype.
    """
    num_bins = check_int("num_bins", num_bins, 2)
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
    k = to_levels(x, num_bins)
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


@torch.no_grad()
def vlb_terms(model, sched: NoiseSchedule, x_start: torch.Tensor, *, objective: str = "pred_noise",
              variance: str = "fixed_small", clip_denoised: bool = False, num_bins: int = 256, y=None,
              generator: torch.Generator | None = None, progress: bool = True) -> dict:
    """The variational bound L = L_T + Σ_{t=2}^T L_{t-1} + L_0 per example, in nats (chapter 02, eq. ``eq-elbo-terms``;
    chapter 07 reports it in bits/dim).

    - ``prior`` (B,): L_T = KL(q(x_T|x_0) || N(0, I));
    - ``terms`` (B, T-1): column j is L_{j} = KL(q(x_j|x_{j+1},x_0) || p_θ(x_j|x_{j+1})) in the paper's indices,
      i.e. code index t = j (x_t drawn from q(x_t|x_0) with fresh noise from ``generator``);
    - ``decoder`` (B,): L_0 = -log p_θ(x_0|x_1) with the discretized decoder of ``num_bins`` levels;
    - ``total`` (B,): their sum, an upper bound on -log p(x_0) of the discretized data.

    All T steps are evaluated exactly (T network passes of the batch). ``variance="learned_range"`` takes a
    network that also outputs its variance (chapter 07, learned variances).
    """
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

        steps = tqdm(steps, desc="VLB", leave=False)
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
    res = {k: bits_per_dim(v, x_start[0].numel()) for k, v in out.items()}
    res["terms_sum"] = res["terms"].sum(1)
    return res


def bits_per_dim(nll_nats, num_dims: int):
    """A negative log-likelihood in nats (per example) as bits per dimension: nll / (num_dims · ln 2) (chapter 07).

    ``nll_nats`` may be a number (a float is returned) or a tensor (returned as a floating tensor); for the 8×8
    digits ``num_dims`` is 64.
    """
    num_dims = check_int("num_dims", num_dims)
    if isinstance(nll_nats, torch.Tensor):
        if not nll_nats.is_floating_point():
            nll_nats = nll_nats.to(torch.float64)
        return nll_nats / (num_dims * math.log(2.0))
    if isinstance(nll_nats, bool) or not isinstance(nll_nats, numbers.Real):
        raise TypeError(f"nll_nats must be a number or a tensor, got {type(nll_nats).__name__}")
    return float(nll_nats) / (num_dims * math.log(2.0))


def uniform_bits_per_dim(levels: int) -> float:
    """log2(levels): the bits/dim of a model that gives every grey level the same probability (chapter 07)."""
    return math.log2(check_int("levels", levels, 2))


def categorical_bits_per_dim(train: torch.Tensor, test: torch.Tensor, levels: int, alpha: float = 1.0) -> float:
    """Bits/dim on ``test`` of independent per-pixel categoricals fitted on ``train`` (chapter 07).

    Each pixel i gets its own distribution over the ``levels`` grey levels, p_i(k) = (n_ik + α)/(N + α·levels)
    (Laplace smoothing with ``alpha``, so unseen levels keep a non-zero probability); the result is
    -mean over test pixels of log2 p_i(k). Images in [-1, 1], shape (N, ...).
    """
    check_positive("alpha", alpha)
    ktr = to_levels(train, levels).flatten(1)
    kte = to_levels(test, levels).flatten(1)
    if ktr.shape[1] != kte.shape[1]:
        raise ValueError(f"train has {ktr.shape[1]} pixels per image but test has {kte.shape[1]}")
    counts = torch.zeros(ktr.shape[1], levels, dtype=torch.float64)
    counts.scatter_add_(1, ktr.T, torch.ones(ktr.T.shape, dtype=torch.float64))
    probs = (counts + alpha) / (ktr.shape[0] + alpha * levels)
    return float(-torch.log2(probs.gather(1, kte.T)).mean())
