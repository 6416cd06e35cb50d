"""Chapter 08's SymPy derivation of the DDIM coefficients (ddpm_lib.symbolic.ddim) against ddpm_lib.ddim.

The derivation solves k, m of q_σ(x_{t-1} | x_t, x_0) = N(k x_0 + m x_t, σ²) from the DDPM marginals; these tests
check its results symbolically where it matters and numerically against ddim_sigma and ddim_step in float64.
"""

import math

import pytest
import sympy as sp
import torch

from ddpm_lib import NoiseSchedule, ddim_sigma, ddim_step, linear_beta_schedule, q_posterior
from ddpm_lib.symbolic import alphabar_prev, alphabar_t, eps, sigma_t, x_0, x_t
from ddpm_lib.symbolic import ddim as sd
from ddpm_lib.symbolic.posterior import posterior_closed_form

SCHED = NoiseSchedule(linear_beta_schedule(1000))
PAIRS = [(999, 899), (999, 0), (500, 499), (250, 125), (40, 0), (1, 0), (0, -1), (99, -1), (999, -1)]


def _abar(t: int) -> float:
    return SCHED.alphas_cumprod[t].item() if t >= 0 else 1.0


def test_coefficients_keep_the_marginals():
    c = sd.solve_ddim_coefficients()
    mean_eq, var_eq = sd.marginal_conditions()
    assert sp.simplify(mean_eq.subs({sd.k: c.k, sd.m: c.m})) == 0
    assert sp.simplify(var_eq.subs({sd.k: c.k, sd.m: c.m})) == 0
    # two roots, m = ±...; the chosen one is positive at a valid point
    assert len(c.solutions) == 2
    point = {alphabar_t: 0.2, alphabar_prev: 0.6, sigma_t: 0.3}
    assert float(c.m.subs(point)) > 0
    assert sorted(float(s[sd.m].subs(point)) for s in c.solutions) == pytest.approx(
        [-float(c.m.subs(point)), float(c.m.subs(point))], rel=1e-12)


def test_marginal_is_kept_by_monte_carlo():
    """Draw x_t ~ q(x_t | x_0), then x_{t-1} ~ N(k x_0 + m x_t, σ²): mean and variance must be the DDPM ones."""
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    abar_t, abar_prev, x0 = 0.3, 0.7, 0.8
    for eta_value in (0.0, 0.5, 1.0):
        _, _, sig, k_val, m_val = sd.ddim_step_numeric(abar_t, abar_prev, eta_value)
        xt = math.sqrt(abar_t) * x0 + math.sqrt(1 - abar_t) * torch.randn(n, generator=gen, dtype=torch.float64)
        xp = k_val * x0 + m_val * xt + sig * torch.randn(n, generator=gen, dtype=torch.float64)
        # 5 standard errors: std of the mean is sqrt(var/n); of the variance about var*sqrt(2/n)
        var = 1 - abar_prev
        assert abs(xp.mean().item() - math.sqrt(abar_prev) * x0) < 5 * math.sqrt(var / n)
        assert abs(xp.var().item() - var) < 5 * var * math.sqrt(2 / n)


def test_mean_in_eps_form():
    rhs = sd.ddim_mean_in_eps()
    expected = sp.sqrt(alphabar_prev) * x_0 + sp.sqrt(1 - alphabar_prev - sigma_t**2) * eps
    assert sp.simplify(rhs - expected) == 0


@pytest.mark.parametrize("t,t_prev", PAIRS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sigma_matches_ddim_sigma(t, t_prev, eta):
    _, _, sig, _, _ = sd.ddim_step_numeric(_abar(t), _abar(t_prev), eta)
    assert ddim_sigma(SCHED, t, t_prev, eta) == pytest.approx(sig, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("t,t_prev", PAIRS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_the_derivation(t, t_prev, eta):
    gen = torch.Generator().manual_seed(t * 7 + t_prev + 3)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    eps_hat = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    z = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    x_prev, x_start = ddim_step(SCHED, eps_hat, t, t_prev, x, eta=eta, variance_noise=z, clip_denoised=False)
    coef_x0, coef_eps, sig, k_val, m_val = sd.ddim_step_numeric(_abar(t), _abar(t_prev), eta)
    x0_hat = (x - math.sqrt(1 - _abar(t)) * eps_hat) / math.sqrt(_abar(t))
    torch.testing.assert_close(x_start, x0_hat, rtol=1e-10, atol=1e-10)
    # eq-ddim-step: √ᾱ_prev x̂_0 + √(1-ᾱ_prev-σ²) ε̂ + σ z, and the same mean as k x̂_0 + m x_t
    torch.testing.assert_close(x_prev, coef_x0 * x0_hat + coef_eps * eps_hat + sig * z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_prev, k_val * x0_hat + m_val * x + sig * z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [999, 500, 10, 1])
def test_eta_one_adjacent_is_the_ddpm_posterior(t):
    """η = 1 between adjacent steps: the DDIM mean is q_posterior's mean and σ² is posterior_variance."""
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    eps_hat = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    zero = torch.zeros_like(x)
    mean, x_start = ddim_step(SCHED, eps_hat, t, t - 1, x, eta=1.0, variance_noise=zero, clip_denoised=False)
    post_mean, post_var, _ = q_posterior(SCHED, x_start, x, t)
    torch.testing.assert_close(mean, post_mean, rtol=1e-10, atol=1e-10)
    assert ddim_sigma(SCHED, t, t - 1, 1.0) ** 2 == pytest.approx(post_var, rel=1e-10)


def test_eta_one_and_zero_symbolic():
    k1, m1, var1 = sd.eta_one_is_ddpm_posterior()
    post_mean, post_var = posterior_closed_form()
    assert sp.simplify(var1 - post_var) == 0
    assert sp.simplify(k1 - post_mean.coeff(x_0)) == 0 and sp.simplify(m1 - post_mean.coeff(x_t)) == 0
    k0, m0 = sd.eta_zero_is_deterministic()
    point = {alphabar_t: sp.Rational(1, 5), alphabar_prev: sp.Rational(3, 5)}
    assert sp.simplify(m0.subs(point) - sp.sqrt(sp.Rational(2, 5) / sp.Rational(4, 5))) == 0


def test_forward_is_markovian_only_at_eta_one():
    condition, root = sd.markovian_sigmas()
    assert sp.simplify(root - sd.sigma_tilde_squared()) == 0
    # the x_0 coefficient of q_σ(x_t | x_{t-1}, x_0) at numbers: zero at η = 1, not at η = 0.5
    coef = sd.forward_x0_coefficient()
    at, ap = sp.Rational(3, 10), sp.Rational(4, 5)
    s_tilde = sp.sqrt(sd.sigma_tilde_squared().subs({alphabar_t: at, alphabar_prev: ap}))
    values = {alphabar_t: at, alphabar_prev: ap}
    assert abs(float(coef.subs(values).subs(sigma_t, s_tilde))) < 1e-12
    assert abs(float(coef.subs(values).subs(sigma_t, s_tilde / 2))) > 1e-2


def test_sigma_hat_can_break_the_ddim_formula():
    """σ̂² = 1 - ᾱ_t/ᾱ_prev ≥ σ̃², and 1 - ᾱ_prev - σ̂² < 0 on a 10-step leading subsequence (so the σ̂ row
    needs the η = 1 mean, not eq-ddim-step)."""
    hat = sd.sigma_hat_squared()
    term = sd.sigma_hat_direction_term()
    from ddpm_lib import ddim_timesteps

    ts = ddim_timesteps(1000, 10, "leading").tolist() + [-1]
    values = []
    for t, tp in zip(ts[:-1], ts[1:]):
        subs = {alphabar_t: _abar(t), alphabar_prev: _abar(tp)}
        assert float(hat.subs(subs)) >= float(sd.sigma_tilde_squared().subs(subs)) - 1e-15
        values.append(float(term.subs(subs)))
    assert min(values) < 0
