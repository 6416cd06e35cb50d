"""x̂_0 held inside the data's range (ddpm_lib.thresholding; chapters 06 and 08, issue 11)."""

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_sample, model_predictions, p_sample_loop, q_sample
from ddpm_lib.thresholding import ClampedDenoiser, DynamicThresholdDenoiser
from helpers import F64, OBJECTIVES, gen, toy_eps_model

SCHED = NoiseSchedule.linear(40, 1e-3, 0.2)


def _net(x, t):
    return 3.0 * toy_eps_model(x, t)  # big enough that x̂_0 leaves [-1, 1] often


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_clamped_denoiser_gives_the_clamped_x0_and_a_consistent_output(objective):
    x = 2 * torch.randn(64, 2, generator=gen(0), **F64)
    t = torch.randint(0, SCHED.T, (64,), generator=gen(1))
    low, high = torch.tensor([-1.5, -0.5], **F64), torch.tensor([1.5, 0.7], **F64)
    wrapped = ClampedDenoiser(_net, SCHED, objective, low, high)
    _, raw = model_predictions(_net, SCHED, x, t, objective)
    _, got = model_predictions(wrapped, SCHED, x, t, objective)
    torch.testing.assert_close(got, torch.maximum(torch.minimum(raw, high), low), rtol=1e-10, atol=1e-10)
    assert ((raw < low) | (raw > high)).any() and ((raw > low) & (raw < high)).any()  # both cases occur


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_clamping_to_minus_one_one_is_clip_denoised(objective):
    """ClampedDenoiser(-1, 1) without clipping samples as the plain network with clip_denoised=True (DDPM and DDIM)."""
    wrapped = ClampedDenoiser(_net, SCHED, objective, -1.0, 1.0)
    kw = dict(objective=objective, progress=False, dtype=torch.float64)
    a = p_sample_loop(_net, SCHED, (16, 3), clip_denoised=True, generator=gen(2), **kw)
    b = p_sample_loop(wrapped, SCHED, (16, 3), clip_denoised=False, generator=gen(2), **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    a = ddim_sample(_net, SCHED, (16, 3), steps=10, clip_denoised=True, generator=gen(3), **kw)
    b = ddim_sample(wrapped, SCHED, (16, 3), steps=10, clip_denoised=False, generator=gen(3), **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_the_clamp_keeps_deterministic_ddim_inside_the_bounds():
    """A network that extrapolates wildly (ε̂ = -x: x̂_0 = x_t (1 + √(1-ᾱ))/√ᾱ grows like 1/√ᾱ) runs away with η = 0;
    clamped, every sample ends inside the bounds."""
    bad = lambda x, t: -x  # noqa: E731
    x_T = 3 * torch.randn(200, 2, generator=gen(4), **F64)
    kw = dict(steps=20, eta=0.0, x_T=x_T, clip_denoised=False, progress=False, dtype=torch.float64)
    free = ddim_sample(bad, SCHED, (200, 2), **kw)
    held = ddim_sample(ClampedDenoiser(bad, SCHED, "pred_noise", -1.6, 1.6), SCHED, (200, 2), **kw)
    assert free.abs().max() > 10
    assert held.abs().max() <= 1.6 + 1e-9


def test_dynamic_thresholding():
    x0 = torch.tensor([[0.2, -0.5, 0.9, 0.1], [3.0, -1.5, 0.5, 1.2]], **F64)
    t = torch.tensor([5, 5])
    x_t = q_sample(SCHED, x0, t, torch.zeros_like(x0))
    exact = lambda x, tt: torch.zeros_like(x)  # noqa: E731  ε̂ = 0: x̂_0 = x_t/√ᾱ = x0
    dyn = DynamicThresholdDenoiser(exact, SCHED, "pred_noise", quantile=1.0)
    _, got = model_predictions(dyn, SCHED, x_t, t, "pred_noise")
    torch.testing.assert_close(got[0], x0[0], rtol=1e-10, atol=1e-10)  # s = max(1, 0.9) = 1: unchanged
    torch.testing.assert_close(got[1], x0[1] / 3.0, rtol=1e-10, atol=1e-10)  # s = 3: divided by 3
    assert got.abs().max() <= 1 + 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="low must be below high"):
        ClampedDenoiser(_net, SCHED, "pred_noise", 1.0, -1.0)
    with pytest.raises(ValueError, match="objective"):
        ClampedDenoiser(_net, SCHED, "pred_eps")
    with pytest.raises(TypeError, match="sched"):
        DynamicThresholdDenoiser(_net, SCHED.betas)
    with pytest.raises(ValueError, match="quantile"):
        DynamicThresholdDenoiser(_net, SCHED, quantile=1.5)
