"""Ancestral (DDPM) sampling, chapter 06: p_mean_variance, ddpm_step, p_sample, p_sample_loop.

The step is checked against Algorithm 4 written with ε̂ (chapter 04) and, statistically, against the marginal it
must produce: with the exact ε̂ of x_t ~ q(x_t|x_0), x_{t-1} = μ̃ + σ_t z has mean √ᾱ_{t-1} x_0 and variance
(1 - ᾱ_{t-1}) - β̃_t + σ_t² (law of total variance: μ̃ carries all of q(x_{t-1}|x_0) but the posterior's β̃_t).
The step equals diffusers' DDPMScheduler.step (tests/test_parity_diffusers.py); here the loop is checked against a
hand-written loop over p_sample, and the sampler as a whole with the exact denoiser of a Gaussian mixture (sliced
Wasserstein distance to fresh data within 1.5× the data-vs-data floor).
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddpm_step, p_mean_variance, p_sample, p_sample_loop, q_sample
from ddpm_lib.diffusion import call_model
from ddpm_lib.exact import OracleDenoiser
from helpers import F64, assert_gaussian_moments, exact_output, gen, toy_eps_model

SCHED = NoiseSchedule.linear(1000)
SMALL = NoiseSchedule.cosine(30)


def learned_model(x, t):
    """A stand-in network that also outputs its variance: ε̂ (first C channels) and v ∈ [-1, 1] (last C)."""
    return torch.cat([toy_eps_model(x, t), torch.tanh(2 * x - 0.3)], dim=1)


@pytest.mark.parametrize("t_int", [0, 1, 7, 500, 999])
def test_p_mean_variance_is_algorithm_4(t_int):
    """μ_θ = 1/√α_t (x_t - β_t/√(1-ᾱ_t) ε̂) without clipping (chapter 04, eq. mu-from-eps); x̂_0 is the x_0 that
    q_sample maps to x_t with the same ε̂."""
    g = gen(t_int)
    x = torch.randn(5, 3, generator=g, **F64)
    t = torch.full((5,), t_int)
    eps = toy_eps_model(x, t)
    mean, var, logvar, x0 = p_mean_variance(toy_eps_model, SCHED, x, t, clip_denoised=False)
    a, b, ab = SCHED.alphas[t_int].item(), SCHED.betas[t_int].item(), SCHED.alphas_cumprod[t_int].item()
    expected = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a)
    torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(q_sample(SCHED, x0, t, eps), x, rtol=1e-10, atol=1e-10)
    expected_var = SCHED.posterior_variance[max(t_int, 1)].item()  # β̃_t, clipped to β̃ at index 1 at t = 0
    torch.testing.assert_close(var.flatten(), torch.full((5,), expected_var, **F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(logvar, var.log(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("t_int", [1, 2, 500, 999])
def test_fixed_large_variance_is_beta(t_int):
    x = torch.randn(4, 2, **F64)
    _, var, logvar, _ = p_mean_variance(toy_eps_model, SCHED, x, torch.full((4,), t_int), variance="fixed_large")
    torch.testing.assert_close(var.flatten(), torch.full((4,), SCHED.betas[t_int].item(), **F64), rtol=1e-12, atol=0)
    _, var_int, logvar_int, _ = p_mean_variance(toy_eps_model, SCHED, x, t_int, variance="fixed_large")
    assert var_int == pytest.approx(SCHED.betas[t_int].item(), rel=1e-12)
    assert logvar_int == pytest.approx(math.log(SCHED.betas[t_int].item()), rel=1e-12)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_p_mean_variance_objectives_agree(objective):
    """Three models that make the same prediction in their own parameterization give the same p_θ(x_{t-1}|x_t)."""
    g = gen(1)
    x0_true = torch.rand(6, 4, generator=g, **F64) * 1.6 - 0.8
    eps = torch.randn(6, 4, generator=g, **F64)
    t = torch.tensor([0, 3, 100, 400, 800, 999])
    x = q_sample(SCHED, x0_true, t, eps)
    out = exact_output(SCHED, objective, x0_true, t, eps)
    mean, var, _, x0 = p_mean_variance(lambda xx, tt: out, SCHED, x, t, objective=objective, clip_denoised=True)
    ref_mean, ref_var, _, ref_x0 = p_mean_variance(lambda xx, tt: eps, SCHED, x, t, objective="pred_noise",
                                                   clip_denoised=True)
    torch.testing.assert_close(x0, x0_true, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(var, ref_var, rtol=0, atol=0)


def test_clip_denoised_clamps_x0_and_uses_it_in_the_mean():
    """Clipping clamps x̂_0 and the mean is the one an x_0-model returning the clamped x̂_0 would get unclipped."""
    x = 3 * torch.randn(8, 2, generator=gen(2), **F64)
    t = torch.full((8,), 20)
    mean, _, _, x0 = p_mean_variance(lambda xx, tt: -xx, SCHED, x, t, clip_denoised=True)
    _, _, _, x0_raw = p_mean_variance(lambda xx, tt: -xx, SCHED, x, t, clip_denoised=False)
    assert (x0_raw.abs() > 1).any() and x0.abs().max().item() <= 1.0
    torch.testing.assert_close(x0, x0_raw.clamp(-1, 1), rtol=0, atol=0)
    ref_mean, _, _, _ = p_mean_variance(lambda xx, tt: x0_raw.clamp(-1, 1), SCHED, x, t, objective="pred_x0",
                                        clip_denoised=False)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the step


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [True, False])
def test_p_sample_is_call_model_then_ddpm_step(variance, clip):
    """p_sample is one network call followed by ddpm_step on its output, with the same z."""
    model = learned_model if variance == "learned_range" else toy_eps_model
    x = 1.5 * torch.randn(4, 3, generator=gen(3), **F64)
    z = torch.randn(4, 3, generator=gen(4), **F64)
    for t in (0, 1, 250, 999):
        out = call_model(model, x, t, learned_variance=variance == "learned_range")
        ref = ddpm_step(SCHED, out, t, x, variance=variance, clip_denoised=clip, variance_noise=z)
        got = p_sample(model, SCHED, x, t, variance=variance, clip_denoised=clip, variance_noise=z)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_step_marginal_with_exact_eps(variance):
    """x_0 fixed, x_t ~ q(x_t|x_0) and the model output the true ε: x_{t-1} must have mean √ᾱ_{t-1} x_0 and
    variance (1 - ᾱ_{t-1}) - β̃_t + σ_t² (module docstring), i.e. exactly q(x_{t-1}|x_0) for fixed_small;
    σ_t² = β_t for fixed_large and √(β_t β̃_t) for learned_range with v = 0. 5 standard errors over N = 100 000."""
    N = 100_000
    x0 = torch.tensor([-0.9, 0.0, 0.4, 1.0], **F64)
    for t in (1, 40, 300, 999):
        g = gen(t)
        eps = torch.randn(N, 4, generator=g, **F64)
        z = torch.randn(N, 4, generator=g, **F64)
        xt = q_sample(SCHED, x0.expand(N, 4), t, eps)
        out = torch.cat([eps, torch.zeros_like(eps)], 1) if variance == "learned_range" else eps
        x_prev, x_start = ddpm_step(SCHED, out, t, xt, variance=variance, clip_denoised=False, variance_noise=z)
        torch.testing.assert_close(x_start, x0.expand(N, 4), rtol=1e-8, atol=1e-8)
        beta, beta_tilde = SCHED.betas[t].item(), SCHED.posterior_variance[t].item()
        sigma2 = {"fixed_small": beta_tilde, "fixed_large": beta, "learned_range": math.sqrt(beta * beta_tilde)}
        ab_prev = SCHED.alphas_cumprod[t - 1].item()
        assert_gaussian_moments(x_prev, math.sqrt(ab_prev) * x0, 1 - ab_prev - beta_tilde + sigma2[variance])


def test_p_sample_last_step_returns_the_mean():
    """At code index 0 (the paper's t = 1) the sampler outputs the mean, no noise (source 000, section 2); with the
    exact ε̂ that mean is x_0 itself."""
    x = torch.randn(4, 3, **F64)
    mean, _, _, _ = p_mean_variance(toy_eps_model, SCHED, x, 0)
    for z in (None, torch.randn(4, 3, **F64)):
        x_prev, _ = p_sample(toy_eps_model, SCHED, x, 0, variance_noise=z)
        torch.testing.assert_close(x_prev, mean, rtol=0, atol=0)
    x0 = torch.rand(4, 3, generator=gen(5), **F64) * 2 - 1
    eps = torch.randn(4, 3, generator=gen(6), **F64)
    for variance in ("fixed_small", "fixed_large"):
        x_prev, _ = ddpm_step(SCHED, eps, 0, q_sample(SCHED, x0, 0, eps), variance=variance, variance_noise=eps)
        torch.testing.assert_close(x_prev, x0, rtol=1e-10, atol=1e-10)


def test_p_sample_generator_reproducible_and_keeps_dtype():
    x = torch.randn(3, 2, dtype=torch.float32)
    a, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=gen(3))
    b, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=gen(3))
    c, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=gen(4))
    assert a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- the loop


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [True, False])
def test_p_sample_loop_equals_manual_loop(variance, clip):
    """The loop draws x_T and then one z per step t = T-1, ..., 1 from its generator, in that order."""
    shape = (5, 2)
    xs, x0s = p_sample_loop(toy_eps_model, SMALL, shape, variance=variance, clip_denoised=clip,
                            generator=gen(0), dtype=torch.float64, progress=False, return_all_timesteps=True)
    assert xs.shape == (SMALL.T + 1, *shape) and x0s.shape == (SMALL.T, *shape)
    g = gen(0)
    x = torch.randn(shape, generator=g, **F64)
    torch.testing.assert_close(xs[0], x, rtol=0, atol=0)
    for i, t in enumerate(range(SMALL.T - 1, -1, -1)):
        z = torch.randn(shape, generator=g, **F64) if t > 0 else None
        x, x0 = p_sample(toy_eps_model, SMALL, x, t, variance=variance, clip_denoised=clip, variance_noise=z)
        torch.testing.assert_close(xs[i + 1], x, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(x0s[i], x0, rtol=1e-13, atol=1e-13)
    final = p_sample_loop(toy_eps_model, SMALL, shape, variance=variance, clip_denoised=clip,
                          generator=gen(0), dtype=torch.float64, progress=False)
    torch.testing.assert_close(final, xs[-1], rtol=0, atol=0)


def test_p_sample_loop_uses_given_x_T_and_label():
    """x_T reaches the first model call unchanged (at t = T-1) and decides the output: the same x_T gives the same
    samples, another x_T other samples; a given x_T takes no draw from the generator (passing the loop's own first
    draw as x_T, with the generator advanced past it, reproduces the loop without x_T); y reaches every call."""
    calls = []

    def cond_model(x, t, y):
        calls.append((x.clone(), t.clone(), y))
        return toy_eps_model(x, t) + 0.1 * y[:, None].to(x)

    y = torch.tensor([0, 1, 2])
    kw = dict(y=y, clip_denoised=False, progress=False)
    xT = torch.randn(3, 2, generator=gen(1), **F64)
    out = p_sample_loop(cond_model, SMALL, (3, 2), x_T=xT, generator=gen(0), **kw)
    assert out.dtype == torch.float64 and len(calls) == SMALL.T
    assert torch.equal(calls[0][0], xT) and (calls[0][1] == SMALL.T - 1).all()
    assert [int(c[1][0]) for c in calls] == list(range(SMALL.T - 1, -1, -1))
    assert all(c[2] is y for c in calls)
    torch.testing.assert_close(p_sample_loop(cond_model, SMALL, (3, 2), x_T=xT.clone(), generator=gen(0), **kw), out,
                               rtol=0, atol=0)
    other = p_sample_loop(cond_model, SMALL, (3, 2), x_T=xT + 0.5, generator=gen(0), **kw)
    assert (other - out).abs().max() > 1e-3
    g = gen(2)
    first_draw = torch.randn(3, 2, generator=g, **F64)
    drawn = p_sample_loop(cond_model, SMALL, (3, 2), generator=gen(2), dtype=torch.float64, **kw)
    given = p_sample_loop(cond_model, SMALL, (3, 2), x_T=first_draw, generator=g, **kw)
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)


# ---------------------------------------------------------------- the exact denoiser of a Gaussian mixture


def test_oracle_ddpm_reproduces_the_mixture(mixture_reference, one_thread):
    """p_sample_loop (T = 1000, cosine schedule) with the exact ε of an 8-Gaussians mixture: the samples are as
    close to fresh data as fresh data is to itself (SW2 within 1.5× the data-vs-data floor, see the fixture), and
    the same criterion rejects a mixture 10% too wide."""
    ref = mixture_reference
    sched = NoiseSchedule.cosine(1000)
    x = p_sample_loop(OracleDenoiser(ref.mixture, sched), sched, (ref.n, 2), clip_denoised=False,
                      generator=gen(1), dtype=torch.float64, progress=False)
    assert torch.isfinite(x).all()
    assert ref.ratio(x) <= 1.5, ref.ratio(x)
    too_wide = ref.mixture.sample(ref.n, generator=gen(9), dtype=torch.float64) * 1.1
    assert ref.ratio(too_wide) > 1.5
    # the raw noise x_T is far from the data
    assert ref.ratio(torch.randn(ref.n, 2, generator=gen(1), **F64)) > 3
