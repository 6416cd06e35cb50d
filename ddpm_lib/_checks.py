"""Argument checks shared by the library: bad input fails early with a message that
names the argument and the allowed values."""

from __future__ import annotations

import torch


def check_choice(name: str, value, allowed) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed, key=repr)!r}, got {value!r}")


def check_timesteps(t, T: int, name: str = "t"):
    """Check that ``t`` is an int or an integer tensor of shape (B,) with values in ``0..T-1``.

    Returns an ``int`` unchanged (one step for the whole batch) or the tensor as ``torch.long``.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an int or an integer tensor of shape (B,), got a bool")
    if isinstance(t, int):
        if not 0 <= t <= T - 1:
            raise ValueError(f"{name} must lie in 0..T-1 = 0..{T - 1} (index t is the paper's t+1), got {t}")
        return t
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor of shape (B,) or an int, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers (torch.long), got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(f"{name} must have shape (B,), got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(
            f"{name} must lie in 0..T-1 = 0..{T - 1} (index t is the paper's t+1), "
            f"got values in {int(t.min())}..{int(t.max())}"
        )
    return t.long()


def check_batch(t: torch.Tensor, x: torch.Tensor, t_name: str = "t", x_name: str = "x") -> None:
    """``t`` of shape (B,) must match the batch dimension of ``x``."""
    if x.ndim == 0:
        raise ValueError(f"{x_name} must have a batch dimension, got a scalar")
    if t.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"{t_name} has batch size {t.shape[0]} but {x_name} has batch size {x.shape[0]}; "
            "they must be equal (or t of size 1)"
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, a_name: str, b_name: str) -> None:
    """Two tensors that are combined element-wise must have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; they must match")
