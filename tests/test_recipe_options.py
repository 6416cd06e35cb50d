"""The options the digits and mixture recipes gained for issue 11 (ddpm_lib.recipes): learning-rate schedule, depth
and levels of the UNet, loss weighting, learned variance, the zero-terminal-SNR schedule. Tiny budgets."""

import pytest
import torch

from ddpm_lib import recipes as R
from ddpm_lib.models import UNet
from ddpm_lib.schedules import linear_beta_schedule, rescale_zero_terminal_snr
from ddpm_lib.train import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_digits_recipe_passes_its_options_to_the_network_and_the_optimizer():
    seen = []
    tm = R.train_digits_model(seed=0, steps=4, T=10, width=8, batch_size=4, channel_mults=(1, 2, 2),
                              num_res_blocks=2, lr=1e-3, lr_schedule="cosine", warmup_steps=2,
                              loss_weighting="min_snr", objective="pred_v", progress=False,
                              callback=lambda step, model, ema: seen.append(step), callback_every=2)
    net = tm.raw_model
    assert isinstance(net, UNet) and net.channel_mults == (1, 2, 2) and len(net.down_blocks[0]) == 2
    assert seen == [2, 4]
    for key, value in dict(channel_mults=(1, 2, 2), num_res_blocks=2, lr_schedule="cosine", warmup_steps=2,
                           loss_weighting="min_snr", objective="pred_v", learned_variance=False).items():
        assert tm.config[key] == value
    # the same call gives the same weights; another lr schedule other weights
    again = R.train_digits_model(seed=0, steps=4, T=10, width=8, batch_size=4, channel_mults=(1, 2, 2),
                                 num_res_blocks=2, lr=1e-3, lr_schedule="cosine", warmup_steps=2,
                                 loss_weighting="min_snr", objective="pred_v", progress=False)
    torch.testing.assert_close(again.result.loss_history, tm.result.loss_history, rtol=0, atol=0)
    const = R.train_digits_model(seed=0, steps=4, T=10, width=8, batch_size=4, channel_mults=(1, 2, 2),
                                 num_res_blocks=2, lr=1e-3, loss_weighting="min_snr", objective="pred_v",
                                 progress=False)
    assert not torch.equal(const.result.loss_history[1:], tm.result.loss_history[1:])
    assert lr_factor(0, 4, "cosine", 2) == 0.5  # the first warm-up step


def test_zero_snr_schedule_of_the_recipes():
    sched = R.make_schedule(1000, "linear_zero_snr")
    plain = R.make_schedule(1000, "linear")
    assert sched.alphas_cumprod[-1].item() == pytest.approx(R.ZERO_SNR_ALPHAS_CUMPROD, rel=1e-9)
    torch.testing.assert_close(sched.alphas_cumprod[0], plain.alphas_cumprod[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(sched.betas, rescale_zero_terminal_snr(linear_beta_schedule(1000),
                                                                      R.ZERO_SNR_ALPHAS_CUMPROD), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="kind"):
        R.make_schedule(1000, "zero_snr")


def test_mixture_recipe_on_the_zero_snr_schedule_with_v_prediction():
    tm = R.train_mixture_model(seed=0, steps=5, T=50, schedule="linear_zero_snr", objective="pred_v", hidden_dim=16,
                               num_layers=1, batch_size=16, n_train=100, progress=False)
    assert tm.sched.alphas_cumprod[-1].item() == pytest.approx(R.ZERO_SNR_ALPHAS_CUMPROD, rel=1e-9)
    x = tm.sample(10, seed=0, progress=False)
    assert torch.isfinite(x).all()
