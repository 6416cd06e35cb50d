"""The checks of the code exercises of chapter 07 (ddpm_lib.exercises.ch07): each accepts the reference solution of the
chapter and rejects the wrong answers a student would plausibly give, with a hint (issue 13)."""

from functools import partial

import pytest
import torch

from ddpm_lib.exercises import ch07

from helpers import exercise_check_tests


# --- written as a reader would, each slip behind a keyword ---------------------------------------------------
def to_uint8(x, clamp=True, rounding=True, scale=255, unnormalize=True):
    u = x / 2 + 0.5 if unnormalize else x
    u = u.clamp(0, 1) if clamp else u
    v = u * scale
    v = v.round() if rounding else v
    # .long() first: float -> uint8 out of range is undefined in C; int64 -> uint8 wraps modulo 256, as it does on
    # the usual CPUs without it
    return v.long().to(torch.uint8) if not clamp or scale != 255 else v.to(torch.uint8)


def to_uint8_float(x):
    return (x / 2 + 0.5).clamp(0, 1).mul(255).round()          # forgets the conversion


def to_uint8_alternative(x):
    # another correct form: ((x + 1) * 127.5), with the clamp on the 0..255 scale
    return ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def level_probs(mu, sigma, K, width="2/(K-1)", open_edges=True, levels="[-1, 1]"):
    k = torch.arange(K, dtype=torch.float64)
    x = -1 + 2 * k / (K - 1) if levels == "[-1, 1]" else k / (K - 1)
    half = {"2/(K-1)": 1 / (K - 1), "2/K": 1 / K, "half-width 2/(K-1)": 2 / (K - 1)}[width]
    normal = torch.distributions.Normal(mu[:, None], sigma[:, None])
    upper, lower = normal.cdf(x + half), normal.cdf(x - half)
    if open_edges:
        upper[:, -1], lower[:, 0] = 1.0, 0.0
    return upper - lower


def level_probs_erf(mu, sigma, K):
    # another correct form: with math.erf, one pixel and one level at a time
    import math
    Phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    d = 1 / (K - 1)
    rows = []
    for m, s in zip(mu.tolist(), sigma.tolist()):
        row = []
        for k in range(K):
            xk = -1 + 2 * k / (K - 1)
            row.append((1.0 if k == K - 1 else Phi((xk + d - m) / s)) - (0.0 if k == 0 else Phi((xk - d - m) / s)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


# check: (the reference solutions, [(a plausible wrong answer, a phrase of the hint the check must give), ...])
CASES = {
    ch07.check_to_uint8: ([to_uint8, to_uint8_alternative], [
        (partial(to_uint8, clamp=False), "wraps around modulo 256"),
        (partial(to_uint8, rounding=False), "truncates towards zero"),
        (partial(to_uint8, scale=256), "scale by 255, not 256"),
        (partial(to_uint8, scale=256, rounding=False), "scale by 255, not 256"),
        (partial(to_uint8, unnormalize=False), "map [-1, 1] to [0, 1] first"),
        (to_uint8_float, "expected torch.uint8")]),
    ch07.check_level_probs: ([level_probs, level_probs_erf], [
        (partial(level_probs, width="2/K"), "not 2/K"),
        (partial(level_probs, width="half-width 2/(K-1)"), "half-width of a bin"),
        (partial(level_probs, open_edges=False), "extends to -infinity"),
        (partial(level_probs, levels="[0, 1]"), "not k/(K-1) in [0, 1]")]),
}
REFERENCES = [(check, ref) for check, (refs, _) in CASES.items() for ref in refs]
WRONG = [(check, answer, hint) for check, (_, answers) in CASES.items() for answer, hint in answers]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests(REFERENCES, WRONG)


def test_an_answer_that_raises_is_reported_as_a_failed_check():
    with pytest.raises(AssertionError, match="raised"):
        ch07.check_level_probs(lambda mu, sigma, K: mu @ sigma[:3])


def test_a_wrong_shape_is_reported():
    with pytest.raises(AssertionError, match="shape"):
        ch07.check_to_uint8(lambda x: to_uint8(x)[:, 0])
    with pytest.raises(AssertionError, match="shape"):
        ch07.check_level_probs(lambda mu, sigma, K: level_probs(mu, sigma, K).T)


def test_the_checks_leave_the_global_random_state_alone():
    state = torch.get_rng_state()
    ch07.check_to_uint8(to_uint8)
    ch07.check_level_probs(level_probs)
    assert torch.equal(state, torch.get_rng_state())
