"""Chapter 08 (``notebooks/08_ddim``): the DDIM coefficients, solved rather than quoted.

Song et al. (2021) replace the Markov forward chain by a family of non-Markovian processes indexed by σ,

    q_σ(x_{t-1} | x_t, x_0) = N(k x_0 + m x_t, σ² I),

with k and m unknown. The only requirement is that every marginal stays the DDPM one,
q_σ(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I), so that the network trained with L_simple can be reused unchanged.
This module solves that requirement for k and m (two equations: mean and variance), rewrites the mean with
the noise ε, identifies the σ that gives back the DDPM posterior (η = 1) and the deterministic map (η = 0),
and shows that the forward process of the family is Markovian only at η = 1.

Every function checks its steps symbolically and returns the verified expressions; a failed step raises
``AssertionError``. Symbols: the book's set (:mod:`ddpm_lib.symbolic._common`), with σ_t = ``sigma_t``.
``ᾱ_t`` (``alphabar_t``) and ``ᾱ_{t-1}`` (``alphabar_prev``) are independent symbols with
0 < ᾱ_t < ᾱ_{t-1} ≤ 1: the previous step need not be adjacent (a subsequence of timesteps); for the adjacent case
ᾱ_t = α_t ᾱ_{t-1} is substituted (``in_primitives``) and the results are compared with chapter 03's posterior.

Equations (labels of chapter 08): ``eq-ddim-family``, ``eq-ddim-marginal-conditions``, ``eq-ddim-coefficients``,
``eq-ddim-step``, ``eq-ddim-sigma``, ``eq-sigma-hat``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from ._common import (alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, eps, eta, in_primitives, sigma_t, x_0,
                      x_prev, x_t)
from ._common import latex  # noqa: F401  (re-exported: chapters that import only this module print with it)
from .posterior import posterior_closed_form

__all__ = [
    "k",
    "m",
    "marginal_conditions",
    "DDIMCoefficients",
    "solve_ddim_coefficients",
    "ddim_mean_in_eps",
    "sigma_tilde_squared",
    "ddim_sigma_expr",
    "eta_one_is_ddpm_posterior",
    "eta_zero_is_deterministic",
    "forward_x0_coefficient",
    "markovian_sigmas",
    "sigma_hat_squared",
    "sigma_hat_direction_term",
    "ddim_step_numeric",
]

k, m = sp.symbols("k m", real=True)  #: the unknown coefficients of x_0 and x_t in q_σ(x_{t-1} | x_t, x_0)


# --- solving for k and m -----------------------------------------------------------------------
def marginal_conditions():
    """The two equations (as expressions equal to 0) that keep q(x_{t-1} | x_0) the DDPM marginal.

    If x_t | x_0 ~ N(√ᾱ_t x_0, 1-ᾱ_t) and x_{t-1} | x_t, x_0 ~ N(k x_0 + m x_t, σ²), then x_{t-1} | x_0 is
    Gaussian with mean k x_0 + m √ᾱ_t x_0 and variance m²(1-ᾱ_t) + σ² (law of total expectation/variance).
    Matching N(√ᾱ_{t-1} x_0, 1-ᾱ_{t-1}) for every x_0 gives (chapter 08, eq. ``eq-ddim-marginal-conditions``):

        k + m √ᾱ_t = √ᾱ_{t-1},        m² (1-ᾱ_t) + σ² = 1 - ᾱ_{t-1}.
    """
    mean_prev = k * x_0 + m * sp.sqrt(alphabar_t) * x_0
    var_prev = m**2 * (1 - alphabar_t) + sigma_t**2
    mean_eq = sp.expand(mean_prev - sp.sqrt(alphabar_prev) * x_0).coeff(x_0)
    check_equal(sp.expand(mean_prev - sp.sqrt(alphabar_prev) * x_0), mean_eq * x_0,
                "the mean condition is linear in x_0")
    var_eq = var_prev - (1 - alphabar_prev)
    return mean_eq, var_eq


@dataclass
class DDIMCoefficients:
    """k and m of q_σ(x_{t-1} | x_t, x_0) = N(k x_0 + m x_t, σ²), every field verified.

    ``solutions`` holds every (k, m) SymPy finds (two: m = ±...); ``k``, ``m`` are the root with m ≥ 0, the one
    that contains the DDPM posterior (η = 1); ``mean`` is k x_0 + m x_t.
    """

    k: sp.Expr
    m: sp.Expr
    mean: sp.Expr
    solutions: list = field(default_factory=list)


@lru_cache(maxsize=None)
def solve_ddim_coefficients() -> DDIMCoefficients:
    """Solve :func:`marginal_conditions` for k and m (chapter 08, eq. ``eq-ddim-coefficients``).

        m = √(1-ᾱ_{t-1}-σ²) / √(1-ᾱ_t),        k = √ᾱ_{t-1} - √ᾱ_t m.

    Needs σ² ≤ 1-ᾱ_{t-1}. The conditions fix m only up to sign; the negative root also keeps the
    marginals, and :func:`eta_one_is_ddpm_posterior` shows why the positive one is taken.
    The result is cached (SymPy expressions are immutable).
    """
    mean_eq, var_eq = marginal_conditions()
    solutions = sp.solve([mean_eq, var_eq], [k, m], dict=True)
    if len(solutions) != 2:
        raise AssertionError(f"step failed: expected two roots (m = ±...), got {solutions}")
    m_target = sp.sqrt(1 - alphabar_prev - sigma_t**2) / sp.sqrt(1 - alphabar_t)
    k_target = sp.sqrt(alphabar_prev) - sp.sqrt(alphabar_t) * m_target
    # SymPy writes the roots as ±√((ᾱ_{t-1}+σ²-1)/(ᾱ_t-1)), which is ±m_target under the assumptions
    # ᾱ_t < 1 and σ² ≤ 1-ᾱ_{t-1} that it cannot know: compare the squares, then the sign at a valid point.
    point = {alphabar_t: sp.Rational(3, 10), alphabar_prev: sp.Rational(4, 5), sigma_t: sp.Rational(1, 4)}
    found = []
    for sol in solutions:
        check_equal(sol[m] ** 2, m_target**2, "m² = (1-ᾱ_{t-1}-σ²)/(1-ᾱ_t)")
        sign = 1 if sol[m].subs(point) > 0 else -1
        check_equal((sol[m] - sign * m_target).subs(point), 0, "the root is ±m at a numeric point")
        check_equal(sol[k], sp.sqrt(alphabar_prev) - sp.sqrt(alphabar_t) * sol[m], "k = √ᾱ_{t-1} - √ᾱ_t m")
        found.append(sign)
    if sorted(found) != [-1, 1]:
        raise AssertionError(f"step failed: the roots are not m = ±√(1-ᾱ_(t-1)-σ²)/√(1-ᾱ_t): {solutions}")
    for sol in solutions:  # both roots satisfy both conditions
        check_equal(mean_eq.subs(sol), 0, "mean condition")
        check_equal(var_eq.subs(sol), 0, "variance condition")
    return DDIMCoefficients(k_target, m_target, k_target * x_0 + m_target * x_t, solutions)


def ddim_mean_in_eps():
    """The mean k x_0 + m x_t written with the noise ε of x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (eq. ``eq-ddim-step``):

        k x_0 + m x_t = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}-σ²) ε.

    With x_0, ε replaced by the network's x̂_0, ε̂ this is the DDIM update (plus σ z). Returns the right-hand side.
    """
    coeffs = solve_ddim_coefficients()
    lhs = coeffs.mean.subs(x_t, sp.sqrt(alphabar_t) * x_0 + sp.sqrt(1 - alphabar_t) * eps)
    rhs = sp.sqrt(alphabar_prev) * x_0 + sp.sqrt(1 - alphabar_prev - sigma_t**2) * eps
    check_equal(lhs, rhs, "k x_0 + m x_t = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}-σ²) ε")
    return rhs


# --- σ: the DDPM end (η = 1) and the deterministic end (η = 0) ---------------------------------
def sigma_tilde_squared():
    """σ̃_t² = (1-ᾱ_{t-1})/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_{t-1}): the posterior variance of the (skipped) DDPM step."""
    return (1 - alphabar_prev) / (1 - alphabar_t) * (1 - alphabar_t / alphabar_prev)


def ddim_sigma_expr():
    """σ_t = η σ̃_t (chapter 08, eq. ``eq-ddim-sigma``), as implemented by :func:`ddpm_lib.ddim.ddim_sigma`."""
    return eta * sp.sqrt(sigma_tilde_squared())


def _direction_at_sigma_tilde():
    """√(1-ᾱ_{t-1}-σ̃²) in closed form: the radicand is ᾱ_t(1-ᾱ_{t-1})²/(ᾱ_{t-1}(1-ᾱ_t)) (checked), a square of
    non-negative factors, so its root is √ᾱ_t (1-ᾱ_{t-1}) / (√ᾱ_{t-1} √(1-ᾱ_t))."""
    root = sp.sqrt(alphabar_t) * (1 - alphabar_prev) / (sp.sqrt(alphabar_prev) * sp.sqrt(1 - alphabar_t))
    check_equal(1 - alphabar_prev - sigma_tilde_squared(), root**2, "1-ᾱ_{t-1}-σ̃² = ᾱ_t(1-ᾱ_{t-1})²/(ᾱ_{t-1}(1-ᾱ_t))")
    return root


def eta_one_is_ddpm_posterior():
    """At η = 1 the DDIM conditional is the DDPM posterior q(x_{t-1} | x_t, x_0) (chapter 03).

    Checked twice: (i) for any skip, with the skipped step's α = ᾱ_t/ᾱ_{t-1}: σ̃² is the posterior variance of the
    one-step DDPM from ᾱ_{t-1} to ᾱ_t and k, m its posterior-mean coefficients; (ii) for adjacent steps
    (ᾱ_t = α_t ᾱ_{t-1}): σ̃² = β̃_t and k, m are ``posterior_mean_coef1``, ``posterior_mean_coef2`` of chapter 03's
    eq. ``eq-posterior-mean``. Only the root m > 0 matches (the posterior coefficient of x_t is positive).
    Returns ``(k, m, σ̃²)`` of the adjacent case in terms of α_t and ᾱ_{t-1}.
    """
    coeffs = solve_ddim_coefficients()
    m1 = _direction_at_sigma_tilde() / sp.sqrt(1 - alphabar_t)  # m at σ = σ̃, the positive root
    check_equal(m1**2, coeffs.m.subs(sigma_t, sp.sqrt(sigma_tilde_squared())) ** 2, "m(σ̃)² from the solved m")
    k1 = sp.sqrt(alphabar_prev) - sp.sqrt(alphabar_t) * m1
    # (i) general skip: the one-step DDPM with α = ᾱ_t/ᾱ_{t-1} (chapter 03's closed form with that α)
    post_mean, post_var = posterior_closed_form()
    skip_mean, skip_var = (e.subs(alpha_t, alphabar_t / alphabar_prev) for e in (post_mean, post_var))
    check_equal(sigma_tilde_squared(), skip_var, "σ̃² is the posterior variance of the skipped step")
    check_equal(m1, skip_mean.coeff(x_t), "m(σ̃) = the skipped step's posterior coefficient of x_t")
    check_equal(k1, skip_mean.coeff(x_0), "k(σ̃) = the skipped step's posterior coefficient of x_0")
    # (ii) adjacent steps (ᾱ_t = α_t ᾱ_{t-1}) against chapter 03's closed form
    k_adj, m_adj, var_adj = (sp.simplify(in_primitives(e)) for e in (k1, m1, sigma_tilde_squared()))
    check_equal(var_adj, post_var, "σ̃² = β̃_t for adjacent steps")
    check_equal(k_adj, post_mean.coeff(x_0), "k = posterior_mean_coef1")
    check_equal(m_adj, post_mean.coeff(x_t), "m = posterior_mean_coef2")
    check_equal(ddim_sigma_expr().subs(eta, 1) ** 2, sigma_tilde_squared(), "η = 1 in eq-ddim-sigma gives σ̃")
    return k_adj, m_adj, sp.factor(var_adj)


def eta_zero_is_deterministic():
    """At η = 0 (σ = 0): x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε, the same ε as in x_t.

    q_0(x_{t-1} | x_t, x_0) has variance 0: given x_t and the model's x̂_0 the update is a deterministic map, and
    ε̂ is carried unchanged from level to level. Returns ``(k, m)`` at σ = 0.
    """
    coeffs = solve_ddim_coefficients()
    k0, m0 = coeffs.k.subs(sigma_t, 0), coeffs.m.subs(sigma_t, 0)
    check_equal(ddim_sigma_expr().subs(eta, 0), 0, "η = 0 gives σ = 0")
    check_equal(m0, sp.sqrt(1 - alphabar_prev) / sp.sqrt(1 - alphabar_t), "m = √(1-ᾱ_{t-1})/√(1-ᾱ_t) at σ = 0")
    mean0 = (k0 * x_0 + m0 * x_t).subs(x_t, sp.sqrt(alphabar_t) * x_0 + sp.sqrt(1 - alphabar_t) * eps)
    check_equal(mean0, sp.sqrt(alphabar_prev) * x_0 + sp.sqrt(1 - alphabar_prev) * eps,
                "x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε")
    return sp.simplify(k0), sp.simplify(m0)


# --- the forward process of the family is not Markovian ----------------------------------------
def forward_x0_coefficient():
    """The coefficient of x_0 in the mean of q_σ(x_t | x_{t-1}, x_0), by Bayes (σ > 0).

    q_σ(x_t | x_{t-1}, x_0) ∝ q_σ(x_{t-1} | x_t, x_0) q(x_t | x_0): a Gaussian in x_t whose precision is
    m²/σ² + 1/(1-ᾱ_t) and whose mean is [m (x_{t-1} - k x_0)/σ² + √ᾱ_t x_0/(1-ᾱ_t)] / precision. The forward
    process is Markovian only if the coefficient of x_0 vanishes. Returns that coefficient.
    """
    coeffs = solve_ddim_coefficients()
    kk, mm = coeffs.k, coeffs.m
    log_joint = -((x_prev - kk * x_0 - mm * x_t) ** 2) / (2 * sigma_t**2) - (x_t - sp.sqrt(alphabar_t) * x_0) ** 2 / (
        2 * (1 - alphabar_t)
    )
    poly = sp.Poly(sp.expand(log_joint), x_t)
    A, B, _ = poly.all_coeffs()
    mean = sp.expand(-B / (2 * A))
    coef_x0 = sp.simplify(mean.coeff(x_0))
    coef_prev = sp.simplify(mean.coeff(x_prev))
    check_equal(mean, coef_x0 * x_0 + coef_prev * x_prev, "the forward mean is linear in x_0 and x_{t-1}")
    return coef_x0


def markovian_sigmas():
    """The σ > 0 for which q_σ(x_t | x_{t-1}, x_0) does not depend on x_0: only σ = σ̃ (η = 1).

    The x_0 coefficient of :func:`forward_x0_coefficient` is zero iff √ᾱ_t σ² = k m (1-ᾱ_t); SymPy solves
    this for σ² and finds the single root σ̃². For adjacent steps the forward step is then N(√α_t x_{t-1}, β_t):
    the DDPM chain. Every other η gives a non-Markovian forward process with the same marginals.
    Returns ``(condition, root)``: the condition written as √ᾱ_t(1-ᾱ_{t-1}) - √ᾱ_{t-1}√(1-ᾱ_t)√(1-ᾱ_{t-1}-σ²)
    (zero iff the forward process is Markovian) and its only root σ² = σ̃².
    """
    coeffs = solve_ddim_coefficients()
    s2 = sp.Symbol("s2", positive=True)
    condition = sp.sqrt(alphabar_t) * sigma_t**2 - coeffs.k * coeffs.m * (1 - alphabar_t)
    # the x_0 coefficient is condition / (σ² (1-ᾱ_t) · precision): check that claim, then solve condition = 0
    coef = forward_x0_coefficient()
    precision = coeffs.m**2 / sigma_t**2 + 1 / (1 - alphabar_t)
    check_equal(coef, condition / (sigma_t**2 * (1 - alphabar_t) * precision),
                "x_0 coefficient ∝ √ᾱ_t σ² - k m (1-ᾱ_t)")
    cond_s2 = condition.subs(sigma_t, sp.sqrt(s2))
    r = sp.sqrt(1 - alphabar_prev - s2)  # √(1-ᾱ_{t-1}-σ²), so m = r/√(1-ᾱ_t)
    # k m (1-ᾱ_t) = √ᾱ_{t-1} √(1-ᾱ_t) r - √ᾱ_t r², and √ᾱ_t (σ² + r²) = √ᾱ_t (1-ᾱ_{t-1}):
    check_equal(cond_s2,
                sp.sqrt(alphabar_t) * (1 - alphabar_prev) - sp.sqrt(alphabar_prev) * sp.sqrt(1 - alphabar_t) * r,
                "condition = √ᾱ_t(1-ᾱ_{t-1}) - √ᾱ_{t-1} √(1-ᾱ_t) √(1-ᾱ_{t-1}-σ²)")
    # so the condition is r = √ᾱ_t (1-ᾱ_{t-1}) / (√ᾱ_{t-1} √(1-ᾱ_t)); both sides are ≥ 0, square it
    rhs_squared = alphabar_t * (1 - alphabar_prev) ** 2 / (alphabar_prev * (1 - alphabar_t))
    roots = sp.solve(sp.Eq(1 - alphabar_prev - s2, rhs_squared), s2)
    if len(roots) != 1:
        raise AssertionError(f"step failed: expected one root σ², got {roots}")
    check_equal(roots[0], sigma_tilde_squared(), "the only σ² is σ̃²")
    # for adjacent steps the forward step at σ = σ̃ is the DDPM one, N(√α_t x_{t-1}, β_t)
    m1 = _direction_at_sigma_tilde() / sp.sqrt(1 - alphabar_t)
    precision1 = m1**2 / sigma_tilde_squared() + 1 / (1 - alphabar_t)
    coef_prev1 = m1 / sigma_tilde_squared() / precision1
    check_equal(in_primitives(coef_prev1), sp.sqrt(alpha_t), "forward mean √α_t x_{t-1}")
    check_equal(in_primitives(1 / precision1), in_primitives(beta_t), "forward variance β_t")
    clean = sp.sqrt(alphabar_t) * (1 - alphabar_prev) - sp.sqrt(alphabar_prev) * sp.sqrt(1 - alphabar_t) * sp.sqrt(
        1 - alphabar_prev - sigma_t**2)
    return clean, sigma_tilde_squared()


# --- the σ̂ row of the DDIM paper's Table 1 ----------------------------------------------------
def sigma_hat_squared():
    """σ̂_t² = 1 - ᾱ_t/ᾱ_{t-1}: the β of the skipped step (DDPM's σ² = β_t with a subsequence; eq. ``eq-sigma-hat``).

    σ̂² ≥ σ̃² since σ̃²/σ̂² = (1-ᾱ_{t-1})/(1-ᾱ_t) ≤ 1 (checked). Returns σ̂².
    """
    hat = 1 - alphabar_t / alphabar_prev
    check_equal(sigma_tilde_squared() / hat, (1 - alphabar_prev) / (1 - alphabar_t), "σ̃²/σ̂² = (1-ᾱ_{t-1})/(1-ᾱ_t)")
    return hat


def sigma_hat_direction_term():
    """1 - ᾱ_{t-1} - σ̂² = ᾱ_t/ᾱ_{t-1} - ᾱ_{t-1}: negative whenever ᾱ_{t-1}² > ᾱ_t.

    So σ̂ cannot be plugged into eq. ``eq-ddim-step`` (the square root of the direction term would be imaginary on
    large skips at low noise). The DDIM paper's code keeps the η = 1 mean (the skipped step's posterior mean)
    and only enlarges the noise to σ̂; chapter 08 does the same. Returns the simplified term.
    """
    term = sp.simplify(1 - alphabar_prev - sigma_hat_squared())
    check_equal(term, alphabar_t / alphabar_prev - alphabar_prev, "1-ᾱ_{t-1}-σ̂² = ᾱ_t/ᾱ_{t-1} - ᾱ_{t-1}")
    return term


# --- numbers for tests and notebooks ------------------------------------------------------------
def ddim_step_numeric(abar_t: float, abar_prev: float, eta_value: float):
    """The DDIM step's coefficients at numbers, evaluated from the SymPy expressions.

    Returns ``(coef_x0, coef_eps, sigma_t, k, m)``: x_{t-1} = coef_x0 x̂_0 + coef_eps ε̂ + σ_t z
    (eq. ``eq-ddim-step``) and the same mean written as k x̂_0 + m x_t. ``abar_prev = 1`` is the last step.
    """
    sig = ddim_sigma_expr()
    coeffs = solve_ddim_coefficients()
    values = {alphabar_t: sp.Float(abar_t, 30), alphabar_prev: sp.Float(abar_prev, 30), eta: sp.Float(eta_value, 30)}
    sigma_value = sig.subs(values)
    values[sigma_t] = sigma_value
    coef_x0 = sp.sqrt(alphabar_prev).subs(values)
    coef_eps = sp.sqrt(1 - alphabar_prev - sigma_t**2).subs(values)
    return tuple(float(sp.N(v, 20)) for v in (coef_x0, coef_eps, sigma_value, coeffs.k.subs(values), coeffs.m.subs(values)))
