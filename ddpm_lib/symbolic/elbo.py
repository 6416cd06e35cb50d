"""Chapter 02 (``notebooks/02_elbo``): the evidence lower bound, derived in SymPy.

Each step is checked with :func:`~ddpm_lib.symbolic._common.check_equal` (``AssertionError`` naming the step if it
fails); verified results are returned, in the book's symbol set (:mod:`ddpm_lib.symbolic._common`). The float64
evaluation of the exact one-dimensional Gaussian example (data N(μ_0, s_0²), where every term of the bound is known
in closed form) is in :mod:`ddpm_lib.exact`, which needs no SymPy.

Equation labels refer to chapter 02: ``eq-reverse-chain``, ``eq-marginal-likelihood``,
``eq-elbo-jensen``, ``eq-elbo-gap``, ``eq-elbo-first-form``, ``eq-markov-bayes``,
``eq-telescoping``, ``eq-elbo-terms``, ``eq-kl-gaussians-1d``, ``eq-gaussian-data-marginal``,
``eq-true-reverse``, ``eq-optimal-variance-limits``, ``eq-model-marginal``.
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp
from sympy.stats import E, Normal, covariance, variance

from ._common import (alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, gaussian_log_density, in_primitives,
                      x_0, x_prev, x_t)
from .forward import sum_of_independent_gaussians
from .posterior import posterior_closed_form

__all__ = [
    "gaussian_kl_1d",
    "log_concavity",
    "one_step_elbo_gap",
    "markov_bayes_step",
    "telescoped_log_q",
    "elbo_forms_pointwise",
    "gaussian_data_marginal",
    "true_reverse_gaussian",
]


def _quadratic_part(x, mean, var):
    return -((x - mean) ** 2) / (2 * var)


def _assert_same_log_density(lhs: list, rhs: list, step: str):
    """Check Σ log N(lhs) = Σ log N(rhs) for lists of (x, mean, var) triples.

    The exponents (rational functions) are compared with ``simplify`` and the normalising constants
    through the products of the variances, which avoids logarithms of differences like log(1 - α).
    """
    q_l = sum(_quadratic_part(*term) for term in lhs)
    q_r = sum(_quadratic_part(*term) for term in rhs)
    check_equal(sp.cancel(sp.together(q_l - q_r)), sp.Integer(0), f"{step}: exponents")
    v_l = sp.Mul(*(term[2] for term in lhs))
    v_r = sp.Mul(*(term[2] for term in rhs))
    if len(lhs) != len(rhs):
        raise AssertionError(f"step '{step}' failed: {len(lhs)} Gaussian factors on the left, {len(rhs)} on the right")
    check_equal(sp.cancel(sp.together(v_l / v_r)), sp.Integer(1), f"{step}: normalising constants")


# =====================================================================================================
# SymPy derivations
# =====================================================================================================
class GaussianKL(NamedTuple):
    kl: sp.Expr
    m1: sp.Symbol
    v1: sp.Symbol
    m2: sp.Symbol
    v2: sp.Symbol


def gaussian_kl_1d() -> GaussianKL:
    """KL(N(m1, v1) ‖ N(m2, v2)) = ½ (log(v2/v1) + (v1 + (m1 - m2)²)/v2 - 1) (chapter 02,
    eq. ``eq-kl-gaussians-1d``; chapter 03 derives the same formula, eq. ``eq-gauss-kl``).

    Derived as E_{x~N(m1, v1)}[log N(x; m1, v1) - log N(x; m2, v2)]; only the first two moments of x
    enter, because the log-densities are quadratic in x.
    """
    m1, m2 = sp.symbols("m_1 m_2", real=True)
    v1, v2 = sp.symbols("v_1 v_2", positive=True)
    x = Normal("x", m1, sp.sqrt(v1))
    kl = E(gaussian_log_density(x, m1, v1) - gaussian_log_density(x, m2, v2))
    closed = (sp.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1) / 2
    check_equal(sp.expand_log(kl, force=True), sp.expand_log(closed, force=True), "KL between 1-D Gaussians")
    check_equal(closed.subs({m2: m1, v2: v1}), sp.Integer(0), "KL(q || q) = 0")
    return GaussianKL(kl=closed, m1=m1, v1=v1, m2=m2, v2=v2)


def log_concavity() -> sp.Expr:
    """d²/dy² log y = -1/y² < 0: log is concave, the premise of Jensen's inequality
    log E[Y] ≥ E[log Y] used in chapter 02, eq. ``eq-elbo-jensen``."""
    y = sp.Symbol("y", positive=True)
    second = check_equal(sp.diff(sp.log(y), y, 2), -1 / y**2, "d^2/dy^2 log y = -1/y^2")
    if not second.is_negative:
        raise AssertionError("step 'log is concave' failed: -1/y^2 is not negative for y > 0")
    return second


class OneStepGap(NamedTuple):
    log_px0: sp.Expr  # log p(x_0) of the one-step model
    elbo: sp.Expr  # E_{q(x_1|x_0)}[log p(x_0, x_1) - log q(x_1|x_0)]
    gap: sp.Expr  # log p(x_0) - ELBO = KL(q(x_1|x_0) ‖ p(x_1|x_0))
    posterior_mean: sp.Expr  # of p(x_1 | x_0)
    posterior_variance: sp.Expr
    a: sp.Symbol
    b: sp.Symbol
    s2: sp.Symbol


def one_step_elbo_gap() -> OneStepGap:
    """The ELBO of a one-step (T = 1) Gaussian model, exactly (chapter 02, eqs.
    ``eq-marginal-likelihood``, ``eq-elbo-jensen``, ``eq-elbo-gap``).

    Model: p(x_1) = N(0, 1), p(x_0 | x_1) = N(a x_1 + b, s²); forward q(x_1 | x_0) = N(√α x_0, 1 - α).
    Then p(x_0) = N(b, a² + s²) (a sum of independent Gaussians), p(x_1 | x_0) follows from Bayes, and
    log p(x_0) - ELBO equals KL(q(x_1 | x_0) ‖ p(x_1 | x_0)) ≥ 0: the Jensen gap is this KL.
    """
    a, b = sp.symbols("a b", real=True)
    s2 = sp.Symbol("s2", positive=True)
    x1 = sp.Symbol("x_1", real=True)
    # p(x_0) = N(b, a² + s²): x_0 = a x_1 + b + s z with x_1, z independent standard normals
    z1, z = Normal("x_1_rv", 0, 1), Normal("z", 0, 1)
    x0_rv = a * z1 + b + sp.sqrt(s2) * z
    check_equal(E(x0_rv), b, "E[x_0] under p")
    check_equal(variance(x0_rv), a**2 + s2, "Var[x_0] under p")
    sum_of_independent_gaussians()  # ... and x_0 is Gaussian
    log_px0 = gaussian_log_density(x_0, b, a**2 + s2)
    # Bayes: p(x_1 | x_0) = p(x_0 | x_1) p(x_1) / p(x_0) is Gaussian with these moments
    post_var = s2 / (a**2 + s2)
    post_mean = a * (x_0 - b) / (a**2 + s2)
    _assert_same_log_density(
        [(x_0, a * x1 + b, s2), (x1, 0, 1)], [(x1, post_mean, post_var), (x_0, b, a**2 + s2)], "Bayes for p(x_1 | x_0)"
    )
    # ELBO = E_{x_1 ~ q(x_1|x_0)}[log p(x_0|x_1) + log p(x_1) - log q(x_1|x_0)]
    q_mean, q_var = sp.sqrt(alpha_t) * x_0, 1 - alpha_t
    x1_q = Normal("x_1_q", q_mean, sp.sqrt(q_var))
    elbo = E(gaussian_log_density(x_0, a * x1_q + b, s2) + gaussian_log_density(x1_q, 0, 1)
             - gaussian_log_density(x1_q, q_mean, q_var))
    kl = gaussian_kl_1d()
    gap_kl = kl.kl.subs({kl.m1: q_mean, kl.v1: q_var, kl.m2: post_mean, kl.v2: post_var})
    gap = sp.expand(sp.expand_log(log_px0 - elbo, force=True))
    check_equal(gap, sp.expand(sp.expand_log(gap_kl, force=True)), "log p(x_0) - ELBO = KL(q(x_1|x_0) || p(x_1|x_0))")
    return OneStepGap(
        log_px0=log_px0, elbo=elbo, gap=gap_kl, posterior_mean=post_mean, posterior_variance=post_var, a=a, b=b, s2=s2
    )


class PosteriorQ(NamedTuple):
    coef_x0: sp.Expr  # √ᾱ_{t-1} β_t / (1 - ᾱ_t)
    coef_xt: sp.Expr  # √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    variance: sp.Expr  # (1 - ᾱ_{t-1}) β_t / (1 - ᾱ_t)


def _posterior_in_roots(r, g):
    """Chapter 03's q(x_{t-1} | x_t, x_0) = N(mean, variance)
    (:func:`~ddpm_lib.symbolic.posterior.posterior_closed_form`) written with r = √α_t and g = √ᾱ_{t-1}, positive
    symbols, so that no square root is left."""
    to_roots = {alpha_t: r**2, alphabar_prev: g**2}
    return tuple(e.subs(to_roots) for e in posterior_closed_form())


def markov_bayes_step() -> PosteriorQ:
    """q(x_t | x_{t-1}) = q(x_t | x_{t-1}, x_0) = q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0)
    with Gaussian densities (chapter 02, eq. ``eq-markov-bayes``).

    The first equality is the Markov property; the second is Bayes' rule. It holds with
    q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t) of chapter 03 (eqs. ``eq-posterior-mean``,
    ``eq-posterior-variance``), checked here as an identity between the products of densities.
    Returns the coefficients in terms of ``alpha_t`` and ``alphabar_prev``.
    """
    r, g = sp.symbols("r g", positive=True)  # r = √α_t, g = √ᾱ_{t-1}: no square roots left
    post_mean, var = _posterior_in_roots(r, g)
    _assert_same_log_density(
        [(x_t, r * x_prev, 1 - r**2), (x_prev, g * x_0, 1 - g**2)],
        [(x_prev, post_mean, var), (x_t, r * g * x_0, 1 - r**2 * g**2)],
        "q(x_t|x_{t-1}) q(x_{t-1}|x_0) = q(x_{t-1}|x_t,x_0) q(x_t|x_0)",
    )
    mean, var = posterior_closed_form()
    return PosteriorQ(coef_x0=mean.coeff(x_0), coef_xt=mean.coeff(x_t), variance=var)


class TelescopedLogQ(NamedTuple):
    chain: sp.Expr  # Σ_t log q(x_t | x_{t-1})
    telescoped: sp.Expr  # log q(x_T | x_0) + Σ_{t≥2} log q(x_{t-1} | x_t, x_0)
    roots: tuple  # r_t = √α_t
    xs: tuple  # x_0..x_T


def telescoped_log_q(T: int = 3) -> TelescopedLogQ:
    """log q(x_{1:T} | x_0) = log q(x_T | x_0) + Σ_{t=2}^T log q(x_{t-1} | x_t, x_0) for Gaussian
    densities with T independent symbolic α_t (chapter 02, eq. ``eq-telescoping``).

    Replacing every q(x_t | x_{t-1}) with t ≥ 2 by eq. ``eq-markov-bayes`` makes the ratios
    q(x_t | x_0)/q(x_{t-1} | x_0) telescope to q(x_T | x_0)/q(x_1 | x_0).
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    r = sp.symbols(f"r_1:{T + 1}", positive=True)
    xs = sp.symbols(f"x_0:{T + 1}", real=True)
    abar_root = [sp.Integer(1)]  # √ᾱ_t, t = 0..T
    for rt in r:
        abar_root.append(abar_root[-1] * rt)
    lhs = [(xs[t], r[t - 1] * xs[t - 1], 1 - r[t - 1] ** 2) for t in range(1, T + 1)]
    rhs = [(xs[T], abar_root[T] * xs[0], 1 - abar_root[T] ** 2)]
    for t in range(2, T + 1):
        mean, var = _posterior_in_roots(r[t - 1], abar_root[t - 1])
        rhs.append((xs[t - 1], mean.subs({x_0: xs[0], x_t: xs[t]}), var))
    _assert_same_log_density(lhs, rhs, f"telescoping of log q(x_1:{T} | x_0)")
    return TelescopedLogQ(
        chain=sum(gaussian_log_density(*term) for term in lhs),
        telescoped=sum(gaussian_log_density(*term) for term in rhs),
        roots=r,
        xs=xs,
    )


class ELBOForms(NamedTuple):
    log_ratio: sp.Expr  # log p(x_{0:T}) - log q(x_{1:T} | x_0)
    first_form: dict  # reconstruction, prior_matching, consistency (list)
    second_form: dict  # L_T, L_tm1 (list, t = 2..T), L_0: minus these sum to log_ratio
    symbols: dict


def elbo_forms_pointwise(T: int = 4) -> ELBOForms:
    """The two ways of grouping log p(x_{0:T})/q(x_{1:T}|x_0) (chapter 02, eqs. ``eq-elbo-first-form``
    and ``eq-elbo-terms``), checked as identities between log-density symbols for a given T.

    First form: log p(x_0|x_1) + [log p(x_T) - log q(x_T|x_{T-1})]
    + Σ_{t=1}^{T-1} [log p(x_t|x_{t+1}) - log q(x_t|x_{t-1})].
    Second form (after eq. ``eq-telescoping``): -(L_T + Σ_{t=2}^T L_{t-1} + L_0) inside the expectation,
    with L_T ↔ log q(x_T|x_0) - log p(x_T), L_{t-1} ↔ log q(x_{t-1}|x_t,x_0) - log p(x_{t-1}|x_t),
    L_0 ↔ -log p(x_0|x_1).
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an int >= 2, got {T!r}")
    lp_T = sp.Symbol("log p(x_T)")
    lp = {t: sp.Symbol(f"log p(x_{t-1}|x_{t})") for t in range(1, T + 1)}  # reverse steps
    lq = {t: sp.Symbol(f"log q(x_{t}|x_{t-1})") for t in range(1, T + 1)}  # forward steps
    lq_T0 = sp.Symbol("log q(x_T|x_0)")
    lq_post = {t: sp.Symbol(f"log q(x_{t-1}|x_{t},x_0)") for t in range(2, T + 1)}
    log_p_joint = lp_T + sum(lp.values())
    log_q_chain = sum(lq.values())
    log_ratio = log_p_joint - log_q_chain
    # first form: regroup the same sums
    reconstruction = lp[1]
    prior_matching = lp_T - lq[T]
    consistency = [lp[t + 1] - lq[t] for t in range(1, T)]
    check_equal(reconstruction + prior_matching + sum(consistency), log_ratio, "first form regroups the log ratio")
    # second form: log q(x_{1:T}|x_0) = log q(x_T|x_0) + Σ_{t≥2} log q(x_{t-1}|x_t,x_0)  (eq-telescoping)
    log_ratio_telescoped = log_p_joint - (lq_T0 + sum(lq_post.values()))
    L_T = lq_T0 - lp_T
    L_tm1 = [lq_post[t] - lp[t] for t in range(2, T + 1)]
    L_0 = -lp[1]
    check_equal(-(L_T + sum(L_tm1) + L_0), log_ratio_telescoped, "second form regroups the telescoped log ratio")
    return ELBOForms(
        log_ratio=log_ratio,
        first_form={"reconstruction": reconstruction, "prior_matching": prior_matching, "consistency": consistency},
        second_form={"L_T": L_T, "L_tm1": L_tm1, "L_0": L_0},
        symbols={"log_p_T": lp_T, "log_p": lp, "log_q": lq, "log_q_T0": lq_T0, "log_q_post": lq_post},
    )


class DataMarginal(NamedTuple):
    mean: sp.Expr  # √ᾱ_t μ_0
    variance: sp.Expr  # ᾱ_t s_0² + 1 - ᾱ_t
    mu0: sp.Symbol
    s0: sp.Symbol
    alphabar: sp.Symbol


def gaussian_data_marginal() -> DataMarginal:
    """q(x_t) = N(√ᾱ_t μ_0, ᾱ_t s_0² + 1 - ᾱ_t) for data x_0 ~ N(μ_0, s_0²) (chapter 02,
    eq. ``eq-gaussian-data-marginal``); with s_0 = 1 the variance is 1 at every t."""
    mu0 = sp.Symbol("mu_0", real=True)
    s0 = sp.Symbol("s_0", positive=True)
    x0 = Normal("x_0_data", mu0, s0)
    eps = Normal("epsilon", 0, 1)
    xt = sp.sqrt(alphabar_t) * x0 + sp.sqrt(1 - alphabar_t) * eps
    mean = check_equal(E(xt), sp.sqrt(alphabar_t) * mu0, "E[x_t] for Gaussian data")
    var = check_equal(variance(xt), alphabar_t * s0**2 + 1 - alphabar_t, "Var[x_t] for Gaussian data")
    check_equal(var.subs(s0, 1), sp.Integer(1), "unit-variance data keep variance 1")
    sum_of_independent_gaussians()
    return DataMarginal(mean=mean, variance=var, mu0=mu0, s0=s0, alphabar=alphabar_t)


class TrueReverse(NamedTuple):
    mean: sp.Expr  # E[x_{t-1} | x_t]
    variance: sp.Expr  # Var[x_{t-1} | x_t]
    variance_unit_data: sp.Expr  # s_0 = 1: β_t
    variance_point_data: sp.Expr  # s_0 = 0: β̃_t
    posterior_mean_x0: sp.Expr  # E[x_0 | x_t]
    mu0: sp.Symbol
    s0: sp.Symbol


def true_reverse_gaussian() -> TrueReverse:
    """The true reverse conditional q(x_{t-1} | x_t) (not conditioned on x_0) for Gaussian data
    (chapter 02, eqs. ``eq-true-reverse`` and ``eq-optimal-variance-limits``).

    With m_{t-1}, v_{t-1} the moments of q(x_{t-1}) and m_t = √α_t m_{t-1}, v_t = α_t v_{t-1} + β_t:
    q(x_{t-1} | x_t) = N(m_{t-1} + √α_t v_{t-1}/v_t (x_t - m_t), v_{t-1} β_t / v_t) (Bayes, checked).
    Its variance is β_t when s_0 = 1 and β̃_t when s_0 = 0 (Ho et al.'s two choices of σ_t² are
    optimal for these two data sets), and its mean equals μ̃_t(x_t, E[x_0 | x_t]): the posterior
    mean of chapter 03 with x_0 replaced by the optimal denoiser.
    """
    mu0 = sp.Symbol("mu_0", real=True)
    s0 = sp.Symbol("s_0", nonnegative=True)
    r, g = sp.symbols("r g", positive=True)  # r = √α_t, g = √ᾱ_{t-1}
    m_prev, v_prev = g * mu0, g**2 * s0**2 + 1 - g**2  # eq-gaussian-data-marginal at t-1
    m_t, v_t = r * m_prev, r**2 * v_prev + 1 - r**2
    mean = m_prev + r * v_prev / v_t * (x_t - m_t)
    var = v_prev * (1 - r**2) / v_t
    _assert_same_log_density(
        [(x_t, r * x_prev, 1 - r**2), (x_prev, m_prev, v_prev)],
        [(x_prev, mean, var), (x_t, m_t, v_t)],
        "q(x_t|x_{t-1}) q(x_{t-1}) = q(x_{t-1}|x_t) q(x_t)",
    )
    # the two limits of the variance: β_t and chapter 03's β̃_t
    beta = in_primitives(beta_t).subs(alpha_t, r**2)
    post_mean, beta_tilde = _posterior_in_roots(r, g)
    check_equal(var.subs(s0, 1), beta, "s_0 = 1: Var[x_{t-1}|x_t] = beta_t")
    check_equal(var.subs(s0, 0), beta_tilde, "s_0 = 0: Var[x_{t-1}|x_t] = beta_tilde_t")
    # E[x_0 | x_t] by Gaussian conditioning, then μ̃_t(x_t, E[x_0|x_t]) = E[x_{t-1}|x_t]
    s0_pos = sp.Symbol("s_0", positive=True)  # sympy.stats needs a positive standard deviation
    z0, eps = Normal("x_0_data", mu0, s0_pos), Normal("epsilon", 0, 1)
    xt_rv = r * g * z0 + sp.sqrt(1 - r**2 * g**2) * eps
    cov = check_equal(covariance(z0, xt_rv), r * g * s0_pos**2, "Cov(x_0, x_t) = sqrt(alphabar_t) s_0^2")
    cov = cov.subs(s0_pos, s0)
    x0_hat = mu0 + cov / v_t * (x_t - m_t)
    check_equal(post_mean.subs(x_0, x0_hat), mean, "E[x_{t-1}|x_t] = mu_tilde(x_t, E[x_0|x_t])")
    back = {r: sp.sqrt(alpha_t), g: sp.sqrt(alphabar_prev)}
    return TrueReverse(
        mean=mean.subs(back),
        variance=var.subs(back),
        variance_unit_data=beta.subs(back),
        variance_point_data=beta_tilde.subs(back),
        posterior_mean_x0=x0_hat.subs(back),
        mu0=mu0,
        s0=s0,
    )
