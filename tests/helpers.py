"""Plain helpers shared by several test modules (fixtures are in conftest.py).

Statistical tolerances: the mean of N independent draws with variance v is within 5 √(v/N) of its expectation,
and their sample variance within 5 √(2 v²/(N-1)) of v for Gaussian draws, except with probability < 1e-6 each.
"""

import math
import re

import pytest
import torch

from ddpm_lib import predict_v

F64 = dict(dtype=torch.float64)
OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def toy_eps_model(x, t):
    """A fixed, nonlinear function of (x_t, t) standing in for a network (no weights)."""
    tt = t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.sin(1.3 * x + 0.01 * tt) * 0.9 + 0.05 * x


def exact_output(sched, objective: str, x0, t, eps):
    """The output a perfect network of ``objective`` gives at x_t = q_sample(x0, t, eps): ε, x_0 or v."""
    if objective == "pred_noise":
        return eps
    if objective == "pred_x0":
        return x0
    return predict_v(sched, x0, t, eps)


def assert_gaussian_moments(samples: torch.Tensor, mean, var: float) -> None:
    """Per-column sample mean and variance of ``samples`` (N, D) within 5 standard errors of ``mean`` (D,) and
    ``var`` (a number), for Gaussian draws; see the module docstring."""
    n = samples.shape[0]
    mean_err = (samples.mean(0) - mean).abs()
    assert (mean_err <= 5 * math.sqrt(var / n)).all(), (mean_err, 5 * math.sqrt(var / n))
    var_err = (samples.var(0) - var).abs()
    assert (var_err <= 5 * math.sqrt(2 * var**2 / (n - 1))).all(), (var_err, var)


def wrong(fn, **kwargs):
    """``fn`` with some of its keyword switches set: a reference solution turned into a plausible wrong answer."""
    return lambda *args: fn(*args, **kwargs)


def exercise_check_tests(accepted, rejected):
    """The two tests every chapter's exercise checks (``ddpm_lib.exercises``) get: each check accepts its reference
    solution(s), and rejects each plausible wrong answer with a hint that names the slip.

    ``accepted``: pairs (check, reference solution); ``rejected``: triples (check, wrong answer, a phrase the
    check's message must contain). Returns the two test functions; bind them to module-level names so that pytest
    collects them.
    """

    @pytest.mark.parametrize("check, solution", accepted,
                             ids=[f"{c.__name__}: {getattr(s, '__name__', 'reference')}" for c, s in accepted])
    def test_the_reference_solution_passes(check, solution):
        check(solution)

    @pytest.mark.parametrize("check, answer, hint", rejected, ids=[f"{c.__name__}: {h}" for c, _, h in rejected])
    def test_plausible_wrong_answers_are_rejected_with_a_hint(check, answer, hint):
        with pytest.raises(AssertionError, match=re.escape(hint)):
            check(answer)

    return test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint
