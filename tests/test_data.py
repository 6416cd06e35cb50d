"""Tests of ddpm_lib.data: exact Gaussian-mixture quantities, toy sets, digits (the oracle denoiser is in
tests/test_exact.py, Fashion-MNIST in tests/test_fashion_mnist.py)."""

import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from ddpm_lib.data import (
    DIGITS_LEVELS,
    MIXTURE,
    TOY_DATASETS,
    GaussianMixture,
    image_to_model_range,
    load_digits,
    load_torchvision,
    make_gaussian_mixture,
    make_moons,
    make_swiss_roll,
    toy_sampler,
)
from ddpm_lib.data.toy import _moons_moments, _swiss_roll_moments
from helpers import gen as _gen

F64 = torch.float64


def _direct_log_prob(mix, x):
    """log Σ_k w_k Π_j N(x_j; μ_kj, s_k²), written out with numpy in float64."""
    x = np.asarray(x, dtype=np.float64)
    total = np.zeros(x.shape[0])
    for w, mu, s in zip(mix.weights.numpy(), mix.means.numpy(), mix.stds.numpy()):
        dens = np.prod(np.exp(-((x - mu) ** 2) / (2 * s**2)) / np.sqrt(2 * np.pi * s**2), axis=1)
        total += w * dens
    return np.log(total)


# ----------------------------------------------------------------------------- GaussianMixture


def test_log_prob_equals_direct_formula():
    mix = GaussianMixture([[0.0, 1.0], [2.0, -1.0], [-1.0, -1.5]], [0.5, 1.0, 0.8], [0.2, 0.5, 0.3])
    x = torch.randn(50, 2, generator=_gen(), dtype=F64) * 2
    got = mix.log_prob(x)
    assert got.shape == (50,) and got.dtype == F64
    np.testing.assert_allclose(got.numpy(), _direct_log_prob(mix, x), rtol=1e-12, atol=1e-12)
    # float32 input gives a float32 result of the same values
    torch.testing.assert_close(mix.log_prob(x.float()), got.float())


@pytest.mark.parametrize("name", ["8gaussians", "2gaussians"])
def test_density_integrates_to_one_on_a_grid(name):
    mix = make_gaussian_mixture(name)
    h = 0.01
    g = torch.arange(-4.0, 4.0 + h / 2, h, dtype=F64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    total = mix.log_prob(pts).exp().sum().item() * h * h
    assert abs(total - 1.0) < 1e-6


def test_noised_density_integrates_to_one_1d():
    mix = make_gaussian_mixture("2gaussians_1d").noised(0.3)
    h = 1e-3
    x = torch.arange(-8.0, 8.0, h, dtype=F64)[:, None]
    assert abs(mix.log_prob(x).exp().sum().item() * h - 1.0) < 1e-9


def test_presets_have_unit_variance_and_mean_zero():
    for name in ("8gaussians", "grid"):
        mix = make_gaussian_mixture(name)
        torch.testing.assert_close(mix.covariance(), torch.eye(2, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(mix.mean(), torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)
    assert make_gaussian_mixture("8gaussians").num_components == 8
    assert make_gaussian_mixture("grid").num_components == 25
    two = make_gaussian_mixture("2gaussians")
    assert two.num_components == 2 and abs(two.covariance()[0, 0].item() - 1.0) < 1e-12
    assert abs(two.mean()).max().item() < 1e-12
    one = make_gaussian_mixture("2gaussians_1d")
    assert one.dim == 1 and abs(one.covariance().item() - 1.0) < 1e-12 and abs(one.mean().item()) < 1e-12
    with pytest.raises(ValueError, match="name must be one of"):
        make_gaussian_mixture("9gaussians")


def test_sample_moments_match_mean_and_covariance():
    mix = GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 1.0], [0.25, 0.75])
    n = 200_000
    x = mix.sample(n, _gen(1), dtype=F64)
    assert x.shape == (n, 2)
    # tolerances: 5 standard errors of the sample mean / of the sample variance (4th moment bounded by 3 var²·...)
    cov = mix.covariance()
    se_mean = (cov.diagonal() / n).sqrt()
    assert torch.all((x.mean(0) - mix.mean()).abs() < 5 * se_mean)
    emp = torch.cov(x.T)
    assert torch.all((emp - cov).abs() < 5 * math.sqrt(3.0 / n) * cov.diagonal().max() * 2)
    # component weights: fraction of points nearer to component 1's side
    frac = (x[:, 1] < 0).double().mean().item()
    p = 0.25 * 0.5 * (1 - math.erf(1 / 0.5 / math.sqrt(2))) + 0.75 * 0.5 * (1 + math.erf(1 / 1.0 / math.sqrt(2)))
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_sample_is_reproducible_with_a_generator_and_returns_dtype():
    mix = make_gaussian_mixture("8gaussians")
    a = mix.sample(100, _gen(3))
    b = mix.sample(100, _gen(3))
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.testing.assert_close(mix.sample(100, _gen(3), dtype=F64).float(), a)


def test_noised_matches_monte_carlo_moments_and_limits():
    mix = GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 1.0], [0.25, 0.75])
    ab = 0.4
    n = 200_000
    g = _gen(2)
    x0 = mix.sample(n, g, dtype=F64)
    xt = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.randn(n, 2, generator=g, dtype=F64)
    noised = mix.noised(ab)
    se = (noised.covariance().diagonal() / n).sqrt()
    assert torch.all((xt.mean(0) - noised.mean()).abs() < 5 * se)
    assert torch.all((torch.cov(xt.T) - noised.covariance()).abs() < 0.02)
    # ᾱ = 1 leaves the mixture unchanged, ᾱ = 0 gives N(0, I)
    same = mix.noised(1.0)
    torch.testing.assert_close(same.means, mix.means)
    torch.testing.assert_close(same.stds, mix.stds)
    pure = mix.noised(0.0)
    torch.testing.assert_close(pure.means, torch.zeros_like(mix.means))
    torch.testing.assert_close(pure.stds, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="alpha_bar"):
        mix.noised(1.5)


def test_posterior_mean_single_gaussian_closed_form():
    mu = torch.tensor([0.7, -1.2], dtype=F64)
    s = 0.6
    mix = GaussianMixture(mu[None], s)
    xt = torch.randn(6, 2, generator=_gen(), dtype=F64)
    ab = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.9, 0.999], dtype=F64)
    expected = mu + (ab.sqrt() * s**2 / (ab * s**2 + 1 - ab))[:, None] * (xt - ab.sqrt()[:, None] * mu)
    for a in (ab, ab[:, None]):
        torch.testing.assert_close(mix.posterior_mean_x0(xt, a), expected, rtol=1e-12, atol=1e-12)
    # a scalar ᾱ is used for every row
    torch.testing.assert_close(
        mix.posterior_mean_x0(xt, 0.3)[2], expected[2], rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="alpha_bar must be a number or have shape"):
        mix.posterior_mean_x0(xt, ab[:3])


def test_posterior_mean_equals_quadrature_in_1d():
    mix = make_gaussian_mixture("2gaussians_1d")
    ab = 0.35
    h = 1e-3
    x0 = torch.arange(-6.0, 6.0, h, dtype=F64)
    prior = mix.log_prob(x0[:, None]).exp()
    xt = torch.tensor([[-1.5], [-0.2], [0.0], [0.4], [2.0]], dtype=F64)
    lik = torch.exp(-((xt - math.sqrt(ab) * x0[None]) ** 2) / (2 * (1 - ab)))  # (5, M)
    expected = (lik * prior * x0).sum(1) / (lik * prior).sum(1)
    got = mix.posterior_mean_x0(xt, ab)[:, 0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_posterior_mean_equals_importance_estimate_2d():
    mix = make_gaussian_mixture("8gaussians")
    ab = 0.5
    n = 400_000
    x0 = mix.sample(n, _gen(5), dtype=F64)
    xt = torch.tensor([[0.3, 0.2], [-1.0, 0.5], [0.9, -0.9]], dtype=F64)
    exact = mix.posterior_mean_x0(xt, ab)
    for i in range(3):
        logw = -((xt[i] - math.sqrt(ab) * x0) ** 2).sum(1) / (2 * (1 - ab))
        w = torch.softmax(logw, 0)
        est = (w[:, None] * x0).sum(0)
        # standard error of the self-normalised importance estimate
        se = ((w[:, None] ** 2) * (x0 - est) ** 2).sum(0).sqrt()
        assert torch.all((est - exact[i]).abs() < 5 * se + 1e-12), (est, exact[i], se)


def test_score_equals_autograd_of_noised_log_prob_and_tweedie():
    mix = GaussianMixture([[0.0, 1.0], [2.0, -1.0], [-1.0, -1.5]], [0.5, 1.0, 0.8], [0.2, 0.5, 0.3])
    x = torch.randn(20, 2, generator=_gen(7), dtype=F64)
    for ab in (1.0, 0.7, 0.05):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mix.noised(ab).log_prob(xr).sum(), xr)
        torch.testing.assert_close(mix.score(x, ab), grad, rtol=1e-10, atol=1e-12)
        if ab < 1:
            tweedie = (math.sqrt(ab) * mix.posterior_mean_x0(x, ab) - x) / (1 - ab)
            torch.testing.assert_close(mix.score(x, ab), tweedie, rtol=1e-10, atol=1e-12)
    # per-row ᾱ
    ab = torch.linspace(0.1, 0.9, 20, dtype=F64)
    rows = torch.stack([mix.score(x[i : i + 1], ab[i].item())[0] for i in range(20)])
    torch.testing.assert_close(mix.score(x, ab), rows)


def test_gaussian_mixture_bad_parameters():
    with pytest.raises(ValueError, match="stds"):
        GaussianMixture([[0.0, 0.0]], [-1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 1.0, [0.5, -0.5])
    with pytest.raises(ValueError, match="weights must have shape"):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 1.0, [1.0])
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        make_gaussian_mixture().log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n must be"):
        make_gaussian_mixture().sample(0)


# ----------------------------------------------------------------------------- moons, swiss roll


@pytest.mark.parametrize("make", [make_moons, make_swiss_roll])
def test_toy_sets_standardised_shape_dtype_reproducible(make):
    n = 40_000
    x = make(n, generator=_gen(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.equal(x, make(n, generator=_gen(0)))
    xd = x.double()
    assert torch.all(xd.mean(0).abs() < 5 * xd.std(0) / math.sqrt(n))
    # average variance per coordinate is 1 (the variance estimate has relative s.e. about sqrt(2/n) or more)
    assert abs(xd.var(0).mean().item() - 1.0) < 0.03


def _ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic sup_v |F_a(v) - F_b(v)|."""
    a, b = a.sort().values, b.sort().values
    v = torch.cat([a, b])
    return (torch.searchsorted(a, v, right=True) / len(a) - torch.searchsorted(b, v, right=True) / len(b)).abs().max()


def _assert_same_distribution_2d(x, y):
    """Two-sample KS on both coordinates and four diagonal projections, at the 0.1 % critical value
    c(α) √((n+m)/(nm)) with c = 1.95 (the samples are seeded, so the test is deterministic)."""
    crit = 1.95 * math.sqrt((len(x) + len(y)) / (len(x) * len(y)))
    for angle in torch.arange(6, dtype=F64) * math.pi / 6:
        d = torch.stack([angle.cos(), angle.sin()])
        assert _ks_statistic(x @ d, y @ d) < crit


def test_ks_helper_detects_a_shift():
    x = torch.randn(5000, 2, generator=_gen(0), dtype=F64)
    y = torch.randn(5000, 2, generator=_gen(1), dtype=F64)
    _assert_same_distribution_2d(x, y)
    with pytest.raises(AssertionError):
        _assert_same_distribution_2d(x, y + torch.tensor([0.1, 0.0], dtype=F64))


def test_moons_match_scikit_learn_in_distribution():
    from sklearn.datasets import make_moons as sk_moons

    n = 20_000
    mean, var = _moons_moments(0.1)
    ours = make_moons(n, noise=0.1, generator=_gen(1)).double() * var.mean().sqrt() + mean
    ref, _ = sk_moons(n, noise=0.1, random_state=0)
    _assert_same_distribution_2d(ours, torch.from_numpy(ref))
    # without noise every point lies exactly on one of the two unit circles, half on each
    mean, var = _moons_moments(0.0)
    clean = make_moons(1000, noise=0.0, generator=_gen(2)).double() * var.mean().sqrt() + mean
    outer = (clean[:, 0] ** 2 + clean[:, 1] ** 2 - 1).abs() < 1e-5
    inner = ((clean[:, 0] - 1) ** 2 + (clean[:, 1] - 0.5) ** 2 - 1).abs() < 1e-5
    assert torch.all(outer | inner)
    assert outer.sum().item() == 500


def test_swiss_roll_matches_scikit_learn_in_distribution():
    from sklearn.datasets import make_swiss_roll as sk_roll

    n = 20_000
    mean, var = _swiss_roll_moments(0.5)
    ours = make_swiss_roll(n, noise=0.5, generator=_gen(2)).double() * var.mean().sqrt() + mean
    ref, _ = sk_roll(n, noise=0.5, random_state=0)
    _assert_same_distribution_2d(ours, torch.from_numpy(ref[:, [0, 2]]))
    # Simpson's moments equal a large-sample estimate from scikit-learn's generator
    mean, var = _swiss_roll_moments(0.0)
    big, _ = sk_roll(400_000, noise=0.0, random_state=1)
    big = torch.from_numpy(big[:, [0, 2]])
    assert torch.all((big.mean(0) - mean).abs() < 5 * big.std(0) / math.sqrt(400_000))
    assert torch.all((big.var(0) / var - 1).abs() < 0.02)


def test_toy_sampler_draws_each_data_set():
    """toy_sampler(name)(n, generator): n fresh float32 points of the named set, reproducible with the generator; the
    mixtures are their GaussianMixture's own draws."""
    assert MIXTURE == "8gaussians" and set(TOY_DATASETS) >= {"8gaussians", "grid", "2gaussians", "moons", "swiss_roll"}
    for name in TOY_DATASETS:
        x = toy_sampler(name)(100, _gen(0))
        assert x.shape == (100, 2) and x.dtype == torch.float32, name
        assert torch.equal(x, toy_sampler(name)(100, _gen(0))) and not torch.equal(x, toy_sampler(name)(100, _gen(1)))
    torch.testing.assert_close(toy_sampler(MIXTURE)(50, _gen(3)), make_gaussian_mixture(MIXTURE).sample(50, _gen(3)))
    torch.testing.assert_close(toy_sampler("moons")(50, _gen(3)), make_moons(50, generator=_gen(3)))
    with pytest.raises(ValueError, match="dataset"):
        toy_sampler("circles")


def test_toy_sets_bad_input():
    with pytest.raises(ValueError, match="noise"):
        make_moons(10, noise=-0.1)
    with pytest.raises(ValueError, match="n must be"):
        make_swiss_roll(0)


# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_dtypes_range_and_levels():
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    assert x.shape == (1437, 1, 8, 8) and xt.shape == (360, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() == -1 and x.max() == 1
    assert DIGITS_LEVELS == 17
    # values are v/16*2-1 for integer v in 0..16, and all 17 levels occur
    v = (x.double() + 1) * 8
    torch.testing.assert_close(v, v.round(), rtol=0, atol=1e-6)
    assert sorted(set(v.round().long().unique().tolist())) == list(range(17))
    assert set(y.unique().tolist()) == set(range(10))


def test_digits_split_is_a_stratified_partition():
    from sklearn.datasets import load_digits as sk_load

    x, y = load_digits("train")
    xt, yt = load_digits("test")
    xa, ya = load_digits("all")
    assert xa.shape == (1797, 1, 8, 8)
    # all == sklearn's data, rescaled
    bunch = sk_load()
    torch.testing.assert_close(xa[:, 0].double(), torch.from_numpy(bunch.images) / 16 * 2 - 1)
    # train ∪ test = all, as multisets of (image, label)
    key = lambda imgs, labs: Counter((a.numpy().tobytes(), int(b)) for a, b in zip(imgs, labs))  # noqa: E731
    assert key(x, y) + key(xt, yt) == key(xa, ya)
    # stratified: each class has 20 % of its images in the test split, up to rounding
    for c in range(10):
        n_c = int((ya == c).sum())
        assert abs(int((yt == c).sum()) - 0.2 * n_c) <= 1


def test_digits_split_is_fixed():
    a, la = load_digits("test")
    b, lb = load_digits("test")
    assert torch.equal(a, b) and torch.equal(la, lb)
    # pinned: the first test labels and the label counts of the test split
    assert torch.bincount(lb, minlength=10).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]


def test_digits_bad_split_and_missing_sklearn(monkeypatch):
    with pytest.raises(ValueError, match="split must be one of"):
        load_digits("validation")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="scikit-learn"):
        load_digits("train")


# ----------------------------------------------------------------------------- torchvision


def test_image_to_model_range_golden_values():
    gray = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    out = image_to_model_range(gray)
    assert out.shape == (1, 2, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.tensor([[-1.0, 128 / 255 * 2 - 1], [1.0, 64 / 255 * 2 - 1]]))
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # red channel
    out = image_to_model_range(rgb)
    assert out.shape == (3, 3, 4)
    assert torch.all(out[0] == 1) and torch.all(out[1:] == -1)
    with pytest.raises(TypeError, match="uint8"):
        image_to_model_range(np.zeros((2, 2), dtype=np.float32))


def test_image_to_model_range_accepts_pil_images():
    from PIL import Image

    arr = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    out = image_to_model_range(Image.fromarray(arr))
    torch.testing.assert_close(out[0], torch.from_numpy(arr).float() / 255 * 2 - 1)


def test_load_torchvision_without_torchvision_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match="torchvision is not installed; it is used only in Colab"):
        load_torchvision("mnist")
    with pytest.raises(ValueError, match="name must be one of"):
        load_torchvision("imagenet")
