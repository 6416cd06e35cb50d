"""Distances between sets of samples, and their data-vs-data floors (chapters 05, 06, 08, 09).

* :func:`sliced_wasserstein` (SW2) between point clouds, e.g. samples of a 2-D model and a *fresh* draw of the
  data, printed beside :func:`data_floor`, the same metric between two independent draws of the data.
* :func:`frechet_distance` between the Gaussians fitted to two feature sets (the quantity "FID" reports, in the
  features of a fixed classifier, :mod:`ddpm_lib.classifiers`).
* :func:`memorization_fraction` — the fraction of samples that copy a training image.

Never compare samples with the training set: a model that copies its training images would look perfect. Compare
with held-out data and report :func:`memorization_fraction` beside it. Point clouds and images are accepted as torch
tensors or NumPy arrays of shape (N, ...); every dimension after the first is flattened. Distances are computed in
float64. The evaluation recipes that combine these with the book's data sets are in :mod:`ddpm_lib.evaluation`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch

from ._checks import check_int

__all__ = [
    "sliced_wasserstein",
    "FloorEstimate",
    "data_floor",
    "frechet_distance",
    "nearest_distance",
    "memorization_fraction",
]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _as_points(x, name: str, min_points: int = 1) -> torch.Tensor:
    """Return ``x`` as a float64 tensor of shape (N, D), every dimension after the first flattened."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, ...), got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have shape (N, ...) with a sample dimension, got a scalar")
    if x.ndim == 1:
        x = x[:, None]  # N points in R^1
    x = x.reshape(x.shape[0], math.prod(x.shape[1:])).to(torch.float64)
    if x.shape[0] < min_points:
        raise ValueError(f"{name} must hold at least {min_points} point(s), got {x.shape[0]}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has zero features per point (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _same_dim(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} has {x.shape[1]} features per point but {y_name} has {y.shape[1]}; they must match"
        )


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _w2_squared_1d(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared W2 between the empirical measures of the columns of ``u`` (n, P) and ``v`` (m, P).

    In one dimension W2²(μ, ν) = ∫_0^1 (F_μ^{-1}(q) - F_ν^{-1}(q))² dq.  The empirical quantile
    functions are step functions with steps at i/n and j/m, so the integral is an exact finite sum
    over the merged breakpoints; for n = m it is mean((sort u - sort v)²).
    """
    u, _ = torch.sort(u, dim=0)
    v, _ = torch.sort(v, dim=0)
    n, m = u.shape[0], v.shape[0]
    if n == m:
        return ((u - v) ** 2).mean(dim=0)
    # breakpoints of both step functions, as exact fractions k/(n*m) (integers up to n*m)
    steps = torch.unique(torch.cat([torch.arange(0, n + 1) * m, torch.arange(0, m + 1) * n]))
    widths = (steps[1:] - steps[:-1]).to(torch.float64) / (n * m)
    mids = steps[:-1]  # left end of each interval; the quantile is constant on [left, right)
    iu = torch.div(mids, m, rounding_mode="floor").clamp(max=n - 1).to(u.device)
    iv = torch.div(mids, n, rounding_mode="floor").clamp(max=m - 1).to(v.device)
    return (((u[iu] - v[iv]) ** 2) * widths.to(u.device)[:, None]).sum(dim=0)


def sliced_wasserstein(x, y, n_projections: int = 256, generator: Optional[torch.Generator] = None) -> float:
    """Sliced Wasserstein-2 distance between two point clouds in R^d (chapters 05, 06, 08).

    SW2(x, y) = sqrt( mean_k W2²(θ_k·x, θ_k·y) ) over ``n_projections`` directions θ_k drawn
    uniformly on the unit sphere; each one-dimensional W2 is computed exactly from the sorted
    projections (for unequal sizes, by integrating the difference of the two empirical quantile
    functions over their merged breakpoints).  In 1-D every direction is ±1, so SW2 = W2 exactly,
    and for shifted distributions W2 = |shift|.  SW2 is symmetric, zero for identical sets and
    scales as SW2(a x, a y) = |a| SW2(x, y).

    Args:
        x, y: tensors or arrays of shape (N, d) and (M, d) (dimensions after the first are flattened).
        n_projections: number of random directions.
        generator: a CPU ``torch.Generator`` for the directions; ``None`` uses a fresh generator
            seeded with 0, so the value is deterministic either way.

    Returns:
        SW2 as a Python float (computed in float64).
    """
    x = _as_points(x, "x")
    y = _as_points(y, "y")
    _same_dim(x, y, "x", "y")
    n_projections = check_int("n_projections", n_projections)
    _check_generator(generator)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    theta = theta.to(x.device)
    w2_sq = _w2_squared_1d(x @ theta, y.to(x.device) @ theta)
    return float(w2_sq.mean().sqrt())


class FloorEstimate(NamedTuple):
    """The data-vs-data floor of a metric: mean and standard deviation over ``values``."""

    mean: float
    std: float
    values: tuple


def data_floor(
    sample_fn: Callable[[int], object],
    n: int,
    metric: Callable[[object, object], float],
    repeats: int = 5,
) -> FloorEstimate:
    """The floor of a metric: the metric between two fresh independent draws of the data (chapters 05, 06, 08).

    Even a perfect sampler scores no better than this with ``n`` points, so every sample-quality
    number is printed beside it.  ``sample_fn(n)`` must return ``n`` fresh points each call (seed it
    through a generator it closes over); it is called ``2 * repeats`` times.

    Args:
        sample_fn: callable ``n -> samples`` of shape (n, ...).
        n: number of points per draw (use the same n as for the model's samples).
        metric: callable ``(x, y) -> float``, e.g. :func:`sliced_wasserstein` or :func:`mmd_rbf`.
        repeats: number of independent pairs.

    Returns:
        ``FloorEstimate(mean, std, values)``; ``std`` is the sample standard deviation (0 when repeats == 1).
    """
    if not callable(sample_fn):
        raise TypeError(f"sample_fn must be callable n -> samples, got {type(sample_fn).__name__}")
    if not callable(metric):
        raise TypeError(f"metric must be callable (x, y) -> float, got {type(metric).__name__}")
    n = check_int("n", n)
    repeats = check_int("repeats", repeats)
    values = []
    for _ in range(repeats):
        a = sample_fn(n)
        b = sample_fn(n)
        for name, s in (("first", a), ("second", b)):
            if len(s) != n:
                raise ValueError(f"sample_fn(n) must return n = {n} points, the {name} draw has {len(s)}")
        values.append(float(metric(a, b)))
    mean = sum(values) / repeats
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (repeats - 1)) if repeats > 1 else 0.0
    return FloorEstimate(mean, std, tuple(values))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp(min=0.0).sqrt()) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (chapters 05, 06, 08, 09).

    d² = |μ_a - μ_b|² + tr(Σ_a + Σ_b - 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}),

    the squared W2 distance between N(μ_a, Σ_a) and N(μ_b, Σ_b) (the quantity "FID" reports, without
    a square root).  Means and unbiased covariances (divisor N-1) are computed in float64; the
    trace term uses eigen-decompositions of the symmetric PSD matrices Σ_a and Σ_a^{1/2} Σ_b Σ_a^{1/2}
    with negative round-off eigenvalues clipped to 0, so near-singular covariances are fine.
    In 1-D it is (μ_a - μ_b)² + (s_a - s_b)².

    Args:
        feats_a, feats_b: (N, d) and (M, d) features, N, M >= 2.

    Returns:
        d² as a Python float, >= 0.
    """
    a = _as_points(feats_a, "feats_a", min_points=2)
    b = _as_points(feats_b, "feats_b", min_points=2)
    _same_dim(a, b, "feats_a", "feats_b")
    b = b.to(a.device)
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    cov_a = torch.cov(a.T, correction=1).reshape(a.shape[1], a.shape[1])
    cov_b = torch.cov(b.T, correction=1).reshape(b.shape[1], b.shape[1])
    sqrt_a = _sqrt_psd(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0.0)
    trace_term = torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * eig.sqrt().sum()
    value = float(((mu_a - mu_b) ** 2).sum() + trace_term)
    return max(value, 0.0)  # round-off can give -1e-16 for identical sets


def nearest_distance(queries: torch.Tensor, pool: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """For each row of ``queries`` (N, D), the L2 distance to its nearest row of ``pool`` (M, D), in batches."""
    out = []
    for start in range(0, queries.shape[0], batch_size):
        out.append(torch.cdist(queries[start : start + batch_size], pool).min(dim=1).values)
    return torch.cat(out)


def memorization_fraction(samples, train, test) -> tuple:
    """Fraction of samples that copy a training image (chapters 05, 06, 08, 09).

    A sample is flagged when its nearest training image (L2 in pixel space) is closer than
    ``threshold`` = half the median, over test images, of the distance from a test image to its
    nearest training image: a typical unseen digit is that far from the training set, a copy is
    much closer.

    Args:
        samples, train, test: images (N, ...) with the same number of pixels.

    Returns:
        ``(fraction, threshold)`` as Python floats.
    """
    s = _as_points(samples, "samples")
    tr = _as_points(train, "train")
    te = _as_points(test, "test")
    _same_dim(s, tr, "samples", "train")
    _same_dim(te, tr, "test", "train")
    tr = tr.to(s.device)
    threshold = 0.5 * float(nearest_distance(te.to(s.device), tr).median())
    d = nearest_distance(s, tr)
    return float((d < threshold).to(torch.float64).mean()), threshold


