"""The 2-D toy data sets of the book, with known densities (chapters 04-08, 11).

- :class:`GaussianMixture` — isotropic Gaussian mixtures whose density, noised densities q(x_t),
  posterior means E[x_0 | x_t] and scores are all exact (chapters 04 and 06).
- :func:`make_gaussian_mixture` — the presets (``"8gaussians"`` is the book's reference :data:`MIXTURE`).
- :func:`make_moons`, :func:`make_swiss_roll` — 2-D toy sets, standardised.
- :func:`toy_sampler` — one calling convention for all of them, used by the recipes and the evaluation.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .._checks import check_choice, check_int
from ..likelihood import gaussian_log_density

__all__ = [
    "GaussianMixture",
    "make_gaussian_mixture",
    "GAUSSIAN_MIXTURE_PRESETS",
    "make_moons",
    "make_swiss_roll",
    "MIXTURE",
    "TOY_DATASETS",
    "toy_sampler",
]


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float64


# ---------------------------------------------------------------------------------------------
# Gaussian mixtures


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, s_k² I) in d dimensions (chapter 06, eq. ``mixture-density``).

    ``means`` has shape (K, d), ``stds`` shape (K,) (a number is used for every component),
    ``weights`` shape (K,) (positive; normalised to sum to 1; default uniform).  Parameters are
    stored in float64.

    Under the forward process x_t = √ᾱ x_0 + √(1-ᾱ) ε, every component stays Gaussian, so the noised
    density is again a mixture: q_t(x) = Σ_k w_k N(x; √ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I) (:meth:`noised`),
    and E[x_0 | x_t] (:meth:`posterior_mean_x0`) and ∇ log q_t (:meth:`score`) have closed forms.
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or means.shape[0] == 0:
            raise ValueError(f"means must have shape (K, d), got shape {tuple(means.shape)}")
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.ndim == 0:
            stds = stds.expand(K).clone()
        if stds.shape != (K,):
            raise ValueError(f"stds must be a number or have shape ({K},), got shape {tuple(stds.shape)}")
        if not torch.isfinite(stds).all() or (stds <= 0).any():
            raise ValueError("stds must all be finite and > 0")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got shape {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError("weights must all be finite and > 0")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite")
        self.means = means
        self.stds = stds
        self.weights = weights / weights.sum()

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"

    def mean(self) -> torch.Tensor:
        """E[x] = Σ w_k μ_k (float64, shape (d,))."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov[x] = Σ w_k (s_k² I + μ_k μ_kᵀ) - E[x] E[x]ᵀ (float64, shape (d, d))."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.means[:, :, None] * self.means[:, None, :])).sum(0)
        second = second + (self.weights * self.stds**2).sum() * torch.eye(self.dim, dtype=torch.float64)
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float32) -> torch.Tensor:
        """``n`` independent draws, shape (n, d), in ``dtype`` (drawn in float64, then cast)."""
        check_int("n", n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k, None] * z).to(dtype)

    def _flat(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}), got shape {tuple(x.shape)}")
        return x.to(torch.float64).reshape(-1, self.dim)

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, s_k² I) for float64 x of shape (N, d): shape (N, K)."""
        var = (self.stds**2)[None, :, None]
        return self.weights.log() + gaussian_log_density(x[:, None, :], self.means[None, :, :], var).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) for ``x`` of shape (..., d); returns shape (...), computed in float64."""
        flat = self._flat(x)
        out = torch.logsumexp(self._component_log_probs(flat), dim=1)
        return out.reshape(x.shape[:-1]).to(_out_dtype(x))

    def noised(self, alpha_bar) -> "GaussianMixture":
        """The law of x_t = √ᾱ x_0 + √(1-ᾱ) ε: Σ w_k N(√ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I) (chapter 06)."""
        ab = self._check_alpha_bar_scalar(alpha_bar)
        return GaussianMixture(
            math.sqrt(ab) * self.means, torch.sqrt(ab * self.stds**2 + (1.0 - ab)), self.weights
        )

    @staticmethod
    def _check_alpha_bar_scalar(alpha_bar) -> float:
        if isinstance(alpha_bar, torch.Tensor):
            if alpha_bar.numel() != 1:
                raise ValueError(f"alpha_bar must be a single number here, got shape {tuple(alpha_bar.shape)}")
            alpha_bar = float(alpha_bar)
        ab = float(alpha_bar)
        if not 0.0 <= ab <= 1.0:
            raise ValueError(f"alpha_bar must lie in [0, 1], got {ab!r}")
        return ab

    def _alpha_bar_column(self, alpha_bar, n: int) -> torch.Tensor:
        """ᾱ as a float64 column of shape (n, 1) (or (1, 1)); accepts a number, (), (B,) or (B, 1)."""
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        if ab.ndim == 0 or ab.numel() == 1:
            ab = ab.reshape(1, 1)
        elif ab.ndim == 1 and ab.shape[0] == n:
            ab = ab[:, None]
        elif ab.ndim == 2 and ab.shape == (n, 1):
            pass
        else:
            raise ValueError(
                f"alpha_bar must be a number or have shape ({n},) or ({n}, 1), got shape {tuple(ab.shape)}"
            )
        if not torch.isfinite(ab).all() or (ab < 0).any() or (ab > 1).any():
            raise ValueError("alpha_bar must lie in [0, 1]")
        return ab.cpu()

    def _noised_terms(self, x_t: torch.Tensor, alpha_bar):
        """Per-component quantities of q_t at x_t (float64, x_t flat (N, d)): responsibilities,
        component variances v_k = ᾱ s_k² + 1 - ᾱ (N, K) and residuals x_t - √ᾱ μ_k (N, K, d)."""
        ab = self._alpha_bar_column(alpha_bar, x_t.shape[0]).to(x_t.device)
        means = self.means.to(x_t.device)
        var0 = (self.stds**2).to(x_t.device)
        v = ab * var0[None, :] + (1.0 - ab)  # (N or 1, K)
        resid = x_t[:, None, :] - ab.sqrt()[:, :, None] * means[None, :, :]  # (N, K, d)
        logits = self.weights.log().to(x_t.device) + gaussian_log_density(resid, 0.0, v[:, :, None]).sum(-1)
        resp = torch.softmax(logits, dim=1)  # (N, K)
        return ab, v, resid, resp

    def posterior_mean_x0(self, x_t: torch.Tensor, alpha_bar) -> torch.Tensor:
        """Exact E[x_0 | x_t] when x_t = √ᾱ x_0 + √(1-ᾱ) ε (Tweedie's formula; chapter 04, eq. ``tweedie``).

        Per component, E[x_0 | x_t, k] = μ_k + √ᾱ s_k² / (ᾱ s_k² + 1 - ᾱ) · (x_t - √ᾱ μ_k); the mixture
        averages these with the responsibilities r_k(x_t) ∝ w_k N(x_t; √ᾱ μ_k, (ᾱ s_k² + 1 - ᾱ) I).
        ``x_t`` has shape (B, d); ``alpha_bar`` is a number or has shape (B,) or (B, 1).  Computed in
        float64, returned in ``x_t``'s dtype.
        """
        flat = self._flat(x_t, "x_t")
        ab, v, resid, resp = self._noised_terms(flat, alpha_bar)
        var0 = (self.stds**2).to(flat.device)
        gain = ab.sqrt() * var0[None, :] / v  # (N, K)
        cond = self.means.to(flat.device)[None] + gain[:, :, None] * resid  # (N, K, d)
        out = (resp[:, :, None] * cond).sum(1)
        return out.reshape(x_t.shape).to(_out_dtype(x_t))

    def score(self, x: torch.Tensor, alpha_bar=1.0) -> torch.Tensor:
        """Exact score ∇_x log q_t(x) = -Σ_k r_k(x) (x - √ᾱ μ_k) / (ᾱ s_k² + 1 - ᾱ) (chapter 04).

        ``alpha_bar = 1`` (the default) gives the score of the data density itself.
        """
        flat = self._flat(x)
        ab, v, resid, resp = self._noised_terms(flat, alpha_bar)
        out = -(resp[:, :, None] * resid / v[:, :, None]).sum(1)
        return out.reshape(x.shape).to(_out_dtype(x))


def _eight_gaussians() -> GaussianMixture:
    # 8 means on a circle of radius r, std s; per-coordinate variance r²/2 + s² = 1.
    s = 0.1
    r = math.sqrt(2.0 * (1.0 - s**2))
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(torch.stack([r * angles.cos(), r * angles.sin()], 1), s)


def _grid() -> GaussianMixture:
    # 5×5 grid with spacing a, std s = a/10: per-coordinate variance 2a² + s² = 1.
    a = 1.0 / math.sqrt(2.0 + 0.01)
    pts = (torch.arange(5, dtype=torch.float64) - 2.0) * a
    gx, gy = torch.meshgrid(pts, pts, indexing="ij")
    return GaussianMixture(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), a / 10)


def _two_gaussians() -> GaussianMixture:
    # Weights (0.3, 0.7), means -1.4 and 0.6 on the first axis (overall mean 0), std 0.4:
    # variance along that axis 0.3·0.7·2² + 0.4² = 1.
    return GaussianMixture([[-1.4, 0.0], [0.6, 0.0]], [0.4, 0.4], [0.3, 0.7])


def _two_gaussians_1d() -> GaussianMixture:
    # The 1-D version (chapter 02's exact-likelihood example): mean 0, variance 1.
    return GaussianMixture([[-1.4], [0.6]], [0.4, 0.4], [0.3, 0.7])


GAUSSIAN_MIXTURE_PRESETS = {
    "8gaussians": _eight_gaussians,
    "grid": _grid,
    "2gaussians": _two_gaussians,
    "2gaussians_1d": _two_gaussians_1d,
}


def make_gaussian_mixture(name: str = "8gaussians") -> GaussianMixture:
    """A preset :class:`GaussianMixture`, each scaled to about unit variance per coordinate.

    - ``"8gaussians"``: 8 equal components on a circle of radius √(2(1 - 0.1²)) ≈ 1.41, std 0.1
      (per-coordinate variance exactly 1);
    - ``"grid"``: 25 equal components on a 5×5 grid of spacing a = 1/√2.01, std a/10 (variance 1);
    - ``"2gaussians"``: weights (0.3, 0.7), means (-1.4, 0) and (0.6, 0), std 0.4 (mean 0, variance 1
      on the first axis, 0.16 on the second);
    - ``"2gaussians_1d"``: the same on a line (mean 0, variance 1).
    """
    check_choice("name", name, set(GAUSSIAN_MIXTURE_PRESETS))
    return GAUSSIAN_MIXTURE_PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# moons and swiss roll


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return float(noise)


def _moons_moments(noise: float):
    """Exact per-coordinate mean and variance of the raw moons (θ ~ U(0, π), one half per moon)."""
    e_sin, e_sin2 = 2 / math.pi, 0.5
    mean = torch.tensor([0.5, 0.25], dtype=torch.float64)
    # x: moon means 0 and 1, within-moon variance of cos θ is 1/2.
    var_x = 0.5 + 0.25
    # y: outer sin θ, inner 0.5 - sin θ; within variance e_sin2 - e_sin²; means e_sin and 0.5 - e_sin.
    var_y = (e_sin2 - e_sin**2) + ((e_sin - (0.5 - e_sin)) / 2) ** 2
    var = torch.tensor([var_x, var_y], dtype=torch.float64) + noise**2
    return mean, var


def make_moons(n: int, noise: float = 0.05, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Two interleaving half circles (as scikit-learn's ``make_moons``), shape (n, 2), float32.

    The outer moon is (cos θ, sin θ), the inner (1 - cos θ, 1/2 - sin θ), with θ ~ U(0, π) (random,
    not evenly spaced as in scikit-learn, so that every draw is i.i.d.); ``n // 2`` points on the outer
    moon, the rest on the inner, in random order; then N(0, noise²) is added to each coordinate.
    Standardised with the exact population moments: the mean is subtracted and both coordinates are
    divided by one common scale √((var_x + var_y)/2), so the shape is kept and the average variance
    per coordinate is 1.
    """
    check_int("n", n)
    noise = _check_noise(noise)
    n_out = n // 2
    theta = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    outer = torch.arange(n) < n_out
    x = torch.where(outer, theta.cos(), 1.0 - theta.cos())
    y = torch.where(outer, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x, y], 1)
    pts = pts[torch.randperm(n, generator=generator)]
    pts = pts + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    mean, var = _moons_moments(noise)
    return ((pts - mean) / var.mean().sqrt()).to(torch.float32)


def _swiss_roll_curve(u: torch.Tensor) -> torch.Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * u)
    return torch.stack([t * t.cos(), t * t.sin()], -1)


def _swiss_roll_moments(noise: float):
    """Per-coordinate mean and variance of the raw 2-D swiss roll, by Simpson's rule on u ∈ [0, 1]."""
    m = 20000  # even number of intervals; the error is far below float32 resolution
    u = torch.linspace(0.0, 1.0, m + 1, dtype=torch.float64)
    w = torch.ones(m + 1, dtype=torch.float64)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    w = w / (3.0 * m)
    c = _swiss_roll_curve(u)
    mean = (w[:, None] * c).sum(0)
    var = (w[:, None] * (c - mean) ** 2).sum(0) + noise**2
    return mean, var


def make_swiss_roll(n: int, noise: float = 0.5, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The 2-D swiss roll (scikit-learn's ``make_swiss_roll`` seen from its (x, z) plane), (n, 2) float32.

    t = 1.5π(1 + 2u) with u ~ U(0, 1), the point is (t cos t, t sin t) plus N(0, noise²) per
    coordinate (``noise`` in these raw units, where the roll's radius grows from 4.7 to 14.1, as in
    scikit-learn).  Standardised like :func:`make_moons`: the exact population mean is subtracted and
    both coordinates are divided by one scale so that the average variance per coordinate is 1.
    """
    check_int("n", n)
    noise = _check_noise(noise)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    pts = _swiss_roll_curve(u) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    mean, var = _swiss_roll_moments(noise)
    return ((pts - mean) / var.mean().sqrt()).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# the 2-D toy sets of the recipes

MIXTURE = "8gaussians"
"""The book's reference 2-D Gaussian mixture (``make_gaussian_mixture("8gaussians")``)."""

TOY_DATASETS = tuple(sorted(set(GAUSSIAN_MIXTURE_PRESETS) - {"2gaussians_1d"})) + ("moons", "swiss_roll")
"""2-D toy sets a recipe can train on: the 2-D mixture presets, ``"moons"`` and ``"swiss_roll"``."""


def toy_sampler(dataset: str = MIXTURE) -> Callable[[int, Optional[torch.Generator]], torch.Tensor]:
    """``sample(n, generator=None) -> (n, 2)`` float32 points of a 2-D toy set (see :data:`TOY_DATASETS`).

    Mixtures use :meth:`~ddpm_lib.data.GaussianMixture.sample`, moons and the swiss roll the functions of
    :mod:`ddpm_lib.data` with their default noise.
    """
    check_choice("dataset", dataset, TOY_DATASETS)
    if dataset == "moons":
        return lambda n, generator=None: make_moons(n, generator=generator)
    if dataset == "swiss_roll":
        return lambda n, generator=None: make_swiss_roll(n, generator=generator)
    mixture = make_gaussian_mixture(dataset)
    return lambda n, generator=None: mixture.sample(n, generator=generator)
