"""Checks for the code exercises of chapter 08 (DDIM: the trailing timestep spacing and the step with η).

``check_trailing_timesteps`` compares the reader's spacing with :func:`ddpm_lib.ddim.ddim_timesteps` (``"trailing"``)
for several (T, S), including S that do not divide T; ``check_ddim_step_eta`` compares the reader's update with
:func:`ddpm_lib.ddim.ddim_step` in float64, fed the same noise z, for several pairs of steps and values of η. Both
name the mistake when the answer reproduces a plausible slip.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ddim import ddim_step, ddim_timesteps
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["check_trailing_timesteps", "check_ddim_step_eta"]

#: (T, S) tried by :func:`check_trailing_timesteps`: S divides T, S does not (where floor and round differ), S = 1,
#: S = T, and (15, 13), where ``np.arange(T, 0, -T/S)`` has one entry too many. No T k/S ends in exactly .5, so that
#: rounding half up and half to even agree.
TRAILING_CASES = ((1000, 10), (1000, 30), (1000, 7), (100, 3), (1000, 1), (50, 50), (15, 13))


def _as_int_list(got, what: str) -> list:
    """The reader's timesteps as a list of Python ints (any 1-D sequence, array or tensor of integral values)."""
    try:
        arr = np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{what}: expected a 1-D sequence of integers, got {type(got).__name__}") from err
    if arr.ndim != 1:
        raise AssertionError(f"{what}: expected a 1-D sequence of timesteps, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise AssertionError(f"{what}: the timesteps must be integers (code indices), got {arr.tolist()[:6]} ...")
    return [int(v) for v in arr]


def _trailing_slips(T: int, S: int) -> dict:
    """hint -> the list that a plausible wrong trailing spacing returns for (T, S)."""
    k = np.arange(S)
    exact = T - k * T / S
    return {
        "this is leading spacing (0, r, 2r, ... with r = T // S): trailing counts down from T, "
        "round(T - k T/S) - 1, and starts at T-1.": ddim_timesteps(T, S, "leading").tolist(),
        "this is linspace spacing (both ends 0 and T-1 included): trailing counts down from T in strides of T/S, "
        "round(T - k T/S) - 1, and need not reach 0.": ddim_timesteps(T, S, "linspace").tolist(),
        "off by one: code indices run from 0 to T-1, so subtract 1 (round(T - k T/S) - 1; the first entry is T-1, "
        "not T).": (np.round(exact)).astype(int).tolist(),
        "off by one: subtract 1 from round(T - k T/S), not from T before the stride; the first entry is T-1 and the "
        "strides are T/S.": (np.round(T - 1 - k * (T - 1) / S)).astype(int).tolist(),
        "the timesteps must be in descending order (the sampler walks from T-1 down), not ascending.":
            ddim_timesteps(T, S, "trailing").flip(0).tolist(),
        "round to the nearest integer: int() or floor truncates (that is lucidrains' time_pairs), which differs "
        "from trailing when S does not divide T.": (np.floor(exact) - 1).astype(int).tolist(),
    }


def check_trailing_timesteps(fn) -> None:
    """Exercise ``ex-08-trailing``: ``fn(T, S)`` must return the S code indices of the trailing spacing,
    round(T - k T/S) - 1 for k = 0, ..., S-1, in descending order (chapter 08, section on skipping steps).

    Tried on :data:`TRAILING_CASES`; the reference is :func:`ddpm_lib.ddim.ddim_timesteps` with ``"trailing"``. Any
    1-D sequence of integers (list, array, tensor) is accepted."""
    for T, S in TRAILING_CASES:
        what = f"trailing_timesteps(T={T}, S={S})"
        got = _as_int_list(call(fn, what, T, S), what)
        want = ddim_timesteps(T, S, "trailing").tolist()
        if got == want:
            continue
        if len(got) == S + 1 and got[:S] == want:
            raise AssertionError(f"{what}: {S + 1} entries, expected {S}. Hint: return exactly S entries, k = 0, ..., "
                                 f"S-1: np.arange(T, 0, -T/S) with a float step can give one more (here a last "
                                 f"entry {got[-1]}).")
        if len(got) != S:
            raise AssertionError(f"{what}: {len(got)} entries, expected S = {S}. Hint: one entry per network "
                                 "evaluation, round(T - k T/S) - 1 for k = 0, ..., S-1.")
        specific = next((hint for hint, slip in _trailing_slips(T, S).items() if got == slip and slip != want), "")
        first_wrong = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
        raise AssertionError(f"{what}: entry {first_wrong} is {got[first_wrong]}, expected {want[first_wrong]} "
                             f"(expected list starts {want[:5]}). Hint: "
                             + (specific or "the entries are round(T - k T/S) - 1 for k = 0, ..., S-1, descending."))


def _slipped_step(x_t, eps_hat, abar_t, abar_prev, eta, z, *, prev_is_t=False, direction=True, sigma_in_direction=True,
                  variance_as_std=False, eta_scales=True):
    """The DDIM step with one of the recognised slips switched on (all defaults: the correct step, eq-ddim-step)."""
    a_p = abar_t if prev_is_t else abar_prev
    sigma_tilde = math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
    sigma = (eta if eta_scales else 1.0) * sigma_tilde
    x0_hat = (x_t - math.sqrt(1 - abar_t) * eps_hat) / math.sqrt(abar_t)
    out = math.sqrt(a_p) * x0_hat
    if direction:
        out = out + math.sqrt(max(1 - a_p - (sigma**2 if sigma_in_direction else 0.0), 0.0)) * eps_hat
    return out + (sigma**2 if variance_as_std else sigma) * z


def check_ddim_step_eta(fn) -> None:
    """Exercise ``ex-08-ddim-step``: ``fn(x_t, eps_hat, abar_t, abar_prev, eta, z)`` must return x_{t-1} of the DDIM
    update (chapter 08, eq. ``eq-ddim-step``, with σ_t = η σ̃_t of eq. ``eq-ddim-sigma``), without clipping x̂_0:
    ``x_t``, ``eps_hat`` and ``z`` are tensors of one shape, ``abar_t`` and ``abar_prev`` numbers (ᾱ of the current
    and of the next timestep, ``abar_prev = 1`` at the last step) and ``eta`` a number in [0, 1].

    Tried in float64 with the linear schedule (T = 1000) on adjacent steps, long jumps and the last step, for
    η = 0, 0.5, 1; the reference is :func:`ddpm_lib.ddim.ddim_step` (``clip_denoised=False``) fed the same z."""
    sched = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    for t, t_prev in ((999, 899), (500, 250), (300, 299), (120, 0), (40, -1)):
        abar_t = sched.alphas_cumprod[t].item()
        abar_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        for eta in (0.0, 0.5, 1.0):
            x_t, eps_hat, z = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(3))
            what = f"ddim_step_eta (code index {t} -> {t_prev}, eta = {eta})"
            got = call(fn, what, x_t.clone(), eps_hat.clone(), abar_t, abar_prev, eta, z.clone(),
                       hint="abar_t and abar_prev are Python floats: use math.sqrt (or torch.tensor(...).sqrt()).")
            want, _ = ddim_step(sched, eps_hat, t, t_prev, x_t, eta=eta, variance_noise=z, clip_denoised=False)
            if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
                raise AssertionError(f"{what}: the result is not finite. Hint: the direction term is "
                                     "sqrt(1 - abar_prev - sigma^2) eps_hat with sigma = eta sigma-tilde "
                                     "(eq-ddim-sigma), whose radicand is never negative for eta <= 1.")
            args = (x_t, eps_hat, abar_t, abar_prev, eta, z)
            mistakes = {
                "the update uses abar of the NEXT timestep (abar_prev) in sqrt(abar_prev) x0_hat and in the direction "
                "term; abar_t only enters x0_hat.": _slipped_step(*args, prev_is_t=True),
                "the direction term sqrt(1 - abar_prev - sigma^2) eps_hat is missing: the step re-noises x0_hat with "
                "the predicted noise, not only with fresh noise.": _slipped_step(*args, direction=False),
                "the direction term is sqrt(1 - abar_prev - sigma^2) eps_hat: subtract sigma^2, the part of the "
                "variance that the fresh noise supplies.": _slipped_step(*args, sigma_in_direction=False),
                "sigma is a standard deviation: the noise term is sigma z, not sigma^2 z.":
                    _slipped_step(*args, variance_as_std=True),
                "sigma_t = eta sigma-tilde_t (eq-ddim-sigma): eta scales the noise, eta = 0 gives none.":
                    _slipped_step(*args, eta_scales=False),
            }
            assert_close(got, want, what,
                         "x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, with "
                         "x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t) and sigma = eta sigma-tilde.",
                         mistakes, rtol=1e-9, atol=1e-10)
