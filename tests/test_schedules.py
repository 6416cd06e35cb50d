"""Noise schedules and the buffers of NoiseSchedule: closed forms and defining relations (chapter 01, chapter 03).

Every buffer is checked against an independent expression of its definition (a log-sum instead of a cumulative
product, the completed-square precision instead of the posterior-variance formula, ...), in float64.
"""

import math

import pytest
import torch

from ddpm_lib import (
    NoiseSchedule,
    cosine_beta_schedule,
    extract,
    linear_beta_schedule,
    sigmoid_beta_schedule,
)

F64 = dict(dtype=torch.float64)


def _schedules():
    return {
        "linear1000": NoiseSchedule.linear(1000),
        "cosine1000": NoiseSchedule.cosine(1000),
        "sigmoid1000": NoiseSchedule.sigmoid(1000),
        "linear50": NoiseSchedule.linear(50, 1e-3, 0.2),
        "cosine17": NoiseSchedule.cosine(17),
    }


SCHEDULES = _schedules()


@pytest.fixture(params=sorted(SCHEDULES))
def sched(request):
    return SCHEDULES[request.param]


# ---------------------------------------------------------------- beta schedules


@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_linear_endpoints_and_spacing(T):
    betas = linear_beta_schedule(T, 1e-4, 0.02)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-15)
    if T > 1:
        assert betas[-1].item() == pytest.approx(0.02, rel=1e-15)
        steps = betas.diff()
        torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / (T - 1)), rtol=1e-10, atol=0)


@pytest.mark.parametrize("T,s", [(1000, 0.008), (100, 0.008), (50, 0.0), (4000, 0.02)])
def test_cosine_equals_closed_form(T, s):
    """ᾱ_t = f(t+1)/f(0), f(u) = cos²((u/T + s)/(1 + s) · π/2) (improved DDPM eq. 17), where β is not clipped."""
    betas = cosine_beta_schedule(T, s)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected_betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], **F64)
    torch.testing.assert_close(betas, expected_betas, rtol=1e-12, atol=1e-15)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    unclipped = int((expected_betas < 0.999).sum())  # clipping happens only at the very end
    assert unclipped >= T - 1
    expected_ac = torch.tensor([f(i + 1) / f(0) for i in range(unclipped)], **F64)
    torch.testing.assert_close(alphas_cumprod[:unclipped], expected_ac, rtol=1e-10, atol=1e-15)


def test_cosine_is_clipped_at_0999():
    betas = cosine_beta_schedule(1000)
    assert betas.max().item() == 0.999
    assert betas[-1].item() == 0.999  # f(T) = cos²(π/2) ≈ 0 would give β_T = 1
    assert (betas > 0).all()
    assert (betas.diff() >= 0).all()  # increasing


@pytest.mark.parametrize("start,end,tau", [(-3.0, 3.0, 1.0), (0.0, 3.0, 0.7), (-3.0, 3.0, 1.1)])
def test_sigmoid_closed_form(start, end, tau):
    T = 200
    betas = sigmoid_beta_schedule(T, start=start, end=end, tau=tau)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    g = lambda u: (-sig((u * (end - start) + start) / tau) + sig(end / tau)) / (sig(end / tau) - sig(start / tau))  # noqa: E731
    ac = torch.cumprod(1 - betas, 0)
    expected = torch.tensor([g((i + 1) / T) / g(0) for i in range(T - 1)], **F64)
    torch.testing.assert_close(ac[:-1], expected, rtol=1e-10, atol=1e-14)
    assert betas[-1].item() == 0.999  # g(1) = 0: clipped
    assert ((betas > 0) & (betas < 1)).all()


def test_classmethods_match_functions():
    torch.testing.assert_close(NoiseSchedule.linear(100).betas, linear_beta_schedule(100), rtol=0, atol=0)
    torch.testing.assert_close(NoiseSchedule.cosine(100).betas, cosine_beta_schedule(100), rtol=0, atol=0)
    torch.testing.assert_close(NoiseSchedule.sigmoid(100, tau=0.5).betas, sigmoid_beta_schedule(100, tau=0.5), rtol=0, atol=0)


# ---------------------------------------------------------------- NoiseSchedule buffers


def test_buffers_are_float64_of_shape_T(sched):
    names = ["betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
             "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1",
             "posterior_mean_coef2", "snr"]
    for name in names:
        a = getattr(sched, name)
        assert a.dtype == torch.float64 and a.shape == (sched.T,), name
        assert torch.isfinite(a).all(), name


def test_alphas_cumprod_relations(sched):
    b = sched.betas
    torch.testing.assert_close(sched.alphas, 1 - b, rtol=0, atol=0)
    # ᾱ_t = Π_{s<=t} α_s, written as exp Σ log α_s
    torch.testing.assert_close(sched.alphas_cumprod, torch.exp(torch.cumsum(torch.log1p(-b), 0)), rtol=1e-12, atol=1e-300)
    assert sched.alphas_cumprod_prev[0].item() == 1.0
    torch.testing.assert_close(sched.alphas_cumprod_prev[1:], sched.alphas_cumprod[:-1], rtol=0, atol=0)
    # α_t = ᾱ_t / ᾱ_{t-1}
    torch.testing.assert_close(sched.alphas_cumprod / sched.alphas_cumprod_prev, sched.alphas, rtol=1e-12, atol=0)
    assert (sched.alphas_cumprod.diff() < 0).all()


def test_sqrt_buffers(sched):
    ac = sched.alphas_cumprod
    torch.testing.assert_close(sched.sqrt_alphas_cumprod ** 2, ac, rtol=1e-14, atol=0)
    torch.testing.assert_close(sched.sqrt_alphas_cumprod ** 2 + sched.sqrt_one_minus_alphas_cumprod ** 2,
                               torch.ones_like(ac), rtol=1e-14, atol=0)
    torch.testing.assert_close(sched.sqrt_recip_alphas_cumprod * sched.sqrt_alphas_cumprod, torch.ones_like(ac),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(sched.sqrt_recipm1_alphas_cumprod ** 2, (1 - ac) / ac, rtol=1e-12, atol=0)


def test_posterior_variance_by_completing_the_square(sched):
    """1/β̃_t = α_t/β_t + 1/(1-ᾱ_{t-1}) for t >= 1 (chapter 03, the precision of q(x_{t-1}|x_t,x_0)); β̃ at t=0 is 0."""
    b, a, acp = sched.betas, sched.alphas, sched.alphas_cumprod_prev
    assert sched.posterior_variance[0].item() == 0.0
    precision = a[1:] / b[1:] + 1 / (1 - acp[1:])
    torch.testing.assert_close(sched.posterior_variance[1:], 1 / precision, rtol=1e-10, atol=0)
    # mean coefficients: variance × (√ᾱ_{t-1}/(1-ᾱ_{t-1})) and variance × (√α_t/β_t)
    var = sched.posterior_variance[1:]
    torch.testing.assert_close(sched.posterior_mean_coef1[1:], var * acp[1:].sqrt() / (1 - acp[1:]), rtol=1e-10, atol=0)
    torch.testing.assert_close(sched.posterior_mean_coef2[1:], var * a[1:].sqrt() / b[1:], rtol=1e-10, atol=0)
    # at t=0 the posterior is the point mass at x_0: coef1 = 1, coef2 = 0
    assert sched.posterior_mean_coef1[0].item() == pytest.approx(1.0, rel=1e-14)
    assert sched.posterior_mean_coef2[0].item() == 0.0
    assert (sched.posterior_variance[1:] <= b[1:]).all()  # β̃_t <= β_t


def test_posterior_log_variance_clipped(sched):
    plv = sched.posterior_log_variance_clipped
    torch.testing.assert_close(plv[1:], torch.log(sched.posterior_variance[1:]), rtol=1e-14, atol=0)
    assert plv[0].item() == plv[1].item()


def test_posterior_mean_coefficients_sum(sched):
    """coef1 + coef2 √ᾱ_t = √ᾱ_{t-1}: the posterior mean of a noise-free x_t = √ᾱ_t x_0 is √ᾱ_{t-1} x_0."""
    lhs = sched.posterior_mean_coef1 + sched.posterior_mean_coef2 * sched.sqrt_alphas_cumprod
    torch.testing.assert_close(lhs, sched.alphas_cumprod_prev.sqrt(), rtol=1e-12, atol=0)


def test_snr(sched):
    torch.testing.assert_close(sched.snr, sched.alphas_cumprod / (1 - sched.alphas_cumprod), rtol=1e-14, atol=0)
    assert (sched.snr.diff() < 0).all()


def test_single_step_schedule():
    sched = NoiseSchedule(torch.tensor([0.3], **F64))
    assert sched.T == 1
    assert sched.alphas_cumprod.item() == pytest.approx(0.7)
    assert sched.posterior_log_variance_clipped.item() == pytest.approx(math.log(0.3))


def test_noise_schedule_keeps_python_floats_in_float64():
    """A list of Python floats must not pass through float32 on its way to the float64 buffers."""
    betas = [0.1, 0.2, 0.3]
    s1 = NoiseSchedule(betas)
    s2 = NoiseSchedule(torch.tensor(betas, dtype=torch.float32))
    assert s1.betas.dtype == torch.float64 and s2.betas.dtype == torch.float64
    torch.testing.assert_close(s1.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504], **F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(s2.betas, s1.betas, rtol=1e-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4,), (4, 2), (4, 1, 3, 3)])
def test_extract(dtype, shape):
    a = torch.arange(10, **F64) / 7
    t = torch.tensor([0, 9, 3, 3])
    x = torch.zeros(shape, dtype=dtype)
    out = extract(a, t, x)
    assert out.dtype == dtype
    assert out.shape == (4,) + (1,) * (len(shape) - 1)
    torch.testing.assert_close(out.flatten(), (a[t]).to(dtype), rtol=0, atol=0)
