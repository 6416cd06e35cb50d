"""Tests of ddpm_lib.metrics: closed forms, exact identities, and statistics with tolerances from the sample size.

(The classifier-based measures are in tests/test_classifiers.py, the bits/dim in tests/test_likelihood.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm_lib import metrics as M
from helpers import gen as _gen

# tiny tensors: on a busy 2-core machine two OpenMP threads are many times slower than one
pytestmark = pytest.mark.usefixtures("one_thread_module")

# --------------------------------------------------------------------------------------------
# sliced Wasserstein
# --------------------------------------------------------------------------------------------
def test_sw_1d_shift_is_the_shift():
    """In 1-D, W2(N(0,1), N(m,1)) = |m|; with sorted samples SW² = m² - 2m(x̄ - ȳ) + SW(x, y)² exactly."""
    n, m = 10_000, 1.5
    g = _gen(0)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    # in 1-D every direction is ±1, so a few projections give W2 exactly
    sw_shift = M.sliced_wasserstein(x, y + m, n_projections=4)
    floor = M.sliced_wasserstein(x, y, n_projections=4)
    # exact identity of sorted samples (translation preserves the order)
    expected_sq = m * m - 2 * m * float(x.mean() - y.mean()) + floor**2
    assert sw_shift**2 == pytest.approx(expected_sq, rel=1e-10)
    # statistics: SW - m ≈ -(x̄ - ȳ) + floor²/(2m); x̄ - ȳ has std sqrt(2/n), floor² ≈ 6e-4 at n = 1e4
    tol = 5 * math.sqrt(2 / n) + 0.005
    assert abs(sw_shift - m) < tol
    assert floor < 0.1


def test_sw_identical_sets_is_zero_and_symmetric():
    g = _gen(1)
    x = torch.randn(500, 3, generator=g)
    y = torch.randn(400, 3, generator=g) + 0.5
    assert M.sliced_wasserstein(x, x) == 0.0
    # the empirical measure of [x, x] equals that of x: unequal sizes, distance 0
    assert M.sliced_wasserstein(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-12)
    forward = M.sliced_wasserstein(x, y, generator=_gen(5))
    assert forward == pytest.approx(M.sliced_wasserstein(y, x, generator=_gen(5)), rel=1e-12)
    assert M.sliced_wasserstein(x, y) > 0.1


@pytest.mark.parametrize("a", [3.0, -0.5])
def test_sw_scales_with_the_data(a):
    """SW2(a x, a y) = |a| SW2(x, y) for the same projection directions."""
    g = _gen(2)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    y = torch.rand(250, 2, generator=g, dtype=torch.float64)
    base = M.sliced_wasserstein(x, y, generator=_gen(7))
    assert M.sliced_wasserstein(a * x, a * y, generator=_gen(7)) == pytest.approx(abs(a) * base, rel=1e-10)


def test_sw_unequal_sizes_equals_replicated_equal_sizes():
    """Sizes 6 and 4: repeating each x point twice and each y point three times (12 each) describes the
    same empirical measures, so the exact quantile integral must equal the equal-size sorted formula."""
    g = _gen(3)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    y = torch.randn(4, 2, generator=g, dtype=torch.float64) * 2 + 1
    unequal = M.sliced_wasserstein(x, y, n_projections=64, generator=_gen(11))
    x2, y3 = x.repeat_interleave(2, 0), y.repeat_interleave(3, 0)
    replicated = M.sliced_wasserstein(x2, y3, n_projections=64, generator=_gen(11))
    assert unequal == pytest.approx(replicated, rel=1e-12)
    assert unequal > 0.5


def test_sw_translation_in_d_dims():
    """SW2(x, x + Δ)² = mean_k (θ_k·Δ)², whose expectation over uniform directions is |Δ|²/d; the ratio
    (θ·Δ)²/|Δ|² ~ Beta(1/2, (d-1)/2) has variance 2(d-1)/(d²(d+2))."""
    d, P = 5, 4000
    delta = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    x = torch.randn(200, d, generator=_gen(4), dtype=torch.float64)
    sw = M.sliced_wasserstein(x, x + delta, n_projections=P, generator=_gen(8))
    ratio = sw**2 / float(delta @ delta)
    sd = math.sqrt(2 * (d - 1) / (d * d * (d + 2)) / P)
    assert abs(ratio - 1 / d) < 5 * sd


def test_sw_is_deterministic():
    x = torch.randn(100, 2, generator=_gen(5))
    y = torch.randn(100, 2, generator=_gen(6))
    assert M.sliced_wasserstein(x, y) == M.sliced_wasserstein(x, y)
    assert M.sliced_wasserstein(x, y, generator=_gen(9)) == M.sliced_wasserstein(x, y, generator=_gen(9))
    assert M.sliced_wasserstein(x, y, generator=_gen(9)) != M.sliced_wasserstein(x, y, generator=_gen(10))
    # numpy input gives the same number
    assert M.sliced_wasserstein(x.numpy(), y.numpy()) == M.sliced_wasserstein(x, y)


# --------------------------------------------------------------------------------------------
# data floor
# --------------------------------------------------------------------------------------------
def test_data_floor_repeats_the_metric_on_fresh_draws():
    def sampler(seed):
        g = _gen(seed)
        return lambda n: torch.randn(n, 2, generator=g)

    floor = M.data_floor(sampler(30), 500, M.sliced_wasserstein, repeats=4)
    assert len(floor.values) == 4
    # the same draws by hand
    s = sampler(30)
    by_hand = [M.sliced_wasserstein(s(500), s(500)) for _ in range(4)]
    assert list(floor.values) == by_hand
    assert floor.mean == pytest.approx(float(np.mean(by_hand)), rel=1e-12)
    assert floor.std == pytest.approx(float(np.std(by_hand, ddof=1)), rel=1e-12)
    # same-distribution draws with n = 500: small, and far below a shifted distribution's distance
    assert 0 < floor.mean < 0.2
    assert M.sliced_wasserstein(s(500), s(500) + 1.0) > 5 * floor.mean
    assert M.data_floor(sampler(31), 100, M.sliced_wasserstein, repeats=1).std == 0.0


def test_data_floor_bad_input():
    with pytest.raises(ValueError, match="n = 10"):
        M.data_floor(lambda n: torch.zeros(n + 1, 2), 10, M.sliced_wasserstein)
    with pytest.raises(ValueError, match="repeats"):
        M.data_floor(lambda n: torch.zeros(n, 2), 10, M.sliced_wasserstein, repeats=0)
    with pytest.raises(TypeError, match="metric"):
        M.data_floor(lambda n: torch.zeros(n, 2), 10, "sw")


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------
def _with_exact_moments(n: int, mean: torch.Tensor, cov_sqrt: torch.Tensor, seed: int) -> torch.Tensor:
    """n points whose sample mean is ``mean`` and whose unbiased sample covariance is cov_sqrt cov_sqrtᵀ."""
    d = mean.shape[0]
    z = torch.randn(n, d, generator=_gen(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(torch.cov(z.T).reshape(d, d))
    z = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # now cov(z) = I exactly
    return z @ cov_sqrt.T + mean


def test_frechet_1d_closed_form():
    f64 = dict(dtype=torch.float64)
    a = _with_exact_moments(300, torch.tensor([0.3], **f64), torch.tensor([[1.5]], **f64), 40)
    b = _with_exact_moments(200, torch.tensor([-1.0], **f64), torch.tensor([[0.4]], **f64), 41)
    assert M.frechet_distance(a, b) == pytest.approx((0.3 + 1.0) ** 2 + (1.5 - 0.4) ** 2, rel=1e-10)


def test_frechet_commuting_covariances_closed_form():
    """Σ_a = Q D_a Qᵀ, Σ_b = Q D_b Qᵀ: d² = |μ_a - μ_b|² + Σ_i (sqrt(D_a,i) - sqrt(D_b,i))²."""
    d = 6
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(42), dtype=torch.float64))
    da = torch.tensor([4.0, 1.0, 0.25, 2.0, 9.0, 0.5], dtype=torch.float64)
    db = torch.tensor([1.0, 1.0, 1.0, 0.1, 4.0, 3.0], dtype=torch.float64)
    mu_a = torch.linspace(-1, 1, d, dtype=torch.float64)
    mu_b = torch.zeros(d, dtype=torch.float64)
    a = _with_exact_moments(400, mu_a, q @ torch.diag(da.sqrt()) @ q.T, 43)
    b = _with_exact_moments(500, mu_b, q @ torch.diag(db.sqrt()) @ q.T, 44)
    expected = float(((mu_a - mu_b) ** 2).sum() + ((da.sqrt() - db.sqrt()) ** 2).sum())
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_non_commuting_2x2_closed_form():
    """For 2x2 PSD M, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)); with M = Σa^{1/2} Σb Σa^{1/2},
    tr M = tr(Σa Σb) and det M = det Σa det Σb."""
    la = torch.tensor([[1.0, 0.0], [0.8, 0.5]], dtype=torch.float64)
    lb = torch.tensor([[0.3, 0.0], [-1.2, 2.0]], dtype=torch.float64)
    sa, sb = la @ la.T, lb @ lb.T
    mu_a = torch.tensor([1.0, 2.0], dtype=torch.float64)
    mu_b = torch.tensor([-0.5, 0.0], dtype=torch.float64)
    a = _with_exact_moments(300, mu_a, la, 45)
    b = _with_exact_moments(300, mu_b, lb, 46)
    tr_sqrt = math.sqrt(float(torch.trace(sa @ sb)) + 2 * math.sqrt(float(torch.det(sa) * torch.det(sb))))
    expected = float(((mu_a - mu_b) ** 2).sum() + torch.trace(sa) + torch.trace(sb)) - 2 * tr_sqrt
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_reference():
    """The usual FID formula with scipy.linalg.sqrtm(Σa Σb) on generic (non-commuting) covariances."""
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = _gen(47)
    f64 = dict(generator=g, dtype=torch.float64)
    a = torch.randn(400, 8, **f64) @ torch.randn(8, 8, **f64)
    b = torch.randn(300, 8, **f64) @ torch.randn(8, 8, **f64) + 0.3
    an, bn = a.numpy(), b.numpy()
    ca, cb = np.cov(an, rowvar=False), np.cov(bn, rowvar=False)
    covmean = scipy_linalg.sqrtm(ca @ cb).real
    ref = float(((an.mean(0) - bn.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))
    assert M.frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_frechet_identical_symmetric_and_near_singular():
    g = _gen(48)
    a = torch.randn(200, 10, generator=g)
    b = torch.randn(150, 10, generator=g) * 1.3 + 0.2
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert M.frechet_distance(a, b) == pytest.approx(M.frechet_distance(b, a), rel=1e-9)
    assert M.frechet_distance(a, b) > 0.5
    # rank-deficient covariances: 64 features from 20 points, and a duplicated column
    c = torch.randn(20, 64, generator=g, dtype=torch.float64)
    assert M.frechet_distance(c, c) == pytest.approx(0.0, abs=1e-8 * float(torch.cov(c.T).trace()))
    dup = torch.cat([a, a[:, :1]], dim=1)
    value = M.frechet_distance(dup, dup + 1.0)
    assert value == pytest.approx(11.0, rel=1e-8)  # a pure shift by 1 in 11 coordinates


# --------------------------------------------------------------------------------------------
# memorization
# --------------------------------------------------------------------------------------------
def test_memorization_fraction(digits):
    train_x, _, test_x, _ = digits
    copies = train_x[:100]
    frac, threshold = M.memorization_fraction(copies, train_x, test_x)
    assert frac == 1.0
    # the threshold by brute force: half the median nearest-train distance over test images
    d = torch.cdist(test_x.reshape(-1, 64).double(), train_x.reshape(-1, 64).double()).min(1).values
    assert threshold == pytest.approx(0.5 * float(d.median()), rel=1e-12)
    noise = torch.rand(100, 1, 8, 8, generator=_gen(52)) * 2 - 1
    assert M.memorization_fraction(noise, train_x, test_x)[0] == 0.0
    # held-out digits are by construction mostly farther than the threshold
    assert M.memorization_fraction(test_x, train_x, test_x)[0] < 0.5
    # a copy plus noise of norm 0.6 * threshold is still a copy
    eps = torch.randn(copies.shape, generator=_gen(53))
    eps = eps / eps.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) * 0.6 * threshold
    assert M.memorization_fraction(copies + eps, train_x, test_x)[0] == 1.0


def test_nearest_distance_equals_brute_force():
    g = _gen(54)
    q = torch.randn(37, 5, generator=g, dtype=torch.float64)
    pool = torch.randn(23, 5, generator=g, dtype=torch.float64)
    brute = torch.tensor([min(float((a - b).norm()) for b in pool) for a in q], dtype=torch.float64)
    for batch_size in (1, 10, 2048):  # the batches change nothing
        torch.testing.assert_close(M.nearest_distance(q, pool, batch_size=batch_size), brute, rtol=1e-12, atol=1e-12)
    assert M.nearest_distance(pool[:5], pool).abs().max() == 0.0


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(digits):
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="features per point"):
        M.sliced_wasserstein(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 1"):
        M.sliced_wasserstein(torch.zeros(0, 2), x)
    with pytest.raises(ValueError, match="n_projections"):
        M.sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(TypeError, match="generator"):
        M.sliced_wasserstein(x, x, generator=0)
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        M.sliced_wasserstein([[0.0, 1.0]], x)
    with pytest.raises(ValueError, match="NaN"):
        M.sliced_wasserstein(torch.full((3, 2), float("nan")), x)
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="features per point"):
        M.frechet_distance(torch.randn(5, 4), torch.randn(5, 3))
    train_x, _, test_x, _ = digits
    with pytest.raises(ValueError, match="features per point"):
        M.memorization_fraction(torch.randn(5, 1, 7, 7), train_x, test_x)
    with pytest.raises(ValueError, match="at least 1"):
        M.memorization_fraction(torch.zeros(0, 1, 8, 8), train_x, test_x)
