"""Ancestral (DDPM) sampling, chapter 06: p_mean_variance, p_sample, p_sample_loop.

The step is checked against Algorithm 4 written with ε̂ (chapter 04), the variances against β̃_t / β_t, the loop
against a hand-written loop over p_sample, and the sampler as a whole with the exact denoiser of a Gaussian
mixture (sliced Wasserstein distance to fresh data within 1.5× the data-vs-data floor).
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, p_mean_variance, p_sample, p_sample_loop, predict_v, q_sample

F64 = dict(dtype=torch.float64)
SCHED = NoiseSchedule.linear(1000)
SMALL = NoiseSchedule.cosine(30)


def toy_eps_model(x, t):
    """A fixed, nonlinear function of (x_t, t) used as a stand-in network."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.sin(1.3 * x + 0.01 * tt) * 0.9 + 0.05 * x


@pytest.mark.parametrize("t_int", [0, 1, 7, 500, 999])
def test_p_mean_variance_is_algorithm_4(t_int):
    """μ_θ = 1/√α_t (x_t - β_t/√(1-ᾱ_t) ε̂) without clipping (chapter 04, eq. mu-from-eps)."""
    g = torch.Generator().manual_seed(t_int)
    x = torch.randn(5, 3, generator=g, **F64)
    t = torch.full((5,), t_int)
    eps = toy_eps_model(x, t)
    mean, var, logvar, x0 = p_mean_variance(toy_eps_model, SCHED, x, t, clip_denoised=False)
    a, b, ab = SCHED.alphas[t_int].item(), SCHED.betas[t_int].item(), SCHED.alphas_cumprod[t_int].item()
    expected = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a)
    torch.testing.assert_close(mean, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x0, (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab), rtol=1e-10, atol=1e-10)
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
    g = torch.Generator().manual_seed(1)
    x0_true = torch.rand(6, 4, generator=g, **F64) * 1.6 - 0.8
    eps = torch.randn(6, 4, generator=g, **F64)
    t = torch.tensor([0, 3, 100, 400, 800, 999])
    x = q_sample(SCHED, x0_true, t, eps)
    out = {"pred_noise": eps, "pred_x0": x0_true, "pred_v": predict_v(SCHED, x0_true, t, eps)}[objective]
    mean, var, _, x0 = p_mean_variance(lambda xx, tt: out, SCHED, x, t, objective=objective, clip_denoised=True)
    ref_mean, ref_var, _, ref_x0 = p_mean_variance(lambda xx, tt: eps, SCHED, x, t, objective="pred_noise",
                                                   clip_denoised=True)
    torch.testing.assert_close(x0, x0_true, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(var, ref_var, rtol=0, atol=0)


def test_clip_denoised_clamps_x0_and_uses_it_in_the_mean():
    x = 3 * torch.randn(8, 2, **F64)
    t = torch.full((8,), 20)
    mean, _, _, x0 = p_mean_variance(lambda xx, tt: -xx, SCHED, x, t, clip_denoised=True)
    assert x0.abs().max().item() <= 1.0
    _, _, _, x0_raw = p_mean_variance(lambda xx, tt: -xx, SCHED, x, t, clip_denoised=False)
    assert (x0_raw.abs() > 1).any()
    torch.testing.assert_close(x0, x0_raw.clamp(-1, 1), rtol=0, atol=0)
    c1, c2 = SCHED.posterior_mean_coef1[20].item(), SCHED.posterior_mean_coef2[20].item()
    torch.testing.assert_close(mean, c1 * x0 + c2 * x, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_p_sample_adds_sigma_times_noise(variance):
    x = torch.randn(4, 3, **F64)
    z = torch.randn(4, 3, **F64)
    for t_int in (1, 250, 999):
        mean, _, logvar, x0 = p_mean_variance(toy_eps_model, SCHED, x, t_int, variance=variance)
        x_prev, x0_s = p_sample(toy_eps_model, SCHED, x, t_int, noise=z, variance=variance)
        torch.testing.assert_close(x_prev, mean + math.exp(0.5 * logvar) * z, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(x0_s, x0, rtol=0, atol=0)


def test_p_sample_last_step_returns_the_mean():
    """At code index 0 (the paper's t = 1) the sampler outputs the mean, no noise (source 000, section 2)."""
    x = torch.randn(4, 3, **F64)
    mean, _, _, _ = p_mean_variance(toy_eps_model, SCHED, x, 0)
    for z in (None, torch.randn(4, 3, **F64)):
        x_prev, _ = p_sample(toy_eps_model, SCHED, x, 0, noise=z)
        torch.testing.assert_close(x_prev, mean, rtol=0, atol=0)


def test_p_sample_generator_reproducible_and_keeps_dtype():
    x = torch.randn(3, 2, dtype=torch.float32)
    a, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=torch.Generator().manual_seed(3))
    b, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=torch.Generator().manual_seed(3))
    c, _ = p_sample(toy_eps_model, SCHED, x, 10, generator=torch.Generator().manual_seed(4))
    assert a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [True, False])
def test_p_sample_loop_equals_manual_loop(variance, clip):
    shape = (5, 2)
    xs, x0s = p_sample_loop(toy_eps_model, SMALL, shape, variance=variance, clip_denoised=clip,
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64, progress=False,
                            return_all_timesteps=True)
    assert xs.shape == (SMALL.T + 1, *shape) and x0s.shape == (SMALL.T, *shape)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, **F64)
    torch.testing.assert_close(xs[0], x, rtol=0, atol=0)
    for i, t in enumerate(range(SMALL.T - 1, -1, -1)):
        mean, _, logvar, x0 = p_mean_variance(toy_eps_model, SMALL, x, t, variance=variance, clip_denoised=clip)
        x = mean + (math.exp(0.5 * logvar) * torch.randn(shape, generator=g, **F64) if t > 0 else 0)
        torch.testing.assert_close(xs[i + 1], x, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(x0s[i], x0, rtol=1e-13, atol=1e-13)
    final = p_sample_loop(toy_eps_model, SMALL, shape, variance=variance, clip_denoised=clip,
                          generator=torch.Generator().manual_seed(0), dtype=torch.float64, progress=False)
    torch.testing.assert_close(final, xs[-1], rtol=0, atol=0)


def test_p_sample_loop_uses_given_noise_and_label():
    seen = []

    def cond_model(x, t, y):
        seen.append(y)
        return toy_eps_model(x, t) + 0.1 * y[:, None].to(x)

    xT = torch.randn(3, 2, **F64)
    y = torch.tensor([0, 1, 2])
    out = p_sample_loop(cond_model, SMALL, (3, 2), noise=xT, y=y, generator=torch.Generator().manual_seed(0),
                        progress=False)
    assert out.dtype == torch.float64 and len(seen) == SMALL.T and all(s is y for s in seen)
    out2 = p_sample_loop(cond_model, SMALL, (3, 2), noise=xT.clone(), y=y, generator=torch.Generator().manual_seed(0),
                         progress=False)
    torch.testing.assert_close(out, out2, rtol=0, atol=0)


# ---------------------------------------------------------------- the exact denoiser of a Gaussian mixture


def test_oracle_ddpm_reproduces_the_mixture(mixture_reference, one_thread):
    """p_sample_loop (T = 1000, cosine schedule) with the exact ε of an 8-Gaussians mixture: the samples are as
    close to fresh data as fresh data is to itself (SW2 within 1.5× the data-vs-data floor, see the fixture), and
    the same criterion rejects a mixture 10% too wide."""
    from ddpm_lib.data import OracleDenoiser

    ref = mixture_reference
    sched = NoiseSchedule.cosine(1000)
    x = p_sample_loop(OracleDenoiser(ref.mixture, sched), sched, (ref.n, 2), clip_denoised=False,
                      generator=torch.Generator().manual_seed(1), dtype=torch.float64, progress=False)
    assert torch.isfinite(x).all()
    assert ref.ratio(x) <= 1.5, ref.ratio(x)
    too_wide = ref.mixture.sample(ref.n, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 1.1
    assert ref.ratio(too_wide) > 1.5
    # the raw noise x_T is far from the data
    assert ref.ratio(torch.randn(ref.n, 2, generator=torch.Generator().manual_seed(1), **F64)) > 3
