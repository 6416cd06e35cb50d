"""The SymPy derivations of chapters 03 and 04 (ddpm_lib.symbolic.posterior / .noise) against the
library's numerics: posterior coefficients, the Gaussian KL, the ε/x_0/v conversions, the sampling
step, the loss weights and Tweedie's formula.  Each comparison is in float64 at tight tolerance."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

import ddpm_lib
from ddpm_lib.data import GaussianMixture
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.schedules import NoiseSchedule
from ddpm_lib.symbolic import (alpha_t, alphabar_prev, alphabar_t, check_equal, eps, eps_theta, is_zero, sigma_t, snr,
                               x_0, x_t, z)
from ddpm_lib.symbolic import noise as N
from ddpm_lib.symbolic import posterior as P

SCHEDULES = {
    "linear": lambda: NoiseSchedule.linear(1000),
    "cosine": lambda: NoiseSchedule.cosine(1000),
    "sigmoid": lambda: NoiseSchedule.sigmoid(1000),
    "linear_T50": lambda: NoiseSchedule.linear(50, 1e-3, 0.2),
}


@pytest.fixture(scope="module")
def posteriors():
    """q(x_{t-1} | x_t, x_0) derived both ways (chapter 03), once per module."""
    return {"by_square": P.posterior_by_completing_square(), "by_derivative": P.posterior_by_derivative_trick()}


def _f(expr, *symbols):
    return sp.lambdify(symbols, expr, modules="numpy")


def _exact(expr, *symbols):
    """Evaluate ``expr`` element-wise in 40-digit arithmetic (no cancellation error), returned as float64."""
    f = sp.lambdify(symbols, expr, modules="mpmath")

    def call(*arrays):
        arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
        with mpmath.workdps(40):
            return np.array([float(f(*(mpmath.mpf(float(a)) for a in vals))) for vals in zip(*(a.ravel() for a in arrays))]).reshape(arrays[0].shape)

    return call


def _sched_args(sched, t):
    """(α_t, ᾱ_{t-1}) at code index t (numpy float64)."""
    return sched.alphas[t].numpy(), sched.alphas_cumprod_prev[t].numpy()


# --- chapter 03 --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("method", ["by_square", "by_derivative"])
def test_posterior_coefficients_match_schedule(name, method, posteriors):
    res = posteriors[method]
    sched = SCHEDULES[name]()
    gen = torch.Generator().manual_seed(3)
    t = torch.cat([torch.tensor([0, 1, sched.T - 1]), torch.randint(0, sched.T, (20,), generator=gen)])
    a, ap = _sched_args(sched, t)
    # The SymPy forms are evaluated exactly: in float64 their expanded numerators cancel badly.
    coef1 = _exact(res.coef_x0, alpha_t, alphabar_prev)(a, ap)
    coef2 = _exact(res.coef_xt, alpha_t, alphabar_prev)(a, ap)
    var = _exact(res.variance, alpha_t, alphabar_prev)(a, ap)
    np.testing.assert_allclose(coef1, sched.posterior_mean_coef1[t].numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(coef2, sched.posterior_mean_coef2[t].numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(var, sched.posterior_variance[t].numpy(), rtol=1e-12, atol=1e-15)


def test_q_posterior_matches_symbolic_mean(posteriors):
    sched = NoiseSchedule.cosine(200)
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, sched.T, (16,), generator=gen)
    x0 = torch.randn(16, 3, dtype=torch.float64, generator=gen)
    xt = torch.randn(16, 3, dtype=torch.float64, generator=gen)
    mean, var, _ = ddpm_lib.q_posterior(sched, x0, xt, t)
    a, ap = (v[:, None] for v in _sched_args(sched, t))
    f_mean = _f(posteriors["by_square"].mean, alpha_t, alphabar_prev, x_0, x_t)
    np.testing.assert_allclose(mean.numpy(), f_mean(a, ap, x0.numpy(), xt.numpy()), rtol=1e-12, atol=1e-14)


def test_both_derivations_agree(posteriors):
    by_square, by_derivative = posteriors["by_square"], posteriors["by_derivative"]
    assert is_zero(by_square.mean - by_derivative.mean)
    assert is_zero(by_square.variance - by_derivative.variance)


def test_bayes_density_identity():
    P.posterior_bayes_check()  # raises AssertionError if the normalized densities differ


@pytest.mark.parametrize("derive", [P.gaussian_kl_by_integration, P.gaussian_kl_by_expectation])
def test_normal_kl_matches_sympy(derive):
    kl = _f(derive(), P.mu_1, P.mu_2, P.s_1, P.s_2)
    gen = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(2, 50, dtype=torch.float64, generator=gen)
    lv1, lv2 = 2 * torch.randn(2, 50, dtype=torch.float64, generator=gen)
    expected = kl(m1.numpy(), m2.numpy(), torch.exp(lv1 / 2).numpy(), torch.exp(lv2 / 2).numpy())
    got = ddpm_lib.normal_kl(m1, lv1, m2, lv2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert (got >= 0).all()


def test_normal_kl_logvar_form_and_isotropic():
    expr, (m1, lv1, m2, lv2) = P.gaussian_kl_logvar_form()
    f = _f(expr, m1, lv1, m2, lv2)
    assert abs(f(0.3, -1.0, -0.2, 0.5) - ddpm_lib.normal_kl(torch.tensor(0.3, dtype=torch.float64), -1.0, -0.2, 0.5).item()) < 1e-14
    target, mv1, mv2 = P.isotropic_gaussian_kl(4)
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 4, dtype=torch.float64, generator=gen)
    s1, s2 = 0.7, 1.3
    subs = {**dict(zip(mv1, a.tolist())), **dict(zip(mv2, b.tolist())), P.s_1: s1, P.s_2: s2}
    lib = ddpm_lib.normal_kl(a, 2 * math.log(s1), b, 2 * math.log(s2)).sum().item()
    assert abs(float(target.subs(subs)) - lib) < 1e-12


def test_kl_to_x0_weight_and_snr_difference():
    w = P.kl_to_x0_mse()
    assert is_zero(w - P.source_eq1_x0_weight())
    weight, snr_prev, snr_t = P.x0_weight_as_snr_difference()
    sched = NoiseSchedule.linear(1000)
    t = torch.arange(1, sched.T)  # σ² = β̃ is 0 at code index 0
    a, ap = _sched_args(sched, t)
    lam = _f(weight, alpha_t, alphabar_prev)(a, ap)
    snr_np = sched.snr.numpy()
    np.testing.assert_allclose(lam, 0.5 * (snr_np[:-1] - snr_np[1:]), rtol=1e-9)
    # and the same weight from the library's KL: KL(q || p_θ) with x0-prediction, σ² = β̃, per unit squared error
    x0 = torch.zeros(len(t), 1, dtype=torch.float64)
    x0_hat = torch.ones(len(t), 1, dtype=torch.float64)
    xt = torch.randn(len(t), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    m_true, _, logv = ddpm_lib.q_posterior(sched, x0, xt, t)
    m_pred, _, _ = ddpm_lib.q_posterior(sched, x0_hat, xt, t)
    kl = ddpm_lib.normal_kl(m_true, logv, m_pred, logv).squeeze(1)
    np.testing.assert_allclose(kl.numpy(), lam, rtol=1e-9)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="d must be"):
        P.isotropic_gaussian_kl(0)
    with pytest.raises(ValueError, match="choice must be one of"):
        N.eps_weight_for_variance("learned")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        N.lucidrains_loss_weights(-1.0)


def test_check_equal_can_fail():
    with pytest.raises(AssertionError, match="a false identity"):
        check_equal(alpha_t, alphabar_prev, "a false identity")
    with pytest.raises(AssertionError, match="a false log identity"):
        check_equal(sp.log(alpha_t), sp.log(alphabar_prev), "a false log identity")
    # a true log identity needs the logarithms expanded (log(a b) = log a + log b for positive a, b) ...
    check_equal(sp.log(alpha_t * alphabar_prev), sp.log(alpha_t) + sp.log(alphabar_prev), "log of a product")
    # ... which is not done for real symbols, where it would prove false identities
    false_for_reals = ((sp.sqrt(x_t**2), x_t), (sp.log(x_t**2), 2 * sp.log(x_t)),
                       (sp.sqrt(x_t) * sp.sqrt(x_0), sp.sqrt(x_t * x_0)))
    for lhs, rhs in false_for_reals:
        with pytest.raises(AssertionError, match="real symbol"):
            check_equal(lhs, rhs, "real symbol")


# --- chapter 04 --------------------------------------------------------------------------------
def test_source_errata_are_errors():
    assert is_zero(N.source_eq4_residual() - 2 * sp.sqrt(1 - alphabar_t) * eps)
    mu, _ = N.mu_from_eps()
    assert not is_zero(sp.expand(N.source_eq7_mean() - mu))
    # The source's + sign follows from its eq. (5); 1/√ᾱ_t is an additional typo.
    assert not is_zero(sp.expand(N.source_eq7_mean() - N.mu_from_source_eq5()))
    assert is_zero(N.eps_loss_weight() - N.source_eq6_weight())


def test_conversions_match_library():
    maps = N.conversions()
    sched = NoiseSchedule.sigmoid(300)
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, sched.T, (32,), generator=gen)
    x0, noise = torch.randn(2, 32, 4, dtype=torch.float64, generator=gen)
    xt = ddpm_lib.q_sample(sched, x0, t, noise)
    ab = sched.alphas_cumprod[t][:, None].numpy()
    v = ddpm_lib.predict_v(sched, x0, t, noise)
    args = dict(x_t=xt.numpy(), epsilon=noise.numpy(), x_0=x0.numpy(), v=v.numpy(), alphabar_t=ab)

    def ev(name):
        expr = maps[name]
        syms = sorted(expr.free_symbols, key=str)
        return _f(expr, *syms)(*[args[str(s)] for s in syms])

    close = dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ddpm_lib.predict_start_from_noise(sched, xt, t, noise).numpy(), ev("x0_from_eps"), **close)
    np.testing.assert_allclose(ddpm_lib.predict_noise_from_start(sched, xt, t, x0).numpy(), ev("eps_from_x0"), **close)
    np.testing.assert_allclose(v.numpy(), ev("v_from_x0_eps"), **close)
    np.testing.assert_allclose(ddpm_lib.predict_start_from_v(sched, xt, t, v).numpy(), ev("x0_from_v"), **close)
    np.testing.assert_allclose(ddpm_lib.predict_noise_from_v(sched, xt, t, v).numpy(), ev("eps_from_v"), **close)
    np.testing.assert_allclose(ev("v_from_eps"), v.numpy(), **close)
    np.testing.assert_allclose(ev("x0_from_eps"), x0.numpy(), **close)


def test_sample_step_matches_p_sample():
    step = N.ddpm_sample_step()
    f = _f(step, alpha_t, alphabar_prev, x_t, eps_theta, sigma_t, z)
    sched = NoiseSchedule.linear(100)
    gen = torch.Generator().manual_seed(6)
    W = torch.randn(3, 3, dtype=torch.float64, generator=gen) / 3

    def model(x, t):
        return x @ W + 0.01 * t[:, None].to(x.dtype)

    x = torch.randn(8, 3, dtype=torch.float64, generator=gen)
    for t in (99, 50, 1):
        z_t = torch.randn(8, 3, dtype=torch.float64, generator=gen)
        for variance, var_vec in (("fixed_small", sched.posterior_variance), ("fixed_large", sched.betas)):
            x_prev, _ = ddpm_lib.p_sample(model, sched, x, t, variance_noise=z_t, variance=variance,
                                          clip_denoised=False)
            eps_hat = model(x, torch.full((8,), t))
            expected = f(sched.alphas[t].item(), sched.alphas_cumprod_prev[t].item(), x.numpy(), eps_hat.numpy(),
                         math.sqrt(var_vec[t].item()), z_t.numpy())
            np.testing.assert_allclose(x_prev.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_eps_weight_matches_library_kl():
    """λ_ε (eq. eps-loss-weight, σ² = β̃) times ‖ε̂-ε‖² is the library's KL between q and p_θ(ε-prediction)."""
    lam = _f(N.eps_weight_for_variance("beta_tilde"), alpha_t, alphabar_prev)
    sched = NoiseSchedule.cosine(100)
    gen = torch.Generator().manual_seed(7)
    t = torch.arange(1, sched.T)
    x0, noise, eps_hat = torch.randn(3, len(t), 2, dtype=torch.float64, generator=gen)
    xt = ddpm_lib.q_sample(sched, x0, t, noise)
    m_true, _, logv = ddpm_lib.q_posterior(sched, x0, xt, t)
    m_pred, _, logv_p, _ = ddpm_lib.p_mean_variance(None, sched, xt, t, clip_denoised=False, model_output=eps_hat)
    kl = ddpm_lib.normal_kl(m_true, logv, m_pred, logv_p).sum(1)
    a, ap = _sched_args(sched, t)
    np.testing.assert_allclose(kl.numpy(), lam(a, ap) * ((eps_hat - noise) ** 2).sum(1).numpy(), rtol=1e-8)


def test_relative_loss_weights_match_p_losses():
    ratios = N.relative_loss_weights()
    assert is_zero(ratios["x0_per_eps"] - 1 / snr) and is_zero(ratios["v_per_x0"] - (1 + snr))
    weights = {g: N.lucidrains_loss_weights(g) for g in (None, 5)}
    sched = NoiseSchedule.linear(1000)
    gen = torch.Generator().manual_seed(8)
    t = torch.randint(0, sched.T, (64,), generator=gen)
    x0, noise = torch.randn(2, 64, 2, dtype=torch.float64, generator=gen)
    W = torch.randn(2, 2, dtype=torch.float64, generator=gen)
    model = lambda x, tt: x @ W  # noqa: E731 - any model: the identity holds for every output
    xt = ddpm_lib.q_sample(sched, x0, t, noise)
    snr_np = sched.snr[t].numpy()
    for objective in ddpm_lib.OBJECTIVES:
        out = model(xt, t)
        eps_hat, _ = ddpm_lib.model_predictions(None, sched, xt, t, objective, model_output=out)
        eps_mse = ((eps_hat - noise) ** 2).mean(1).numpy()
        for gamma, weighting in ((None, "snr"), (5, "min_snr")):
            w_expr = weights[gamma][objective][0]
            w = np.array([float(w_expr.subs(snr, s)) for s in snr_np])
            lib_w = ddpm_lib.loss_weight(sched, t, objective, weighting, min_snr_gamma=5.0).numpy()
            np.testing.assert_allclose(lib_w, w, rtol=1e-10)
            loss = ddpm_lib.p_losses(model, sched, x0, t, noise, objective=objective, loss_weighting=weighting,
                                     min_snr_gamma=5.0, reduction="none").numpy()
            clipped = np.minimum(snr_np, gamma) if gamma else snr_np
            np.testing.assert_allclose(loss, clipped / snr_np * eps_mse, rtol=1e-8)


def test_score_and_tweedie_on_gaussian_mixture():
    score_expr = N.score_q_xt_given_x0()
    assert is_zero(score_expr + eps / sp.sqrt(1 - alphabar_t))
    e_x0, e_eps, score = N.tweedie_identity()
    N.tweedie_gaussian_data()
    gm = GaussianMixture([[-1.0, 0.5], [1.5, -0.5], [0.0, 2.0]], [0.3, 0.5, 0.2], [0.2, 0.5, 0.3])
    sched = NoiseSchedule.linear(1000)
    gen = torch.Generator().manual_seed(9)
    f_x0 = _f(e_x0, x_t, score, alphabar_t)
    f_eps = _f(e_eps, score, alphabar_t)
    oracle = OracleDenoiser(gm, sched)
    for t in (0, 100, 500, 999):
        ab = sched.alphas_cumprod[t].item()
        x0 = gm.sample(200, generator=gen, dtype=torch.float64)
        xt = ddpm_lib.q_sample(sched, x0, t, torch.randn(x0.shape, dtype=torch.float64, generator=gen))
        s = gm.score(xt, ab)
        # the score by central finite differences of log q_t
        h = 1e-5
        fd = torch.stack([(gm.noised(ab).log_prob(xt + h * e) - gm.noised(ab).log_prob(xt - h * e)) / (2 * h)
                          for e in torch.eye(2, dtype=torch.float64)], dim=1)
        torch.testing.assert_close(s, fd, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.as_tensor(f_x0(xt.numpy(), s.numpy(), ab)), gm.posterior_mean_x0(xt, ab), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(torch.as_tensor(f_eps(s.numpy(), ab)), oracle(xt, torch.full((200,), t)), rtol=1e-9, atol=1e-9)
