"""Tests of ddpm_lib.exact's oracle denoiser: the exact ε-, x_0- and v-prediction for Gaussian-mixture data (chapter
06), checked against closed forms, against its defining property E[ε | x_t] (orthogonality of the residual), and
through the DDPM sampler. (The exact 1-D Gaussian ELBO is used as a reference in tests/test_likelihood.py and checked
against SymPy in tests/test_symbolic_forward_elbo.py.)"""

import math

import pytest
import torch

from ddpm_lib.data import GaussianMixture, make_gaussian_mixture
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.samplers import p_sample_loop
from ddpm_lib.schedules import NoiseSchedule
from helpers import gen as _gen

F64 = torch.float64


def test_oracle_single_gaussian_closed_form_and_objectives():
    sched = NoiseSchedule.linear(100)
    mu = torch.tensor([0.5, -0.5], dtype=F64)
    s = 0.8
    mix = GaussianMixture(mu[None], s)
    xt = torch.randn(4, 2, generator=_gen(), dtype=F64)
    t = torch.tensor([0, 10, 50, 99])
    ab = sched.alphas_cumprod[t][:, None]
    x0 = mu + ab.sqrt() * s**2 / (ab * s**2 + 1 - ab) * (xt - ab.sqrt() * mu)
    eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
    torch.testing.assert_close(OracleDenoiser(mix, sched)(xt, t), eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(OracleDenoiser(mix, sched, "pred_x0")(xt, t), x0, rtol=1e-12, atol=1e-12)
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    torch.testing.assert_close(OracleDenoiser(mix, sched, "pred_v")(xt, t), v, rtol=1e-12, atol=1e-12)
    # returned in the input's dtype; computed in float64
    out32 = OracleDenoiser(mix, sched)(xt.float(), t)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, eps.float())


def test_oracle_residual_is_orthogonal_to_functions_of_x_t():
    # ε* = E[ε | x_t]: the residual ε - ε*(x_t) has mean zero and is uncorrelated with x_t.
    sched = NoiseSchedule.linear(1000)
    mix = make_gaussian_mixture("8gaussians")
    oracle = OracleDenoiser(mix, sched)
    n = 100_000
    g = _gen(11)
    x0 = mix.sample(n, g, dtype=F64)
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (n,), generator=g)
    ab = sched.alphas_cumprod[t][:, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    pred = oracle(xt, t)
    r = eps - pred
    for f in (torch.ones_like(xt), xt, torch.tanh(3 * xt[:, [1, 0]])):
        prod = r * f
        assert torch.all(prod.mean(0).abs() < 5 * prod.std(0) / math.sqrt(n))
    # it minimises the ε-MSE: scaling it either way does worse on the same draws
    mse = lambda p: ((eps - p) ** 2).mean().item()  # noqa: E731
    assert mse(pred) < mse(0.95 * pred) and mse(pred) < mse(1.05 * pred)
    assert mse(pred) < 1.0  # beats predicting zero, whose MSE is E ε² = 1


def test_oracle_with_ddpm_sampler_reproduces_mixture_weights(one_thread):
    sched = NoiseSchedule.linear(1000)
    mix = make_gaussian_mixture("2gaussians")  # weights 0.3 / 0.7 at x = -1.4 / 0.6, std 0.4
    n = 2000
    x = p_sample_loop(OracleDenoiser(mix, sched), sched, (n, 2), clip_denoised=False,
                      generator=_gen(0), dtype=F64, progress=False)
    frac = (x[:, 0] < -0.4).double().mean().item()  # the midpoint, 2.5 standard deviations from each mean
    phi = 0.5 * (1 + math.erf(2.5 / math.sqrt(2)))
    p = 0.3 * phi + 0.7 * (1 - phi)
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)
    se = (mix.covariance().diagonal() / n).sqrt()
    assert torch.all((x.mean(0) - mix.mean()).abs() < 5 * se)


def test_oracle_bad_input():
    sched = NoiseSchedule.linear(10)
    oracle = OracleDenoiser(make_gaussian_mixture(), sched)
    with pytest.raises(ValueError, match="0..9"):
        oracle(torch.zeros(2, 2), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="x_t must have shape"):
        oracle(torch.zeros(2, 1, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="objective"):
        OracleDenoiser(make_gaussian_mixture(), sched, "pred_eps")
    with pytest.raises(TypeError, match="GaussianMixture"):
        OracleDenoiser("8gaussians", sched)
