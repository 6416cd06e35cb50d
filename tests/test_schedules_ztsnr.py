"""Zero-terminal-SNR rescaling and respacing of a schedule (ddpm_lib.schedules; chapters 07 and 08, issue 11).

- rescale_zero_terminal_snr equals diffusers' function of the same name (Lin et al. 2024, Algorithm 1), keeps ᾱ_1,
  reaches ᾱ_T = 0 (or the requested small ᾱ_T), stays monotone;
- respace keeps ᾱ at the chosen steps; ancestral sampling on the respaced schedule through RespacedModel equals
  diffusers' DDPMScheduler with fewer inference steps (which computes the same β' = 1 - ᾱ_t/ᾱ_prev per step).
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddpm_step, p_sample_loop
from ddpm_lib.schedules import (
    RespacedModel,
    cosine_beta_schedule,
    linear_beta_schedule,
    rescale_zero_terminal_snr,
    respace,
)
from helpers import F64, gen, toy_eps_model

SCHEDULES = {"linear": linear_beta_schedule(1000), "cosine": cosine_beta_schedule(1000),
             "linear T=100": linear_beta_schedule(100, 1e-3, 0.2)}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_rescale_equals_diffusers(name):
    diffusers_ddim = pytest.importorskip("diffusers.schedulers.scheduling_ddim")
    betas = SCHEDULES[name]
    ours = rescale_zero_terminal_snr(betas)
    ref = diffusers_ddim.rescale_zero_terminal_snr(betas.clone())
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    assert ours[-1].item() == 1.0  # ᾱ_T = 0: the last step destroys all signal


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_rescale_keeps_the_first_step_and_reaches_zero(name):
    betas = SCHEDULES[name]
    ac = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    torch.testing.assert_close(ac[0], 1 - betas[0], rtol=1e-12, atol=0)
    assert ac[-1].abs().item() < 1e-15
    assert (ac[1:] < ac[:-1]).all()  # still decreasing: every β in (0, 1]


@pytest.mark.parametrize("c", [2.0 ** -24, 1e-6])
def test_rescale_to_a_small_terminal_alphas_cumprod_is_a_valid_schedule(c):
    betas = SCHEDULES["linear"]
    sched = NoiseSchedule(rescale_zero_terminal_snr(betas, c))
    torch.testing.assert_close(sched.alphas_cumprod[-1].item(), c, rtol=1e-9, atol=0)
    torch.testing.assert_close(sched.alphas_cumprod[0], 1 - betas[0], rtol=1e-12, atol=0)
    assert (sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1]).all()
    # close to the exact rescaling everywhere but at the very end
    exact = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    assert (sched.sqrt_alphas_cumprod - exact.sqrt()).abs().max() <= math.sqrt(c) + 1e-12


def test_rescale_rejects_bad_input():
    with pytest.raises(ValueError, match="terminal_alphas_cumprod"):
        rescale_zero_terminal_snr(SCHEDULES["linear"], 0.5)  # above the schedule's own ᾱ_T
    with pytest.raises(ValueError, match="terminal_alphas_cumprod"):
        rescale_zero_terminal_snr(SCHEDULES["linear"], -1e-3)
    with pytest.raises(ValueError, match="betas"):
        rescale_zero_terminal_snr(torch.tensor([0.1]))
    with pytest.raises(ValueError, match="betas"):  # exactly zero terminal SNR is not a NoiseSchedule (β_T = 1)
        NoiseSchedule(rescale_zero_terminal_snr(SCHEDULES["linear"]))


# ---------------------------------------------------------------- respacing


def test_respace_keeps_alphas_cumprod_at_the_kept_steps():
    sched = NoiseSchedule.linear(1000)
    kept = [999, 0, 499, 249, 749, 249]  # any order, duplicates dropped
    new, tmap = respace(sched, kept)
    assert tmap.tolist() == [0, 249, 499, 749, 999] and new.T == 5
    torch.testing.assert_close(new.alphas_cumprod, sched.alphas_cumprod[tmap], rtol=1e-12, atol=0)
    # all steps kept: the same schedule
    same, _ = respace(sched, range(1000))
    torch.testing.assert_close(same.betas, sched.betas, rtol=1e-10, atol=0)


def test_respace_rejects_bad_input():
    sched = NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match="timesteps"):
        respace(sched, [])
    with pytest.raises(ValueError, match="timesteps"):
        respace(sched, [0, 10])
    with pytest.raises(ValueError, match="timesteps"):
        respace(sched, [0.5, 2.0])
    with pytest.raises(TypeError, match="sched"):
        respace(sched.betas, [0, 1])


def test_respaced_model_calls_the_original_timesteps():
    seen = []
    model = RespacedModel(lambda x, t: seen.append(t.clone()) or x, torch.tensor([0, 10, 20]))
    model(torch.zeros(3, 2), torch.tensor([2, 0, 1]))
    assert seen[0].tolist() == [20, 0, 10]


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_respaced_ddpm_equals_diffusers_with_fewer_inference_steps(variance):
    """diffusers' DDPMScheduler with num_inference_steps = S steps from t to prev_t = t - T//S with
    β' = 1 - ᾱ_t/ᾱ_prev and σ² = β̃' (or the learned interpolation): the respaced schedule's step."""
    diffusers = pytest.importorskip("diffusers")
    T, S = 1000, 20
    sched = NoiseSchedule.linear(T)
    s = diffusers.DDPMScheduler(num_train_timesteps=T, variance_type=variance, clip_sample=False)
    s.betas = sched.betas.clone()
    s.alphas = 1 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    s.one = torch.tensor(1.0, **F64)
    s.set_timesteps(S)
    timesteps = s.timesteps.tolist()  # 950, 900, ..., 0 (leading)
    new, tmap = respace(sched, timesteps)
    channels = 2 if variance == "learned_range" else 1

    def net(x, t):
        out = toy_eps_model(x, t)
        return torch.cat([out, torch.tanh(x + 1e-3 * t.view(-1, 1, 1))], 1) if channels == 2 else out

    x_ref = torch.randn(4, 1, 3, generator=gen(0), **F64)
    x = x_ref.clone()
    g_ref, g = gen(1), gen(1)
    wrapped = RespacedModel(net, tmap)
    for k, t in enumerate(timesteps):
        x_ref = s.step(net(x_ref, torch.full((4,), t)), t, x_ref, generator=g_ref).prev_sample
        kk = new.T - 1 - k
        x, _ = ddpm_step(new, wrapped(x, torch.full((4,), kk)), kk, x, variance=variance, clip_denoised=False,
                         generator=g)
        torch.testing.assert_close(x, x_ref, rtol=1e-10, atol=1e-10)
    # the loop does the same
    out = p_sample_loop(wrapped, new, (4, 1, 3), x_T=torch.randn(4, 1, 3, generator=gen(0), **F64),
                        variance=variance, clip_denoised=False, generator=gen(1), progress=False, dtype=torch.float64)
    torch.testing.assert_close(out, x_ref, rtol=1e-10, atol=1e-10)
