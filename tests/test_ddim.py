"""DDIM, chapter 08: timestep spacings, the step, the sampler and inversion.

Checked by construction: with a consistent (x_0, ε) pair the η = 0 step lands exactly on q(x_{t_prev}|x_0);
the step's noise coefficients keep the marginal variance 1 - ᾱ_prev for every η; with steps = T and η = 1 DDIM
is DDPM (same noise, same trajectory); the sampler equals a hand-written loop over the *actual* next entries of
the timestep list; inversion is exact for a model that does not depend on x; and the exact denoiser of a Gaussian
mixture reproduces the mixture.
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
    predict_v,
    q_sample,
)

F64 = dict(dtype=torch.float64)
SCHED = NoiseSchedule.linear(1000)
SMALL = NoiseSchedule.cosine(50)


def toy_eps_model(x, t):
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.sin(1.3 * x + 0.01 * tt) * 0.9 + 0.05 * x


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
                      generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.isfinite(out).all()
    assert len(calls) == steps and calls[0] == T - 1 and min(calls) >= 0


# ---------------------------------------------------------------- the step


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_ddim_step_eta0_with_exact_output_lands_on_q(objective):
    """η = 0 and the exact model output for x_t = q_sample(x_0, t, ε): x_{t_prev} = √ᾱ_prev x_0 + √(1-ᾱ_prev) ε."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, generator=g, **F64) * 1.8 - 0.9
    eps = torch.randn(4, 3, generator=g, **F64)
    for t, t_prev in [(999, 979), (500, 3), (1, 0), (0, -1), (700, -1)]:
        tt = torch.full((4,), t)
        xt = q_sample(SCHED, x0, tt, eps)
        out = {"pred_noise": eps, "pred_x0": x0, "pred_v": predict_v(SCHED, x0, tt, eps)}[objective]
        x_prev, x0_hat = ddim_step(SCHED, out, t, t_prev, xt, eta=0.0, objective=objective)
        expected = x0 if t_prev == -1 else q_sample(SCHED, x0, torch.full((4,), t_prev), eps)
        torch.testing.assert_close(x_prev, expected, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_formula_and_marginal_variance(eta):
    """x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev-σ²) ε̂ + σ z (chapter 08, eq. ddim-step); the ε̂ and z coefficients
    square-sum to 1-ᾱ_prev, so x_prev ~ q(x_prev|x_0) whenever ε̂ and z are independent standard normals."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 5, generator=g, **F64) * 1.8 - 0.9
    eps = torch.randn(3, 5, generator=g, **F64)
    z = torch.randn(3, 5, generator=g, **F64)
    for t, t_prev in [(999, 899), (400, 399), (50, 10), (10, -1)]:
        xt = q_sample(SCHED, x0, t, eps)
        x_prev, _ = ddim_step(SCHED, eps, t, t_prev, xt, eta=eta, noise=z)
        a_t = SCHED.alphas_cumprod[t].item()
        a_p = SCHED.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
        assert ddim_sigma(SCHED, t, t_prev, eta) == pytest.approx(sigma, rel=1e-12, abs=1e-300)
        c = math.sqrt(1 - a_p - sigma ** 2)
        torch.testing.assert_close(x_prev, math.sqrt(a_p) * x0 + c * eps + sigma * z, rtol=1e-10, atol=1e-10)
        assert c ** 2 + sigma ** 2 == pytest.approx(1 - a_p, rel=1e-12, abs=1e-15)


def test_ddim_sigma_eta1_is_ddpm_posterior_std():
    t = torch.arange(1, SCHED.T)
    sig = torch.tensor([ddim_sigma(SCHED, int(i), int(i) - 1, 1.0) for i in t], **F64)
    torch.testing.assert_close(sig ** 2, SCHED.posterior_variance[1:], rtol=1e-10, atol=0)
    assert ddim_sigma(SCHED, 0, -1, 1.0) == 0.0  # last step is deterministic for every η


def test_ddim_step_tensor_t_and_noise_from_generator():
    x = torch.randn(2, 3, **F64)
    out = toy_eps_model(x, torch.full((2,), 300))
    a, _ = ddim_step(SCHED, out, torch.tensor(300), torch.tensor(200), x, eta=0.7,
                     generator=torch.Generator().manual_seed(5))
    b, _ = ddim_step(SCHED, out, 300, 200, x, eta=0.7, generator=torch.Generator().manual_seed(5))
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), **F64)
    c, _ = ddim_step(SCHED, out, 300, 200, x, eta=0.7, noise=z)
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
    xT = torch.randn(shape, generator=torch.Generator().manual_seed(2), **F64)
    out = ddim_sample(toy_eps_model, SMALL, shape, steps=steps, eta=eta, spacing=spacing, noise=xT,
                      generator=torch.Generator().manual_seed(3), progress=False)
    ts = ddim_timesteps(SMALL.T, steps, spacing).tolist()
    manual = _manual_ddim(toy_eps_model, SMALL, xT, ts, eta, True, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, manual, rtol=1e-13, atol=1e-13)


def test_ddim_sample_return_all_timesteps():
    shape = (3, 2)
    xs, x0s = ddim_sample(toy_eps_model, SMALL, shape, steps=9, eta=0.3, spacing="trailing",
                          generator=torch.Generator().manual_seed(0), dtype=torch.float64, progress=False,
                          return_all_timesteps=True)
    assert xs.shape == (10, *shape) and x0s.shape == (9, *shape)
    last = ddim_sample(toy_eps_model, SMALL, shape, steps=9, eta=0.3, spacing="trailing",
                       generator=torch.Generator().manual_seed(0), dtype=torch.float64, progress=False)
    torch.testing.assert_close(xs[-1], last, rtol=0, atol=0)
    torch.testing.assert_close(xs[-1], x0s[-1], rtol=1e-12, atol=1e-12)  # the last step goes to ᾱ = 1: x_0 = x̂_0


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_with_all_steps_and_eta1_is_ddpm(clip):
    """steps = T, η = 1: σ_t² = β̃_t and the DDIM mean equals the DDPM posterior mean μ̃(x_t, x̂_0), so with the
    same generator (x_T first, then one z per step t >= 1) both samplers follow the same trajectory."""
    shape = (6, 3)
    kw = dict(generator=None, dtype=torch.float64, progress=False, return_all_timesteps=True)
    ddim_xs, ddim_x0 = ddim_sample(toy_eps_model, SMALL, shape, steps=SMALL.T, eta=1.0, spacing="leading",
                                   clip_denoised=clip, **{**kw, "generator": torch.Generator().manual_seed(4)})
    ddpm_xs, ddpm_x0 = p_sample_loop(toy_eps_model, SMALL, shape, variance="fixed_small", clip_denoised=clip,
                                     **{**kw, "generator": torch.Generator().manual_seed(4)})
    torch.testing.assert_close(ddim_xs, ddpm_xs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ddim_x0, ddpm_x0, rtol=1e-10, atol=1e-10)


def test_ddim_eta0_is_deterministic():
    xT = torch.randn(4, 2, **F64)
    a = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.0, noise=xT,
                    generator=torch.Generator().manual_seed(0), progress=False)
    b = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.0, noise=xT,
                    generator=torch.Generator().manual_seed(1), progress=False)
    c = ddim_sample(toy_eps_model, SMALL, (4, 2), steps=10, eta=0.5, noise=xT,
                    generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


# ---------------------------------------------------------------- inversion


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_invert_exact_for_x_independent_model(spacing):
    """If ε̂ depends on t only, the inversion step and the η = 0 sampling step are exact inverses."""
    h = lambda x, t: torch.cos(0.01 * t.to(x))[:, None].expand_as(x) * 0.7  # noqa: E731
    x0 = torch.rand(5, 2, generator=torch.Generator().manual_seed(0), **F64) * 2 - 1
    xT = ddim_invert(h, SCHED, x0, steps=20, spacing=spacing, progress=False)
    back = ddim_sample(h, SCHED, x0.shape, steps=20, spacing=spacing, noise=xT, eta=0.0, clip_denoised=False,
                       progress=False)
    torch.testing.assert_close(back, x0, rtol=1e-9, atol=1e-9)
    traj = ddim_invert(h, SCHED, x0, steps=20, spacing=spacing, progress=False, return_all_timesteps=True)
    assert traj.shape == (21, 5, 2)
    torch.testing.assert_close(traj[0], x0, rtol=0, atol=0)
    torch.testing.assert_close(traj[-1], xT, rtol=0, atol=0)


def test_ddim_invert_round_trip_error_shrinks_with_steps(one_thread):
    """For data N(0, s² I) the exact ε(x_t) = √(1-ᾱ) x_t/(ᾱ s² + 1 - ᾱ) depends on x_t; inversion is then only
    first-order accurate and the round-trip error must decrease as the number of steps grows."""
    s2 = 0.25

    def eps_gauss(x, t):
        ab = SCHED.alphas_cumprod[t].to(x)[:, None]
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)

    x0 = 0.5 * torch.randn(50, 2, generator=torch.Generator().manual_seed(1), **F64)
    errors = []
    for steps in (10, 40, 160):
        xT = ddim_invert(eps_gauss, SCHED, x0, steps=steps, spacing="trailing", progress=False)
        back = ddim_sample(eps_gauss, SCHED, x0.shape, steps=steps, spacing="trailing", noise=xT,
                           clip_denoised=False, progress=False)
        errors.append((back - x0).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05
    # x_T from inversion looks like N(0, I) for data with variance s²: the exact ODE maps N(0, s²) to N(0, 1)
    xT = ddim_invert(eps_gauss, SCHED, 0.5 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(2), **F64),
                     steps=160, spacing="trailing", progress=False)
    assert abs(xT.std().item() - 1) < 0.05


# ---------------------------------------------------------------- the exact denoiser of a Gaussian mixture


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_oracle_ddim_reproduces_the_mixture(mixture_reference, one_thread, eta, spacing):
    """ddim_sample (T = 1000, 100 steps) with the exact ε of an 8-Gaussians mixture: SW2 to fresh data within 1.5×
    the data-vs-data floor (see the fixture)."""
    from ddpm_lib.data import OracleDenoiser

    ref = mixture_reference
    sched = NoiseSchedule.cosine(1000)
    x = ddim_sample(OracleDenoiser(ref.mixture, sched), sched, (ref.n, 2), steps=100, eta=eta, spacing=spacing,
                    clip_denoised=False, generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                    progress=False)
    assert ref.ratio(x) <= 1.5, ref.ratio(x)
