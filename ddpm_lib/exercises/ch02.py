"""Checks for the code exercises of chapter 02 (the evidence lower bound), on the exact Gaussian test bed of
:mod:`ddpm_lib.exact`."""

from __future__ import annotations

import torch

from .. import exact
from ..likelihood import gaussian_log_density
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["check_model_marginals", "check_log_weight"]


def _reverse_processes():
    """Reverse processes of the test bed that the checks try: three variances, both priors, a scaled variance."""
    for sched in (NoiseSchedule.cosine(20), NoiseSchedule.linear(7, beta_start=0.05, beta_end=0.4)):
        for variance in exact.REVERSE_VARIANCES:
            yield sched, variance, exact.true_reverse_process(sched, 0.3, 0.5, variance=variance)
        yield sched, "exact prior", exact.true_reverse_process(sched, -0.4, 0.8, prior="exact")
        yield sched, "variance x 1.7", exact.true_reverse_process(sched, 0.3, 0.5, variance_scale=1.7)


def _moments_mistakes(rev) -> dict:
    """The moments that plausible slips give (hint -> (means, variances) stacked into one (2, T+1) tensor)."""
    T = rev.coef.numel()
    no_square, shifted = torch.empty(2, T + 1, dtype=torch.float64), torch.empty(2, T + 1, dtype=torch.float64)
    no_square[:, T] = shifted[:, T] = torch.tensor([rev.prior_mean, rev.prior_variance])
    for t in range(T, 0, -1):
        no_square[0, t - 1] = rev.coef[t - 1] * no_square[0, t] + rev.offset[t - 1]
        no_square[1, t - 1] = rev.coef[t - 1] * no_square[1, t] + rev.variance[t - 1]
        k = min(t, T - 1)  # the step index one too high
        shifted[0, t - 1] = rev.coef[k] * shifted[0, t] + rev.offset[k]
        shifted[1, t - 1] = rev.coef[k] ** 2 * shifted[1, t] + rev.variance[k]
    return {"a variance is multiplied by the square of the coefficient: v_{t-1} = a_t^2 v_t + sigma_t^2.": no_square,
            "the step from x_t to x_{t-1} is rev.coef[t - 1], rev.offset[t - 1], rev.variance[t - 1] "
            "(the paper's step t is index t - 1).": shifted}


def check_model_marginals(fn) -> None:
    """Exercise ``ex-02-model-marginals``: ``fn(rev)`` must return the means and the variances of the model's
    marginals p(x_t), t = 0..T, two tensors of shape (T+1,), by running eq. ``eq-model-marginal`` from the prior.
    The reference is :func:`ddpm_lib.exact.model_marginals`."""
    for sched, name, rev in _reverse_processes():
        what = f"model_marginals on a {sched.T}-step test bed ({name})"
        got = call(fn, what, rev)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise AssertionError(f"{what}: return a pair (means, variances), got {type(got).__name__}")
        want = exact.model_marginals(rev)
        assert_close(torch.stack([torch.as_tensor(g, dtype=torch.float64) for g in got]), torch.stack(want), what,
                     "start at (rev.prior_mean, rev.prior_variance) at t = T and step down to t = 0 with "
                     "m_{t-1} = a_t m_t + b_t, v_{t-1} = a_t^2 v_t + sigma_t^2.", _moments_mistakes(rev))


def check_log_weight(fn) -> None:
    """Exercise ``ex-02-log-weight``: ``fn(xs, sched, rev)`` must return, for each forward trajectory x_{0:T}
    (a row of ``xs``), log p_θ(x_{0:T}) - log q(x_{1:T} | x_0): the log importance weight of eq.
    ``eq-marginal-likelihood``, whose average is the ELBO. The reference is the sum of the first form's terms,
    :func:`ddpm_lib.exact.first_form_terms`."""
    g = torch.Generator().manual_seed(0)
    for sched, name, rev in _reverse_processes():
        xs = exact.sample_trajectories(0.7, sched, 64, generator=g)
        what = f"log_weight on 64 trajectories of a {sched.T}-step test bed ({name})"
        got = call(fn, what, xs, sched, rev)
        want = exact.first_form_terms(xs, sched, rev)["total"]
        prior = gaussian_log_density(xs[:, -1], torch.tensor(rev.prior_mean, dtype=torch.float64),
                                     rev.prior_variance)
        mistakes = {"the weight is p/q: log p(x_{0:T}) minus log q(x_{1:T} | x_0), not the other way round.": -want,
                    "log p(x_{0:T}) includes the prior term log p(x_T).": want - prior}
        assert_close(got, want, what,
                     "sum log N(x_{t-1}; a_t x_t + b_t, sigma_t^2) over t = 1..T, add log p(x_T), subtract "
                     "log N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) over t = 1..T.", mistakes, rtol=1e-9, atol=1e-9)
