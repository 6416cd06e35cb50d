"""Losses (chapters 02, 03, 04, 07): the Gaussian KL, the discretized decoder, p_losses and the VLB.

References used here are independent of the library's formulas: torch.distributions' KL, a Monte Carlo
estimate with a tolerance from its standard error, Gauss–Legendre integration of the Gaussian density in
float64 (in log space, so far tails do not underflow), and closed forms worked out by hand.
"""

import math

import numpy as np
import pytest
import torch

from ddpm_lib import (
    NoiseSchedule,
    discretized_gaussian_log_likelihood,
    loss_weight,
    normal_kl,
    p_losses,
    predict_noise_from_start,
    predict_v,
    q_sample,
    vlb_bits_per_dim,
    vlb_terms,
)

F64 = dict(dtype=torch.float64)

# ---------------------------------------------------------------- normal_kl

KL_CASES = [  # (mean1, logvar1, mean2, logvar2)
    (0.0, 0.0, 0.0, 0.0),
    (1.0, 0.0, 0.0, 0.0),
    (0.3, -2.0, -0.5, 1.0),
    (-2.0, 1.5, 0.5, -1.0),
    (0.0, -9.0, 0.0, -8.0),
]


@pytest.mark.parametrize("m1,lv1,m2,lv2", KL_CASES)
def test_normal_kl_closed_form(m1, lv1, m2, lv2):
    """KL = log(σ2/σ1) + (σ1² + (μ1-μ2)²)/(2σ2²) - ½, and torch.distributions' KL."""
    args = [torch.tensor([v], **F64) for v in (m1, lv1, m2, lv2)]
    kl = normal_kl(*args).item()
    s1, s2 = math.exp(lv1 / 2), math.exp(lv2 / 2)
    closed = math.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
    assert kl == pytest.approx(closed, rel=1e-12, abs=1e-15)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1), torch.distributions.Normal(m2, s2))
    assert kl == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)  # torch.distributions works in float32 here
    assert kl >= 0


@pytest.mark.parametrize("m1,lv1,m2,lv2", KL_CASES[1:4])
def test_normal_kl_monte_carlo(m1, lv1, m2, lv2):
    """E_{x~p1}[log p1(x) - log p2(x)] by Monte Carlo, within 5 standard errors of normal_kl."""
    N = 400_000
    g = torch.Generator().manual_seed(0)
    s1, s2 = math.exp(lv1 / 2), math.exp(lv2 / 2)
    x = m1 + s1 * torch.randn(N, generator=g, **F64)
    log_ratio = (-(x - m1) ** 2 / (2 * s1 ** 2) - math.log(s1)) - (-(x - m2) ** 2 / (2 * s2 ** 2) - math.log(s2))
    est, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(N)
    kl = normal_kl(torch.tensor(m1, **F64), lv1, torch.tensor(m2, **F64), lv2).item()
    assert abs(est - kl) <= 5 * se, (est, kl, se)


def test_normal_kl_broadcasts_and_keeps_dtype():
    mean1 = torch.zeros(4, 3, dtype=torch.float32)
    out = normal_kl(mean1, 0.0, torch.ones(3, dtype=torch.float32), torch.zeros(4, 1, dtype=torch.float32))
    assert out.shape == (4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((4, 3), 0.5), rtol=1e-7, atol=0)  # ½ (μ1-μ2)²


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


# ---------------------------------------------------------------- p_losses

SCHED = NoiseSchedule.cosine(1000)


def _batch(seed=0, B=16, shape=(2, 3)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, *shape, generator=g, **F64) * 2 - 1
    eps = torch.randn(B, *shape, generator=g, **F64)
    t = torch.randint(0, SCHED.T, (B,), generator=g)
    t[0], t[1] = 0, SCHED.T - 1
    return x0, eps, t


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("weighting", [None, "snr", "min_snr"])
def test_p_losses_oracle_is_zero(objective, weighting):
    """A model that knows x_0 and ε and returns the exact target of its objective has zero loss."""
    x0, eps, t = _batch()
    target = {"pred_noise": eps, "pred_x0": x0, "pred_v": predict_v(SCHED, x0, t, eps)}[objective]
    expected_xt = q_sample(SCHED, x0, t, eps)

    def oracle(x_t, tt):
        torch.testing.assert_close(x_t, expected_xt, rtol=0, atol=0)
        assert torch.equal(tt, t)
        return target.clone()

    loss = p_losses(oracle, SCHED, x0, t, noise=eps, objective=objective, loss_weighting=weighting)
    assert loss.ndim == 0 and loss.item() == 0.0
    # and a wrong model has a positive loss
    assert p_losses(lambda x, tt: target + 0.1, SCHED, x0, t, noise=eps, objective=objective,
                    loss_weighting=weighting).item() > 0


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_p_losses_value_of_zero_model(objective):
    """L_simple of the model that outputs 0 is the mean square of the target."""
    x0, eps, t = _batch(seed=1)
    target = {"pred_noise": eps, "pred_x0": x0, "pred_v": predict_v(SCHED, x0, t, eps)}[objective]
    per = p_losses(lambda x, tt: torch.zeros_like(x), SCHED, x0, t, noise=eps, objective=objective, reduction="none")
    torch.testing.assert_close(per, (target ** 2).flatten(1).mean(1), rtol=1e-14, atol=0)
    mean = p_losses(lambda x, tt: torch.zeros_like(x), SCHED, x0, t, noise=eps, objective=objective)
    torch.testing.assert_close(mean, (target ** 2).mean(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("weighting", [None, "snr", "min_snr"])
def test_p_losses_weightings_agree_across_objectives(weighting):
    """‖x̂_0-x_0‖² = ‖ε̂-ε‖²/SNR = ‖v̂-v‖²/(SNR+1) at fixed x_t. A weighting is a weight w(t) on the x_0 error, so three
    models that make the *same* prediction in their own parameterization have the same weighted loss, and with
    weighting=None each loss is its own unweighted MSE (the three differ by those SNR factors)."""
    x0, eps, t = _batch(seed=2)
    xt = q_sample(SCHED, x0, t, eps)

    def x0_hat(x, tt):  # some fixed, imperfect prediction of x_0
        return torch.tanh(0.5 * x + 0.001 * tt.to(x)[:, None, None])

    def model_x0(x, tt):
        return x0_hat(x, tt)

    def model_eps(x, tt):
        return predict_noise_from_start(SCHED, x, tt, x0_hat(x, tt))

    def model_v(x, tt):
        return predict_v(SCHED, x0_hat(x, tt), tt, model_eps(x, tt))

    kw = dict(noise=eps, loss_weighting=weighting, reduction="none")
    l_x0 = p_losses(model_x0, SCHED, x0, t, objective="pred_x0", **kw)
    l_eps = p_losses(model_eps, SCHED, x0, t, objective="pred_noise", **kw)
    l_v = p_losses(model_v, SCHED, x0, t, objective="pred_v", **kw)
    snr = SCHED.snr[t]
    err_x0 = ((x0_hat(xt, t) - x0) ** 2).flatten(1).mean(1)
    w = {None: None, "snr": snr, "min_snr": snr.clamp(max=5.0)}[weighting]
    if w is None:
        torch.testing.assert_close(l_x0, err_x0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(l_eps, err_x0 * snr, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(l_v, err_x0 * (snr + 1), rtol=1e-6, atol=1e-9)
    else:
        for loss in (l_x0, l_eps, l_v):
            torch.testing.assert_close(loss, w * err_x0, rtol=1e-6, atol=1e-9)


def test_loss_weight_values():
    t = torch.tensor([0, 10, 500, 999])
    snr = SCHED.snr[t]
    torch.testing.assert_close(loss_weight(SCHED, t, "pred_noise", "snr"), torch.ones(4, **F64), rtol=1e-14, atol=0)
    torch.testing.assert_close(loss_weight(SCHED, t, "pred_x0", "min_snr", 3.0), snr.clamp(max=3.0), rtol=0, atol=0)
    torch.testing.assert_close(loss_weight(SCHED, t, "pred_v", "min_snr"), snr.clamp(max=5.0) / (snr + 1), rtol=1e-14, atol=0)
    for obj in ("pred_noise", "pred_x0", "pred_v"):
        assert (loss_weight(SCHED, t, obj, None) == 1).all()


# ---------------------------------------------------------------- VLB

VSCHED = NoiseSchedule.linear(40, 1e-3, 0.25)


def _digits_like(B=3, nb=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, nb, (B, 1, 2, 3), generator=g).to(torch.float64) / (nb - 1) * 2 - 1


def test_vlb_oracle_has_zero_kl_terms():
    """With the exact posterior (a model returning the true x_0, objective pred_x0, fixed_small variance) every
    L_{t-1} is 0, L_T has its closed form, L_0 is the mass of a Gaussian centred on the bin, total = sum."""
    nb = 17
    x0 = _digits_like(nb=nb)
    oracle = lambda x, t: x0.clone()  # noqa: E731
    out = vlb_terms(oracle, VSCHED, x0, objective="pred_x0", variance="fixed_small", num_bins=nb,
                    generator=torch.Generator().manual_seed(0))
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


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_vlb_imperfect_model_terms(variance):
    """A model that is not the oracle has positive KL terms; a term recomputed by hand matches; bits/dim is
    the nats divided by D ln 2."""
    x0 = _digits_like(B=2, seed=3)
    model = lambda x, t: torch.tanh(x) * 0.3 + 0.01 * t.to(x)[:, None, None, None] / 40  # noqa: E731
    kw = dict(objective="pred_noise", variance=variance, num_bins=17)
    out = vlb_terms(model, VSCHED, x0, generator=torch.Generator().manual_seed(5), **kw)
    assert (out["terms"] > 0).all()
    torch.testing.assert_close(out["total"], out["prior"] + out["terms"].sum(1) + out["decoder"], rtol=1e-14, atol=0)
    # same noise, same numbers
    again = vlb_terms(model, VSCHED, x0, generator=torch.Generator().manual_seed(5), **kw)
    torch.testing.assert_close(again["total"], out["total"], rtol=0, atol=0)
    # recompute L_{t-1} at code index t = 7 by hand: the generator draws one noise tensor per t = 0, 1, ...
    g = torch.Generator().manual_seed(5)
    noises = [torch.randn(x0.shape, generator=g, **F64) for _ in range(8)]
    tt = torch.full((2,), 7)
    xt = q_sample(VSCHED, x0, tt, noises[7])
    eps = model(xt, tt)
    x0_hat = (xt - VSCHED.sqrt_one_minus_alphas_cumprod[7] * eps) / VSCHED.sqrt_alphas_cumprod[7]
    c1, c2 = VSCHED.posterior_mean_coef1[7], VSCHED.posterior_mean_coef2[7]
    mu_model, mu_true = c1 * x0_hat + c2 * xt, c1 * x0 + c2 * xt
    var_true = VSCHED.posterior_variance[7].item()
    var_model = var_true if variance == "fixed_small" else VSCHED.betas[7].item()
    kl = 0.5 * (math.log(var_model / var_true) + var_true / var_model + (mu_true - mu_model) ** 2 / var_model - 1)
    torch.testing.assert_close(out["terms"][:, 6], kl.flatten(1).sum(1), rtol=1e-10, atol=1e-12)
    bpd = vlb_bits_per_dim(model, VSCHED, x0, generator=torch.Generator().manual_seed(5), **kw)
    scale = x0[0].numel() * math.log(2)
    for key in ("prior", "terms", "decoder", "total"):
        torch.testing.assert_close(bpd[key], out[key] / scale, rtol=1e-14, atol=0)
    torch.testing.assert_close(bpd["terms_sum"], out["terms"].sum(1) / scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(bpd["total"], bpd["prior"] + bpd["terms_sum"] + bpd["decoder"], rtol=1e-12, atol=0)
