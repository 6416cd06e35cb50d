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

__all__ = ["unnormalize", "to_uint8", "to_pil", "make_grid", "quantize"]


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
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
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


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Snap values in [-1, 1] to the nearest of ``levels`` evenly spaced grey levels (chapter 07).

    Level k ∈ {0, ..., levels-1} sits at k / (levels - 1) · 2 - 1; values are clamped to [-1, 1]
    first.  ``levels=256`` is 8-bit images, ``levels=17`` the 8×8 digits (``DIGITS_LEVELS``).
    The result has ``x``'s dtype.
    """
    x = _check_tensor(x)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    k = ((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).round()
    return k / (levels - 1) * 2 - 1
