"""The checks of the code exercises of chapters 01-04 (ddpm_lib.exercises.ch01..ch04): each accepts the reference
solution of its chapter and rejects the wrong answers a student would plausibly give (issue 13)."""

import pytest
import torch

from ddpm_lib import exact
from ddpm_lib.exercises import ch01, ch02, ch03, ch04
from ddpm_lib.likelihood import gaussian_log_density

from helpers import exercise_check_tests, wrong


def col(a, t, x):
    """a[t] as a (B, 1, ..., 1) column that broadcasts against the batch x."""
    return a[t].reshape(-1, *([1] * (x.ndim - 1)))


# --- chapter 01 --------------------------------------------------------------------------------------------
def q_sample_by_hand(sched, x_start, t, noise, coef=lambda s: s.alphas_cumprod, reshape=True, root=True):
    ab = col(coef(sched), t, x_start) if reshape else coef(sched)[t]
    scale = (lambda u: u.sqrt()) if root else (lambda u: u)
    return scale(ab) * x_start + scale(1 - ab) * noise


def cosine_betas(T, s=0.008, clip=True, ratio=True):
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * torch.pi / 2) ** 2
    alphabar = f / f[0]
    betas = 1 - alphabar[1:] / alphabar[:-1] if ratio else alphabar[:-1] - alphabar[1:]
    return betas.clamp(max=0.999) if clip else betas


# --- chapter 02 --------------------------------------------------------------------------------------------
def model_marginals(rev, square=True, shift=0):
    T = rev.coef.numel()
    m, v = [rev.prior_mean], [rev.prior_variance]
    for t in range(T, 0, -1):
        k = min(t - 1 + shift, T - 1)
        m.insert(0, float(rev.coef[k] * m[0] + rev.offset[k]))
        v.insert(0, float(rev.coef[k] ** (2 if square else 1) * v[0] + rev.variance[k]))
    return torch.tensor(m, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)


def log_weight(xs, sched, rev, with_prior=True, sign=1):
    log_p = gaussian_log_density(xs[:, :-1], rev.coef * xs[:, 1:] + rev.offset, rev.variance).sum(1)
    if with_prior:
        log_p = log_p + gaussian_log_density(xs[:, -1], torch.tensor(rev.prior_mean, dtype=xs.dtype),
                                             rev.prior_variance)
    log_q = gaussian_log_density(xs[:, 1:], sched.alphas.sqrt() * xs[:, :-1], sched.betas).sum(1)
    return sign * (log_p - log_q)


# --- chapter 03 --------------------------------------------------------------------------------------------
def posterior_mean_variance(sched, x_start, x_t, t, prev=lambda s: s.alphas_cumprod_prev, swap=False):
    a, b, ab, ab_prev = (col(v, t, x_t) for v in (sched.alphas, sched.betas, sched.alphas_cumprod, prev(sched)))
    c0, ct = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
    if swap:
        c0, ct = ct, c0
    return c0 * x_start + ct * x_t, (1 - ab_prev) / (1 - ab) * b


def x0_sample_step(sched, x_t, t, x0_hat, z, clip=True, variance=lambda s: s.posterior_variance, noise_at_0=False):
    x0_hat = x0_hat.clamp(-1, 1) if clip else x0_hat
    mean = sched.posterior_mean_coef1[t] * x0_hat + sched.posterior_mean_coef2[t] * x_t
    if t == 0 and not noise_at_0:
        return mean
    var = variance(sched)[t] if t > 0 else sched.posterior_log_variance_clipped[0].exp()
    return mean + var.sqrt() * z


# --- chapter 04 --------------------------------------------------------------------------------------------
def x0_eps_from_v(sched, x_t, t, v, sign=1, reshape=True):
    c = col(sched.sqrt_alphas_cumprod, t, x_t) if reshape else sched.sqrt_alphas_cumprod[t]
    s = col(sched.sqrt_one_minus_alphas_cumprod, t, x_t) if reshape else sched.sqrt_one_minus_alphas_cumprod[t]
    return c * x_t - sign * s * v, s * x_t + sign * c * v


def eps_sample_step(sched, x_t, t, eps_hat, z, printed=False, sign=1, variance=lambda s: s.posterior_variance):
    a, ab, b = sched.alphas[t], sched.alphas_cumprod[t], sched.betas[t]
    if printed:  # source 000's eq. (7) as printed
        mean = x_t / ab.sqrt() + b / ((1 - ab) * a).sqrt() * eps_hat
    else:
        mean = (x_t - sign * b / (1 - ab).sqrt() * eps_hat) / a.sqrt()
    return mean + (variance(sched)[t].sqrt() * z if t > 0 else 0)


ACCEPTED = [
    (ch01.check_q_sample_by_hand, q_sample_by_hand),
    (ch01.check_cosine_betas, cosine_betas),
    (ch02.check_model_marginals, model_marginals),
    (ch02.check_log_weight, log_weight),
    (ch03.check_posterior_mean_variance, posterior_mean_variance),
    (ch03.check_x0_sample_step, x0_sample_step),
    (ch04.check_x0_eps_from_v, x0_eps_from_v),
    (ch04.check_eps_sample_step, eps_sample_step),
]


REJECTED = [  # (check, wrong answer, a phrase of the hint it must give)
    (ch01.check_q_sample_by_hand, wrong(q_sample_by_hand, reshape=False), "reshape"),  # source 004's line
    (ch01.check_q_sample_by_hand, wrong(q_sample_by_hand, root=False), "square roots"),
    (ch01.check_q_sample_by_hand, wrong(q_sample_by_hand, coef=lambda s: s.alphas), "cumulative product"),
    (ch01.check_q_sample_by_hand, wrong(q_sample_by_hand, coef=lambda s: s.alphas_cumprod_prev), "step t+1"),
    (ch01.check_cosine_betas, wrong(cosine_betas, clip=False), "clip beta at 0.999"),
    (ch01.check_cosine_betas, wrong(cosine_betas, ratio=False), "a ratio"),
    (ch01.check_cosine_betas, lambda T, s: cosine_betas(T + 1, s)[1:], "T + 1 values"),  # t = 1..T+1: off by one
    (ch02.check_model_marginals, wrong(model_marginals, square=False), "square of the coefficient"),
    (ch02.check_model_marginals, wrong(model_marginals, shift=1), "index t - 1"),
    (ch02.check_log_weight, wrong(log_weight, sign=-1), "not the other way round"),
    (ch02.check_log_weight, wrong(log_weight, with_prior=False), "prior term"),
    (ch03.check_posterior_mean_variance, wrong(posterior_mean_variance, swap=True), "swapped"),
    (ch03.check_posterior_mean_variance, wrong(posterior_mean_variance, prev=lambda s: s.alphas_cumprod),
     "alphas_cumprod_prev"),
    (ch03.check_x0_sample_step, wrong(x0_sample_step, clip=False), "clip x0_hat"),
    (ch03.check_x0_sample_step, wrong(x0_sample_step, variance=lambda s: s.betas), "not beta_t"),
    (ch03.check_x0_sample_step, wrong(x0_sample_step, noise_at_0=True), "no noise at the last step"),
    (ch04.check_x0_eps_from_v, wrong(x0_eps_from_v, sign=-1), "sign error"),
    (ch04.check_x0_eps_from_v, wrong(x0_eps_from_v, reshape=False), "reshape"),
    (ch04.check_eps_sample_step, wrong(eps_sample_step, printed=True), "printed eq. (7)"),
    (ch04.check_eps_sample_step, wrong(eps_sample_step, sign=-1), "sign error"),
    (ch04.check_eps_sample_step, wrong(eps_sample_step, variance=lambda s: s.betas), "not beta_t"),
]


test_the_reference_solution_passes, test_plausible_wrong_answers_are_rejected_with_a_hint = \
    exercise_check_tests(ACCEPTED, REJECTED)


def test_a_non_tensor_or_wrongly_shaped_answer_is_rejected():
    with pytest.raises(AssertionError, match="shape"):
        ch01.check_cosine_betas(lambda T, s: cosine_betas(T, s)[:-1])
    with pytest.raises(AssertionError, match="pair"):
        ch02.check_model_marginals(lambda rev: exact.model_marginals(rev)[0])
