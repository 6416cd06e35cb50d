"""Likelihood (chapters 02, 03, 07): the Gaussian KL and log-density, the discretized decoder, the variational bound
in nats and bits/dim, and the baselines it is compared with.

References used here are independent of the library's formulas: torch.distributions (float64), a Monte Carlo
estimate with a tolerance from its standard error, Gauss–Legendre integration of the Gaussian density in float64
(in log space, so far tails do not underflow), the exact one-dimensional Gaussian ELBO of ddpm_lib.exact (every term
in closed form, derived in SymPy in chapter 02) and closed forms worked out by hand.
"""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ddpm_lib import NoiseSchedule, discretized_gaussian_log_likelihood, normal_kl, vlb_bits_per_dim, vlb_terms
from ddpm_lib.data import GaussianMixture, load_digits
from ddpm_lib.diffusion import predict_start_from_noise
from ddpm_lib.exact import OracleDenoiser, elbo_terms, true_reverse_process
from ddpm_lib.likelihood import bits_per_dim, categorical_bits_per_dim, gaussian_log_density, uniform_bits_per_dim
from helpers import F64, gen

# ---------------------------------------------------------------- Gaussian KL and log-density

KL_CASES = [  # (mean1, logvar1, mean2, logvar2)
    (0.0, 0.0, 0.0, 0.0),
    (1.0, 0.0, 0.0, 0.0),
    (0.3, -2.0, -0.5, 1.0),
    (-2.0, 1.5, 0.5, -1.0),
    (0.0, -9.0, 0.0, -8.0),
]


def _normal(mean, logvar):
    """torch.distributions' Normal in float64 from a mean and a log-variance."""
    return Normal(torch.tensor(mean, **F64), torch.tensor(logvar / 2, **F64).exp())


@pytest.mark.parametrize("m1,lv1,m2,lv2", KL_CASES)
def test_normal_kl_equals_torch_distributions(m1, lv1, m2, lv2):
    """normal_kl equals torch.distributions' KL of the same two Normals, in float64 (to 1e-12)."""
    args = [torch.tensor([v], **F64) for v in (m1, lv1, m2, lv2)]
    kl = normal_kl(*args).item()
    ref = kl_divergence(_normal(m1, lv1), _normal(m2, lv2)).item()
    assert kl == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert kl >= 0


@pytest.mark.parametrize("m1,lv1,m2,lv2", KL_CASES[1:4])
def test_normal_kl_monte_carlo(m1, lv1, m2, lv2):
    """E_{x~p1}[log p1(x) - log p2(x)] by Monte Carlo (torch.distributions' log_prob), within 5 standard errors of
    normal_kl."""
    N = 400_000
    p1, p2 = _normal(m1, lv1), _normal(m2, lv2)
    x = m1 + p1.scale * torch.randn(N, generator=gen(0), **F64)
    log_ratio = p1.log_prob(x) - p2.log_prob(x)
    est, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(N)
    kl = normal_kl(torch.tensor(m1, **F64), lv1, torch.tensor(m2, **F64), lv2).item()
    assert abs(est - kl) <= 5 * se, (est, kl, se)


def test_normal_kl_broadcasts_and_keeps_dtype():
    mean1 = torch.zeros(4, 3, dtype=torch.float32)
    out = normal_kl(mean1, 0.0, torch.ones(3, dtype=torch.float32), torch.zeros(4, 1, dtype=torch.float32))
    assert out.shape == (4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((4, 3), 0.5), rtol=1e-7, atol=0)  # ½ (μ1-μ2)²


def test_gaussian_log_density_equals_torch_distributions():
    """log N(x; mean, var) against Normal(mean, √var).log_prob, with broadcasting and a number as the variance."""
    g = gen(1)
    x = torch.randn(5, 3, generator=g, **F64) * 2
    mean = torch.randn(3, generator=g, **F64)
    var = torch.rand(5, 1, generator=g, **F64) + 0.1
    torch.testing.assert_close(gaussian_log_density(x, mean, var), Normal(mean, var.sqrt()).log_prob(x),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gaussian_log_density(x, 0.5, 0.25), _normal(0.5, math.log(0.25)).log_prob(x), rtol=1e-12,
                               atol=1e-12)
    out32 = gaussian_log_density(x.float(), mean.float(), 0.3)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, Normal(mean, math.sqrt(0.3)).log_prob(x).float(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- discretized decoder


def _bin_log_prob_quadrature(x_centre, mean, log_scale, num_bins, nodes=20, levels=45):
    """log ∫_{x-δ}^{x+δ} N(u; mean, e^{2 log_scale}) du by composite Gauss–Legendre quadrature in float64.

    The bin is split at the mean (when inside) and each part is graded geometrically towards both of its ends
    (pieces of width L 2^-k), so that even a bin hundreds of standard deviations away, where the density falls
    by e^-1000 across the bin, is resolved; the sum is done in log space (log-sum-exp) so nothing underflows.
    """
    d = 1.0 / (num_bins - 1)
    s = math.exp(log_scale)
    lo, hi = x_centre - d, x_centre + d
    cuts = [lo, hi] + ([mean] if lo < mean < hi else [])
    cuts = sorted(cuts)
    edges = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        frac = 0.5 ** np.arange(1, levels + 1)
        edges.extend([a, b, (a + b) / 2])
        edges.extend(a + (b - a) * frac)
        edges.extend(b - (b - a) * frac)
    edges = np.unique(np.array(edges))
    z, w = np.polynomial.legendre.leggauss(nodes)
    half = (edges[1:] - edges[:-1]) / 2
    mid = (edges[1:] + edges[:-1]) / 2
    keep = half > 0
    half, mid = half[keep], mid[keep]
    u = (mid[:, None] + half[:, None] * z[None, :]).ravel()
    logw = (np.log(half)[:, None] + np.log(w)[None, :]).ravel()
    logpdf = -0.5 * ((u - mean) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    a = logw + logpdf
    return float(a.max() + np.log(np.exp(a - a.max()).sum()))


BIN_CASES = [(nb, m, ls) for nb in (256, 17)
             for m, ls in [(0.0, 0.0), (0.37, -1.0), (-0.8, -2.0), (0.55, -3.0), (-0.2, -4.6), (0.9, -6.0), (1.3, -1.5)]]


@pytest.mark.parametrize("num_bins,mean,log_scale", BIN_CASES)
def test_discretized_middle_bins_match_integration(num_bins, mean, log_scale):
    """log P(bin) of every middle bin equals the float64 integral of the Gaussian density over the bin
    (relative error 1e-9 of the log-likelihood), including bins many standard deviations away from the mean."""
    x = torch.linspace(-1, 1, num_bins, **F64)
    ll = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale), num_bins)
    ref = torch.tensor([_bin_log_prob_quadrature(xi, mean, log_scale, num_bins) for xi in x.tolist()], **F64)
    mid = slice(1, num_bins - 1)
    err = (ll[mid] - ref[mid]).abs() / ref[mid].abs().clamp(min=1.0)
    worst = int(err.argmax()) + 1
    assert err.max().item() <= 1e-9, (
        f"bin x={x[worst].item():.4f}: got {ll[worst].item():.10g}, integral gives {ref[worst].item():.10g}")


@pytest.mark.parametrize("num_bins", [256, 17, 2])
@pytest.mark.parametrize("mean", [-50.0, -1.0, -0.4, 0.0, 0.01, 1.0, 1.7])
@pytest.mark.parametrize("log_scale", [-12.0, -5.0, -1.0, 0.0, 3.0])
def test_discretized_probabilities_sum_to_one(num_bins, mean, log_scale):
    x = torch.linspace(-1, 1, num_bins, **F64)
    ll = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, log_scale), num_bins)
    assert torch.isfinite(ll).all() or (ll[torch.isfinite(ll).logical_not()] == -math.inf).all()
    assert (ll <= 1e-12).all()
    total = torch.exp(ll).sum().item()
    assert total == pytest.approx(1.0, abs=1e-10)


def test_discretized_edge_bins_closed_form():
    """First bin: Φ((-1 + δ - μ)/σ); last bin: 1 - Φ((1 - δ - μ)/σ) (computed with math.erfc)."""
    nb, mu, ls = 17, 0.2, -1.3
    s, d = math.exp(ls), 1 / (nb - 1)
    x = torch.tensor([-1.0, 1.0], **F64)
    ll = discretized_gaussian_log_likelihood(x, torch.full_like(x, mu), torch.full_like(x, ls), nb)
    first = 0.5 * math.erfc(-((-1 + d - mu) / s) / math.sqrt(2))
    last = 0.5 * math.erfc(((1 - d - mu) / s) / math.sqrt(2))
    assert ll[0].item() == pytest.approx(math.log(first), rel=1e-12)
    assert ll[1].item() == pytest.approx(math.log(last), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_shapes_and_dtype(dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 256, (3, 1, 4, 4), generator=g).to(dtype) / 255) * 2 - 1
    means = (x + 0.01 * torch.randn(x.shape, generator=g, dtype=dtype)).clamp(-1.2, 1.2)
    ll = discretized_gaussian_log_likelihood(x, means, torch.full((3, 1, 1, 1), -3.0, dtype=dtype))
    assert ll.shape == x.shape and ll.dtype == dtype
    ll_scalar = discretized_gaussian_log_likelihood(x, means, torch.tensor(-3.0, dtype=dtype))
    torch.testing.assert_close(ll, ll_scalar)
    assert torch.isfinite(ll).all() and (ll <= 0).all()


# ---------------------------------------------------------------- VLB

VSCHED = NoiseSchedule.linear(40, 1e-3, 0.25)


def _digits_like(B=3, nb=17, seed=0):
    return torch.randint(0, nb, (B, 1, 2, 3), generator=gen(seed)).to(torch.float64) / (nb - 1) * 2 - 1


def test_vlb_oracle_has_zero_kl_terms():
    """With the exact posterior (a model returning the true x_0, objective pred_x0, fixed_small variance) every
    L_{t-1} is 0, L_T has its closed form, L_0 is the mass of a Gaussian centred on the bin, total = sum."""
    nb = 17
    x0 = _digits_like(nb=nb)
    oracle = lambda x, t: x0.clone()  # noqa: E731
    out = vlb_terms(oracle, VSCHED, x0, objective="pred_x0", variance="fixed_small", num_bins=nb,
                    generator=gen(0), progress=False)
    B, D = x0.shape[0], x0[0].numel()
    assert out["terms"].shape == (B, VSCHED.T - 1)
    assert out["terms"].abs().max().item() <= 1e-10
    ab = VSCHED.alphas_cumprod[-1].item()
    prior = 0.5 * (-1 - math.log(1 - ab) + (1 - ab) + ab * (x0 ** 2).flatten(1).sum(1) / D) * D
    torch.testing.assert_close(out["prior"], prior, rtol=1e-12, atol=1e-14)
    # decoder: mean = x_0 exactly, σ² = β̃ at code index 1 (the clipped log-variance of index 0)
    s = math.sqrt(VSCHED.posterior_variance[1].item())
    d = 1 / (nb - 1)
    p_mid = math.erf(d / (s * math.sqrt(2)))
    p_edge = 0.5 * math.erfc(-d / (s * math.sqrt(2)))
    edge = (x0.abs() == 1).flatten(1).sum(1).to(torch.float64)
    decoder = -(edge * math.log(p_edge) + (D - edge) * math.log(p_mid))
    torch.testing.assert_close(out["decoder"], decoder, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["total"], out["prior"] + out["terms"].sum(1) + out["decoder"], rtol=1e-14, atol=0)



def test_vlb_terms_bits_per_dim_and_determinism():
    """An imperfect model has positive KL terms; the same generator gives the same numbers; bits/dim is the nats
    divided by D ln 2 for every key."""
    x0 = _digits_like(B=2, seed=3)
    model = lambda x, t: torch.tanh(x) * 0.3 + 0.01 * t.to(x)[:, None, None, None] / 40  # noqa: E731
    kw = dict(num_bins=17, progress=False)
    out = vlb_terms(model, VSCHED, x0, generator=gen(5), **kw)
    assert (out["terms"] > 0).all()
    torch.testing.assert_close(out["total"], out["prior"] + out["terms"].sum(1) + out["decoder"], rtol=1e-14, atol=0)
    again = vlb_terms(model, VSCHED, x0, generator=gen(5), **kw)
    torch.testing.assert_close(again["total"], out["total"], rtol=0, atol=0)
    other = vlb_terms(model, VSCHED, x0, generator=gen(6), **kw)
    assert (other["terms"] - out["terms"]).abs().max() > 1e-6  # fresh noise per step: the draw matters
    bpd = vlb_bits_per_dim(model, VSCHED, x0, generator=gen(5), **kw)
    scale = x0[0].numel() * math.log(2)
    for key in ("prior", "terms", "decoder", "total"):
        torch.testing.assert_close(bpd[key], out[key] / scale, rtol=1e-14, atol=0)
    torch.testing.assert_close(bpd["terms_sum"], out["terms"].sum(1) / scale, rtol=1e-12, atol=0)


# The exact one-dimensional Gaussian example (chapter 02, ddpm_lib.exact): data N(μ_0, s_0²), for which the exact
# ε-prediction E[ε | x_t] is the OracleDenoiser of a one-component mixture. With it the model's mean μ̃(x_t, x̂_0)
# is the true E[x_{t-1} | x_t] (μ̃ is linear in x_0), so p_θ is the true reverse process with the chosen variance,
# and elbo_terms gives every term E_{x_t}[KL] in closed form. vlb_terms draws one x_t per example: the mean of a
# column over N copies of x_0 must be within 5 standard errors of the closed form.
GAUSS = {0: (0.3, 0.4, 0.25), 1: (-0.5, 0.2, -0.6)}  # class: (μ_0, s_0, the x_0 evaluated)
N_COPIES = 20_000


def _oracle(cls, v=None):
    mu0, s0, _ = GAUSS[cls]
    oracle = OracleDenoiser(GaussianMixture([[mu0]], s0), VSCHED)
    if v is None:
        return oracle
    return lambda x, t: torch.cat([oracle(x, t), torch.full_like(x, v)], 1)


def _reverse(cls, variance, v=None):
    """exact.true_reverse_process with our variance choice (learned_range: exp(f log β + (1-f) log β̃), f = (v+1)/2)."""
    mu0, s0, _ = GAUSS[cls]
    if variance != "learned_range":
        return true_reverse_process(VSCHED, mu0, s0, variance=variance)
    rev = true_reverse_process(VSCHED, mu0, s0, variance="fixed_small")
    f = (v + 1) / 2
    return rev._replace(variance=torch.exp(f * VSCHED.betas.log() + (1 - f) * VSCHED.posterior_log_variance_clipped))


def _check_against_exact(out, rows, cls, variance, v=None):
    exact = elbo_terms(torch.tensor([GAUSS[cls][2]], **F64), VSCHED, _reverse(cls, variance, v))
    torch.testing.assert_close(out["prior"][rows], exact["L_T"].expand(int(rows.sum())), rtol=1e-12, atol=1e-14)
    terms = out["terms"][rows]
    se = terms.std(0) / math.sqrt(terms.shape[0])
    err = (terms.mean(0) - exact["L_tm1"][0]).abs()
    assert (err <= 5 * se + 1e-12).all(), (err / se).max()
    return exact


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_vlb_terms_equal_the_exact_gaussian_elbo(variance, one_thread):
    """vlb_terms of the exact ε-model of Gaussian data against exact.elbo_terms (see above), term by term;
    learned_range with the network's v = 0.3 everywhere."""
    v = 0.3 if variance == "learned_range" else None
    x0 = torch.full((N_COPIES, 1), GAUSS[0][2], **F64)
    out = vlb_terms(_oracle(0, v=v), VSCHED, x0, variance=variance, num_bins=256, generator=gen(1), progress=False)
    exact = _check_against_exact(out, torch.ones(N_COPIES, dtype=torch.bool), 0, variance, v)
    # the check has power: the other variance's closed form is many standard errors away in the early terms
    wrong = elbo_terms(torch.tensor([GAUSS[0][2]], **F64), VSCHED,
                       _reverse(0, "fixed_large" if variance == "fixed_small" else "fixed_small"))
    se = out["terms"].std(0) / math.sqrt(N_COPIES)
    assert ((out["terms"].mean(0) - wrong["L_tm1"][0]).abs() > 5 * se).any()
    assert exact["L_tm1"].min() > 0


def test_vlb_terms_pass_labels_to_a_class_conditional_model(one_thread):
    """A class-conditional exact model (a different Gaussian per class): each example's terms follow its own class's
    closed form, so the labels reached the model example by example."""
    y = torch.arange(N_COPIES) % 2
    x0 = torch.tensor([GAUSS[0][2], GAUSS[1][2]], **F64)[y][:, None]
    models = {c: _oracle(c) for c in GAUSS}

    def cond_model(x, t, labels):
        return torch.where(labels[:, None] == 0, models[0](x, t), models[1](x, t))

    out = vlb_terms(cond_model, VSCHED, x0, y=y, variance="fixed_large", generator=gen(2), progress=False)
    for c in GAUSS:
        _check_against_exact(out, y == c, c, "fixed_large")


def test_vlb_learned_range_ends_are_the_fixed_variances():
    """v = +1 is log β_t, v = -1 is the clipped log β̃_t: with the same noise, learned_range equals fixed_large in
    every L_{t-1} (t >= 1) and fixed_small everywhere (the decoder too)."""
    x0 = _digits_like(B=3, seed=4)
    eps_model = lambda x, t: torch.tanh(x) * 0.3  # noqa: E731

    def run(model, variance):
        return vlb_terms(model, VSCHED, x0, variance=variance, num_bins=17, generator=gen(3), progress=False)

    def learned(v):
        return lambda x, t: torch.cat([eps_model(x, t), torch.full_like(x, v)], 1)

    large, small = run(eps_model, "fixed_large"), run(eps_model, "fixed_small")
    hi, lo = run(learned(1.0), "learned_range"), run(learned(-1.0), "learned_range")
    torch.testing.assert_close(hi["terms"], large["terms"], rtol=1e-10, atol=1e-12)
    for key in ("prior", "terms", "decoder", "total"):
        torch.testing.assert_close(lo[key], small[key], rtol=1e-10, atol=1e-12)
    assert (large["terms"] - small["terms"]).abs().max() > 1e-3


def test_vlb_clip_denoised_is_the_clamped_x0_model():
    """clip_denoised=True clamps x̂_0 before the posterior mean: the same as an x_0-model that returns the clamped
    x̂_0, unclipped, with the same noise; and it changes the bound for a model whose x̂_0 leaves [-1, 1]."""
    x0 = _digits_like(B=3, seed=5)
    eps_model = lambda x, t: -0.8 * x  # noqa: E731  (x̂_0 = x_t (1 + 0.8 √(1-ᾱ))/√ᾱ, often beyond ±1)

    def x0_model(x, t):
        return predict_start_from_noise(VSCHED, x, t, eps_model(x, t)).clamp(-1, 1)

    kw = dict(num_bins=17, generator=None, progress=False)
    clipped = vlb_terms(eps_model, VSCHED, x0, clip_denoised=True, **{**kw, "generator": gen(4)})
    ref = vlb_terms(x0_model, VSCHED, x0, objective="pred_x0", clip_denoised=False, **{**kw, "generator": gen(4)})
    raw = vlb_terms(eps_model, VSCHED, x0, clip_denoised=False, **{**kw, "generator": gen(4)})
    for key in ("prior", "terms", "decoder", "total"):
        torch.testing.assert_close(clipped[key], ref[key], rtol=1e-10, atol=1e-12)
    assert (raw["total"] - clipped["total"]).abs().min() > 1e-3


# ---------------------------------------------------------------- bits/dim and baselines


def test_bits_per_dim():
    assert bits_per_dim(64 * math.log(2) * 3.0, 64) == pytest.approx(3.0, rel=1e-14)
    # uniform over 17 grey levels: log2(17) = 4.09 bits/dim (chapter 07's baseline)
    assert bits_per_dim(64 * math.log(17), 64) == pytest.approx(4.087, abs=5e-4)
    t = torch.tensor([math.log(2) * 2, math.log(2) * 4], **F64)
    torch.testing.assert_close(bits_per_dim(t, 2), torch.tensor([1.0, 2.0], **F64))
    assert bits_per_dim(torch.tensor([2, 4]), 1).dtype == torch.float64  # integer nats become floats
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 0)
    with pytest.raises(TypeError, match="nll_nats"):
        bits_per_dim("1.0", 64)


def test_uniform_and_categorical_baselines():
    assert math.isclose(uniform_bits_per_dim(17), math.log2(17)) and round(uniform_bits_per_dim(17), 2) == 4.09
    # a hand-made case: 1 pixel, 2 levels, train = [0, 0, 0, 1] -> p = (3+1)/(4+2), (1+1)/(4+2)
    train = torch.tensor([[-1.0], [-1.0], [-1.0], [1.0]])
    test = torch.tensor([[-1.0], [1.0]])
    expected = -(math.log2(4 / 6) + math.log2(2 / 6)) / 2
    assert math.isclose(categorical_bits_per_dim(train, test, levels=2), expected, rel_tol=1e-12)
    # alpha = 0.5 on the same case: p = (3.5/5, 1.5/5)
    expected = -(math.log2(3.5 / 5) + math.log2(1.5 / 5)) / 2
    assert math.isclose(categorical_bits_per_dim(train, test, levels=2, alpha=0.5), expected, rel_tol=1e-12)
    # the categorical model of the digits is better than uniform but far from free
    xtr, _ = load_digits("train")
    xte, _ = load_digits("test")
    bpd = categorical_bits_per_dim(xtr, xte, levels=17)
    assert 1.0 < bpd < uniform_bits_per_dim(17)
    # without smoothing an unseen level would cost infinitely many bits; alpha must be positive
    with pytest.raises(ValueError, match="alpha"):
        categorical_bits_per_dim(xtr, xte, levels=17, alpha=0)
    with pytest.raises(ValueError, match="levels"):
        uniform_bits_per_dim(1)
    with pytest.raises(ValueError, match="pixels"):
        categorical_bits_per_dim(xtr, xte[:, :, :4], levels=17)
