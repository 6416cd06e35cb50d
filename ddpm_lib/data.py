"""Data sets of the book: 2-D toy sets with known densities, 8×8 digits, and MNIST/CIFAR-10.

- :class:`GaussianMixture` — isotropic Gaussian mixtures whose density, noised densities q(x_t),
  posterior means E[x_0 | x_t] and scores are all exact (chapters 04 and 06).
- :func:`make_moons`, :func:`make_swiss_roll` — 2-D toy sets, standardised.
- :func:`load_digits` — scikit-learn's bundled 8×8 digits in [-1, 1] with a fixed split (no download).
- :func:`load_torchvision` — MNIST / CIFAR-10 when torchvision is installed (Colab only).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ._checks import check_choice, check_int
from .likelihood import gaussian_log_density
from .postprocess import from_levels

__all__ = [
    "GaussianMixture",
    "make_gaussian_mixture",
    "GAUSSIAN_MIXTURE_PRESETS",
    "make_moons",
    "make_swiss_roll",
    "load_digits",
    "DIGITS_LEVELS",
    "image_to_model_range",
    "load_torchvision",
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


# ---------------------------------------------------------------------------------------------
# digits

DIGITS_LEVELS = 17
"""The 8×8 digits take the integer values 0..16: 17 grey levels (use ``num_bins=17`` in the decoder)."""

_DIGITS_SPLITS = {"train", "test", "all"}


def load_digits(split: str = "train"):
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, no download), scaled to [-1, 1].

    Returns ``(images, labels)``: ``images`` float32 of shape (N, 1, 8, 8) and ``labels`` long (N,).
    Each pixel holds an integer v ∈ {0, ..., 16} (``DIGITS_LEVELS = 17`` grey levels) and is mapped to
    v / 16 · 2 - 1, so the data lie on the 17 points {-1, -7/8, ..., 7/8, 1}.  The split is fixed and
    deterministic: 20 % test, stratified by label, ``train_test_split(random_state=0)``; ``split`` is
    ``"train"`` (1437 images), ``"test"`` (360) or ``"all"`` (1797, in scikit-learn's order).
    """
    check_choice("split", split, _DIGITS_SPLITS)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - scikit-learn is in requirements.txt
        raise ImportError(
            "load_digits needs scikit-learn (its 8x8 digits ship with the package, nothing is downloaded); "
            "install it with `pip install scikit-learn` or `pip install ddpm_lib[data]`"
        ) from err
    bunch = _sk_load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), integers 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    if split == "all":
        idx = np.arange(len(labels))
    else:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
        )
        idx = np.sort(train_idx if split == "train" else test_idx)
    images = from_levels(torch.from_numpy(values[idx].astype(np.int64)), DIGITS_LEVELS)[:, None]
    return images, torch.from_numpy(labels[idx]).long()


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from Debian's dataset-fashion-mnist (chapter 10)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's package ``dataset-fashion-mnist`` puts the four IDX files (``apt-get install dataset-fashion-mnist``)."""

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
"""The ten Fashion-MNIST classes, in label order (Xiao et al. 2017)."""

_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes


def read_idx(path, ndim: int) -> np.ndarray:
    """An IDX file (the format of MNIST and Fashion-MNIST; gzip-compressed when the name ends in ``.gz``) as a
    uint8 array with ``ndim`` dimensions.

    The header is two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, then each size as a
    big-endian uint32; the data follow. A file whose header or length does not match raises ``ValueError``
    naming the file and what is wrong.
    """
    import gzip
    from pathlib import Path

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these for a truncated or corrupt archive
        raise ValueError(f"{path}: cannot read the IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'}, "
                         f"expected 000008{ndim:02x})")
    if raw[3] != ndim:
        raise ValueError(f"{path}: holds {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, the header alone needs {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"{path}: the header announces shape {shape}, i.e. {size} bytes of data, "
                         f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_file(root, name: str):
    from pathlib import Path

    for candidate in (Path(root) / (name + ".gz"), Path(root) / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {root}. On Debian or Ubuntu install the data set with "
        f"`sudo apt-get install dataset-fashion-mnist` (the book's `make book` and `make test` do this). "
        f"In Colab, use `ddpm_lib.data.load_torchvision('fashion_mnist', download=True)` instead, "
        f"or pass root= the folder that holds the four IDX files."
    )


def load_fashion_mnist(split: str = "train", root=None):
    """Fashion-MNIST (Xiao et al. 2017) from its IDX files, scaled to [-1, 1] (chapter 10; no download).

    Returns ``(images, labels)``: ``images`` float32 of shape (N, 1, 28, 28) with v ↦ v / 255 · 2 - 1 (the map of
    :func:`image_to_model_range`), ``labels`` long (N,) in 0..9 (names in :data:`FASHION_MNIST_CLASSES`).
    ``split`` is ``"train"`` (60 000 images) or ``"test"`` (10 000). ``root`` defaults to
    :data:`FASHION_MNIST_DIR`, where Debian's ``dataset-fashion-mnist`` installs them; plain or ``.gz`` files are
    read. Missing files raise ``FileNotFoundError`` naming the package (and, for Colab, the torchvision route);
    malformed files raise ``ValueError`` (see :func:`read_idx`).
    """
    check_choice("split", split, set(_FASHION_FILES))
    root = FASHION_MNIST_DIR if root is None else root
    image_name, label_name = _FASHION_FILES[split]
    images = read_idx(_fashion_file(root, image_name), 3)
    labels = read_idx(_fashion_file(root, label_name), 1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_name}: images must be 28x28, got {images.shape[1]}x{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split} split: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_name}: labels must lie in 0..9, got a {int(labels.max())}")
    return from_levels(torch.from_numpy(images.astype(np.int64)), 256)[:, None], torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# torchvision data sets (Colab)

_TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def image_to_model_range(image) -> torch.Tensor:
    """An 8-bit image (PIL image, numpy array or uint8 tensor; H×W or H×W×C) as a float32 C×H×W
    tensor in [-1, 1]: v ↦ v / 255 · 2 - 1 (0 → -1, 255 → 1).

    This is the transform :func:`load_torchvision` applies (what torchvision's ``ToTensor`` followed by
    ``Normalize(0.5, 0.5)`` does), written without torchvision so it can be tested anywhere.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"image must hold 8-bit values (dtype uint8), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got shape {arr.shape}")
    return from_levels(torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.int64)), 256)


def load_torchvision(name: str = "mnist", root: str = "./data", train: bool = True, download: bool = False):
    """MNIST or Fashion-MNIST (1×28×28) or CIFAR-10 (3×32×32) as a torch ``Dataset`` of (image in [-1, 1], label).

    Uses torchvision, which the book only installs in Colab; ``download=True`` fetches the files into
    ``root``.  Images go through :func:`image_to_model_range`.
    """
    check_choice("name", name, set(_TORCHVISION_SETS))
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(
            "torchvision is not installed; it is used only in Colab for MNIST/CIFAR-10 "
            "(`pip install torchvision` there). On a CPU use load_digits() instead."
        ) from err
    cls = getattr(torchvision.datasets, _TORCHVISION_SETS[name])
    return cls(root=root, train=train, download=download, transform=image_to_model_range)
