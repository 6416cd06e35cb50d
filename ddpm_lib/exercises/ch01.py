"""Checks for the code exercises of chapter 01 (the forward process).

Each ``check_<name>(fn)`` calls the reader's ``fn`` on several inputs, compares it with an independent reference
(the library function of the same meaning) and raises ``AssertionError`` with a hint when it disagrees. The helpers
:func:`assert_close` and :func:`diagnose` are shared by the checks of chapters 02-04.
"""

from __future__ import annotations

import torch

from ..diffusion import q_sample
from ..schedules import NoiseSchedule, cosine_beta_schedule

__all__ = ["assert_close", "diagnose", "call", "check_q_sample_by_hand", "check_cosine_betas"]


def call(fn, what: str, *args, hint: str = ""):
    """``fn(*args)``, turning an exception into an ``AssertionError`` that names the call (and gives ``hint``)."""
    try:
        return fn(*args)
    except Exception as err:  # the reader's code may raise anything; report it as a failed check
        raise AssertionError(f"{what} raised {type(err).__name__}: {err}" + (f". Hint: {hint}" if hint else "")) from err


def diagnose(got: torch.Tensor, known_mistakes: dict) -> str:
    """The hint of the first known mistake whose value ``got`` reproduces, or '' (``known_mistakes``: hint -> value)."""
    for hint, value in known_mistakes.items():
        value = torch.as_tensor(value, dtype=torch.float64)
        if value.shape == got.shape and torch.allclose(got, value, rtol=1e-9, atol=1e-12):
            return hint
    return ""


def assert_close(got, want: torch.Tensor, what: str, hint: str, known_mistakes: dict | None = None,
                 rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Raise ``AssertionError`` unless ``got`` equals ``want`` (float64 comparison, same shape).

    The message names ``what`` was compared, by how much it is off, and a hint: the specific one of
    ``known_mistakes`` (hint -> the value that mistake gives) when ``got`` reproduces it, else ``hint``.
    """
    if not isinstance(got, torch.Tensor):
        try:
            got = torch.as_tensor(got)
        except (TypeError, ValueError, RuntimeError) as err:
            raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}") from err
    got, want = got.double(), torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}. Hint: {hint}")
    if not torch.allclose(got, want, rtol=rtol, atol=atol, equal_nan=False):
        err = (got - want).abs().nan_to_num(float("inf")).max().item()
        specific = diagnose(got, known_mistakes or {})
        raise AssertionError(f"{what}: off by up to {err:.3g}. Hint: {specific or hint}")


def check_q_sample_by_hand(fn) -> None:
    """Exercise ``ex-01-q-sample-batch``: ``fn(sched, x_start, t, noise)`` must return
    x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with one timestep per example (chapter 01, eq. ``eq-q-xt-x0``).

    Tried on image batches whose size B is 8 (= the image width, the case where a missing reshape broadcasts
    silently), 3 and 1, and on a batch of 2-D points; the reference is :func:`ddpm_lib.q_sample`."""
    sched = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    for shape in ((8, 1, 8, 8), (3, 1, 8, 8), (1, 1, 8, 8), (5, 2)):
        x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        t = torch.randint(0, sched.T, (shape[0],), generator=g)
        t[0] = sched.T - 1
        what = f"q_sample_by_hand on a batch of shape {shape}"
        got = call(fn, what, sched, x0, t, noise,
                   hint="reshape the (B,) coefficients to (B, 1, ..., 1) so that they broadcast over the batch axis.")
        ab = sched.alphas_cumprod[t].reshape(-1, *([1] * (len(shape) - 1)))
        a = sched.alphas[t].reshape(ab.shape)
        ab_prev = sched.alphas_cumprod_prev[t].reshape(ab.shape)
        mistakes = {
            "the coefficients are the square roots of alphabar_t and 1 - alphabar_t (variances, not scales).":
                ab * x0 + (1 - ab) * noise,
            "use the cumulative product alphas_cumprod, not the one-step alphas: x_t is t steps away from x_0.":
                a.sqrt() * x0 + (1 - a).sqrt() * noise,
            "index t of the code is the paper's step t+1: use alphas_cumprod[t], not alphas_cumprod_prev[t].":
                ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * noise,
        }
        if shape[0] == shape[-1]:  # the source 004 line: (B,) coefficients broadcast against the last axis
            mistakes["the (B,) coefficients must be reshaped to (B, 1, ..., 1) before they multiply the batch "
                     "(here B equals the image width, so the missing reshape broadcasts silently)."] = (
                sched.sqrt_alphas_cumprod[t] * x0 + sched.sqrt_one_minus_alphas_cumprod[t] * noise)
        assert_close(got, q_sample(sched, x0, t, noise), what,
                     "x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) noise, with the (B,) "
                     "coefficients reshaped to (B, 1, ..., 1).", mistakes)


def check_cosine_betas(fn) -> None:
    """Exercise ``ex-01-cosine-schedule``: ``fn(T, s)`` must return β_1..β_T of the cosine schedule (chapter 01,
    eq. ``eq-cosine-schedule``), clipped at 0.999, as T numbers. The reference is
    :func:`ddpm_lib.cosine_beta_schedule`."""
    for T, s in ((5, 0.008), (50, 0.008), (1000, 0.008), (100, 0.02)):
        what = f"cosine_betas(T={T}, s={s})"
        got = call(fn, what, T, s)
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * torch.pi / 2) ** 2
        unclipped = 1 - f[1:] / f[:-1]
        mistakes = {
            "clip beta at 0.999: without the clip beta_T = 1, because f(T) = 0.": unclipped,
            "alphabar_t = f(t) / f(0): normalise by f(0), otherwise beta_1 is off.":
                torch.cat([1 - f[1:2], unclipped[1:]]).clamp(max=0.999),
            "beta_t = 1 - alphabar_t / alphabar_{t-1} (a ratio), not alphabar_{t-1} - alphabar_t.":
                (f[:-1] / f[0] - f[1:] / f[0]).clamp(max=0.999),
        }
        assert_close(got, cosine_beta_schedule(T, s), what,
                     "compute alphabar at t = 0, 1, ..., T (T + 1 values), take beta_t = 1 - alphabar_t/alphabar_{t-1} "
                     "for t = 1..T and clip at 0.999.", mistakes, rtol=1e-9, atol=1e-12)
