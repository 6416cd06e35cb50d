"""DDIM, chapter 08: timestep spacings, the step, the sampler and inversion.

Checked by construction: with a consistent (x_0, ε) pair the η = 0 step lands exactly on q(x_{t_prev}|x_0); for
every allowed η (η > 1 included) the step keeps the marginal q(x_{t_prev}|x_0) (Monte Carlo, 5 standard errors); with steps = T and η = 1 DDIM
is DDPM (same noise, same trajectory); the sampler equals a hand-written loop over the *actual* next entries of
the timestep list; inversion is exact for a model that does not depend on x, follows its stated definition for
the x_0 and v objectives, and equals diffusers' DDIMInverseScheduler for ε (tests/test_parity_diffusers.py); and
the exact denoiser of a Gaussian mixture reproduces the mixture.
"""

import math

import pytest
import torch

from ddpm_lib import (
    NoiseSchedule,
    ddim_invert,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    p_sample_loop,
    predict_start_from_noise,
    predict_v,
    q_sample,
)
from ddpm_lib.ddim import ddim_sigma_hat
from ddpm_lib.exact import OracleDenoiser
from helpers import F64, assert_gaussian_moments, exact_output, gen, toy_eps_model

SCHED = NoiseSchedule.linear(1000)
SMALL = NoiseSchedule.cosine(50)


# ---------------------------------------------------------------- timesteps


def test_timesteps_known_values():
    assert ddim_timesteps(1000, 50, "leading").tolist() == list(range(980, -1, -20))
    assert ddim_timesteps(1000, 50, "trailing").tolist() == list(range(999, 0, -20))
    assert ddim_timesteps(1000, 4, "linspace").tolist() == [999, 666, 333, 0]
    assert ddim_timesteps(10, 3, "leading").tolist() == [6, 3, 0]
    assert ddim_timesteps(10, 3, "trailing").tolist() == [9, 6, 2]
    assert ddim_timesteps(10, 10, "leading").tolist() == list(range(9, -1, -1))
    assert ddim_timesteps(1, 1, "trailing").tolist() == [0]
    assert ddim_timesteps(1000, 50).dtype == torch.long


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timesteps_are_steps_distinct_valid_indices(spacing):
    """For every T <= 70 and every 1 <= steps <= T (and a few large T): exactly ``steps`` strictly decreasing
    code indices in 0..T-1, so that ddim_sample makes ``steps`` model calls on valid timesteps."""
    cases = [(T, s) for T in range(1, 71) for s in range(1, T + 1)]
    cases += [(1000, s) for s in (1, 3, 7, 30, 61, 103, 250, 999, 1000)]
    bad = []
    for T, steps in cases:
        ts = ddim_timesteps(T, steps, spacing)
        if not (len(ts) == steps and int(ts.min()) >= 0 and int(ts.max()) <= T - 1 and (ts.diff() < 0).all()):
            bad.append((T, steps, ts.tolist()))
    assert not bad, f"{len(bad)} bad (T, steps), e.g. {bad[:3]}"


@pytest.mark.parametrize("T,steps", [(15, 13), (1000, 61)])
def test_ddim_sample_trailing_runs_for_any_steps(T, steps):
    """ddim_sample must work for any number of steps (issue 2): these (T, steps) make np.arange(T, 0, -T/steps)
    return one entry too many."""
    sched = NoiseSchedule.cosine(T)
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return toy_eps_model(x, t)

    out = ddim_sample(model, sched, (2, 2), steps=steps, spacing="trailing", progress=False,
                      generator=gen(0), dtype=torch.float64)
    assert torch.isfinite(out).all()
    assert len(calls) == steps and calls[0] == T - 1 and min(calls) >= 0


# ---------------------------------------------------------------- the step


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_ddim_step_eta0_with_exact_output_lands_on_q(objective):
    """η = 0 and the exact model output for x_t = q_sample(x_0, t, ε): x_{t_prev} = √ᾱ_prev x_0 + √(1-ᾱ_prev) ε."""
    g = gen(0)
    x0 = torch.rand(4, 3, generator=g, **F64) * 1.8 - 0.9
    eps = torch.randn(4, 3, generator=g, **F64)
    for t, t_prev in [(999, 979), (500, 3), (1, 0), (0, -1), (700, -1)]:
        tt = torch.full((4,), t)
        xt = q_sample(SCHED, x0, tt, eps)
        out = exact_output(SCHED, objective, x0, tt, eps)
        x_prev, x0_hat = ddim_step(SCHED, out, t, t_prev, xt, eta=0.0, objective=objective)
        expected = x0 if t_prev == -1 else q_sample(SCHED, x0, torch.full((4,), t_prev), eps)
        torch.testing.assert_close(x_prev, expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)


def _eta_max(t, t_prev):
    """The largest η for which σ_t² <= 1 - ᾱ_prev: √((1-ᾱ_t)/(1-ᾱ_t/ᾱ_prev)) (> 1 for t_prev >= 0)."""
    a_t, a_p = SCHED.alphas_cumprod[t].item(), SCHED.alphas_cumprod[t_prev].item()
    return math.sqrt((1 - a_t) / (1 - a_t / a_p))


MARGINAL_PAIRS = [(999, 899), (400, 399), (50, 10), (10, -1)]


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, "above_1"])
@pytest.mark.parametrize("objective", ["pred_noise", "pred_v"])
def test_ddim_step_keeps_the_marginal(eta, objective):
    """The DDIM family keeps q(x_{t_prev}|x_0) for every η (chapter 08, eq. ddim-family): x_0 fixed,
    x_t ~ q(x_t|x_0), the model output the exact ε (or v) used, z ~ N(0, I) independent. Then x_prev must have
    mean √ᾱ_prev x_0 and variance 1 - ᾱ_prev: sample moments of N = 100 000 draws within 5 standard errors.
    "above_1" is an allowed η > 1: 1 + 0.9 (η_max - 1)."""
    N = 100_000
    x0 = torch.tensor([-0.8, 0.0, 0.3, 0.9], **F64)
    for t, t_prev in MARGINAL_PAIRS:
        e = eta if eta != "above_1" else (1 + 0.9 * (_eta_max(t, t_prev) - 1) if t_prev >= 0 else 3.0)
        g = gen(t)
        eps = torch.randn(N, 4, generator=g, **F64)
        z = torch.randn(N, 4, generator=g, **F64)
        xt = q_sample(SCHED, x0.expand(N, 4), t, eps)
        out = exact_output(SCHED, objective, x0.expand(N, 4), t, eps)
        x_prev, _ = ddim_step(SCHED, out, t, t_prev, xt, eta=e, objective=objective, clip_denoised=False,
                              variance_noise=z)
        if t_prev == -1:  # ᾱ_prev = 1: the data, no noise for any η
            torch.testing.assert_close(x_prev, x0.expand(N, 4), rtol=1e-9, atol=1e-9)
            continue
        a_p = SCHED.alphas_cumprod[t_prev].item()
        assert_gaussian_moments(x_prev, math.sqrt(a_p) * x0, 1 - a_p)


@pytest.mark.parametrize("t,t_prev", [(999, 899), (400, 399), (50, 10), (999, 979)])
def test_eta_above_1_up_to_the_limit(t, t_prev):
    """η > 1 is allowed up to η_max = √((1-ᾱ_t)/(1-ᾱ_t/ᾱ_prev)), where σ_t² = 1 - ᾱ_prev: there the ε̂ term vanishes
    and x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev) z. Beyond it ddim_sigma and ddim_step raise a ValueError naming η."""
    eta_max = _eta_max(t, t_prev)
    assert eta_max > 1
    a_p = SCHED.alphas_cumprod[t_prev].item()
    assert ddim_sigma(SCHED, t, t_prev, eta_max) == pytest.approx(math.sqrt(1 - a_p), rel=1e-10)
    x = torch.randn(3, 4, generator=gen(0), **F64)
    z = torch.randn(3, 4, generator=gen(1), **F64)
    out = toy_eps_model(x, torch.full((3,), t))
    x_prev, x_start = ddim_step(SCHED, out, t, t_prev, x, eta=eta_max, variance_noise=z, clip_denoised=False)
    # the ε̂ coefficient √(1 - ᾱ_prev - σ²) is the square root of a round-off residual (≲ 1e-15): up to ~3e-8
    torch.testing.assert_close(x_prev, math.sqrt(a_p) * x_start + math.sqrt(1 - a_p) * z, rtol=0, atol=1e-7)
    for fn in (lambda e: ddim_sigma(SCHED, t, t_prev, e),
               lambda e: ddim_step(SCHED, out, t, t_prev, x, eta=e, variance_noise=z)):
        with pytest.raises(ValueError, match=r"eta = .*eta <= "):
            fn(eta_max * 1.001)


def test_ddim_sigma_eta1_is_ddpm_posterior_std():
    t = torch.arange(1, SCHED.T)
    sig = torch.tensor([ddim_sigma(SCHED, int(i), int(i) - 1, 1.0) for i in t], **F64)
    torch.testing.assert_close(sig ** 2, SCHED.posterior_variance[1:], rtol=1e-10, atol=0)
    assert ddim_sigma(SCHED, 0, -1, 1.0) == 0.0  # last step is deterministic for every η


def test_ddim_step_tensor_t_and_noise_from_generator():
    x = torch.randn(2, 3, **F64)
    out = toy_eps_model(x, torch.full((2,), 300))
    a, _ = ddim_step(SCHED, out, torch.tensor(300), torch.tensor(200), x, eta=0.7,
                     generator=gen(5))
    b, _ = ddim_step(SCHED, out, 300, 200, x, eta=0.7, generator=gen(5))
    z = torch.randn(2, 3, generator=gen(5), **F64)
    c, _ = ddim_step(SCHED, out, 300, 200, x, eta=0.7, variance_noise=z)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(b, c, rtol=0, atol=0)


# ---------------------------------------------------------------- the sampler


def _manual_ddim(model, sched, x, timesteps, eta, clip, g, objective="pred_noise"):
    ts = list(timesteps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        out = model(x, torch.full((x.shape[0],), t))
        x, _ = ddim_step(sched, out, t, t_prev, x, eta=eta, clip_denoised=clip, objective=objective, generator=g)
    return x


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [7, 10, 50])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_sample_equals_loop_over_actual_next_entries(spacing, steps, eta):
    shape = (4, 2)
    xT = torch.randn(shape, generator=gen(2), **F64)
    out = ddim_sample(toy_eps_model, SMALL, shape, steps=steps, eta=eta, spacing=spacing, x_T=xT,
                      generator=gen(3), progress=False)
    ts = ddim_timesteps(SMALL.T, steps, spacing).tolist()
    manual = _manual_ddim(toy_eps_model, SMALL, xT, ts, eta, True, gen(3))
    torch.testing.assert_close(out, manual, rtol=1e-13, atol=1e-13)


def test_ddim_sample_return_all_timesteps():
    shape = (3, 2)
    xs, x0s = ddim_sample(toy_eps_model, SMALL, shape, steps=9, eta=0.3, spacing="trailing",
                          generator=gen(0), dtype=torch.float64, progress=False,
                          return_all_timesteps=True)
    assert xs.shape == (10, *shape) and x0s.shape == (9, *shape)
    last = ddim_sample(toy_eps_model, SMALL, shape, steps=9, eta=0.3, spacing="trailing",
                       generator=gen(0), dtype=torch.float64, progress=False)
    torch.testing.assert_close(xs[-1], last, rtol=0, atol=0)
    torch.testing.assert_close(xs[-1], x0s[-1], rtol=1e-12, atol=1e-12)  # the last step goes to ᾱ = 1: x_0 = x̂_0


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_with_all_steps_and_eta1_is_ddpm(clip):
    """steps = T, η = 1: σ_t² = β̃_t and the DDIM mean equals the DDPM posterior mean μ̃(x_t, x̂_0), so with the
    same generator (x_T first, then one z per step t >= 1) both samplers follow the same trajectory."""
    shape = (6, 3)
    kw = dict(generator=None, dtype=torch.float64, progress=False, return_all_timesteps=True)
    ddim_xs, ddim_x0 = ddim_sample(toy_eps_model, SMALL, shape, steps=SMALL.T, eta=1.0, spacing="leading",
                                   clip_denoised=clip, **{**kw, "generator": gen(4)})
    ddpm_xs, ddpm_x0 = p_sample_loop(toy_eps_model, SMALL, shape, variance="fixed_small", clip_denoised=clip,
                                     **{**kw, "generator": gen(4)})
    torch.testing.assert_close(ddim_xs, ddpm_xs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddim_x0, ddpm_x0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_sigma_hat_with_all_steps_is_ddpm_fixed_large(clip):
    """The σ̂ row (sigma_hat=True): the η = 1 mean plus noise of std σ̂_t = √(1 - ᾱ_t/ᾱ_prev), the β of the skipped
    step, and none at the last step. With steps = T that is DDPM with σ_t² = β_t (fixed_large), whose last step
    adds no noise either: the same trajectory with the same generator."""
    shape = (5, 3)
    kw = dict(dtype=torch.float64, progress=False, return_all_timesteps=True, clip_denoised=clip)
    ddim_xs, _ = ddim_sample(toy_eps_model, SMALL, shape, steps=SMALL.T, sigma_hat=True, generator=gen(6), **kw)
    ddpm_xs, _ = p_sample_loop(toy_eps_model, SMALL, shape, variance="fixed_large", generator=gen(6), **kw)
    torch.testing.assert_close(ddim_xs, ddpm_xs, rtol=1e-10, atol=1e-10)
    # with fewer steps the noise std is that of the skipped steps together, and the mean is the η = 1 mean
    x = torch.randn(shape, generator=gen(7), **F64)
    z = torch.randn(shape, generator=gen(8), **F64)
    out = toy_eps_model(x, torch.full((5,), 40))
    hat, _ = ddim_step(SMALL, out, 40, 30, x, sigma_hat=True, variance_noise=z, clip_denoised=clip)
    mean, _ = ddim_step(SMALL, out, 40, 30, x, eta=1.0, variance_noise=torch.zeros_like(z), clip_denoised=clip)
    a_t, a_p = SMALL.alphas_cumprod[40].item(), SMALL.alphas_cumprod[30].item()
    torch.testing.assert_close(hat, mean + math.sqrt(1 - a_t / a_p) * z, rtol=1e-12, atol=1e-12)
    assert ddim_sigma_hat(SMALL, 40, -1) == 0.0


def test_ddim_eta0_is_deterministic():
    xT = torch.randn(4, 2, generator=gen(8), **F64)
    a = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.0, x_T=xT,
                    generator=gen(0), progress=False)
    b = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.0, x_T=xT,
                    generator=gen(1), progress=False)
    c = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.5, x_T=xT,
                    generator=gen(1), progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- inversion


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_invert_exact_for_x_independent_model(spacing):
    """If ε̂ depends on t only, the inversion step and the η = 0 sampling step are exact inverses. With
    return_all_timesteps the states x_0, ..., x_T (steps + 1) and the x̂_0 of each step (steps) come back; for a
    constant ε̂ = c every state lies on the forward ray q_sample(x_0, t, c) and every x̂_0 is x_0 itself."""
    h = lambda x, t: torch.cos(0.01 * t.to(x))[:, None].expand_as(x) * 0.7  # noqa: E731
    x0 = torch.rand(5, 2, generator=gen(0), **F64) * 2 - 1
    xT = ddim_invert(h, SCHED, x0, steps=20, spacing=spacing, progress=False)
    back = ddim_sample(h, SCHED, x0.shape, steps=20, spacing=spacing, x_T=xT, eta=0.0, clip_denoised=False,
                       progress=False)
    torch.testing.assert_close(back, x0, rtol=1e-9, atol=1e-9)
    xs, x_starts = ddim_invert(h, SCHED, x0, steps=20, spacing=spacing, progress=False, return_all_timesteps=True)
    assert xs.shape == (21, 5, 2) and x_starts.shape == (20, 5, 2)
    torch.testing.assert_close(xs[0], x0, rtol=0, atol=0)
    torch.testing.assert_close(xs[-1], xT, rtol=0, atol=0)
    c = torch.randn(5, 2, generator=gen(1), **F64)
    xs, x_starts = ddim_invert(lambda x, t: c, SCHED, x0, steps=20, spacing=spacing, progress=False,
                               return_all_timesteps=True)
    torch.testing.assert_close(x_starts, x0.expand(20, 5, 2), rtol=1e-9, atol=1e-9)
    for i, t in enumerate(ddim_timesteps(SCHED.T, 20, spacing).flip(0).tolist()):
        torch.testing.assert_close(xs[i + 1], q_sample(SCHED, x0, t, c), rtol=1e-9, atol=1e-9)


def _as_x0_model(eps_model):
    """The x_0-model that makes the same prediction as ``eps_model``, converted at the evaluation timestep t."""
    return lambda x, t: predict_start_from_noise(SCHED, x, t, eps_model(x, t))


def _as_v_model(eps_model):
    """The v-model that makes the same prediction as ``eps_model``, converted at the evaluation timestep t."""
    return lambda x, t: predict_v(SCHED, _as_x0_model(eps_model)(x, t), t, eps_model(x, t))


@pytest.mark.parametrize("objective,wrap", [("pred_x0", _as_x0_model), ("pred_v", _as_v_model)])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_invert_other_objectives_follow_the_stated_definition(objective, wrap, spacing):
    """ddim_invert's docstring: the network is evaluated at (x_s, t) and its output is converted to ε̂ with ᾱ_t. So
    an x_0- or v-model made from an ε-model by converting its output at t must invert exactly like the ε-model
    (1e-10, float64), every state included. (Converting with ᾱ_s, as diffusers does, would not.)"""
    x0 = torch.rand(6, 3, generator=gen(7), **F64) * 2 - 1
    kw = dict(steps=25, spacing=spacing, progress=False, return_all_timesteps=True)
    ref_xs, ref_x0s = ddim_invert(toy_eps_model, SCHED, x0, **kw)
    xs, x0s = ddim_invert(wrap(toy_eps_model), SCHED, x0, objective=objective, **kw)
    torch.testing.assert_close(xs, ref_xs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0s, ref_x0s, rtol=1e-10, atol=1e-10)
    assert (ref_xs[-1] - x0).abs().max() > 0.5  # the states really move


def test_ddim_invert_round_trip_error_shrinks_with_steps(one_thread):
    """For data N(0, s² I) the exact ε(x_t) = √(1-ᾱ) x_t/(ᾱ s² + 1 - ᾱ) depends on x_t; inversion is then only
    first-order accurate and the round-trip error must decrease as the number of steps grows."""
    s2 = 0.25

    def eps_gauss(x, t):
        ab = SCHED.alphas_cumprod[t].to(x)[:, None]
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)

    x0 = 0.5 * torch.randn(50, 2, generator=gen(1), **F64)
    errors = []
    for steps in (10, 40, 160):
        xT = ddim_invert(eps_gauss, SCHED, x0, steps=steps, spacing="trailing", progress=False)
        back = ddim_sample(eps_gauss, SCHED, x0.shape, steps=steps, spacing="trailing", x_T=xT,
                           clip_denoised=False, progress=False)
        errors.append((back - x0).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05
    # x_T from inversion looks like N(0, I) for data with variance s²: the exact ODE maps N(0, s²) to N(0, 1)
    xT = ddim_invert(eps_gauss, SCHED, 0.5 * torch.randn(4000, 1, generator=gen(2), **F64),
                     steps=160, spacing="trailing", progress=False)
    assert abs(xT.std().item() - 1) < 0.05


# ---------------------------------------------------------------- the exact denoiser of a Gaussian mixture


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_oracle_ddim_reproduces_the_mixture(mixture_reference, one_thread, eta, spacing):
    """ddim_sample (T = 1000, 100 steps) with the exact ε of an 8-Gaussians mixture: SW2 to fresh data within 1.5×
    the data-vs-data floor (see the fixture)."""
    ref = mixture_reference
    sched = NoiseSchedule.cosine(1000)
    x = ddim_sample(OracleDenoiser(ref.mixture, sched), sched, (ref.n, 2), steps=100, eta=eta, spacing=spacing,
                    clip_denoised=False, generator=gen(1), dtype=torch.float64,
                    progress=False)
    assert ref.ratio(x) <= 1.5, ref.ratio(x)


@pytest.mark.parametrize("t, t_prev", [(999, 979), (500, 400), (40, 0), (20, -1)])
def test_the_eta0_step_in_x0_form_is_a_contraction_that_ends_on_x0_hat(t, t_prev):
    # chapter 08, eq-ddim-x0-form: x_prev = sqrt(abar_prev) x0_hat + r_t (x_t - sqrt(abar_t) x0_hat) with
    # r_t = sqrt((1 - abar_prev) / (1 - abar_t)) < 1, and r = 0 at the last step (abar_prev = 1): the sample is x0_hat.
    # x0_hat is recomputed here from x_t and eps_hat with the book's formula, not taken from ddim_step.
    sched = SCHED
    g = gen(7)
    x_t = torch.randn(64, 2, generator=g, **F64) * 3
    eps_hat = torch.randn(64, 2, generator=g, **F64) * 2
    a_t = sched.alphas_cumprod[t].item()
    a_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    x0_hat = (x_t - math.sqrt(1 - a_t) * eps_hat) / math.sqrt(a_t)
    r_t = math.sqrt((1 - a_prev) / (1 - a_t))
    x_prev, x_start = ddim_step(sched, eps_hat, t, t_prev, x_t, eta=0.0, clip_denoised=False)
    torch.testing.assert_close(x_start, x0_hat, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(x_prev, math.sqrt(a_prev) * x0_hat + r_t * (x_t - math.sqrt(a_t) * x0_hat),
                               rtol=1e-12, atol=1e-10)
    assert r_t < 1
    if t_prev < 0:
        torch.testing.assert_close(x_prev, x0_hat, rtol=1e-12, atol=1e-12)
