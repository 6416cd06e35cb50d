"""Argument checks shared by the whole library, and the names of the allowed choices.

Bad input fails early with a ``ValueError`` or ``TypeError`` that names the argument and the allowed
values. Every module checks its arguments with these functions; none writes its own copy.

Timesteps (``t``) are accepted in one set of types everywhere (see :func:`check_timestep` and
:func:`check_timesteps`): a Python int, a NumPy integer, a 0-d or one-element integer tensor (one step for
the whole batch), or, where a function allows one timestep per example, an integer tensor of shape (B,).
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "OBJECTIVES",
    "VARIANCES",
    "SPACINGS",
    "LOSS_WEIGHTINGS",
    "check_choice",
    "check_int",
    "check_seed",
    "check_probability",
    "check_positive",
    "check_timestep",
    "check_timesteps",
    "check_batch",
    "check_same_shape",
    "assert_finite",
]

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
"""What a network predicts (chapter 04): ε, x_0, or v = √ᾱ ε - √(1-ᾱ) x_0."""

VARIANCES = ("fixed_small", "fixed_large", "learned_range")
"""σ_t² of a DDPM step: β̃_t (``fixed_small``), β_t (``fixed_large``), or the learned interpolation between
their logs (``learned_range``, Nichol & Dhariwal 2021; chapter 07)."""

SPACINGS = ("leading", "trailing", "linspace")
"""How a sampler with S < T steps picks its timesteps (chapter 08)."""

LOSS_WEIGHTINGS = (None, "snr", "min_snr")
"""Per-timestep weights of the training loss (chapter 04)."""


def check_choice(name: str, value, allowed) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed, key=repr)!r}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as a Python int; ``ValueError`` unless it is an integer (Python or NumPy, not a bool) in
    ``minimum..maximum`` (either bound may be None)."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{name} must be an int in {lo}..{hi}, got {value}")
    return value


def check_seed(seed) -> int:
    """A seed is any int (Python or NumPy); ``TypeError`` otherwise."""
    if not _is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(seed)


def check_probability(name: str, value) -> float:
    """``value`` as a float in [0, 1]; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``); ``ValueError`` otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _range_error(name: str, T: int, got) -> ValueError:
    return ValueError(f"{name} must lie in 0..T-1 = 0..{T - 1} (index t is the paper's t+1), got {got}")


def check_timestep(t, T: int, name: str = "t") -> int:
    """One timestep for the whole batch, as a Python int in ``0..T-1``.

    Accepted: a Python int, a NumPy integer, a 0-d or one-element integer tensor. A tensor with several
    entries is a ``TypeError`` (the step functions take one timestep for the whole batch).
    """
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold an integer timestep, got a tensor of dtype {t.dtype}")
        if t.numel() != 1:
            raise TypeError(f"{name} must be one timestep for the whole batch (an int or a one-element tensor), "
                            f"got a tensor of shape {tuple(t.shape)}")
        t = int(t.item())
    elif not _is_int(t):
        raise TypeError(f"{name} must be an int (or a NumPy int, or a one-element integer tensor), got {t!r}")
    t = int(t)
    if not 0 <= t <= T - 1:
        raise _range_error(name, T, t)
    return t


def check_timesteps(t, T: int, name: str = "t"):
    """One timestep for the batch (returned as an int, see :func:`check_timestep`) or one per example: an integer
    tensor of shape (B,) with B > 1, returned as ``torch.long``."""
    if isinstance(t, torch.Tensor) and t.numel() != 1:
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers (torch.long), got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"{name} must have shape (B,), got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
            raise _range_error(name, T, f"values in {int(t.min())}..{int(t.max())}")
        return t.long()
    return check_timestep(t, T, name)


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
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{a_name} must be a torch.Tensor, got {type(a).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; they must match")


def assert_finite(x: torch.Tensor, what: str, t: int) -> None:
    """Raise ``FloatingPointError`` naming ``what`` and the step ``t`` unless every entry of ``x`` is finite.

    The step functions call this on the model output and on the new sample (chapter 06): a network that
    returns NaN or inf stops the loop at the step where it happens, instead of returning a NaN image. It costs one
    reduction per call (on a GPU, one synchronization); ``check_finite=False`` in the step functions and loops turns it off.
    """
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan = int(torch.isnan(x).sum())
        inf = int(x.numel() - finite.sum()) - nan
        raise FloatingPointError(
            f"{what} is not finite at code step t = {t} (the paper's t = {t + 1}): {nan} NaN and {inf} inf "
            f"values out of {x.numel()}; pass check_finite=False to run on regardless"
        )
