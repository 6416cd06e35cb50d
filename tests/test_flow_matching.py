"""Flow matching with the linear path, chapter 11 (ddpm_lib.flow_matching).

What is proved here (chapter 11 derives the same conversions in SymPy; these are their numerical checks):
- the path and its velocity: x_s = (1-s) x_0 + s ε, u = ε - x_0, and from û: x̂_0 = x_s - s û, ε̂ = x_s + (1-s) û;
- the dictionary to the VP diffusion: q_sample's x_t is the linear path's point x_t/(√ᾱ + √(1-ᾱ)) at
  s = √(1-ᾱ)/(√ᾱ + √(1-ᾱ)), and chapter 04's v maps to u = (a + b) v + (b - a) x_t and back;
- the exact velocity of a Gaussian mixture minimises the loss, and the flow ODE with it is the probability-flow ODE
  (the same samples as solve_pf_ode from the same noise);
- the float timestep t = s · 999 reaches MLPDenoiser, and a few hundred training steps with the loss close most of
  the gap between the untrained loss and the optimum.
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, predict_v, q_sample
from ddpm_lib.data import make_gaussian_mixture
from ddpm_lib.flow_matching import (
    exact_velocity_model,
    flow_from_vp,
    flow_interpolate,
    flow_matching_loss,
    flow_predictions,
    flow_sample,
    flow_step,
    flow_velocity_target,
    v_from_velocity,
    velocity_from_v,
    vp_from_flow,
)
from ddpm_lib.models import MLPDenoiser
from ddpm_lib.ode import mixture_eps_fn
from ddpm_lib.solvers import solve_pf_ode
from ddpm_lib.train import train
from helpers import F64, gen

pytestmark = pytest.mark.usefixtures("one_thread")

MIX8 = make_gaussian_mixture("8gaussians")


def _pair(n=64, seed=0):
    g = gen(seed)
    x0, eps = torch.randn(n, 3, generator=g, **F64), torch.randn(n, 3, generator=g, **F64)
    return x0, eps, torch.rand(n, generator=g, **F64)


def test_path_velocity_and_predictions():
    x0, eps, s = _pair()
    x_s = flow_interpolate(x0, s, eps)
    torch.testing.assert_close(x_s, (1 - s[:, None]) * x0 + s[:, None] * eps, rtol=0, atol=0)
    u = flow_velocity_target(x0, eps)
    h = 1e-6  # u is dx_s/ds
    torch.testing.assert_close((flow_interpolate(x0, s + h, eps) - flow_interpolate(x0, s - h, eps)) / (2 * h), u,
                               rtol=1e-8, atol=1e-8)
    pred_noise, pred_x0 = flow_predictions(x_s, s, u)
    torch.testing.assert_close(pred_x0, x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred_noise, eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flow_interpolate(x0, 0.0, eps), x0, rtol=0, atol=0)
    torch.testing.assert_close(flow_interpolate(x0, 1.0, eps), eps, rtol=0, atol=0)


@pytest.mark.parametrize("t", [0, 1, 400, 999])
def test_vp_dictionary(t):
    """q_sample(x_0, t, ε) ↔ the linear path at s = b/(a + b), with the same (x_0, ε); v ↔ u."""
    sched = NoiseSchedule.cosine(1000)
    x0, eps, _ = _pair(seed=t)
    a_bar = sched.alphas_cumprod[t].item()
    x_t = q_sample(sched, x0, t, eps)
    x_s, s = flow_from_vp(x_t, a_bar)
    a, b = math.sqrt(a_bar), math.sqrt(1 - a_bar)
    assert s == pytest.approx(b / (a + b), rel=1e-12)
    torch.testing.assert_close(x_s, flow_interpolate(x0, s, eps), rtol=1e-10, atol=1e-10)
    back, a_back = vp_from_flow(x_s, s)
    torch.testing.assert_close(back, x_t, rtol=1e-10, atol=1e-10)
    assert a_back == pytest.approx(a_bar, rel=1e-9)
    v = predict_v(sched, x0, t, eps)
    u = velocity_from_v(v, x_t, a_bar)
    torch.testing.assert_close(u, eps - x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(v_from_velocity(u, x_s, s), v, rtol=1e-9, atol=1e-9)
    # per-example ᾱ (shape (B,)) works the same
    ab = sched.alphas_cumprod[torch.full((x0.shape[0],), t)]
    x_s_b, s_b = flow_from_vp(x_t, ab)
    torch.testing.assert_close(x_s_b, x_s, rtol=1e-12, atol=1e-12)
    assert s_b.shape == (x0.shape[0],)


def test_exact_velocity_minimises_the_loss():
    """E[ε - x_0 | x_s] for the mixture: its loss is below that of any perturbation of it (same s and ε), and it
    is exactly -x_0 at s = 0 and x - E[x_0] at s = 1."""
    model = exact_velocity_model(MIX8)
    x0 = MIX8.sample(4000, generator=gen(1), dtype=torch.float64)
    g = gen(2)
    s = torch.rand(4000, generator=g, **F64)
    eps = torch.randn(4000, 2, generator=g, **F64)
    best = flow_matching_loss(model, x0, s, eps).item()
    for scale in (0.9, 1.1):
        worse = flow_matching_loss(lambda x, t: scale * model(x, t), x0, s, eps).item()
        assert worse > best
    torch.testing.assert_close(model(x0, torch.zeros(4000)), -x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model(eps, torch.full((4000,), 999.0)), eps - MIX8.mean(), rtol=1e-12, atol=1e-12)


def test_flow_ode_is_the_probability_flow_ode():
    """x_s = x̄/(1 + σ) at s = σ/(1 + σ): from the same noise, Heun on the flow ODE with the exact velocity and Heun
    on dx̄/dσ = ε̂ (from σ = 1000, x̄ = √(1 + σ²) x_T) reach the same points: measured max difference 2.0e-3 at
    100 steps each, the size of the 1/σ_max start-up mismatch and of the discretisations."""
    x_T = torch.randn(256, 2, generator=gen(3), **F64)
    flow = flow_sample(exact_velocity_model(MIX8), x_T.shape, steps=100, solver="heun", x_T=x_T, progress=False)
    sigmas = torch.logspace(3, -2, 100, dtype=torch.float64).tolist() + [0.0]
    pf = solve_pf_ode(mixture_eps_fn(MIX8), x_T * math.sqrt(1 + 1e6), sigmas, solver="heun")
    assert (flow - pf).abs().max() < 5e-3


def test_flow_step_and_sampler_shapes_and_calls():
    calls = []

    def model(x, t):
        calls.append(t.clone())
        return torch.ones_like(x)

    x_T = torch.zeros(4, 2, **F64)
    for solver, nfe in (("euler", 5), ("heun", 10)):
        calls.clear()
        xs, x0s = flow_sample(model, x_T.shape, steps=5, solver=solver, x_T=x_T, progress=False,
                              return_all_timesteps=True)
        assert len(calls) == nfe and xs.shape == (6, 4, 2) and x0s.shape == (5, 4, 2)
        torch.testing.assert_close(xs[-1], x_T - 1.0, rtol=1e-12, atol=1e-12)  # constant velocity: x_0 = x_1 - u
        assert calls[0].dtype == torch.float64 and calls[0][0].item() == pytest.approx(999.0)  # t = s · 999
    x_next, x_start = flow_step(torch.ones(4, 2, **F64), 0.5, 0.25, x_T)
    torch.testing.assert_close(x_next, x_T - 0.25, rtol=0, atol=0)
    torch.testing.assert_close(x_start, x_T - 0.5, rtol=0, atol=0)


def test_training_an_mlp_with_the_flow_matching_loss():
    """MLPDenoiser (hidden 64) on the 8-Gaussians, 300 AdamW steps of 256 (about 3 s on one thread). The loss's
    optimum, measured with the exact velocity on 20000 points, is L* = 1.31; the untrained network (first 50 steps)
    sits at 1.78. After training the last 50 steps average ≤ L* + 0.3 (first - L*): measured 1.38, i.e. 84% of
    the gap closed."""
    data = MIX8.sample(4000, generator=gen(0))
    big = MIX8.sample(20000, generator=gen(4), dtype=torch.float64)
    optimum = flow_matching_loss(exact_velocity_model(MIX8), big, generator=gen(5)).item()
    torch.manual_seed(0)
    model = MLPDenoiser(2, hidden_dim=64)
    loss_fn = lambda m, x0, y, g: flow_matching_loss(m, x0, generator=g, reduction="none")  # noqa: E731
    history = train(model, None, data, steps=300, batch_size=256, lr=2e-3, ema_decay=None, seed=0,
                    progress=False, loss_fn=loss_fn).loss_history
    first, last = history[:50].mean().item(), history[-50:].mean().item()
    assert 1.2 < optimum < 1.4
    assert last <= optimum + 0.3 * (first - optimum), (first, last, optimum)
    with torch.no_grad():
        samples = flow_sample(model.eval(), (500, 2), steps=10, generator=gen(6), progress=False)
    assert samples.shape == (500, 2) and torch.isfinite(samples).all()


def test_bad_arguments_name_themselves():
    x = torch.zeros(4, 2, **F64)
    with pytest.raises(ValueError, match="s must"):
        flow_interpolate(x, 1.5, x)
    with pytest.raises(ValueError, match="noise"):
        flow_interpolate(x, 0.5, torch.zeros(3, 2, **F64))
    with pytest.raises(ValueError, match="s must be < 1"):
        vp_from_flow(x, 1.0)
    with pytest.raises(ValueError, match="alpha_bar"):
        flow_from_vp(x, 0.0)
    with pytest.raises(ValueError, match="reduction"):
        flow_matching_loss(lambda a, t: a, x, reduction="sum")
    with pytest.raises(ValueError, match="solver"):
        flow_sample(lambda a, t: a, (4, 2), steps=3, solver="rk4", progress=False)
    with pytest.raises(ValueError, match="s_next < s"):
        flow_step(x, 0.25, 0.5, x)
    with pytest.raises(TypeError, match="loss_fn"):
        train(MLPDenoiser(2), None, x, steps=1, loss_fn="flow", progress=False)
    with pytest.raises(FloatingPointError, match="s = 1"):
        flow_sample(lambda a, t: a / 0.0, (4, 2), steps=2, generator=gen(0), progress=False)
