"""The checks of the code exercises of chapter 05 (ddpm_lib.exercises.ch05): each accepts the reference solution of the
chapter and rejects the wrong answers a student would plausibly give, with a hint (issue 13)."""

from functools import partial

import pytest
import torch

from ddpm_lib.exercises import ch05

from helpers import exercise_check_tests


# --- written as a reader would, each slip behind a keyword ----------------------------------------------------
def my_p_losses(model, sched, x0, t, noise, objective, sqrt=True, table="alphas_cumprod", target="right",
                reduce="mean", reshape=True, v_sign=1):
    ab = getattr(sched, table)[t].to(x0.dtype)
    if reshape:
        ab = ab.view(-1, *([1] * (x0.ndim - 1)))
    x_t = (ab.sqrt() * x0 + (1 - ab).sqrt() * noise) if sqrt else (ab * x0 + (1 - ab) * noise)
    abar = sched.alphas_cumprod[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    v = v_sign * (abar.sqrt() * noise - (1 - abar).sqrt() * x0)
    y = {"pred_noise": noise, "pred_x0": x0, "pred_v": v}[objective]
    if target == "x0":
        y = x0
    err = (model(x_t, t) - y) ** 2
    return (err.flatten(1).sum(1) if reduce == "sum" else err.flatten(1).mean(1)).mean()


def train_step_with_ema(model, optimizer, loss_fn, shadow, n, decay, order="after", swap=False, warmup="from-0",
                        zero=True):
    def average(shadow):
        if warmup == "none":
            d = decay
        else:
            m = n if warmup == "from-0" else n + 1
            d = 0.0 if m == 0 else min(decay, (1 + m) / (10 + m))
        if swap:
            d = 1 - d
        with torch.no_grad():
            return [d * s + (1 - d) * p for s, p in zip(shadow, model.parameters())]

    if order == "before":
        shadow = average(shadow)
    if zero:
        optimizer.zero_grad()
    loss_fn().backward()
    optimizer.step()
    return shadow if order == "before" else average(shadow)


def p_losses_for_pred_noise_only(model, sched, x0, t, noise, objective):
    return my_p_losses(model, sched, x0, t, noise, "pred_noise")


# check: (the reference solution, [(a plausible wrong answer, a phrase of the hint the check must give), ...])
CASES = {
    ch05.check_p_losses: (my_p_losses, [
        (partial(my_p_losses, sqrt=False), "not the scales"),
        (partial(my_p_losses, table="alphas"), "not the one-step alphas"),
        (partial(my_p_losses, table="alphas_cumprod_prev"), "not alphas_cumprod_prev"),
        (partial(my_p_losses, target="x0"), "not x_0"),
        (partial(my_p_losses, reduce="sum"), "mean, not sum"),
        (partial(my_p_losses, reshape=False), "broadcasts silently"),
        (partial(my_p_losses, v_sign=-1), "sign is flipped"),
        (p_losses_for_pred_noise_only, "the target is x_0, not the noise")]),
    ch05.check_train_step_with_ema: (train_step_with_ema, [
        (partial(train_step_with_ema, swap=True), "multiplies the average"),
        (partial(train_step_with_ema, order="before"), "after optimizer.step()"),
        (partial(train_step_with_ema, warmup="none"), "warm-up"),
        (partial(train_step_with_ema, warmup="from-1"), "the first update (n = 0)"),
        (partial(train_step_with_ema, zero=False), "zero_grad")]),
}
WRONG = [(check, answer, hint) for check, (_, answers) in CASES.items() for answer, hint in answers]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests([(check, reference) for check, (reference, _) in CASES.items()], WRONG)


def test_an_answer_that_raises_is_reported_as_a_failed_check():
    with pytest.raises(AssertionError, match="raised"):
        ch05.check_p_losses(lambda model, sched, x0, t, noise, objective: model(x0))
    with pytest.raises(AssertionError, match="raised"):
        ch05.check_train_step_with_ema(lambda model, optimizer, loss_fn, shadow, n, decay: shadow[99])


def test_an_answer_that_returns_the_wrong_type_is_rejected():
    with pytest.raises(AssertionError, match="list of 2 tensors"):
        ch05.check_train_step_with_ema(lambda model, optimizer, loss_fn, shadow, n, decay: None)


def test_the_ema_check_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    ch05.check_train_step_with_ema(train_step_with_ema)
    assert torch.equal(state, torch.get_rng_state())
