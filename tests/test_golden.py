"""Golden values: full DDPM and DDIM loops on a fixed deterministic model and seed, pinned to 1e-6.

They pin the *current* behaviour, which is established independently by the parity tests with diffusers (every
step, float64), by test_samplers/test_ddim (the loops equal hand-written loops over the steps) and by the oracle
tests. Any change to the order of random draws, the timesteps, the clipping or the step formulas shows up here.

The numbers were produced once (ddpm_lib 0.1.0, torch 2.13 CPU) by running exactly the calls below and printing
the outputs with 10 decimals; the refactor of issue 10 (0.2.0: ddpm_step under p_sample, the shared loop of
ddpm_lib._loop, one-timestep t as a Python float) left every one of them unchanged (all still agree with their
10-decimal pins to 5e-11, the rounding of the print). E.g.::

    out = p_sample_loop(golden_model, NoiseSchedule.cosine(50), (3, 2), generator=torch.Generator().manual_seed(2024),
                        dtype=torch.float64, progress=False)
    print(out.tolist())
"""

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_sample, p_losses, p_sample_loop

F64 = dict(dtype=torch.float64)
SCHED = NoiseSchedule.cosine(50)
KW = dict(dtype=torch.float64, progress=False)


def golden_model(x, t):
    """A fixed nonlinear function of (x_t, t), no weights."""
    tt = t.to(x.dtype)[:, None] / 50
    return torch.tanh(1.5 * x - 0.3) * (0.5 + tt) + 0.1 * torch.sin(4 * x)


RUNS = {
    "ddpm_small_clip": lambda: p_sample_loop(golden_model, SCHED, (3, 2), generator=torch.Generator().manual_seed(2024),
                                             **KW),
    "ddpm_large_clip": lambda: p_sample_loop(golden_model, SCHED, (3, 2), variance="fixed_large",
                                             generator=torch.Generator().manual_seed(2024), **KW),
    "ddpm_v": lambda: p_sample_loop(golden_model, SCHED, (3, 2), objective="pred_v",
                                    generator=torch.Generator().manual_seed(7), **KW),
    "ddim_eta0_leading": lambda: ddim_sample(golden_model, SCHED, (3, 2), steps=10, eta=0.0, spacing="leading",
                                             generator=torch.Generator().manual_seed(2024), **KW),
    "ddim_eta05_trailing": lambda: ddim_sample(golden_model, SCHED, (3, 2), steps=10, eta=0.5, spacing="trailing",
                                               generator=torch.Generator().manual_seed(2024), **KW),
    "ddim_eta1_linspace_x0": lambda: ddim_sample(golden_model, SCHED, (3, 2), steps=7, eta=1.0, spacing="linspace",
                                                 objective="pred_x0", clip_denoised=False,
                                                 generator=torch.Generator().manual_seed(11), **KW),
}

GOLDEN = {
    "ddpm_small_clip": [[0.2734463437, 0.5655877828], [-0.1742442020, 0.1309142022], [-0.4193599096, 0.7278216382]],
    "ddpm_large_clip": [[0.3352844111, 0.5561475827], [-0.1671065423, 0.1756128738], [-0.4740882814, 0.8367270891]],
    "ddpm_v": [[-0.1901834434, -0.9062326051], [0.1818061252, -0.0613458985], [0.2128726888, 0.1663473540]],
    "ddim_eta0_leading": [[0.2219311433, 1.0000000000], [0.1141175958, 1.0000000000], [0.2322622892, 0.1751648575]],
    "ddim_eta05_trailing": [[-0.0229813615, 0.5022398530], [-0.1728490327, 0.7617679776], [0.4239113341, 0.2165998488]],
    "ddim_eta1_linspace_x0": [[-0.3566333705, -0.4830658216], [-0.4849431152, -0.4852211051],
                              [0.2595590378, -0.4853504845]],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_sampler_loops(name):
    out = RUNS[name]()
    assert out.dtype == torch.float64 and out.shape == (3, 2)
    torch.testing.assert_close(out, torch.tensor(GOLDEN[name], **F64), rtol=0, atol=1e-6)


GOLDEN_LOSSES = {  # p_losses(golden_model, SCHED, x0, t, noise, objective, loss_weighting), same provenance
    ("pred_noise", None): 0.288491109206,
    ("pred_noise", "min_snr"): 0.199627782067,
    ("pred_x0", None): 0.244259661293,
    ("pred_x0", "min_snr"): 0.193674576726,
    ("pred_v", None): 0.751434270412,
    ("pred_v", "min_snr"): 0.185513906834,
}


@pytest.mark.parametrize("objective,weighting", sorted(GOLDEN_LOSSES, key=str))
def test_golden_losses(objective, weighting):
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(4, 2, generator=g, **F64) * 2 - 1
    noise = torch.randn(4, 2, generator=g, **F64)
    t = torch.tensor([0, 10, 25, 49])
    loss = p_losses(golden_model, SCHED, x0, t, noise=noise, objective=objective, loss_weighting=weighting)
    assert loss.item() == pytest.approx(GOLDEN_LOSSES[(objective, weighting)], abs=1e-9)
