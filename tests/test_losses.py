"""The training loss (chapter 04): p_losses for the three objectives and its per-timestep weights.

The references are independent of the implementation: a model that returns the exact target has zero loss, the
zero model's loss is the mean square of the target, and three models that make the same prediction in their own
parameterization have the same weighted loss (the weights are defined on the x_0 error; chapter 04). The Gaussian
KL, the decoder and the bound are tested in tests/test_likelihood.py.
"""

import numpy as np
import pytest
import torch

from ddpm_lib import NoiseSchedule, p_losses, predict_noise_from_start, predict_v, q_sample
from helpers import F64, exact_output, gen

# ---------------------------------------------------------------- p_losses

SCHED = NoiseSchedule.cosine(1000)


def _batch(seed=0, B=16, shape=(2, 3)):
    g = gen(seed)
    x0 = torch.rand(B, *shape, generator=g, **F64) * 2 - 1
    eps = torch.randn(B, *shape, generator=g, **F64)
    t = torch.randint(0, SCHED.T, (B,), generator=g)
    t[0], t[1] = 0, SCHED.T - 1
    return x0, eps, t


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("weighting", [None, "snr", "min_snr"])
def test_p_losses_oracle_is_zero(objective, weighting):
    """A model that knows x_0 and ε and returns the exact target of its objective has zero loss."""
    x0, eps, t = _batch()
    target = exact_output(SCHED, objective, x0, t, eps)
    expected_xt = q_sample(SCHED, x0, t, eps)

    def oracle(x_t, tt):
        torch.testing.assert_close(x_t, expected_xt, rtol=0, atol=0)
        assert torch.equal(tt, t)
        return target.clone()

    loss = p_losses(oracle, SCHED, x0, t, noise=eps, objective=objective, loss_weighting=weighting)
    assert loss.ndim == 0 and loss.item() == 0.0
    # and a wrong model has a positive loss
    assert p_losses(lambda x, tt: target + 0.1, SCHED, x0, t, noise=eps, objective=objective,
                    loss_weighting=weighting).item() > 0


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_p_losses_value_of_zero_model(objective):
    """L_simple of the model that outputs 0 is the mean square of the target."""
    x0, eps, t = _batch(seed=1)
    target = exact_output(SCHED, objective, x0, t, eps)
    per = p_losses(lambda x, tt: torch.zeros_like(x), SCHED, x0, t, noise=eps, objective=objective, reduction="none")
    torch.testing.assert_close(per, (target ** 2).flatten(1).mean(1), rtol=1e-14, atol=0)
    mean = p_losses(lambda x, tt: torch.zeros_like(x), SCHED, x0, t, noise=eps, objective=objective)
    torch.testing.assert_close(mean, (target ** 2).mean(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("weighting,gamma", [(None, 5.0), ("snr", 5.0), ("min_snr", 5.0), ("min_snr", 3.0)])
def test_p_losses_weightings_agree_across_objectives(weighting, gamma):
    """‖x̂_0-x_0‖² = ‖ε̂-ε‖²/SNR = ‖v̂-v‖²/(SNR+1) at fixed x_t. A weighting is a weight w(t) on the x_0 error (w = SNR,
    or min(SNR, γ) of Hang et al. 2023), so three models that make the *same* prediction in their own
    parameterization have the same weighted loss, w times their x_0 error; with weighting=None each loss is its own
    unweighted MSE (the three differ by those SNR factors; w = SNR is the unweighted ε loss)."""
    x0, eps, t = _batch(seed=2)
    xt = q_sample(SCHED, x0, t, eps)

    def x0_hat(x, tt):  # some fixed, imperfect prediction of x_0
        return torch.tanh(0.5 * x + 0.001 * tt.to(x)[:, None, None])

    def model_x0(x, tt):
        return x0_hat(x, tt)

    def model_eps(x, tt):
        return predict_noise_from_start(SCHED, x, tt, x0_hat(x, tt))

    def model_v(x, tt):
        return predict_v(SCHED, x0_hat(x, tt), tt, model_eps(x, tt))

    kw = dict(noise=eps, loss_weighting=weighting, reduction="none", min_snr_gamma=gamma)
    l_x0 = p_losses(model_x0, SCHED, x0, t, objective="pred_x0", **kw)
    l_eps = p_losses(model_eps, SCHED, x0, t, objective="pred_noise", **kw)
    l_v = p_losses(model_v, SCHED, x0, t, objective="pred_v", **kw)
    snr = SCHED.snr[t]
    err_x0 = ((x0_hat(xt, t) - x0) ** 2).flatten(1).mean(1)
    w = {None: None, "snr": snr, "min_snr": snr.clamp(max=gamma)}[weighting]
    if w is None:
        torch.testing.assert_close(l_x0, err_x0, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(l_eps, err_x0 * snr, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(l_v, err_x0 * (snr + 1), rtol=1e-6, atol=1e-9)
    else:
        for loss in (l_x0, l_eps, l_v):
            torch.testing.assert_close(loss, w * err_x0, rtol=1e-6, atol=1e-9)
        if weighting == "snr":
            torch.testing.assert_close(l_eps, p_losses(model_eps, SCHED, x0, t, noise=eps, reduction="none"))
        else:  # γ clamps the weight where SNR > γ (small t): the check above sees γ
            assert (snr > gamma).any() and (snr < gamma).any()


def test_p_losses_one_timestep_for_the_batch():
    """t may be one timestep for the whole batch (an int, a NumPy int or a one-element tensor): the same loss as the
    (B,) tensor of that timestep."""
    x0, eps, _ = _batch(seed=3)
    model = lambda x, tt: torch.sin(x) * (1 + 0.001 * tt.to(x)[:, None, None])  # noqa: E731
    ref = p_losses(model, SCHED, x0, torch.full((x0.shape[0],), 321), noise=eps, objective="pred_v",
                   loss_weighting="min_snr", reduction="none")
    for t in (321, np.int64(321), torch.tensor([321]), torch.tensor(321)):
        got = p_losses(model, SCHED, x0, t, noise=eps, objective="pred_v", loss_weighting="min_snr", reduction="none")
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    other = p_losses(model, SCHED, x0, 322, noise=eps, objective="pred_v", loss_weighting="min_snr", reduction="none")
    assert (other - ref).abs().max() > 0
