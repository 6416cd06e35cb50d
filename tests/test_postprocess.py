"""Tests of ddpm_lib.postprocess: [-1, 1] -> [0, 1] -> uint8 -> PIL, grids, grey levels."""

import numpy as np
import pytest
import torch

from ddpm_lib.postprocess import from_levels, make_grid, to_levels, to_pil, to_uint8, unnormalize
from helpers import gen


def test_unnormalize_golden_values_and_clamp():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    torch.testing.assert_close(unnormalize(x), torch.tensor([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))
    assert unnormalize(x.double()).dtype == torch.float64
    with pytest.raises(TypeError, match="floating-point"):
        unnormalize(torch.tensor([1, 2]))


def test_to_uint8_golden_values_round_half_to_even():
    # (x/2 + 0.5)·255: -1 -> 0, -0.5 -> 63.75 -> 64, 0 -> 127.5 -> 128 (the only exact tie in [-1, 1]; half to
    # even and half up agree on it), 0.5 -> 191.25 -> 191, 1 -> 255; out-of-range values are clamped.
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=dtype)
        out = to_uint8(x.reshape(1, 1, 1, -1))
        assert out.dtype == torch.uint8 and out.shape == (1, 1, 1, 7)
        assert out.flatten().tolist() == [0, 0, 64, 128, 191, 255, 255]


def test_to_uint8_layouts():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    first = to_uint8(x)
    last = to_uint8(x, channels_last=True)
    assert first.shape == (2, 3, 4, 5) and last.shape == (2, 4, 5, 3)
    assert torch.equal(last, first.permute(0, 2, 3, 1))
    assert torch.equal(to_uint8(x[0]), first[0])  # (C, H, W) works too
    with pytest.raises(ValueError, match="shape"):
        to_uint8(torch.zeros(4, 4))


def test_to_uint8_matches_diffusers_numpy_to_pil_bit_for_bit():
    numpy_to_pil = pytest.importorskip("diffusers.utils").numpy_to_pil

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 6, 7, generator=g) * 2.4 - 1.2  # some values outside [-1, 1]
    # include the exact tie and values that are ties up to float rounding
    x[0, 0, 0, :4] = torch.tensor([0.0, 1 / 255 - 1, 3 / 255 - 1, 5 / 255 - 1])
    # diffusers' pipeline: (image / 2 + 0.5).clamp(0, 1), NHWC numpy, then numpy_to_pil
    image = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    ref = np.stack([np.asarray(im) for im in numpy_to_pil(image)])
    assert np.array_equal(to_uint8(x, channels_last=True).numpy(), ref)
    assert np.array_equal(np.stack([np.asarray(im) for im in to_pil(x)]), ref)


def test_to_pil_modes_and_values():
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    ims = to_pil(gray)
    assert len(ims) == 2 and all(im.mode == "L" and im.size == (8, 8) for im in ims)
    assert np.array_equal(np.asarray(ims[1]), to_uint8(gray)[1, 0].numpy())
    rgb = to_pil(torch.zeros(3, 4, 6))  # a single (C, H, W) image
    assert len(rgb) == 1 and rgb[0].mode == "RGB" and rgb[0].size == (6, 4)
    assert np.all(np.asarray(rgb[0]) == 128)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        to_pil(torch.zeros(1, 2, 4, 4))


def test_make_grid_layout_and_padding():
    x = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1).expand(5, 1, 2, 3)
    grid = make_grid(x, nrow=2, padding=1, pad_value=-1.0)
    # 2 columns, 3 rows: height 3·(2+1)+1 = 10, width 2·(3+1)+1 = 9 (torchvision's layout)
    assert grid.shape == (1, 10, 9)
    assert torch.all(grid[0, 1:3, 1:4] == 0) and torch.all(grid[0, 1:3, 5:8] == 1)
    assert torch.all(grid[0, 4:6, 1:4] == 2) and torch.all(grid[0, 7:9, 1:4] == 4)
    assert torch.all(grid[0, 7:9, 5:8] == -1)  # the empty sixth cell is padding
    assert torch.all(grid[0, 0] == -1) and torch.all(grid[0, :, 0] == -1) and torch.all(grid[0, 3] == -1)
    # number of padding pixels: total minus 5 images of 6 pixels
    assert int((grid == -1).sum()) == 10 * 9 - 5 * 6


def test_make_grid_shapes_and_errors():
    x = torch.randn(64, 3, 8, 8)
    assert make_grid(x).shape == (3, 8 * 9 + 1, 8 * 9 + 1)
    assert make_grid(x, nrow=16, padding=0).shape == (3, 32, 128)
    assert make_grid(x[:3], nrow=8).shape == (3, 10, 28)  # fewer images than nrow: one row of 3
    with pytest.raises(ValueError, match="nrow"):
        make_grid(x, nrow=0)
    with pytest.raises(ValueError, match="padding"):
        make_grid(x, padding=-1)


def test_levels_golden_values_and_round_trip():
    """Level k sits at -1 + 2k/(levels-1); to_levels rounds to the nearest level (clamping first), from_levels maps back."""
    x = torch.tensor([-1.2, -1.0, -0.95, -0.9, 0.0, 0.06, 0.07, 1.0, 1.3])
    # 17 levels: spacing 1/8 = 0.125
    assert to_levels(x, 17).tolist() == [0, 0, 0, 1, 8, 8, 9, 16, 16]
    assert to_levels(x, 17).dtype == torch.long
    torch.testing.assert_close(from_levels(torch.tensor([0, 1, 8, 9, 16]), 17),
                               torch.tensor([-1.0, -0.875, 0.0, 0.125, 1.0]), rtol=0, atol=0)
    for levels in (2, 17, 256):
        k = torch.arange(levels)
        assert torch.equal(to_levels(from_levels(k, levels), levels), k)  # every level round-trips
        assert from_levels(k, levels).dtype == torch.float32
    # rounding to 256 levels is consistent with to_uint8
    y = torch.rand(1000, generator=gen(0)) * 2 - 1
    assert torch.equal(to_levels(y, 256), to_uint8(y.reshape(1, 1, 1, -1)).flatten().long())
    # the digits already lie on their 17 levels; from_levels takes any integer array
    from ddpm_lib.data import DIGITS_LEVELS, load_digits

    digits, _ = load_digits("test")
    torch.testing.assert_close(from_levels(to_levels(digits, DIGITS_LEVELS), DIGITS_LEVELS), digits, rtol=0, atol=1e-7)
    torch.testing.assert_close(from_levels(np.array([[0, 2]]), 3), torch.tensor([[-1.0, 1.0]]))


def test_levels_errors():
    with pytest.raises(ValueError, match="levels"):
        to_levels(torch.zeros(3), 1)
    with pytest.raises(ValueError, match="levels"):
        from_levels(torch.zeros(3, dtype=torch.long), 17.0)
    with pytest.raises(TypeError, match="floating-point"):
        to_levels(torch.zeros(3, dtype=torch.long), 17)
    with pytest.raises(TypeError, match="integer grey levels"):
        from_levels(torch.zeros(3), 17)
    with pytest.raises(ValueError, match=r"k must lie in 0\.\.16, got values in 0\.\.17"):
        from_levels(torch.tensor([0, 17]), 17)
    with pytest.raises(ValueError, match="k must lie in"):
        from_levels(torch.tensor([-1]), 17)
