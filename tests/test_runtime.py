"""ddpm_lib.runtime.mixed_precision: bfloat16 autocast only where asked or where the hardware is fast at it."""

import torch

from ddpm_lib.runtime import bf16_is_fast, mixed_precision


def test_mixed_precision_enabled_runs_linear_layers_in_bfloat16():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with mixed_precision("cpu", enabled=True):
        assert layer(x).dtype == torch.bfloat16
    with mixed_precision("cpu", enabled=False):
        assert layer(x).dtype == torch.float32
    assert layer(x).dtype == torch.float32  # nothing leaks out of the block


def test_default_follows_the_hardware():
    layer = torch.nn.Linear(4, 3)
    with mixed_precision("cpu"):
        dtype = layer(torch.randn(2, 4)).dtype
    assert dtype == (torch.bfloat16 if bf16_is_fast("cpu") else torch.float32)
    assert bf16_is_fast("meta") is False
