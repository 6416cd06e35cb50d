"""Chapter 01 (``notebooks/01_forward_process``): the forward process, derived and checked in SymPy.

Every function builds the expressions of one derivation, checks each step with
:func:`~ddpm_lib.symbolic._common.check_equal` (raising ``AssertionError`` naming the step when a check fails)
and returns the verified result as SymPy expressions. The notebook shows the steps;
``tests/test_symbolic_forward_elbo.py`` evaluates the results against :mod:`ddpm_lib.schedules`.

Symbols: the book's set (:mod:`ddpm_lib.symbolic._common`), per dimension since the forward process acts on each
coordinate independently: ``alpha_t`` = α_t, ``beta_t`` = β_t, ``alphabar_t`` = ᾱ_t = Π_{s≤t} α_s,
``alphabar_prev`` = ᾱ_{t-1}, ``x_0``, ``x_prev`` = x_{t-1}. The relations β_t = 1 - α_t and ᾱ_t = α_t ᾱ_{t-1}
enter through ``in_primitives``.

Equation labels refer to chapter 01: ``eq-forward-chain``, ``eq-forward-step``,
``eq-unit-variance-condition``, ``eq-variance-recursion``, ``eq-alpha-bar``, ``eq-sum-gaussians``,
``eq-merge-gaussians``, ``eq-q-xt-x0``, ``eq-linear-schedule``, ``eq-linear-sum-beta``,
``eq-cosine-schedule``, ``eq-sigmoid-schedule``, ``eq-snr``, ``eq-log-snr``, ``eq-cosine-log-snr``,
``eq-noise-ratio``, ``eq-prior-kl``.
"""

from __future__ import annotations

import functools

from typing import NamedTuple

import sympy as sp
from sympy.stats import E, Normal, characteristic_function, variance

from ._common import (alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, gaussian_log_density, in_primitives,
                      x_0, x_prev)

__all__ = [
    "forward_step",
    "forward_step_variance",
    "sum_of_independent_gaussians",
    "merge_two_gaussians",
    "chapman_kolmogorov",
    "q_xt_given_x0_induction",
    "q_xt_given_x0_unrolled",
    "snr_relations",
    "linear_sum_beta",
    "cosine_schedule",
    "prior_kl",
    "prior_kl_numeric",
]


# --- eq-forward-step, eq-variance-recursion, eq-unit-variance-condition -------------------------------
class ForwardStep(NamedTuple):
    mean: sp.Expr  # E[x_t | x_{t-1}] = √α_t x_{t-1}
    variance: sp.Expr  # Var[x_t | x_{t-1}] = β_t


def forward_step() -> ForwardStep:
    """Moments of q(x_t | x_{t-1}) from x_t = √α_t x_{t-1} + √(1-α_t) ε (chapter 01, eq. ``eq-forward-step``).

    The conditional variance is the forward-process variance β_t = 1 - α_t.
    """
    eps = Normal("epsilon", 0, 1)
    x_t = sp.sqrt(alpha_t) * x_prev + sp.sqrt(1 - alpha_t) * eps
    mean = check_equal(E(x_t), sp.sqrt(alpha_t) * x_prev, "E[x_t | x_{t-1}] = sqrt(alpha_t) x_{t-1}")
    var = check_equal(variance(x_t), 1 - alpha_t, "Var[x_t | x_{t-1}] = 1 - alpha_t")
    check_equal(var, in_primitives(beta_t), "Var[x_t | x_{t-1}] = beta_t")
    return ForwardStep(mean=mean, variance=beta_t)


class StepVariance(NamedTuple):
    general: sp.Expr  # Var(a x_{t-1} + b ε) = a² v + b²
    b_for_unit_variance: sp.Expr  # b = √(1 - a²)
    ddpm: sp.Expr  # α_t v + 1 - α_t
    deviation: sp.Expr  # Var(x_t) - 1 = α_t (v - 1)
    a: sp.Symbol
    b: sp.Symbol
    v: sp.Symbol


def forward_step_variance() -> StepVariance:
    """Why the coefficients √α_t and √(1-α_t) keep the variance at 1 (chapter 01, eqs.
    ``eq-variance-recursion`` and ``eq-unit-variance-condition``).

    With x_{t-1} of variance v independent of ε ~ N(0, 1), x_t = a x_{t-1} + b ε has variance
    a² v + b²; it stays 1 when v = 1 exactly when a² + b² = 1, i.e. b = √(1 - a²). DDPM's choice
    a = √α_t gives Var(x_t) = α_t v + 1 - α_t, so Var(x_t) - 1 = α_t (Var(x_{t-1}) - 1): any
    deviation from 1 shrinks by α_t per step.
    """
    a, b, v = sp.symbols("a b v", positive=True)
    x_prev_rv = Normal("x_prev", 0, sp.sqrt(v))
    eps = Normal("epsilon", 0, 1)
    general = check_equal(variance(a * x_prev_rv + b * eps), a**2 * v + b**2, "Var(a x + b eps) = a^2 v + b^2")
    solutions = sp.solve(sp.Eq(general.subs(v, 1), 1), b)
    if len(solutions) != 1:
        raise AssertionError(f"step 'a^2 + b^2 = 1' failed: expected one positive b, got {solutions}")
    b_unit = check_equal(solutions[0], sp.sqrt(1 - a**2), "b = sqrt(1 - a^2)")
    ddpm = general.subs({a: sp.sqrt(alpha_t), b: sp.sqrt(1 - alpha_t)})
    check_equal(ddpm, alpha_t * v + 1 - alpha_t, "Var(x_t) = alpha_t v + 1 - alpha_t")
    check_equal(ddpm.subs(v, 1), sp.Integer(1), "Var(x_{t-1}) = 1 implies Var(x_t) = 1")
    deviation = check_equal(ddpm - 1, alpha_t * (v - 1), "Var(x_t) - 1 = alpha_t (Var(x_{t-1}) - 1)")
    return StepVariance(
        general=general, b_for_unit_variance=b_unit, ddpm=ddpm, deviation=deviation, a=a, b=b, v=v
    )


# --- eq-sum-gaussians, eq-merge-gaussians ----------------------------------------------------------------
class GaussianMoments(NamedTuple):
    mean: sp.Expr
    variance: sp.Expr


def sum_of_independent_gaussians() -> GaussianMoments:
    """N(m1, s1²) + N(m2, s2²) = N(m1 + m2, s1² + s2²) for independent summands (chapter 01,
    eq. ``eq-sum-gaussians``).

    Proof by characteristic functions: φ_{X+Y} = φ_X φ_Y for independent X, Y, and the product of
    two Gaussian characteristic functions is the characteristic function of the Gaussian with the
    summed mean and variance; a characteristic function determines the distribution.
    """
    m1, m2 = sp.symbols("m_1 m_2", real=True)
    s1, s2 = sp.symbols("s_1 s_2", positive=True)
    u = sp.Symbol("u", real=True)
    phi_x = characteristic_function(Normal("X", m1, s1))(u)
    phi_y = characteristic_function(Normal("Y", m2, s2))(u)
    phi_sum = characteristic_function(Normal("S", m1 + m2, sp.sqrt(s1**2 + s2**2)))(u)
    check_equal(sp.expand(sp.powsimp(phi_x * phi_y)), sp.expand(phi_sum), "phi_X phi_Y = phi_{N(m1+m2, s1^2+s2^2)}")
    return GaussianMoments(mean=m1 + m2, variance=s1**2 + s2**2)


class MergedGaussians(NamedTuple):
    x_t: sp.Expr  # the expression √α_t(√ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε_1) + √(1-α_t) ε_2
    mean: sp.Expr  # √ᾱ_t x_0
    variance: sp.Expr  # 1 - ᾱ_t


def merge_two_gaussians() -> MergedGaussians:
    """Merge the two noises of one step of the induction (chapter 01, eq. ``eq-merge-gaussians``).

    √α_t (√ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε_1) + √(1-α_t) ε_2 with independent ε_1, ε_2 ~ N(0, 1) has
    mean √ᾱ_t x_0 and variance α_t(1-ᾱ_{t-1}) + 1 - α_t = 1 - ᾱ_t where ᾱ_t = α_t ᾱ_{t-1}; it is
    Gaussian by :func:`sum_of_independent_gaussians`, so it equals √ᾱ_t x_0 + √(1-ᾱ_t) ε.
    """
    eps1, eps2 = Normal("epsilon_1", 0, 1), Normal("epsilon_2", 0, 1)
    x_t = sp.sqrt(alpha_t) * (sp.sqrt(alphabar_prev) * x_0 + sp.sqrt(1 - alphabar_prev) * eps1) + sp.sqrt(1 - alpha_t) * eps2
    abar = in_primitives(alphabar_t)  # ᾱ_t = α_t ᾱ_{t-1}
    check_equal(E(x_t), sp.sqrt(abar) * x_0, "E[x_t | x_0] = sqrt(alphabar_t) x_0")
    noise_var = check_equal(
        variance(x_t), alpha_t * (1 - alphabar_prev) + (1 - alpha_t), "Var = alpha_t (1 - alphabar_{t-1}) + 1 - alpha_t"
    )
    check_equal(noise_var, 1 - abar, "Var[x_t | x_0] = 1 - alpha_t alphabar_{t-1}")
    sum_of_independent_gaussians()  # the merged noise is Gaussian
    return MergedGaussians(x_t=x_t, mean=sp.sqrt(alphabar_t) * x_0, variance=1 - alphabar_t)


def chapman_kolmogorov() -> GaussianMoments:
    """Integrate the intermediate state out of two steps of the chain (chapter 01, eq. ``eq-forward-chain``):
    ∫ q(x_2 | x_1) q(x_1 | x_0) dx_1 = N(x_2; √(α_1 α_2) x_0, α_2 β_1 + β_2) = N(x_2; √ᾱ_2 x_0, 1 - ᾱ_2).

    This is the density-level version of :func:`merge_two_gaussians`: SymPy computes the Gaussian
    integral over x_1 (about 10 s). Returns the moments of x_2 given x_0.
    """
    r1, r2 = sp.symbols("r_1 r_2", positive=True)  # √α_1, √α_2
    b1, b2 = sp.symbols("beta_1 beta_2", positive=True)
    x1, x2 = sp.symbols("x_1 x_2", real=True)
    pdf = lambda x, m, v: sp.exp(gaussian_log_density(x, m, v))  # noqa: E731
    marginal = sp.integrate(pdf(x2, r2 * x1, b2) * pdf(x1, r1 * x_0, b1), (x1, -sp.oo, sp.oo))
    target = pdf(x2, r1 * r2 * x_0, r2**2 * b1 + b2)
    check_equal(sp.simplify((marginal / target).rewrite(sp.erf)), sp.Integer(1), "integral over x_1 of the chain")
    # with β_s = 1 - α_s the variance is 1 - α_1 α_2
    var = check_equal(
        (r2**2 * b1 + b2).subs({b1: 1 - r1**2, b2: 1 - r2**2}), 1 - r1**2 * r2**2, "alpha_2 beta_1 + beta_2"
    )
    return GaussianMoments(mean=r1 * r2 * x_0, variance=var)


# --- eq-q-xt-x0 -----------------------------------------------------------------------------------------
def q_xt_given_x0_induction() -> GaussianMoments:
    """q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I), proved by induction on t (chapter 01, eq. ``eq-q-xt-x0``).

    Base case t = 1: ᾱ_1 = α_1 (ᾱ_0 = 1, the empty product), and the closed form is the single step
    x_1 = √α_1 x_0 + √(1-α_1) ε. Inductive step: if x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε̄ with ε̄
    independent of the new ε_t, then one step of eq. ``eq-forward-step`` gives the closed form at t
    (:func:`merge_two_gaussians`). Returns mean √ᾱ_t x_0 and variance 1 - ᾱ_t.
    """
    closed_mean = lambda alphabar: sp.sqrt(alphabar) * x_0  # noqa: E731
    closed_var = lambda alphabar: 1 - alphabar  # noqa: E731
    # base case: t = 1, ᾱ_0 = 1 so ᾱ_1 = α_1 · 1; compare with one step of the chain from x_0
    step = forward_step()
    alphabar_1 = alpha_t * 1
    check_equal(step.mean.subs(x_prev, x_0), closed_mean(alphabar_1), "base case: mean of x_1")
    check_equal(in_primitives(step.variance), closed_var(alphabar_1), "base case: variance of x_1")
    # inductive step: hypothesis at t-1 (ᾱ_{t-1}) ⇒ claim at t (ᾱ_t = α_t ᾱ_{t-1})
    eps_bar, eps = Normal("epsilon_bar", 0, 1), Normal("epsilon", 0, 1)
    x_prev_rv = closed_mean(alphabar_prev) + sp.sqrt(closed_var(alphabar_prev)) * eps_bar  # hypothesis
    x_t_rv = sp.sqrt(alpha_t) * x_prev_rv + sp.sqrt(1 - alpha_t) * eps  # eq-forward-step
    check_equal(E(x_t_rv), closed_mean(in_primitives(alphabar_t)), "inductive step: mean")
    check_equal(variance(x_t_rv), closed_var(in_primitives(alphabar_t)), "inductive step: variance")
    merge_two_gaussians()  # the two noises merge into one Gaussian
    return GaussianMoments(mean=closed_mean(alphabar_t), variance=closed_var(alphabar_t))


class UnrolledChain(NamedTuple):
    alphas: tuple  # α_1..α_n
    coefficients: tuple  # x_n = c_0 x_0 + Σ_k c_k ε_k: (c_0, c_1, ..., c_n)
    mean: sp.Expr
    variance: sp.Expr


def q_xt_given_x0_unrolled(n: int) -> UnrolledChain:
    """Unroll n steps of the chain with n independent noises and check eq. ``eq-q-xt-x0`` directly.

    x_n = (Π_k √α_k) x_0 + Σ_k (√(1-α_k) Π_{j>k} √α_j) ε_k, so the mean is √ᾱ_n x_0 and the variance
    Σ_k (1-α_k) Π_{j>k} α_j telescopes to 1 - Π_k α_k = 1 - ᾱ_n.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    alphas = sp.symbols(f"alpha_1:{n + 1}", positive=True)
    eps = sp.symbols(f"epsilon_1:{n + 1}", real=True)
    x = x_0
    for alpha_k, eps_k in zip(alphas, eps):
        x = sp.sqrt(alpha_k) * x + sp.sqrt(1 - alpha_k) * eps_k
    x = sp.expand(x)
    coefficients = (x.coeff(x_0),) + tuple(x.coeff(e) for e in eps)
    # nothing else is left in x: it is linear in x_0 and the noises
    check_equal(x, coefficients[0] * x_0 + sum(c * e for c, e in zip(coefficients[1:], eps)), "x_n is linear")
    alphabar_n = sp.Mul(*alphas)
    mean = check_equal(coefficients[0] * x_0, sp.sqrt(alphabar_n) * x_0, f"mean of x_{n}")
    var = check_equal(sum(c**2 for c in coefficients[1:]), 1 - alphabar_n, f"variance of x_{n}")
    return UnrolledChain(alphas=alphas, coefficients=coefficients, mean=mean, variance=sp.expand(var))


# --- eq-snr, eq-log-snr, eq-noise-ratio -----------------------------------------------------------------
class SNRRelations(NamedTuple):
    snr: sp.Expr  # ᾱ_t / (1 - ᾱ_t)
    log_snr: sp.Expr  # λ_t = log ᾱ_t - log(1 - ᾱ_t)
    alphabar_from_log_snr: sp.Expr  # ᾱ_t = sigmoid(λ_t)
    one_minus_alphabar_from_log_snr: sp.Expr  # 1 - ᾱ_t = sigmoid(-λ_t)
    dsnr_dalphabar: sp.Expr  # 1 / (1 - ᾱ_t)² > 0
    noise_ratio: sp.Expr  # (1 - ᾱ_t)/(1 - ᾱ_{t-1}) = 1 + SNR_{t-1} β_t
    snr_ratio: sp.Expr  # SNR_t / SNR_{t-1} = α_t / (1 + SNR_{t-1} β_t)
    lam: sp.Symbol


def snr_relations() -> SNRRelations:
    """Signal-to-noise ratio of q(x_t | x_0) and its logarithm (chapter 01, eqs. ``eq-snr``,
    ``eq-log-snr``, ``eq-noise-ratio``).

    SNR_t = ᾱ_t/(1-ᾱ_t) (signal power ᾱ_t x_0² per unit x_0², noise power 1-ᾱ_t); ᾱ_t = σ(λ_t) with
    λ_t = log SNR_t and σ the logistic sigmoid; SNR is increasing in ᾱ_t, so it falls with t.
    One step multiplies the noise variance by 1 + SNR_{t-1} β_t: while the SNR is large (early steps)
    even a small β_t changes x_t a lot (the argument of source 004 for noise that starts small).
    """
    lam = sp.Symbol("lambda_t", real=True)
    snr = alphabar_t / (1 - alphabar_t)
    log_snr = sp.log(alphabar_t) - sp.log(1 - alphabar_t)
    sigmoid = lambda z: 1 / (1 + sp.exp(-z))  # noqa: E731
    check_equal(sigmoid(log_snr), alphabar_t, "alphabar_t = sigmoid(log SNR_t)")
    check_equal(sigmoid(-log_snr), 1 - alphabar_t, "1 - alphabar_t = sigmoid(-log SNR_t)")
    check_equal(sp.exp(log_snr), snr, "exp(log SNR) = SNR")
    dsnr = check_equal(sp.diff(snr, alphabar_t), 1 / (1 - alphabar_t) ** 2, "dSNR/dalphabar = 1/(1-alphabar)^2")
    # one step: checked in the primitive symbols, with ᾱ_t = α_t ᾱ_{t-1} and β_t = 1 - α_t
    snr_prev = alphabar_prev / (1 - alphabar_prev)
    noise_ratio = 1 + snr_prev * beta_t
    check_equal(in_primitives((1 - alphabar_t) / (1 - alphabar_prev)), in_primitives(noise_ratio),
                "noise ratio = 1 + SNR_{t-1} beta_t")
    snr_ratio = (1 - beta_t) / noise_ratio
    check_equal(in_primitives(snr / snr_prev), in_primitives(snr_ratio), "SNR_t/SNR_{t-1}")
    return SNRRelations(
        snr=snr,
        log_snr=log_snr,
        alphabar_from_log_snr=sigmoid(lam),
        one_minus_alphabar_from_log_snr=sigmoid(-lam),
        dsnr_dalphabar=dsnr,
        noise_ratio=noise_ratio,
        snr_ratio=snr_ratio,
        lam=lam,
    )


# --- schedules: eq-linear-sum-beta, eq-cosine-schedule, eq-cosine-log-snr ----------------------------------
class LinearSumBeta(NamedTuple):
    sum_beta: sp.Expr  # Σ_{s=1}^t β_s for β_s linear from β_1 to β_T
    log_alphabar_bound: sp.Expr  # log ᾱ_t ≤ -Σ β_s
    t: sp.Symbol
    T: sp.Symbol
    beta_1: sp.Symbol
    beta_T: sp.Symbol


def linear_sum_beta() -> LinearSumBeta:
    """For the linear schedule β_s = β_1 + (s-1)(β_T-β_1)/(T-1): Σ_{s≤t} β_s in closed form and the
    bound ᾱ_t ≤ exp(-Σ_{s≤t} β_s) (chapter 01, eq. ``eq-linear-sum-beta``).

    The bound follows from log(1 - β) ≤ -β, whose difference -β - log(1-β) is 0 at β = 0 and has
    derivative β/(1-β) ≥ 0.
    """
    s, t, T = sp.symbols("s t T", positive=True, integer=True)
    b1, bT = sp.symbols("beta_1 beta_T", positive=True)
    beta_s = b1 + (s - 1) * (bT - b1) / (T - 1)
    total = sp.summation(beta_s, (s, 1, t))
    closed = t * b1 + (bT - b1) * t * (t - 1) / (2 * (T - 1))
    check_equal(total, closed, "sum of the linear betas")
    check_equal(closed.subs(t, T), T * (b1 + bT) / 2, "sum over all T steps = T (beta_1 + beta_T)/2")
    beta = sp.Symbol("beta", positive=True)
    gap = -beta - sp.log(1 - beta)  # ≥ 0 on (0, 1)
    check_equal(gap.subs(beta, 0), sp.Integer(0), "-beta - log(1-beta) at beta = 0")
    check_equal(sp.diff(gap, beta), beta / (1 - beta), "d/dbeta (-beta - log(1-beta)) = beta/(1-beta)")
    return LinearSumBeta(sum_beta=closed, log_alphabar_bound=-closed, t=t, T=T, beta_1=b1, beta_T=bT)


class CosineSchedule(NamedTuple):
    alphabar: sp.Expr  # ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 (t/T + s)/(1 + s))
    log_snr: sp.Expr  # log ᾱ(t) - log(1 - ᾱ(t))
    log_snr_unnormalized: sp.Expr  # -2 log tan u(t): the log-SNR of f(t) itself
    t: sp.Symbol
    T: sp.Symbol
    s: sp.Symbol


def cosine_schedule() -> CosineSchedule:
    """The cosine schedule of Nichol & Dhariwal (2021) (chapter 01, eqs. ``eq-cosine-schedule`` and
    ``eq-cosine-log-snr``).

    ᾱ(t) = f(t)/f(0) with f(t) = cos²(u(t)), u(t) = π/2 · (t/T + s)/(1 + s). For f itself the
    log-SNR is exactly -2 log tan u: linear in log tan, which is why its SNR falls smoothly at
    both ends. ``ddpm_lib.cosine_beta_schedule`` uses β_t = 1 - ᾱ(t)/ᾱ(t-1) clipped at 0.999.
    """
    t, T = sp.symbols("t T", positive=True)
    s = sp.Symbol("s", positive=True)
    u = sp.pi / 2 * (t / T + s) / (1 + s)
    f = lambda tt: sp.cos(u.subs(t, tt)) ** 2  # noqa: E731
    alphabar = f(t) / f(0)
    check_equal(alphabar.subs(t, 0), sp.Integer(1), "cosine: alphabar(0) = 1")
    uu = sp.Symbol("u", positive=True)
    snr_f = sp.cos(uu) ** 2 / (1 - sp.cos(uu) ** 2)
    check_equal(snr_f, 1 / sp.tan(uu) ** 2, "cos^2/(1 - cos^2) = cot^2")
    log_snr_f = -2 * sp.log(sp.tan(u))
    log_snr = sp.log(alphabar) - sp.log(1 - alphabar)
    return CosineSchedule(alphabar=alphabar, log_snr=log_snr, log_snr_unnormalized=log_snr_f, t=t, T=T, s=s)


# --- eq-prior-kl ----------------------------------------------------------------------------------------
def prior_kl(bits: bool = False) -> sp.Expr:
    """KL(q(x_T | x_0) ‖ N(0, 1)) per dimension as a closed form in ᾱ_T and x_0 (chapter 01,
    eq. ``eq-prior-kl``): ½ (ᾱ_T (x_0² - 1) - log(1 - ᾱ_T)) nats; with ``bits=True`` divided by log 2.

    Derived as E_{x~q}[log q(x) - log N(x; 0, 1)] with q = N(√ᾱ_T x_0, 1 - ᾱ_T); the symbol used for
    ᾱ_T is ``alphabar_t``. For small ᾱ_T it is ½ ᾱ_T x_0² + ᾱ_T²/4 + O(ᾱ_T³). This is the term L_T of
    the variational bound (chapter 02).
    """
    mean, var = sp.sqrt(alphabar_t) * x_0, 1 - alphabar_t
    x = Normal("x_T", mean, sp.sqrt(var))
    kl = E(gaussian_log_density(x, mean, var) - gaussian_log_density(x, 0, 1))
    closed = (alphabar_t * (x_0**2 - 1) - sp.log(1 - alphabar_t)) / 2
    check_equal(kl, closed, "KL(N(sqrt(ab) x0, 1-ab) || N(0,1))")
    series = sp.series(closed, alphabar_t, 0, 3).removeO()
    check_equal(series, alphabar_t * x_0**2 / 2 + alphabar_t**2 / 4, "series of the prior KL in alphabar_T")
    return closed / sp.log(2) if bits else closed


@functools.lru_cache(maxsize=2)
def _prior_kl_function(bits: bool):
    from sympy.codegen.cfunctions import log1p

    expr = prior_kl(bits=bits).replace(sp.log(1 - alphabar_t), log1p(-alphabar_t))  # accurate for tiny ᾱ_T
    return sp.lambdify((alphabar_t, x_0), expr, modules=["numpy"])


def prior_kl_numeric(alphabar_T, x0, bits: bool = True):
    """Evaluate :func:`prior_kl` (per dimension, bits by default) with torch/numpy arrays or floats.

    The SymPy closed form is lambdified, so this is the chapter-01 formula itself, not a rewrite.
    """
    fn = _prior_kl_function(bool(bits))
    try:  # torch tensors: work in float64 through numpy
        import torch

        if isinstance(alphabar_T, torch.Tensor) or isinstance(x0, torch.Tensor):
            a = torch.as_tensor(alphabar_T, dtype=torch.float64).numpy()
            x = torch.as_tensor(x0, dtype=torch.float64).numpy()
            return torch.as_tensor(fn(a, x), dtype=torch.float64)
    except ImportError:  # pragma: no cover
        pass
    return fn(alphabar_T, x0)
