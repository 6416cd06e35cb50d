"""Bad input fails early with a clear ValueError/TypeError naming the argument (DESIGN.md), and nothing overflows in
float32 at the noisiest step of the cosine schedule. (The accepted timestep types and the finite checks of every
step function are in tests/test_step_api.py.)"""

import math

import pytest
import torch

from ddpm_lib import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    NoiseSchedule,
    cosine_beta_schedule,
    ddim_invert,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    discretized_gaussian_log_likelihood,
    linear_beta_schedule,
    model_predictions,
    normal_kl,
    p_losses,
    p_mean_variance,
    p_sample,
    p_sample_loop,
    predict_noise_from_start,
    predict_start_from_noise,
    predict_start_from_v,
    predict_v,
    q_posterior,
    q_sample,
    sigmoid_beta_schedule,
    vlb_terms,
)
from ddpm_lib.ddim import ddim_sigma_hat
from ddpm_lib.diffusion import model_log_variance

S = NoiseSchedule.linear(100)
X = torch.zeros(4, 3)
T4 = torch.tensor([0, 1, 2, 3])
EPS = lambda x, t: torch.zeros_like(x)  # noqa: E731


CASES = {
    # schedules
    "betas zero": (lambda: NoiseSchedule(torch.tensor([0.0, 0.1])), ValueError, "betas"),
    "betas one": (lambda: NoiseSchedule(torch.tensor([0.1, 1.0])), ValueError, "betas"),
    "betas negative": (lambda: NoiseSchedule(torch.tensor([-0.1, 0.1])), ValueError, "betas"),
    "betas nan": (lambda: NoiseSchedule(torch.tensor([float("nan"), 0.1])), ValueError, "betas"),
    "betas 2-D": (lambda: NoiseSchedule(torch.full((2, 2), 0.1)), ValueError, "betas"),
    "betas empty": (lambda: NoiseSchedule(torch.tensor([])), ValueError, "betas"),
    "linear T=0": (lambda: linear_beta_schedule(0), ValueError, "T"),
    "linear T float": (lambda: linear_beta_schedule(10.0), ValueError, "T"),
    "linear beta_end >= 1": (lambda: linear_beta_schedule(10, 1e-4, 1.5), ValueError, "beta_end"),
    "linear beta_start 0": (lambda: linear_beta_schedule(10, 0.0, 0.02), ValueError, "beta_start"),
    "cosine negative s": (lambda: cosine_beta_schedule(10, s=-0.1), ValueError, "s must"),
    "cosine T bool": (lambda: cosine_beta_schedule(True), ValueError, "T"),
    "sigmoid end <= start": (lambda: sigmoid_beta_schedule(10, start=3, end=-3), ValueError, "end"),
    "sigmoid tau 0": (lambda: sigmoid_beta_schedule(10, tau=0), ValueError, "tau"),
    # timesteps
    "t = T": (lambda: q_sample(S, X, torch.tensor([0, 1, 2, 100]), X), ValueError, r"t must lie in 0\.\.T-1"),
    "t = -1": (lambda: q_sample(S, X, torch.tensor([0, -1, 2, 3]), X), ValueError, r"t must lie in 0\.\.T-1"),
    "int t = T": (lambda: q_sample(S, X, 100, X), ValueError, r"t must lie in 0\.\.T-1"),
    "t float tensor": (lambda: q_sample(S, X, torch.tensor([0.0, 1, 2, 3]), X), TypeError, "t must hold integers"),
    "t python float": (lambda: q_sample(S, X, 3.0, X), TypeError, "t must be"),
    "t bool": (lambda: q_sample(S, X, True, X), TypeError, "t must be"),
    "t bool tensor": (lambda: q_sample(S, X, torch.tensor([True] * 4), X), TypeError, "t must hold integers"),
    "t 2-D": (lambda: q_sample(S, X, T4[:, None], X), ValueError, r"t must have shape \(B,\)"),
    "t batch mismatch": (lambda: q_sample(S, X, torch.tensor([0, 1, 2]), X), ValueError, "batch size"),
    # one timestep per example needs a batch dimension (one timestep for the whole batch works on any tensor)
    "x scalar": (lambda: q_sample(S, torch.tensor(1.0), torch.tensor([0, 1]), torch.tensor(1.0)), ValueError,
                 "x_start must have a batch dimension"),
    # shapes
    "noise shape": (lambda: q_sample(S, X, T4, torch.zeros(4, 2)), ValueError, "noise"),
    "posterior shapes": (lambda: q_posterior(S, torch.zeros(4, 2), X, T4), ValueError, "x_start"),
    "x0 from eps shapes": (lambda: predict_start_from_noise(S, X, T4, torch.zeros(4, 1)), ValueError, "noise"),
    "eps from x0 shapes": (lambda: predict_noise_from_start(S, X, T4, torch.zeros(3, 3)), ValueError, "x_start"),
    "v shapes": (lambda: predict_v(S, X, T4, torch.zeros(4, 3, 1)), ValueError, "noise"),
    "x0 from v shapes": (lambda: predict_start_from_v(S, X, T4, torch.zeros(4)), ValueError, "v"),
    "model output shape": (lambda: model_predictions(lambda x, t: x[:, :1], S, X, T4), ValueError, "model output"),
    "model output not tensor": (lambda: model_predictions(lambda x, t: 0.0, S, X, T4), ValueError, "model output"),
    "sched type": (lambda: q_sample(S.betas, X, T4, X), TypeError, "sched"),
    "sched type model_predictions": (lambda: model_predictions(EPS, "S", X, T4), TypeError, "sched"),
    "x_start type": (lambda: q_sample(S, [[0.0]], 0, None), TypeError, "x_start"),
    # choices
    "objective": (lambda: model_predictions(EPS, S, X, T4, objective="eps"), ValueError, "objective"),
    "objective p_losses": (lambda: p_losses(EPS, S, X, T4, objective="pred_eps"), ValueError, "objective"),
    "loss_weighting": (lambda: p_losses(EPS, S, X, T4, loss_weighting="p2"), ValueError, "loss_weighting"),
    "reduction": (lambda: p_losses(EPS, S, X, T4, reduction="sum"), ValueError, "reduction"),
    "variance": (lambda: p_mean_variance(EPS, S, X, T4, variance="learned"), ValueError, "variance"),
    "variance loop": (lambda: p_sample_loop(EPS, S, (2, 2), variance="large", progress=False), ValueError, "variance"),
    "objective loop": (lambda: p_sample_loop(EPS, S, (2, 2), objective="x0", progress=False), ValueError, "objective"),
    "p_sample tensor t": (lambda: p_sample(EPS, S, X, T4), TypeError, "t must be one timestep for the whole batch"),
    "p_sample t range": (lambda: p_sample(EPS, S, X, 100), ValueError, r"t must lie in 0\.\.T-1"),
    "p_sample variance_noise shape": (lambda: p_sample(EPS, S, X, 5, variance_noise=torch.zeros(4, 2)), ValueError,
                                      r"variance_noise has shape \(4, 2\) but x_t has shape \(4, 3\)"),
    "p_sample_loop x_T shape": (lambda: p_sample_loop(EPS, S, (4, 3), x_T=torch.zeros(4, 2), progress=False),
                                ValueError, r"x_T has shape \(4, 2\) but shape is \(4, 3\)"),
    "p_sample_loop x_T type": (lambda: p_sample_loop(EPS, S, (4, 3), x_T=[[0.0] * 3] * 4, progress=False), TypeError,
                               "x_T must be a torch.Tensor"),
    "ddpm_step variance_noise shape": (lambda: ddpm_step(S, X, 5, X, variance_noise=torch.zeros(3)), ValueError,
                                       "variance_noise has shape"),
    "ddpm_step variance": (lambda: ddpm_step(S, X, 5, X, variance="learned"), ValueError, "variance must be one of"),
    "ddpm_step objective": (lambda: ddpm_step(S, X, 5, X, objective="eps"), ValueError, "objective must be one of"),
    "ddpm_step t range": (lambda: ddpm_step(S, X, 100, X), ValueError, r"t must lie in 0\.\.T-1"),
    "ddpm_step learned_range output": (lambda: ddpm_step(S, X, 5, X, variance="learned_range"), ValueError,
                                       "twice the channels"),
    "learned_range model": (lambda: p_mean_variance(EPS, S, X, T4, variance="learned_range"), ValueError,
                            "twice the channels"),
    "learned_range no values": (lambda: model_log_variance(S, T4, X, "learned_range"), ValueError,
                                "variance_values"),
    # DDIM
    "spacing": (lambda: ddim_timesteps(100, 10, "uniform"), ValueError, "spacing"),
    "steps > T": (lambda: ddim_timesteps(100, 101), ValueError, "steps"),
    "steps 0": (lambda: ddim_timesteps(100, 0), ValueError, "steps"),
    "steps float": (lambda: ddim_timesteps(100, 10.0), ValueError, "steps"),
    "ddim_sample steps > T": (lambda: ddim_sample(EPS, S, (2, 2), steps=101, progress=False), ValueError, "steps"),
    "ddim_sample spacing": (lambda: ddim_sample(EPS, S, (2, 2), spacing="quadratic", progress=False), ValueError,
                            "spacing"),
    "ddim_sample eta < 0": (lambda: ddim_sample(EPS, S, (2, 2), eta=-0.1, progress=False), ValueError, "eta"),
    "ddim_sample eta nan": (lambda: ddim_sample(EPS, S, (2, 2), eta=float("nan"), progress=False), ValueError, "eta"),
    "ddim_sample objective": (lambda: ddim_sample(EPS, S, (2, 2), objective="eps", progress=False), ValueError,
                              "objective"),
    "ddim_sample x_T shape": (lambda: ddim_sample(EPS, S, (2, 2), x_T=torch.zeros(3, 2), progress=False),
                              ValueError, "x_T has shape"),
    "ddim_step eta < 0": (lambda: ddim_step(S, X, 10, 5, X, eta=-1.0), ValueError, "eta"),
    "ddim_step t_prev = t": (lambda: ddim_step(S, X, 10, 10, X), ValueError, "t_prev"),
    "ddim_step t_prev > t": (lambda: ddim_step(S, X, 10, 20, X), ValueError, "t_prev"),
    "ddim_step t_prev < -1": (lambda: ddim_step(S, X, 10, -2, X), ValueError, "t_prev"),
    "ddim_step t_prev float": (lambda: ddim_step(S, X, 10, 5.0, X), ValueError, "t_prev"),
    "ddim_step t range": (lambda: ddim_step(S, X, 100, 5, X), ValueError, r"t must lie in 0\.\.T-1"),
    "ddim_step objective": (lambda: ddim_step(S, X, 10, 5, X, objective="v"), ValueError, "objective"),
    "ddim_step variance_noise shape": (lambda: ddim_step(S, X, 10, 5, X, eta=1.0, variance_noise=torch.zeros(4, 2)),
                                       ValueError, "variance_noise has shape"),
    "ddim_step sigma_hat with eta": (lambda: ddim_step(S, X, 10, 5, X, eta=0.5, sigma_hat=True), ValueError,
                                     "leave eta at 0"),
    "ddim_step eta beyond the limit": (lambda: ddim_step(S, X, 10, 5, X, eta=50.0), ValueError, r"eta <= "),
    "ddim_sigma eta < 0": (lambda: ddim_sigma(S, 10, 5, -0.5), ValueError, "eta must be a finite number >= 0"),
    "ddim_sigma eta nan": (lambda: ddim_sigma(S, 10, 5, float("nan")), ValueError, "eta must be"),
    "ddim_sigma eta string": (lambda: ddim_sigma(S, 10, 5, "1"), ValueError, "eta must be"),
    "ddim_sigma eta beyond the limit": (lambda: ddim_sigma(S, 10, 5, 50.0), ValueError, r"eta = 50\.0 gives"),
    "ddim_sigma t_prev = t": (lambda: ddim_sigma(S, 10, 10, 1.0), ValueError, r"t_prev must be an int in -1\.\.9"),
    "ddim_sigma t_prev < -1": (lambda: ddim_sigma(S, 10, -2, 1.0), ValueError, "t_prev must be"),
    "ddim_sigma t range": (lambda: ddim_sigma(S, 100, 5, 1.0), ValueError, r"t must lie in 0\.\.T-1"),
    "ddim_sigma t float": (lambda: ddim_sigma(S, 10.0, 5, 1.0), TypeError, r"\bt must be an int"),
    "ddim_sigma t_prev tensor": (lambda: ddim_sigma(S, 10, torch.tensor([5, 4]), 1.0), TypeError, "t_prev must"),
    "ddim_sigma sched": (lambda: ddim_sigma(S.betas, 10, 5, 1.0), TypeError, "sched must be a NoiseSchedule"),
    "ddim_sigma_hat t_prev": (lambda: ddim_sigma_hat(S, 10, 11), ValueError, "t_prev must be"),
    "ddim_invert x_start type": (lambda: ddim_invert(EPS, S, [[0.0]], progress=False), TypeError, "x_start must"),
    "ddim_sample positional steps": (lambda: ddim_sample(EPS, S, (2, 2), 10), TypeError, "positional"),
    "ddim_invert positional steps": (lambda: ddim_invert(EPS, S, X, 10), TypeError, "positional"),
    "ddim_invert steps": (lambda: ddim_invert(EPS, S, X, steps=0, progress=False), ValueError, "steps"),
    "ddim_invert objective": (lambda: ddim_invert(EPS, S, X, objective="x0", progress=False), ValueError,
                              "objective"),
    "ddim_step float t": (lambda: ddim_step(S, X, 10.0, 5, X), TypeError, r"\bt must"),
    "ddim_step (B,) t": (lambda: ddim_step(S, X, T4, -1, X), (TypeError, ValueError), r"\bt\b"),
    "ddim_timesteps T=0": (lambda: ddim_timesteps(0, 1), ValueError, "T must"),
    # losses
    "p_losses t range": (lambda: p_losses(EPS, S, X, torch.tensor([0, 1, 2, 100])), ValueError,
                         r"t must lie in 0\.\.T-1"),
    "vlb variance": (lambda: vlb_terms(EPS, S, X, variance="learned"), ValueError, "variance"),
    "vlb objective": (lambda: vlb_terms(EPS, S, X, objective="eps"), ValueError, "objective"),
    "log_scales shape": (lambda: discretized_gaussian_log_likelihood(X, X, torch.zeros(4, 2)), ValueError,
                         "log_scales"),
    "normal_kl shapes": (lambda: normal_kl(X, X, torch.zeros(4, 2), 0.0), ValueError, "mean|logvar"),
    "num_bins 1": (lambda: discretized_gaussian_log_likelihood(X, X, X, num_bins=1), ValueError, "num_bins"),
    "num_bins float": (lambda: discretized_gaussian_log_likelihood(X, X, X, num_bins=256.0), ValueError, "num_bins"),
    "x outside [-1, 1]": (lambda: discretized_gaussian_log_likelihood(X + 1.5, X, X), ValueError, r"x must lie"),
    "means shape": (lambda: discretized_gaussian_log_likelihood(X, torch.zeros(4, 2), X), ValueError, "means"),
    "normal_kl no tensor": (lambda: normal_kl(0.0, 0.0, 1.0, 0.0), TypeError, "Tensor"),
    "vlb no batch": (lambda: vlb_terms(EPS, S, torch.zeros(3)), ValueError, "x_start"),
    # guidance
    "cfg no null label": (lambda: ClassifierFreeGuidance(lambda x, t, y: x, 1.0), ValueError, "null_label"),
    "cfg w not a number": (lambda: ClassifierFreeGuidance(lambda x, t, y: x, "2", null_label=0), TypeError, "w"),
    "cfg w bool": (lambda: ClassifierFreeGuidance(lambda x, t, y: x, True, null_label=0), TypeError, "w must"),
    "cfg y None": (lambda: ClassifierFreeGuidance(lambda x, t, y: x, 1.0, null_label=0)(X, T4, None), ValueError,
                   "y"),
    "classifier guidance scale": (lambda: ClassifierGuidance(EPS, EPS, S, -1.0), ValueError, "scale"),
    "classifier guidance y None": (lambda: ClassifierGuidance(EPS, EPS, S, 1.0)(X, T4, None), ValueError, "y"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_clear_error(case):
    fn, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        fn()


# ---------------------------------------------------------------- float32 at the noisiest cosine step

COS = NoiseSchedule.cosine(1000)
TL = COS.T - 1


def _f32(seed=0, shape=(8, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.rand(shape, generator=g) * 2 - 1


def _finite(*tensors):
    for a in tensors:
        if isinstance(a, torch.Tensor):
            assert a.dtype == torch.float32
            assert torch.isfinite(a).all()
        else:
            assert math.isfinite(a)


def test_cosine_last_step_has_tiny_but_positive_alpha_bar():
    ab = COS.alphas_cumprod[TL].item()
    assert 0 < ab < 1e-8  # the regime where 1/√ᾱ is large


@pytest.mark.parametrize("t_last", [TL, 0])
def test_float32_forward_and_conversions_finite(t_last):
    eps, x0 = _f32()
    t = torch.full((8,), t_last)
    xt = q_sample(COS, x0, t, eps)
    mean, var, logvar = q_posterior(COS, x0, xt, t)
    _finite(xt, mean, var, logvar,
            predict_start_from_noise(COS, xt, t, eps), predict_noise_from_start(COS, xt, t, x0),
            predict_v(COS, x0, t, eps), predict_start_from_v(COS, xt, t, eps))
    _finite(*q_posterior(COS, x0, xt, t_last))


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [True, False])
def test_float32_p_sample_finite(objective, variance, clip):
    eps, x0 = _f32(1)
    x = torch.randn(8, 3)
    model = lambda xx, tt: eps  # noqa: E731
    for t in (TL, TL - 1, 0):
        x_prev, x_start = p_sample(model, COS, x, t, variance=variance, clip_denoised=clip, objective=objective,
                                   generator=torch.Generator().manual_seed(0))
        _finite(x_prev, x_start)
        _finite(*p_mean_variance(model, COS, x, torch.full((8,), t), variance=variance, clip_denoised=clip,
                                 objective=objective))


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_float32_ddim_step_finite(objective, eta):
    eps, _ = _f32(2)
    x = torch.randn(8, 3)
    for t, t_prev in ((TL, TL - 1), (TL, 500), (TL, -1), (0, -1)):
        _finite(*ddim_step(COS, eps, t, t_prev, x, eta=eta, objective=objective, clip_denoised=False,
                           generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("weighting", [None, "snr", "min_snr"])
def test_float32_p_losses_finite(objective, weighting):
    eps, x0 = _f32(3)
    t = torch.tensor([TL] * 4 + [0] * 4)
    loss = p_losses(lambda x, tt: torch.zeros_like(x), COS, x0, t, noise=eps, objective=objective,
                    loss_weighting=weighting)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
