"""Chapters 01 and 02: the SymPy derivations of ``ddpm_lib.symbolic.forward`` / ``.elbo`` checked
against the library's numerics (NoiseSchedule buffers, q_sample, normal_kl, vlb_terms), and the
exact 1-D Gaussian example of ``ddpm_lib.exact`` checked against the derivations and independent
computations (Monte Carlo, the KL between the T-dimensional Gaussians q(x_{1:T}|x_0) and p(x_{1:T}|x_0))."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from ddpm_lib import NoiseSchedule, exact, linear_beta_schedule, normal_kl, q_posterior, q_sample, vlb_terms
from ddpm_lib.data import GaussianMixture
from ddpm_lib.symbolic import alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, x_0, x_prev, x_t
from ddpm_lib.symbolic import elbo as L
from ddpm_lib.symbolic import forward as F


# --------------------------------------------------------------------------------------------------
# fixtures: each derivation runs once per test session
@pytest.fixture(scope="module")
def closed_form():
    return F.q_xt_given_x0_induction()


@pytest.fixture(scope="module")
def snr():
    return F.snr_relations()


@pytest.fixture(scope="module")
def schedules():
    return {
        "linear": NoiseSchedule.linear(1000),
        "cosine": NoiseSchedule.cosine(1000),
        "sigmoid": NoiseSchedule.sigmoid(1000),
    }


# --------------------------------------------------------------------------------------------------
# the checks themselves can fail
def test_check_equal_rejects_a_false_identity():
    with pytest.raises(AssertionError, match="wrong sign"):
        check_equal(sp.sqrt(alpha_t) * x_0, -sp.sqrt(alpha_t) * x_0, "wrong sign")
    # ... and accepts a true one, returning the verified right-hand side
    assert check_equal(alpha_t * alphabar_prev + 1 - alpha_t * alphabar_prev, sp.Integer(1), "ok") == 1


def test_density_identity_rejects_a_wrong_posterior_mean():
    r, g = sp.symbols("r g", positive=True)
    mean, var = L._posterior_in_roots(r, g)
    wrong_mean = mean.coeff(x_0) * x_0 - mean.coeff(x_t) * x_t  # sign flipped
    with pytest.raises(AssertionError, match="exponents"):
        L._assert_same_log_density(
            [(x_t, r * x_prev, 1 - r**2), (x_prev, g * x_0, 1 - g**2)],
            [(x_prev, wrong_mean, var), (x_t, r * g * x_0, 1 - r**2 * g**2)],
            "wrong posterior",
        )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n must be"):
        F.q_xt_given_x0_unrolled(0)
    with pytest.raises(ValueError, match="T must be"):
        L.telescoped_log_q(0)
    sched = NoiseSchedule.cosine(10)
    with pytest.raises(ValueError, match="variance must be one of"):
        exact.true_reverse_process(sched, 0.0, 1.0, variance="large")
    with pytest.raises(ValueError, match="prior must be one of"):
        exact.true_reverse_process(sched, 0.0, 1.0, prior="flat")
    with pytest.raises(ValueError, match="s0 must be"):
        exact.data_marginals(sched, 0.0, -1.0)


# --------------------------------------------------------------------------------------------------
# chapter 01
def test_forward_step_and_variance_recursion(schedules):
    step = F.forward_step()
    assert step.mean == sp.sqrt(alpha_t) * x_prev and step.variance == beta_t
    res = F.forward_step_variance()
    assert sp.simplify(res.b_for_unit_variance - sp.sqrt(1 - res.a**2)) == 0
    # iterate Var_t = α_t Var_{t-1} + β_t from Var_0 = v0: closed form 1 + ᾱ_t (v0 - 1) (deviation shrinks by α_t)
    sched = schedules["linear"]
    step_fn = sp.lambdify((alpha_t, res.v), res.ddpm)
    for v0 in (0.0, 0.3, 4.0):
        var, out = v0, []
        for a in sched.alphas.tolist():
            var = step_fn(a, var)
            out.append(var)
        torch.testing.assert_close(torch.tensor(out, dtype=torch.float64), 1 + sched.alphas_cumprod * (v0 - 1),
                                   rtol=0, atol=1e-12)


def test_q_xt_x0_closed_form_equals_schedule_buffers(closed_form, schedules):
    mean_coef = sp.lambdify(alphabar_t, closed_form.mean.coeff(x_0))
    var = sp.lambdify(alphabar_t, closed_form.variance)
    for sched in schedules.values():
        ab = sched.alphas_cumprod.numpy()
        torch.testing.assert_close(torch.from_numpy(mean_coef(ab)), sched.sqrt_alphas_cumprod, rtol=1e-14, atol=0)
        torch.testing.assert_close(torch.from_numpy(var(ab)).sqrt(), sched.sqrt_one_minus_alphas_cumprod,
                                   rtol=1e-12, atol=0)


def test_unrolled_chain_matches_cumprod(schedules):
    n = 6
    res = F.q_xt_given_x0_unrolled(n)
    sched = schedules["cosine"]
    vals = dict(zip(res.alphas, sched.alphas[:n].tolist()))
    assert float(res.mean.coeff(x_0).subs(vals)) == pytest.approx(sched.sqrt_alphas_cumprod[n - 1].item(), rel=1e-14)
    assert float(res.variance.subs(vals)) == pytest.approx(1 - sched.alphas_cumprod[n - 1].item(), rel=1e-12)


def test_q_sample_moments_match_closed_form(closed_form):
    """Monte Carlo with ddpm_lib.q_sample: tolerances from the sample size (5 standard errors)."""
    sched = NoiseSchedule.linear(1000)
    n = 200_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 0.8, dtype=torch.float64)
    for t in (0, 99, 499, 999):
        noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
        xt = q_sample(sched, x0, torch.full((n,), t), noise)
        ab = sched.alphas_cumprod[t].item()
        mean = float(closed_form.mean.subs({alphabar_t: ab, x_0: 0.8}))
        var = float(closed_form.variance.subs(alphabar_t, ab))
        assert abs(xt.mean().item() - mean) < 5 * math.sqrt(var / n)
        assert abs(xt.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))


def test_snr_relations_match_schedule(snr, schedules):
    snr_f = sp.lambdify(alphabar_t, snr.snr)
    log_snr_f = sp.lambdify(alphabar_t, snr.log_snr)
    ab_from_lam = sp.lambdify(snr.lam, snr.alphabar_from_log_snr)
    ratio = sp.lambdify((alphabar_prev, beta_t), snr.noise_ratio)
    for sched in schedules.values():
        ab = sched.alphas_cumprod.numpy()
        torch.testing.assert_close(torch.from_numpy(snr_f(ab)), sched.snr, rtol=1e-12, atol=0)
        ab_back = torch.from_numpy(ab_from_lam(log_snr_f(ab)))
        torch.testing.assert_close(ab_back, sched.alphas_cumprod, rtol=1e-9, atol=0)
        # (1 - ᾱ_t)/(1 - ᾱ_{t-1}) = 1 + SNR_{t-1} β_t for t ≥ 2
        lhs = (1 - sched.alphas_cumprod[1:]) / (1 - sched.alphas_cumprod[:-1])
        got = torch.from_numpy(ratio(ab[:-1], sched.betas[1:].numpy()))
        torch.testing.assert_close(got, lhs, rtol=1e-10, atol=0)
        assert (sched.snr[1:] < sched.snr[:-1]).all()  # SNR falls with t


def test_linear_sum_beta_and_bound():
    res = F.linear_sum_beta()
    T = 1000
    betas = linear_beta_schedule(T)
    f = sp.lambdify((res.t, res.T, res.beta_1, res.beta_T), res.sum_beta)
    t = torch.arange(1, T + 1, dtype=torch.float64).numpy()
    torch.testing.assert_close(torch.from_numpy(f(t, T, 1e-4, 0.02)), betas.cumsum(0), rtol=1e-10, atol=0)
    sched = NoiseSchedule(betas)
    assert (sched.alphas_cumprod.log() <= -betas.cumsum(0)).all()
    # the bound is close at T: log ᾱ_T = -10.118 (ᾱ_T = 4.04e-5) vs -Σβ = -10.05
    assert sched.alphas_cumprod[-1].log().item() == pytest.approx(-10.1177, abs=1e-3)
    assert -betas.sum().item() == pytest.approx(-10.05, rel=1e-12)


def test_cosine_closed_form_equals_library():
    res = F.cosine_schedule()
    T = 1000
    sched = NoiseSchedule.cosine(T)
    f = sp.lambdify((res.t, res.T, res.s), res.alphabar)
    t = torch.arange(1, T, dtype=torch.float64).numpy()  # the last β is clipped at 0.999
    torch.testing.assert_close(torch.from_numpy(f(t, T, 0.008)), sched.alphas_cumprod[:-1], rtol=1e-9, atol=1e-15)
    assert sched.betas[-1].item() == pytest.approx(0.999)


def test_prior_kl_matches_normal_kl_and_paper_scale(schedules):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(1000, generator=g, dtype=torch.float64) * 2 - 1
    for sched in schedules.values():
        abT = sched.alphas_cumprod[-1]
        ours = F.prior_kl_numeric(abT, x0, bits=False)
        lib = normal_kl(abT.sqrt() * x0, torch.log(1 - abT).expand_as(x0), torch.zeros_like(x0), torch.zeros_like(x0))
        # values are 1e-9 .. 1e-5 nats; normal_kl's cancellation error is ~1e-17
        torch.testing.assert_close(ours, lib, rtol=1e-7, atol=1e-15)
    # linear schedule, T = 1000, x_0 = ±1: L_T = -log(1 - ᾱ_T)/2 ... + ᾱ_T (1 - 1)/2, in bits, about 2.9e-5
    abT = schedules["linear"].alphas_cumprod[-1].item()
    assert F.prior_kl_numeric(abT, 1.0) == pytest.approx(-math.log1p(-abT) / 2 / math.log(2), rel=1e-9)
    assert 2.5e-5 < F.prior_kl_numeric(abT, 1.0) < 3.5e-5


# --------------------------------------------------------------------------------------------------
# chapter 02: SymPy
def test_gaussian_kl_formula_equals_normal_kl():
    kl = L.gaussian_kl_1d()
    f = sp.lambdify((kl.m1, kl.v1, kl.m2, kl.v2), kl.kl)
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(2, 100, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(2, 100, generator=g, dtype=torch.float64) + 0.1
    ours = torch.from_numpy(f(m1.numpy(), v1.numpy(), m2.numpy(), v2.numpy()))
    torch.testing.assert_close(ours, normal_kl(m1, v1.log(), m2, v2.log()), rtol=1e-12, atol=1e-14)


def test_one_step_gap_matches_numeric_elbo():
    """The SymPy T = 1 ELBO equals the numeric closed-form ELBO of elbo_terms for a 1-step schedule."""
    res = L.one_step_elbo_gap()
    beta, a, b, s2, x0 = 0.3, 0.7, 0.1, 0.4, 0.55
    sched = NoiseSchedule(torch.tensor([beta], dtype=torch.float64))
    f64 = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    rev = exact.GaussianReverseProcess(f64(a), f64(b), f64(s2))
    vals = {alpha_t: 1 - beta, res.a: a, res.b: b, res.s2: s2, x_0: x0}
    numeric = exact.elbo(torch.tensor(x0, dtype=torch.float64), sched, rev).item()
    assert float(res.elbo.subs(vals)) == pytest.approx(numeric, rel=1e-12)
    assert float(res.log_px0.subs(vals)) == pytest.approx(exact.exact_log_likelihood(x0, rev).item(), rel=1e-12)
    assert float(res.gap.subs(vals)) > 0


def test_markov_bayes_coefficients_equal_schedule_buffers(schedules):
    post = L.markov_bayes_step()
    for sched in schedules.values():
        args = (sched.alphas[1:].numpy(), sched.alphas_cumprod[:-1].numpy())
        for expr, buf in ((post.coef_x0, sched.posterior_mean_coef1), (post.coef_xt, sched.posterior_mean_coef2),
                          (post.variance, sched.posterior_variance)):
            got = torch.from_numpy(sp.lambdify((alpha_t, alphabar_prev), expr)(*args))
            torch.testing.assert_close(got, buf[1:], rtol=1e-10, atol=1e-15)


def test_telescoping_and_forms():
    tel = L.telescoped_log_q(3)
    vals = dict(zip(tel.roots, (0.9, 0.8, 0.7)))
    vals.update(dict(zip(tel.xs, (0.3, -0.2, 1.1, 0.4))))
    assert float(tel.chain.subs(vals)) == pytest.approx(float(tel.telescoped.subs(vals)), rel=1e-12)
    forms = L.elbo_forms_pointwise(5)
    assert len(forms.first_form["consistency"]) == 4 and len(forms.second_form["L_tm1"]) == 4


def test_true_reverse_sympy_equals_numeric():
    """exact.true_reverse_process against chapter 02's SymPy result at every step, and its mean against
    mu_tilde(x_t, E[x_0|x_t]): q_posterior at the oracle's x_0-prediction."""
    res = L.true_reverse_gaussian()
    sched = NoiseSchedule.cosine(12)
    mu0, s0 = 0.4, 0.6
    rev = exact.true_reverse_process(sched, mu0, s0)
    symbols = (alpha_t, alphabar_prev, res.mu0, res.s0)
    at_steps = (sched.alphas.numpy(), sched.alphas_cumprod_prev.numpy(), mu0, s0)  # code t = 0..T-1
    for expr, numeric in ((res.variance, rev.variance), (sp.expand(res.mean).coeff(x_t), rev.coef),
                          (res.mean.subs(x_t, 0), rev.offset)):
        got = torch.from_numpy(np.broadcast_to(sp.lambdify(symbols, expr)(*at_steps), (sched.T,)).copy())
        torch.testing.assert_close(got, numeric, rtol=1e-12, atol=1e-14)
    # s0 = 1: the true variance is β_t (fixed_large)
    torch.testing.assert_close(exact.true_reverse_process(sched, 0.0, 1.0).variance, sched.betas, rtol=1e-12, atol=0)
    oracle = exact.OracleDenoiser(GaussianMixture([[mu0]], [s0]), sched, objective="pred_x0")
    xt = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None]
    for t in range(sched.T):
        mu_tilde, _, _ = q_posterior(sched, oracle(xt, torch.full((7,), t)), xt, t)
        torch.testing.assert_close(mu_tilde, rev.coef[t] * xt + rev.offset[t], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# chapter 02: the exact 1-D Gaussian example
CASES = [(v, p) for v in exact.REVERSE_VARIANCES for p in exact.PRIORS]


@pytest.mark.parametrize("variance,prior", CASES)
def test_elbo_below_log_likelihood_and_gap_is_the_kl(variance, prior):
    sched = NoiseSchedule.cosine(20)
    rev = exact.true_reverse_process(sched, 0.5, 0.3, variance=variance, prior=prior)
    x0 = torch.tensor([-1.0, 0.0, 0.5, 1.3], dtype=torch.float64)
    terms = exact.elbo_terms(x0, sched, rev)
    torch.testing.assert_close(terms["total"], terms["L_T"] + terms["L_tm1"].sum(-1) + terms["L_0"], rtol=0, atol=0)
    gap = exact.exact_log_likelihood(x0, rev) - exact.elbo(x0, sched, rev)
    kl = torch.tensor([exact.elbo_gap_kl(float(v), sched, rev) for v in x0], dtype=torch.float64)
    torch.testing.assert_close(gap, kl, rtol=1e-6, atol=1e-10)
    if variance == "true" and prior == "exact":  # p(x_{0:T}) = q(x_{0:T}): the bound is tight
        assert gap.abs().max() < 1e-10
    else:
        assert (gap > 0).all()


def test_exact_prior_reproduces_the_data():
    sched = NoiseSchedule.cosine(15)
    rev = exact.true_reverse_process(sched, -0.3, 0.7, prior="exact")
    m_p, v_p = exact.model_marginals(rev)
    m_q, v_q = exact.data_marginals(sched, -0.3, 0.7)
    torch.testing.assert_close(m_p, m_q, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(v_p, v_q, rtol=1e-12, atol=0)


def test_monte_carlo_of_both_forms_agrees_with_closed_form():
    sched = NoiseSchedule.cosine(20)
    rev = exact.true_reverse_process(sched, 0.5, 0.3, variance="fixed_large")
    x0, n = 0.7, 40_000
    xs = exact.sample_trajectories(x0, sched, n, torch.Generator().manual_seed(3))
    target = exact.elbo(torch.tensor(x0), sched, rev).item()
    first = exact.first_form_terms(xs, sched, rev)["total"]
    second = -exact.second_form_terms(xs, sched, rev)["total"]
    for est in (first, second):
        assert abs(est.mean().item() - target) < 5 * est.std().item() / math.sqrt(n)
    # the consistency terms: Monte Carlo means equal their exact values; the KL rewriting -E KL(q(x_t|x_{t-1}) ||
    # p(x_t|x_{t+1})), estimated with normal_kl on the same trajectories, equals "as_kl" and differs from them
    cons = exact.consistency_as_kl(x0, sched, rev)
    mc = exact.first_form_terms(xs, sched, rev)["consistency"]
    se = mc.std(0) / math.sqrt(n)
    assert ((mc.mean(0) - cons["exact"]).abs() < 5 * se).all()
    t = torch.arange(1, sched.T)  # paper t = 1..T-1: q(x_t|x_{t-1}) is code step t-1, p(x_t|x_{t+1}) code step t
    neg_kl = -normal_kl(sched.alphas[t - 1].sqrt() * xs[:, :-2], sched.betas[t - 1].log(),
                        rev.coef[t] * xs[:, 2:] + rev.offset[t], rev.variance[t].log())
    assert ((neg_kl.mean(0) - cons["as_kl"]).abs() < 5 * neg_kl.std(0) / math.sqrt(n)).all()
    # clearly nonzero, except at t = T-1 where α_T = 0.001 (the cosine schedule clips β_T at 0.999)
    assert (cons["difference"].abs() > 10 * se)[:-1].all()


def test_data_expectation_is_exact_for_quadratics():
    got = exact.data_expectation(lambda x: torch.stack([x, x**2, x**3], 1), 0.4, 0.6)
    torch.testing.assert_close(got, torch.tensor([0.4, 0.4**2 + 0.36, 0.4**3 + 3 * 0.4 * 0.36], dtype=torch.float64))


def test_terms_match_library_vlb_terms_with_oracle_denoiser():
    """ddpm_lib.vlb_terms with the exact denoiser E[x_0|xt] and σ² = β_t gives the same L_T and, at the same
    xt, the same per-step KLs as the chapter-02 formulas (its L_0 is the discretized decoder, not compared)."""
    sched = NoiseSchedule.cosine(10)
    mu0, s0 = 0.2, 0.5
    model = exact.OracleDenoiser(GaussianMixture([[mu0]], [s0]), sched, objective="pred_x0")
    rev = exact.true_reverse_process(sched, mu0, s0, variance="fixed_large")
    x0 = torch.tensor([[-0.5], [0.25], [0.9]], dtype=torch.float64)
    out = vlb_terms(model, sched, x0, objective="pred_x0", variance="fixed_large", clip_denoised=False,
                    generator=torch.Generator().manual_seed(4), progress=False)
    torch.testing.assert_close(out["prior"], exact.elbo_terms(x0[:, 0], sched, rev)["L_T"], rtol=1e-12, atol=1e-15)
    # replay the same noise: vlb_terms draws one (B, 1) noise per code step t = 0..T-1, in order
    g = torch.Generator().manual_seed(4)
    noises = [torch.randn(x0.shape, generator=g, dtype=x0.dtype) for _ in range(sched.T)]
    for t in range(1, sched.T):
        xt = q_sample(sched, x0, torch.full((3,), t), noises[t])[:, 0]
        mu_q = sched.posterior_mean_coef1[t] * x0[:, 0] + sched.posterior_mean_coef2[t] * xt
        mu_p = rev.coef[t] * xt + rev.offset[t]
        kl = normal_kl(mu_q, sched.posterior_log_variance_clipped[t], mu_p, rev.variance[t].log())
        torch.testing.assert_close(out["terms"][:, t - 1], kl, rtol=1e-9, atol=1e-12)
