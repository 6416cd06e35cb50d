"""From the sampler's output in [-1, 1] to pictures (chapter 07; source 000, section 2).

The last sampling step returns the mean of p(x_0 | x_1) (no noise is added at t = 1); these helpers
turn it into something to look at, exactly as diffusers' pipelines do::

    image = (image / 2 + 0.5).clamp(0, 1)                      # unnormalize
    image = (image * 255).round().astype("uint8")              # numpy_to_pil / to_uint8
    Image.fromarray(image.squeeze(), mode="L")                 # one channel -> grey-scale PIL image

``round`` is round-half-to-even in both numpy and torch; the only exact tie in [-1, 1] is 0 ↦ 127.5 ↦ 128.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_int

__all__ = ["unnormalize", "to_uint8", "to_pil", "make_grid", "to_levels", "from_levels"]


def _check_tensor(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [-1, 1], got dtype {x.dtype}")
    return x


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1]: (x / 2 + 0.5) clamped to [0, 1] (chapter 07, eq. ``unnormalize``)."""
    x = _check_tensor(x)
    return (x / 2 + 0.5).clamp(0, 1)


def _image_batch(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x


def to_uint8(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """Images in [-1, 1] → uint8 in 0..255: round((x / 2 + 0.5).clamp(0, 1) · 255) (chapter 07).

    ``x`` has shape (N, C, H, W) or (C, H, W) (channels first, as the models produce).  The result
    has the same layout, or (N, H, W, C) / (H, W, C) with ``channels_last=True`` (the layout of
    diffusers' numpy images and of PIL).  Rounding is half-to-even, as numpy's in diffusers'
    ``numpy_to_pil``, and the arithmetic is the same in the same dtype, so the bytes are identical:
    -1 ↦ 0, -0.5 ↦ 64, 0 ↦ 128, 0.5 ↦ 191, 1 ↦ 255; values outside [-1, 1] are clamped.
    """
    x = _check_tensor(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must have shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    out = (unnormalize(x) * 255).round().to(torch.uint8)
    if channels_last:
        out = out.movedim(-3, -1)
    return out


def to_pil(x: torch.Tensor):
    """Images in [-1, 1] of shape (N, C, H, W) or (C, H, W) → a list of PIL images (chapter 07).

    One channel gives grey-scale images (mode ``"L"``), three give ``"RGB"``, four ``"RGBA"``.
    """
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - pillow is in requirements.txt
        raise ImportError("to_pil needs Pillow; install it with `pip install pillow`") from err
    x = _image_batch(_check_tensor(x))
    C = x.shape[1]
    if C not in (1, 3, 4):
        raise ValueError(f"x must have 1, 3 or 4 channels, got {C}")
    arrays = to_uint8(x, channels_last=True).cpu().numpy()
    if C == 1:
        return [Image.fromarray(a[:, :, 0]) for a in arrays]
    return [Image.fromarray(a) for a in arrays]


def make_grid(x: torch.Tensor, nrow: int = 8, padding: int = 1, pad_value: float = 0.0) -> torch.Tensor:
    """Tile images (N, C, H, W) into one image (C, H', W') with ``nrow`` images per row.

    The layout is torchvision's ``make_grid`` (``padding`` pixels of ``pad_value`` between and
    around the images, min(nrow, N) columns, ceil(N / columns) rows), except that one-channel input
    stays one-channel.  Values are copied unchanged: call it on :func:`unnormalize`'d images to plot
    with ``imshow``, or on images in [-1, 1] and pass the grid to :func:`to_pil`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
    x = _image_batch(x)
    nrow = check_int("nrow", nrow)
    padding = check_int("padding", padding, 0)
    N, C, H, W = x.shape
    if N == 0:
        raise ValueError("x must hold at least one image")
    cols = min(nrow, N)
    rows = math.ceil(N / cols)
    h, w = H + padding, W + padding
    grid = torch.full((C, rows * h + padding, cols * w + padding), pad_value, dtype=x.dtype, device=x.device)
    for k in range(N):
        r, c = divmod(k, cols)
        grid[:, r * h + padding : r * h + padding + H, c * w + padding : c * w + padding + W] = x[k]
    return grid


def to_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer grey levels k ∈ {0, ..., levels-1} of data in [-1, 1], where level k sits at -1 + 2k/(levels-1)
    (chapter 07): round((x + 1)/2 · (levels-1)) after clamping to [-1, 1], as a long tensor.

    ``levels=256`` is 8-bit images, ``levels=17`` the 8×8 digits (``ddpm_lib.data.DIGITS_LEVELS``).
    """
    x = _check_tensor(x)
    levels = check_int("levels", levels, 2)
    return torch.round((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).long()


def from_levels(k, levels: int) -> torch.Tensor:
    """Grey levels k ∈ {0, ..., levels-1} (integers, any array) mapped to [-1, 1]: -1 + 2k/(levels-1), float32
    (chapter 07; the inverse of :func:`to_levels`)."""
    levels = check_int("levels", levels, 2)
    k = torch.as_tensor(k)
    if k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
        raise TypeError(f"k must hold integer grey levels, got dtype {k.dtype}")
    if k.numel() and (int(k.min()) < 0 or int(k.max()) > levels - 1):
        raise ValueError(f"k must lie in 0..{levels - 1}, got values in {int(k.min())}..{int(k.max())}")
    return k.to(torch.float32) / (levels - 1) * 2 - 1
