"""Learned variances (Nichol & Dhariwal 2021; chapter 07, issue 11): the hybrid loss, its stop-gradient, and the bound
with σ_t² = exp(v log β_t + (1 - v) log β̃_t), each against an independent computation.

The independent computations use torch.distributions (Normal, kl_divergence, Normal.cdf) and the schedule's arrays
directly, not the library's normal_kl / discretized_gaussian_log_likelihood / q_posterior.
"""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ddpm_lib import NoiseSchedule, p_losses, predict_v, q_sample
from ddpm_lib import recipes as R
from ddpm_lib.likelihood import vlb_terms
from ddpm_lib.models import MLPDenoiser, UNet
from ddpm_lib.postprocess import from_levels
from helpers import F64, gen

LEVELS = 17
SCHED = NoiseSchedule.linear(30, 1e-3, 0.3)


def _grid_data(n, seed, shape=(1, 2, 3)):
    """Images on the 17-level grid in [-1, 1], as the digits."""
    k = torch.randint(0, LEVELS, (n,) + shape, generator=gen(seed))
    return from_levels(k, LEVELS).double()


def _net(x, t):
    """A fixed function with twice the channels of x: the prediction, then v ∈ (-1, 1)."""
    tt = t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    pred = torch.sin(1.1 * x + 0.07 * tt) * 0.8 + 0.1 * x
    v = torch.tanh(0.9 * x - 0.03 * tt + 0.2)
    return torch.cat([pred, v], dim=1)


def _reference_terms(sched, x0, x_t, t, out, objective):
    """Per-example term of the bound in nats summed over dimensions, at one code index t, computed from scratch."""
    b = sched.betas
    a = sched.alphas_cumprod
    a_prev = torch.cat([torch.ones(1, **F64), a[:-1]])
    pred, v = out.chunk(2, dim=1)
    if objective == "pred_noise":
        x0_hat = (x_t - math.sqrt(1 - a[t]) * pred) / math.sqrt(a[t])
    elif objective == "pred_v":
        x0_hat = math.sqrt(a[t]) * x_t - math.sqrt(1 - a[t]) * pred
    else:
        x0_hat = pred
    c1 = b[t] * math.sqrt(a_prev[t]) / (1 - a[t])
    c2 = (1 - a_prev[t]) * math.sqrt(1 - b[t]) / (1 - a[t])
    tilde = b * (1 - a_prev) / (1 - a)
    log_tilde = torch.log(torch.cat([tilde[1:2], tilde[1:]]))  # β̃ of step 1 is 0: clipped to step 2's
    frac = (v + 1) / 2
    log_var = frac * math.log(b[t]) + (1 - frac) * log_tilde[t]
    p = Normal(c1 * x0_hat + c2 * x_t, torch.exp(0.5 * log_var))
    if t == 0:  # discretized decoder: mass of the grey level's bin, the outer bins open-ended
        half = 1.0 / (LEVELS - 1)
        upper = torch.where(x0 > 1 - 1e-6, torch.ones_like(x0), p.cdf(x0 + half))
        lower = torch.where(x0 < -1 + 1e-6, torch.zeros_like(x0), p.cdf(x0 - half))
        return -torch.log(upper - lower).flatten(1).sum(1)
    q = Normal(c1 * x0 + c2 * x_t, math.sqrt(tilde[t]))
    return kl_divergence(q, p).flatten(1).sum(1)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_v"])
def test_hybrid_loss_equals_an_independent_computation(objective):
    """p_losses(learned_variance=True) = L_simple of the first half + λ T · (the term of the bound at t, in bits per
    dimension), the KL for t > 0 and the discretized decoder at t = 0."""
    B, lam = 12, 1e-3
    x0 = _grid_data(B, 0)
    t = torch.tensor([0, 0, 1, 2, 5, 9, 14, 20, 28, 29, 3, 0])
    noise = torch.randn(x0.shape, generator=gen(1), **F64)
    got = p_losses(_net, SCHED, x0, t, noise, objective=objective, learned_variance=True, vlb_weight=lam,
                   num_bins=LEVELS, reduction="none")
    x_t = q_sample(SCHED, x0, t, noise)
    out = _net(x_t, t)
    target = noise if objective == "pred_noise" else predict_v(SCHED, x0, t, noise)
    mse = ((out[:, :1] - target) ** 2).flatten(1).mean(1)
    dims = x0[0].numel()
    vb = torch.stack([_reference_terms(SCHED, x0[i:i + 1], x_t[i:i + 1], int(t[i]), out[i:i + 1], objective)[0]
                      for i in range(B)]) / (dims * math.log(2))
    torch.testing.assert_close(got, mse + lam * SCHED.T * vb, rtol=1e-10, atol=1e-12)
    # and without learned variance it is L_simple alone
    plain = p_losses(lambda x, tt: _net(x, tt)[:, :1], SCHED, x0, t, noise, objective=objective, reduction="none")
    torch.testing.assert_close(plain, mse, rtol=1e-12, atol=1e-14)


def test_the_bound_term_does_not_train_the_mean():
    """Stop-gradient: the gradient of the bound term with respect to the mean half of the output is exactly zero,
    with respect to the variance half it is not; the mean half gets the gradient of L_simple alone."""
    B = 8
    x0 = _grid_data(B, 2)
    t = torch.tensor([0, 1, 3, 7, 12, 19, 25, 29])
    noise = torch.randn(x0.shape, generator=gen(3), **F64)
    out = (0.5 * torch.randn((B, 2) + tuple(x0.shape[2:]), generator=gen(4), **F64)).requires_grad_(True)
    model = lambda x, tt: out  # noqa: E731  (the output itself is the leaf)
    hybrid = p_losses(model, SCHED, x0, t, noise, learned_variance=True, vlb_weight=0.5, num_bins=LEVELS)
    (g_hybrid,) = torch.autograd.grad(hybrid, out)
    simple = p_losses(lambda x, tt: out[:, :1], SCHED, x0, t, noise)
    (g_simple,) = torch.autograd.grad(simple, out)
    # the bound term alone
    g_vb = g_hybrid - g_simple
    assert torch.equal(g_vb[:, :1], torch.zeros_like(g_vb[:, :1]))
    assert (g_vb[:, 1:].abs().flatten(1).sum(1) > 0).all()
    assert torch.equal(g_hybrid[:, :1], g_simple[:, :1])


@pytest.mark.parametrize("objective", ["pred_noise", "pred_v"])
def test_vlb_terms_with_learned_range_equal_an_independent_computation(objective):
    """vlb_terms(variance="learned_range") term by term: the prior KL, each L_{t-1} (the same x_t draws) and the
    decoder, against torch.distributions."""
    B = 5
    x0 = _grid_data(B, 5)
    res = vlb_terms(_net, SCHED, x0, objective=objective, variance="learned_range", num_bins=LEVELS,
                    generator=gen(6), progress=False)
    g = gen(6)
    a_T = SCHED.alphas_cumprod[-1].item()
    prior = kl_divergence(Normal(math.sqrt(a_T) * x0, math.sqrt(1 - a_T)), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(res["prior"], prior, rtol=1e-10, atol=1e-12)
    for t in range(SCHED.T):
        noise = torch.randn(x0.shape, generator=g, **F64)
        x_t = q_sample(SCHED, x0, torch.full((B,), t), noise)
        ref = _reference_terms(SCHED, x0, x_t, t, _net(x_t, torch.full((B,), t)), objective)
        got = res["decoder"] if t == 0 else res["terms"][:, t - 1]
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(res["total"], res["prior"] + res["terms"].sum(1) + res["decoder"], rtol=1e-12, atol=0)


def test_networks_output_twice_the_channels():
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 5, 9])
    assert UNet(1, 8, learned_variance=True)(x, t).shape == (3, 2, 8, 8)
    assert MLPDenoiser(64, hidden_dim=16, num_layers=1, learned_variance=True)(x.flatten(1), t).shape == (3, 128)


def test_digits_recipe_with_learned_variance_samples_with_the_learned_range(one_thread):
    tm = R.train_digits_model(seed=0, steps=3, T=10, width=8, batch_size=4, learned_variance=True, vlb_weight=1e-3,
                              progress=False)
    assert tm.config["learned_variance"] and tm.model.learned_variance
    x = tm.sample(5, seed=1, progress=False)
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
    # the default is the learned range: equal to asking for it
    torch.testing.assert_close(tm.sample(5, seed=1, variance="learned_range", progress=False), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shape of x_t"):  # a fixed variance needs a one-channel output
        tm.sample(5, seed=1, variance="fixed_small", progress=False)
