"""The checks of chapter 11's code exercises (ddpm_lib.exercises.ch11): each accepts the reference solution of the
chapter and rejects the wrong answers a student would plausibly give, with the hint that names the mistake
(issue 13)."""

import math

import pytest
import torch

from ddpm_lib.exercises import ch11

from helpers import exercise_check_tests, wrong


# --- reference solutions, as the chapter writes them, with switches for the plausible mistakes ---------------------
def heun_step(eps_fn, x_bar, sigma, sigma_next, euler_last=True, at="prediction", half=True, second_sigma="next"):
    d = sigma_next - sigma
    e0 = eps_fn(x_bar, sigma)
    x_e = x_bar + d * e0
    if sigma_next == 0 and euler_last:
        return x_e
    point = x_e if at == "prediction" else x_bar
    e1 = eps_fn(point, sigma_next if second_sigma == "next" else sigma)
    return x_bar + d * (0.5 if half else 1.0) * (e0 + e1)


def dpm_solver_update(x_bar, x0_hat, sigma, sigma_next, x0_last=None, sigma_last=None, order=2, invert_r=False,
                      sign=1.0, in_sigma=False):
    ratio = sigma_next / sigma  # e^{-h}
    d = x0_hat
    if order == 2 and x0_last is not None and sigma_next > 0:
        if in_sigma:
            r = (sigma_last - sigma) / (sigma - sigma_next)
        else:
            r = math.log(sigma_last / sigma) / math.log(sigma / sigma_next)
        r = 1 / r if invert_r else r
        d = (1 + sign * 0.5 / r) * x0_hat - sign * 0.5 / r * x0_last
    return ratio * x_bar + (1 - ratio) * d


def hutchinson(f, x, probes, jacobian=True, grad_ones=False, average=False):
    x = x.detach().requires_grad_(True)
    fx = f(x)
    estimates = []
    for v in probes:
        if not jacobian:
            vj = fx.detach()
        else:
            (vj,) = torch.autograd.grad(fx, x, grad_outputs=torch.ones_like(fx) if grad_ones else v, retain_graph=True)
        estimates.append((vj * v).reshape(x.shape[0], -1).sum(1))
    out = torch.stack(estimates)
    return out.mean(0) if average else out


def dpm_solver_last_second_order(x_bar, x0_hat, sigma, sigma_next, x0_last=None, sigma_last=None):
    """The second-order formula applied on the last step too (h = inf there)."""
    if x0_last is None:
        return dpm_solver_update(x_bar, x0_hat, sigma, sigma_next)
    with torch.no_grad():
        h = math.log(sigma / sigma_next) if sigma_next > 0 else math.inf
        r = math.log(sigma_last / sigma) / h
        ratio = sigma_next / sigma
        return ratio * x_bar + (1 - ratio) * ((1 + 0.5 / r) * x0_hat - 0.5 / r * x0_last) if r > 0 else \
            x0_hat * float("nan")


ACCEPTED = [(ch11.check_heun_step, heun_step), (ch11.check_dpm_solver_update, dpm_solver_update),
            (ch11.check_hutchinson, hutchinson)]


REJECTED = [  # (check, wrong answer, a phrase of the hint it must give)
    (ch11.check_heun_step, wrong(heun_step, euler_last=False), "stays the Euler step"),
    (ch11.check_heun_step, wrong(heun_step, at="start"), "Euler prediction"),
    (ch11.check_heun_step, wrong(heun_step, half=False), "multiply their sum by 1/2"),
    (ch11.check_heun_step, wrong(heun_step, second_sigma="same"), "evaluated at sigma_next"),
    (ch11.check_dpm_solver_update, wrong(dpm_solver_update, order=1), "second order"),
    (ch11.check_dpm_solver_update, wrong(dpm_solver_update, invert_r=True), "not h / h_last"),
    (ch11.check_dpm_solver_update, wrong(dpm_solver_update, sign=-1.0), "sign error"),
    (ch11.check_dpm_solver_update, wrong(dpm_solver_update, in_sigma=True), "lambda = -log"),
    (ch11.check_dpm_solver_update, dpm_solver_last_second_order, "first order: h is infinite"),
    (ch11.check_hutchinson, wrong(hutchinson, jacobian=False), "not vᵀ f"),
    (ch11.check_hutchinson, wrong(hutchinson, grad_ones=True), "column sums"),
    (ch11.check_hutchinson, wrong(hutchinson, average=True), "one estimate per probe"),
]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests(ACCEPTED, REJECTED)


def test_an_answer_that_raises_is_reported():
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        ch11.check_heun_step(lambda eps_fn, x, s, s_next: x / 0 if False else 1 / 0)
