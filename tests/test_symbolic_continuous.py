"""Chapter 11's SymPy derivations (ddpm_lib.symbolic.continuous) against the library that implements them.

Each derivation checks its own steps and raises AssertionError when one fails; these tests run them, check that the
checker rejects the wrong variants a derivation could slip into (a wrong sign, a wrong power, a wrong coefficient),
and evaluate the results numerically against ddpm_lib.ode, ddpm_lib.solvers, ddpm_lib.ddim and
ddpm_lib.flow_matching in float64.
"""

import math

import pytest
import sympy as sp
import torch

from ddpm_lib import NoiseSchedule, ddim_step, predict_v, q_sample
from ddpm_lib.flow_matching import flow_from_vp, flow_predictions, velocity_from_v
from ddpm_lib.ode import pf_ode_drift
from ddpm_lib.solvers import dpm_solver_step, euler_step
from ddpm_lib.symbolic import alphabar_prev, alphabar_t, check_equal, eps, eps_theta, v, x0_theta, x_0, x_t
from ddpm_lib.symbolic import continuous as C
from helpers import F64, gen

SCHED = NoiseSchedule.linear(1000)


def test_every_derivation_runs():
    for name in C.__all__:
        obj = getattr(C, name)
        if callable(obj) and not isinstance(obj, (sp.Symbol, sp.FunctionClass)) and name[0].islower() \
                and name not in ("fokker_planck_operator",):
            obj()


def test_forward_step_is_euler_maruyama_to_second_order():
    chain, em, series = C.forward_step_is_euler_maruyama()
    # the leading error term is -β² x Δt²/8, not zero: the chain is not *exactly* the EM step
    assert sp.simplify(series.removeO() + C.beta**2 * C.x * C.dt**2 / 8) == 0
    with pytest.raises(AssertionError, match="O"):  # a wrong drift (-β x instead of -β x/2) is caught
        check_equal(sp.series(chain - (C.x - C.beta * C.x * C.dt + sp.sqrt(C.beta * C.dt) * eps), C.dt, 0, 2)
                    .removeO(), 0, "wrong drift: O(Δt²)")


def test_alpha_bar_is_the_limit_of_the_product():
    """log ᾱ_k = Σ log(1 - β_i) against the Riemann sum -Σ β_i of -∫β: the gap is ½Σβ_i² + ..., below Σβ_i² (a
    total O(Δt) = O(1/T)), for the linear schedule; and the closed form exp(-∫_0^t β) with β = 2 at t = 1/2."""
    closed = C.alpha_bar_continuous()
    for k in (10, 300, 999):
        b_k = SCHED.betas[: k + 1]
        gap = abs(math.log(SCHED.alphas_cumprod[k].item()) + b_k.sum().item())
        assert 0.5 * (b_k**2).sum().item() <= gap <= (b_k**2).sum().item()
    assert float(closed.subs(C.beta_of(sp.Symbol("t'", nonnegative=True)), 2).doit().subs(C.tau, 0.5)) == \
        pytest.approx(math.exp(-1.0))


def test_fokker_planck_moments_against_monte_carlo():
    """Run the chain from Gaussian data N(μ, s_0²) and compare with N(√ᾱ μ, ᾱ s_0² + 1 - ᾱ)."""
    m, var = C.gaussian_marginals_solve_fokker_planck()
    mu, s0, n, k = 0.7, 0.3, 200_000, 400
    g = gen(0)
    x = mu + s0 * torch.randn(n, generator=g, **F64)
    for t in range(k + 1):
        x = SCHED.alphas[t].sqrt() * x + SCHED.betas[t].sqrt() * torch.randn(n, generator=g, **F64)
    ab = SCHED.alphas_cumprod[k].item()
    subs = {C.abar_of(C.tau): ab, sp.Symbol("mu", positive=True): mu, sp.Symbol("s_0", positive=True): s0}
    want_m, want_v = float(m.subs(subs)), float(var.subs(subs))
    assert abs(x.mean().item() - want_m) < 5 * math.sqrt(want_v / n)
    assert abs(x.var().item() - want_v) < 5 * want_v * math.sqrt(2 / n)


def test_a_wrong_variance_does_not_solve_fokker_planck():
    A = C.abar_of(C.tau)
    beta_t = -A.diff(C.tau) / A
    mu, s0 = sp.Symbol("mu", positive=True), sp.Symbol("s_0", positive=True)
    p = C._gaussian_density(sp.sqrt(A) * mu, A * s0**2 + 1 - A**2)  # 1 - ᾱ² instead of 1 - ᾱ
    residual = sp.diff(p, C.tau) - C.fokker_planck_operator(p, -beta_t * C.x / 2, beta_t)
    with pytest.raises(AssertionError):
        check_equal(sp.simplify(residual / p), 0, "wrong variance")


@pytest.mark.parametrize("t", [3, 250, 900])
def test_pf_ode_drift_matches_the_library(t):
    drift = C.probability_flow_ode()
    ab, beta_c = SCHED.alphas_cumprod[t].item(), 1000 * SCHED.betas[t].item()
    x = torch.randn(5, 2, generator=gen(t), **F64)
    e = torch.randn(5, 2, generator=gen(t + 1), **F64)
    f = sp.lambdify((x_t, eps_theta), drift.subs({alphabar_t: ab, C.beta: beta_c}), "math")
    want = torch.tensor([[f(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(x.tolist(), e.tolist())], **F64)
    torch.testing.assert_close(pf_ode_drift(x, e, beta_c, ab), want, rtol=1e-12, atol=1e-12)


def test_pf_ode_in_xbar_sigma_and_a_wrong_sign():
    dxbar, dsig = C.pf_ode_in_xbar_sigma()
    assert sp.simplify(dxbar / dsig - eps_theta) == 0
    with pytest.raises(AssertionError):
        check_equal(dxbar / dsig, -eps_theta, "wrong sign")


@pytest.mark.parametrize("t,t_prev", [(999, 899), (500, 120), (40, -1), (1, 0)])
def test_ddim_is_euler_numerically(t, t_prev):
    """The SymPy Euler step equals ddpm_lib's ddim_step(η = 0) and euler_step in float64."""
    euler = C.ddim_is_euler()
    a_t = SCHED.alphas_cumprod[t].item()
    a_prev = SCHED.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    x = torch.randn(6, 3, generator=gen(t), **F64)
    e = torch.randn(6, 3, generator=gen(t + 7), **F64)
    f = sp.lambdify((x_t, eps_theta), euler.subs({alphabar_t: a_t, alphabar_prev: a_prev}), "math")
    want = math.sqrt(a_prev) * torch.tensor([[f(p, q) for p, q in zip(rp, rq)]
                                             for rp, rq in zip(x.tolist(), e.tolist())], **F64)
    got, _ = ddim_step(SCHED, e, t, t_prev, x, eta=0.0, clip_denoised=False)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(euler_step(SCHED, e, t, t_prev, x)[0], want, rtol=1e-10, atol=1e-10)


def test_dpm_solver_2m_is_the_library_step_and_second_order():
    """eq-dpm-solver-2m with (σ, x̂_0) of three integer timesteps equals dpm_solver_step; the coefficient error of
    the 2M approximation starts at h³/12."""
    closed, _ = C.dpm_solver_exact_step()
    series = C.dpm_solver_2m_local_error()
    assert sp.simplify(series.removeO() - C.h**3 / 12) == 0
    t_last, t, t_prev = 600, 450, 300
    sig = [SCHED.sqrt_recipm1_alphas_cumprod[k].item() for k in (t_last, t, t_prev)]
    x = torch.randn(4, 2, generator=gen(1), **F64)
    prev = torch.randn(4, 2, generator=gen(2), **F64)
    out = torch.randn(4, 2, generator=gen(3), **F64)
    got, x0 = dpm_solver_step(SCHED, out, t, t_prev, x, prev_x_start=prev, t_last=t_last)
    hh, rr = math.log(sig[1] / sig[2]), math.log(sig[0] / sig[1]) / math.log(sig[1] / sig[2])
    xbar = x / math.sqrt(SCHED.alphas_cumprod[t].item())
    x0_last = sp.Symbol("x0_last", real=True)
    two_m = (sp.exp(-C.h) * C.x + (1 - sp.exp(-C.h)) * ((1 + 1 / (2 * C.r)) * x0_theta - x0_last / (2 * C.r)))
    f = sp.lambdify((C.x, x0_theta, x0_last), two_m.subs({C.h: hh, C.r: rr}), "math")
    want = torch.tensor([[f(p, q, w) for p, q, w in zip(a, b_, c)]
                         for a, b_, c in zip(xbar.tolist(), x0.tolist(), prev.tolist())], **F64)
    torch.testing.assert_close(got / math.sqrt(SCHED.alphas_cumprod[t_prev].item()), want, rtol=1e-10, atol=1e-10)
    # and the exact-integral coefficient is not the one the library uses (they differ at O(h³))
    assert abs(float((C.h - 1 + sp.exp(-C.h) - (1 - sp.exp(-C.h)) * C.h / 2).subs(C.h, hh))) > 1e-6
    del closed


def test_change_of_variables_and_hutchinson():
    drift, div = C.change_of_variables_gaussian()
    assert sp.simplify(div - C.sigma / (sp.Symbol("s_0", positive=True) ** 2 + C.sigma**2)) == 0
    J, mean, var = C.hutchinson_moments(2)
    assert sp.simplify(var - (J[0, 1] + J[1, 0]) ** 2) == 0
    _, _, var3 = C.hutchinson_moments(3)
    assert not var3.has(sp.Symbol("J_11", real=True))  # the diagonal costs no variance


def test_flow_conversions_match_the_library():
    conv = C.flow_conversions()
    C.flow_ode_is_pf_ode()
    t = 400
    ab = SCHED.alphas_cumprod[t].item()
    x0 = torch.randn(5, 2, generator=gen(4), **F64)
    e = torch.randn(5, 2, generator=gen(5), **F64)
    xt = q_sample(SCHED, x0, t, e)
    x_s, s_val = flow_from_vp(xt, ab)
    assert s_val == pytest.approx(float(conv["s_of_vp"].subs({C.a: math.sqrt(ab), C.b: math.sqrt(1 - ab)})))
    assert float(conv["alpha_bar_of_s"].subs(C.s, s_val)) == pytest.approx(ab, rel=1e-12)
    u_val = e - x0
    pred_noise, pred_x0 = flow_predictions(x_s, s_val, u_val)
    torch.testing.assert_close(pred_x0, x0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred_noise, e, rtol=1e-10, atol=1e-10)
    f = sp.lambdify((v, x_t), conv["u_from_v"].subs({C.a: math.sqrt(ab), C.b: math.sqrt(1 - ab)}), "math")
    vv = predict_v(SCHED, x0, t, e)
    want = torch.tensor([[f(p, q) for p, q in zip(a_, b_)] for a_, b_ in zip(vv.tolist(), xt.tolist())], **F64)
    torch.testing.assert_close(velocity_from_v(vv, xt, ab), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(want, u_val, rtol=1e-10, atol=1e-10)
    with pytest.raises(AssertionError):  # the tempting u = v (chapter 04's "velocity") is wrong
        check_equal(((C.a + C.b) * v).subs(v, C.a * eps - C.b * x_0), eps - x_0, "u = v")


def test_flow_euler_is_ddim_on_the_matching_grid():
    """Euler on the flow ODE with the exact velocity = DDIM/Euler in (x̄, σ) with the exact ε on σ = s/(1-s): the
    same points, after a first step from s = 0.9 (the uniform grid's s = 1 is σ = ∞)."""
    from ddpm_lib.data import make_gaussian_mixture
    from ddpm_lib.flow_matching import exact_velocity_model, flow_step
    from ddpm_lib.ode import mixture_eps_fn
    from ddpm_lib.solvers import solve_pf_ode

    C.flow_euler_is_ddim()
    mix = make_gaussian_mixture("8gaussians")
    velocity, eps_fn = exact_velocity_model(mix), mixture_eps_fn(mix)
    s_grid = [0.9, 0.7, 0.5, 0.3, 0.1]
    x = torch.randn(64, 2, generator=gen(9), **F64) * 0.9 + 0.1
    x_flow = x.clone()
    for s_now, s_next in zip(s_grid, s_grid[1:]):
        u = velocity(x_flow, torch.full((64,), s_now * 999.0, **F64))
        x_flow, _ = flow_step(u, s_now, s_next, x_flow)
    sigmas = [q / (1 - q) for q in s_grid]
    x_bar = solve_pf_ode(eps_fn, x / (1 - s_grid[0]), sigmas, solver="euler")
    torch.testing.assert_close(x_flow, x_bar * (1 - s_grid[-1]), rtol=1e-9, atol=1e-9)
