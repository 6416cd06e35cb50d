"""The checks of the code exercises of chapter 08 (ddpm_lib.exercises.ch08): each accepts the reference solution of the
chapter and rejects the wrong answers a student would plausibly give, with a hint (issue 13)."""

import math
from functools import partial

import numpy as np
import pytest
import torch

from ddpm_lib.exercises import ch08

from helpers import exercise_check_tests


# --- written as a reader would, each slip behind a keyword ----------------------------------------------------
def trailing_timesteps(T, S, rounding="round", minus_one=True, order="down", how="k"):
    if how == "arange":  # diffusers' np.arange(T, 0, -T/S), not cut to S entries
        ts = np.arange(T, 0, -T / S)
    else:
        ts = np.array([T - k * T / S for k in range(S)])
    ts = np.round(ts) if rounding == "round" else np.floor(ts)
    ts = ts - 1 if minus_one else ts
    ts = ts.astype(int).tolist()
    return ts if order == "down" else ts[::-1]


def leading(T, S):
    return [k * (T // S) for k in range(S)][::-1]


def linspace(T, S):
    return torch.linspace(0, T - 1, S).round().long().flip(0)


def ddim_step_eta(x_t, eps_hat, abar_t, abar_prev, eta, z, prev="prev", direction=True, subtract_sigma2=True,
                  noise="std", use_eta=True):
    a_prev = abar_prev if prev == "prev" else abar_t
    sigma = (eta if use_eta else 1.0) * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
    x0_hat = (x_t - math.sqrt(1 - abar_t) * eps_hat) / math.sqrt(abar_t)
    out = math.sqrt(a_prev) * x0_hat
    if direction:
        out = out + math.sqrt(max(1 - a_prev - (sigma**2 if subtract_sigma2 else 0), 0)) * eps_hat
    return out + (sigma if noise == "std" else sigma**2) * z


# check: (the reference solution, [(a plausible wrong answer, a phrase of the hint the check must give), ...])
CASES = {
    ch08.check_trailing_timesteps: (trailing_timesteps, [
        (leading, "this is leading spacing"),
        (linspace, "this is linspace spacing"),
        (partial(trailing_timesteps, minus_one=False), "code indices run from 0 to T-1"),
        (partial(trailing_timesteps, order="up"), "descending order"),
        (partial(trailing_timesteps, rounding="floor"), "lucidrains' time_pairs"),
        (partial(trailing_timesteps, how="arange"), "can give one more")]),
    ch08.check_ddim_step_eta: (ddim_step_eta, [
        (partial(ddim_step_eta, prev="t"), "abar of the NEXT timestep"),
        (partial(ddim_step_eta, direction=False), "direction term sqrt(1 - abar_prev - sigma^2) eps_hat is missing"),
        (partial(ddim_step_eta, subtract_sigma2=False), "subtract sigma^2"),
        (partial(ddim_step_eta, noise="variance"), "not sigma^2 z"),
        (partial(ddim_step_eta, use_eta=False), "eta scales the noise")]),
}
WRONG = [(check, answer, hint) for check, (_, answers) in CASES.items() for answer, hint in answers]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests([(check, reference) for check, (reference, _) in CASES.items()], WRONG)


def test_the_trailing_check_accepts_any_sequence_type():
    for kind in (list, np.array, torch.tensor):
        ch08.check_trailing_timesteps(lambda T, S, kind=kind: kind(trailing_timesteps(T, S)))


def test_the_trailing_check_rejects_non_integers_and_wrong_lengths():
    with pytest.raises(AssertionError, match="must be integers"):
        ch08.check_trailing_timesteps(lambda T, S: [T - k * T / S - 0.5 for k in range(S)])
    with pytest.raises(AssertionError, match="expected S"):
        ch08.check_trailing_timesteps(lambda T, S: trailing_timesteps(T, S)[:-1] if S > 1 else [])


def test_an_answer_that_raises_is_reported_as_a_failed_check():
    with pytest.raises(AssertionError, match="raised"):
        ch08.check_ddim_step_eta(lambda x_t, eps_hat, abar_t, abar_prev, eta, z: abar_t.sqrt())


def test_a_non_finite_step_is_reported():
    def negative_radicand(x_t, eps_hat, abar_t, abar_prev, eta, z):  # torch.sqrt of a negative number: nan
        radicand = torch.tensor(abar_prev - 1 - abar_t, dtype=torch.float64)
        return ddim_step_eta(x_t, eps_hat, abar_t, abar_prev, eta, z) + radicand.sqrt() * eps_hat
    with pytest.raises(AssertionError, match="not finite"):
        ch08.check_ddim_step_eta(negative_radicand)
