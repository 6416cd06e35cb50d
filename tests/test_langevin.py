"""Langevin dynamics, chapter 11 (ddpm_lib.langevin): the step, the signal-to-noise step size, the
predictor–corrector sampler and annealed Langevin, with exact Gaussian scores.

Tolerances are those of tests/helpers.py: a mean within 5 standard errors, a Gaussian sample variance within
5 √(2 v²/(N-1)) of v.

What is proved here:
- the unadjusted Langevin step with step ε has the stationary law N(m, v/(1 - ε/(2v))) for the target N(m, v): its
  O(ε) bias is measured, not only bounded;
- the corrector's step size is 2α(r‖z‖/‖s‖)² with batch-mean norms, so that the drift has r times the noise's norm,
  and with a small r it leaves N(m, v) invariant;
- the PC sampler without corrector steps is DDIM η = 1 (the ancestral predictor), costs steps·(k+1) network calls,
  has the right mean, and its corrector steps pull a biased variance towards the target;
- annealed Langevin over geometric noise levels ends in the law of the last level, N(m, s² + σ_L²), up to the
  predicted Langevin bias.
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_sample
from ddpm_lib.data import GaussianMixture
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.langevin import annealed_langevin_sample, langevin_correct, langevin_step, pc_sample, snr_step_size
from helpers import F64, assert_gaussian_moments, gen

pytestmark = pytest.mark.usefixtures("one_thread")

M, V = torch.tensor([0.5, -1.0], **F64), 0.7


def _score(x):
    return -(x - M) / V


def _start(n=20000, seed=0):
    return M + math.sqrt(V) * torch.randn(n, 2, generator=gen(seed), **F64)


def test_langevin_step_has_the_predicted_stationary_variance():
    """x' = x + ε s + √(2ε) z on N(m, v) is the AR(1) chain x' - m = (1 - ε/v)(x - m) + √(2ε) z, with stationary
    variance v/(1 - ε/(2v)): ε = 0.2 v gives 1.111 v, 11 standard errors away from v, and the chain finds it."""
    eps = 0.2 * V
    g = gen(1)
    x = _start()
    for _ in range(60):  # (1 - ε/v)^120 ≈ 2e-12: stationary
        x = langevin_step(x, _score(x), eps, generator=g)
    assert_gaussian_moments(x, M, V / (1 - eps / (2 * V)))
    assert (x.var(0) - V).abs().min() > 5 * V * math.sqrt(2 / len(x))


def test_snr_step_size_is_the_signal_to_noise_rule():
    score = torch.randn(64, 3, generator=gen(2), **F64) * 4
    noise = torch.randn(64, 3, generator=gen(3), **F64)
    eps = snr_step_size(score, noise, 0.16, alpha=0.9)
    ratio = score.norm(dim=1).mean() / noise.norm(dim=1).mean()
    assert eps == pytest.approx(2 * 0.9 * (0.16 / ratio.item()) ** 2, rel=1e-12)
    eps1 = snr_step_size(score, noise, 0.16)
    drift, diffusion = eps1 * score.norm(dim=1).mean(), math.sqrt(2 * eps1) * noise.norm(dim=1).mean()
    assert (drift / diffusion).item() == pytest.approx(0.16, rel=1e-12)  # the drift has r times the noise's norm
    # the corrector uses the same z for the step size and the step
    x = torch.zeros(64, 3, **F64)
    got = langevin_correct(x, score, snr=0.16, variance_noise=noise)
    torch.testing.assert_close(got, x + eps1 * score + math.sqrt(2 * eps1) * noise, rtol=1e-12, atol=1e-12)


def test_langevin_corrector_leaves_a_gaussian_invariant():
    """200 corrector steps with r = 0.05 from exact draws of N(m, v): the moments stay within the tolerances.
    Here ε ≈ 2r² v, a variance bias ε/(2v) ≈ r² = 0.25%, a fifth of one standard error."""
    g = gen(4)
    x = _start()
    for _ in range(200):
        x = langevin_correct(x, _score(x), snr=0.05, generator=g)
    assert_gaussian_moments(x, M, V)


def test_pc_without_corrector_is_ddim_eta_one_and_counts_calls():
    sched = NoiseSchedule.linear(1000)
    oracle = OracleDenoiser(GaussianMixture(M[None], 0.4), sched)
    plain = pc_sample(oracle, sched, (16, 2), steps=20, corrector_steps=0, generator=gen(5), dtype=torch.float64,
                      progress=False)
    ddim = ddim_sample(oracle, sched, (16, 2), steps=20, eta=1.0, spacing="trailing", clip_denoised=False,
                       generator=gen(5), dtype=torch.float64, progress=False)
    torch.testing.assert_close(plain, ddim, rtol=1e-12, atol=1e-12)
    calls = []
    pc_sample(lambda x, t: calls.append(t) or oracle(x, t), sched, (16, 2), steps=20, corrector_steps=2,
              generator=gen(5), dtype=torch.float64, progress=False)
    assert len(calls) == 20 * 3


def test_pc_sampler_moments_and_what_the_corrector_buys():
    """Gaussian data N(m, 0.4² I), exact ε, a T = 100 schedule (β from 1e-3 to 0.2) and all 100 steps, N = 10000.
    The ancestral predictor alone has the right mean but too small a variance (β̃ ignores the posterior spread of
    x_0, which large β make visible): measured 0.137 for 0.16. Two corrector steps per level (r = 0.16) pull it to
    0.152: the error at least halves, and the means stay within 5 standard errors."""
    sched = NoiseSchedule.linear(100, 1e-3, 0.2)
    var = 0.16
    oracle = OracleDenoiser(GaussianMixture(M[None], math.sqrt(var)), sched)
    n = 10000
    errors = {}
    for k in (0, 2):
        x = pc_sample(oracle, sched, (n, 2), corrector_steps=k, generator=gen(6), dtype=torch.float64,
                      progress=False)
        assert ((x.mean(0) - M).abs() <= 5 * math.sqrt(var / n)).all()
        errors[k] = (x.var(0).mean() - var).abs().item()
    assert errors[0] > 5 * var * math.sqrt(2 / n), errors  # the predictor's bias is real
    assert errors[2] < 0.5 * errors[0], errors


def test_annealed_langevin_samples_the_last_level():
    """Data N(m, 0.4² I); 6 levels geometric in σ from σ(T-1) = 157 down to σ_L = σ(117) = 0.40, 80 steps each with
    α_i = 0.03 σ_i²/σ_L², N = 4000, no final denoising. Every level takes the same relative step, so the chain
    follows p_σ down and ends in the law of x̄ at σ_L, N(m, v) with v = 0.4² + σ_L², up to the Langevin bias of the
    step x̄ + (α/2) s + √α z: the stationary variance is v/(1 - α/(4v)) (tested above). Mean and variance within the
    tolerances (measured with N = 20000: variance within 1.1% of the prediction, 1.1 standard errors). The Tweedie
    denoising (denoise=True) keeps the mean m.

    Song & Ermon's α_i ∝ σ_i² takes steps too small to mix at levels far below the data's scale; with the last level
    at σ(0) = 0.01 the variance comes out 5-10% high (measured), which is why this test stops at σ ≈ 0.4."""
    sched = NoiseSchedule.linear(1000)
    oracle = OracleDenoiser(GaussianMixture(M[None], 0.4), sched)
    sig = sched.sqrt_recipm1_alphas_cumprod
    wanted = torch.logspace(math.log10(sig[-1].item()), math.log10(0.4), 6, dtype=torch.float64)
    levels = torch.searchsorted(sig, wanted).clamp(max=sched.T - 1).unique().flip(0)
    assert levels.tolist() == [999, 873, 726, 543, 313, 117]
    step = 0.03
    v = 0.16 + sig[117].item() ** 2
    kw = dict(timesteps=levels, steps_per_level=80, step_size=step, dtype=torch.float64, progress=False)
    x = annealed_langevin_sample(oracle, sched, (4000, 2), denoise=False, generator=gen(7), **kw)
    assert_gaussian_moments(x, M, v / (1 - step / (4 * v)))
    x0 = annealed_langevin_sample(oracle, sched, (4000, 2), generator=gen(7), **kw)
    assert ((x0.mean(0) - M).abs() <= 5 * math.sqrt(v / 4000)).all()
    xs, x0s = annealed_langevin_sample(oracle, sched, (8, 2), timesteps=levels[:3], steps_per_level=2,
                                       generator=gen(8), dtype=torch.float64, progress=False,
                                       return_all_timesteps=True)
    assert xs.shape == (4, 8, 2) and x0s.shape == (3, 8, 2)


def test_bad_arguments_name_themselves():
    x = torch.zeros(4, 2, **F64)
    sched = NoiseSchedule.linear(100)
    oracle = OracleDenoiser(GaussianMixture(M[None], 0.4), sched)
    with pytest.raises(ValueError, match="step_size"):
        langevin_step(x, x, 0.0)
    with pytest.raises(ValueError, match="score"):
        langevin_step(x, torch.zeros(4, 3, **F64), 0.1)
    with pytest.raises(ValueError, match="snr"):
        langevin_correct(x, x + 1, snr=-1.0)
    with pytest.raises(ValueError, match="score is zero"):
        snr_step_size(x, x + 1, 0.1)
    with pytest.raises(ValueError, match="corrector_steps"):
        pc_sample(oracle, sched, (4, 2), corrector_steps=-1, progress=False)
    with pytest.raises(ValueError, match="objective"):
        pc_sample(oracle, sched, (4, 2), objective="score", progress=False)
    with pytest.raises(TypeError, match="sched"):
        annealed_langevin_sample(oracle, None, (4, 2), timesteps=[5, 3], progress=False)
    with pytest.raises(ValueError, match="timesteps"):
        annealed_langevin_sample(oracle, sched, (4, 2), timesteps=[3, 5], progress=False)
    with pytest.raises(ValueError, match="timesteps entry"):
        annealed_langevin_sample(oracle, sched, (4, 2), timesteps=[100, 5], progress=False)
    with pytest.raises(FloatingPointError, match="Langevin sample"):
        langevin_step(x, torch.full_like(x, float("inf")), 0.1)
