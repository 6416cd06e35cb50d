"""The checks of the code exercises of chapters 06 and 09 (ddpm_lib.exercises.ch06, ch09): each accepts the reference
solution of its chapter and rejects the wrong answers a student would plausibly give, with a hint (issue 13)."""

from functools import partial

import pytest
import torch

from ddpm_lib.exercises import ch06, ch09

from helpers import exercise_check_tests


# --- chapter 06: written as a reader would, each slip behind a keyword --------------------------------------
def ancestral_loop(eps_model, sched, x_T, zs, sigma2, order="down", sqrt=True, last_noise=False, alpha="one-step"):
    x = x_T
    ts = list(range(sched.T))
    for t in (ts[::-1] if order == "down" else ts):
        a = sched.alphas[t] if alpha == "one-step" else sched.alphas_cumprod[t]
        mean = (x - sched.betas[t] / (1 - sched.alphas_cumprod[t]).sqrt() * eps_model(x, torch.full((len(x),), t))) \
            / a.sqrt()
        noise = (sigma2[t].sqrt() if sqrt else sigma2[t]) * zs[t]
        x = mean + noise if (t != 0 or last_noise) else mean
    return x


def mixture_posterior_mean(mixture, x_t, alpha_bar, centres="noised", variance="noised", weighted=True,
                           stable=True):
    ab = torch.tensor(alpha_bar, dtype=torch.float64)
    var_t = ab * mixture.stds**2 + (1 - ab)
    mu = ab.sqrt() * mixture.means if centres == "noised" else mixture.means
    v = var_t if variance == "noised" else mixture.stds**2
    log_w = mixture.weights.log() if weighted else torch.zeros_like(mixture.weights)
    log_r = log_w - 0.5 * mixture.dim * v.log() - torch.cdist(x_t, mu) ** 2 / (2 * v)
    r = torch.softmax(log_r, 1) if stable else log_r.exp() / log_r.exp().sum(1, keepdim=True)
    x0_given_k = mixture.means[:, None] + (ab.sqrt() * mixture.stds**2 / var_t)[:, None, None] * (
        x_t[None] - ab.sqrt() * mixture.means[:, None])                            # (K, B, d)
    return torch.einsum("bk,kbd->bd", r, x0_given_k)


# --- chapter 09 ----------------------------------------------------------------------------------------------
def cfg_eps(model, x, t, y, w, combine="cfg", null=True, one_batch=True):
    y_null = torch.full_like(y, model.null_label) if null else y
    if one_batch:
        e_c, e_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null])).chunk(2)
    else:
        e_c, e_u = model(x, t, y), model(x, t, y_null)
    if combine == "swapped":
        return (1 + w) * e_u - w * e_c
    if combine == "guidance_scale":  # diffusers' formula with guidance_scale = w
        return e_u + w * (e_c - e_u)
    return (1 + w) * e_c - w * e_u


def classifier_guided_eps(model, classifier, sched, x, t, y, s, sign=-1, scale=True, log_probs=True, mean=False,
                          reshape=True):
    x = x.detach().requires_grad_(True)
    logits = classifier(x, t)
    chosen = (torch.log_softmax(logits, 1) if log_probs else logits).gather(1, y[:, None])
    g, = torch.autograd.grad(chosen.mean() if mean else chosen.sum(), x)
    c = sched.sqrt_one_minus_alphas_cumprod[t]
    c = c.view(-1, 1) if reshape else c
    return (model(x, t) + sign * (s * c * g if scale else s * g)).detach()


# check: (the reference solution, [(a plausible wrong answer, a phrase of the hint the check must give), ...])
CASES = {
    ch06.check_ancestral_loop: (ancestral_loop, [
        (partial(ancestral_loop, order="up"), "backwards in time"),
        (partial(ancestral_loop, sqrt=False), "is a variance"),
        (partial(ancestral_loop, last_noise=True), "no noise at the last step"),
        (partial(ancestral_loop, alpha="cumulative"), "printed eq. (7)")]),
    ch06.check_mixture_posterior_mean: (mixture_posterior_mean, [
        (partial(mixture_posterior_mean, centres="data"), "noised centres"),
        (partial(mixture_posterior_mean, variance="data"), "variance of x_t given"),
        (partial(mixture_posterior_mean, weighted=False), "its weight"),
        (partial(mixture_posterior_mean, stable=False), "log-sum-exp")]),
    ch09.check_cfg_eps: (cfg_eps, [
        (partial(cfg_eps, combine="swapped"), "not the other way round"),
        (partial(cfg_eps, combine="guidance_scale"), "guidance_scale"),
        (partial(cfg_eps, null=False), "null label"),
        (partial(cfg_eps, one_batch=False), "one call on a batch of 2B")]),
    ch09.check_classifier_guided_eps: (classifier_guided_eps, [
        (partial(classifier_guided_eps, sign=1), "not plus"),
        (partial(classifier_guided_eps, scale=False), "scaled by sqrt"),
        (partial(classifier_guided_eps, log_probs=False), "not the logit"),
        (partial(classifier_guided_eps, mean=True), "divides every gradient"),
        (partial(classifier_guided_eps, reshape=False), "broadcasts silently")]),
}
WRONG = [(check, answer, hint) for check, (_, answers) in CASES.items() for answer, hint in answers]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests([(check, reference) for check, (reference, _) in CASES.items()], WRONG)


def test_an_answer_that_raises_is_reported_as_a_failed_check():
    with pytest.raises(AssertionError, match="raised"):
        ch06.check_ancestral_loop(lambda eps_model, sched, x_T, zs, sigma2: eps_model(x_T))


def test_the_toy_classifier_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    ch09.ToyNoisyClassifier(4, seed=3)
    assert torch.equal(state, torch.get_rng_state())
