"""Chapter 03 (``notebooks/03_posterior_and_kl``): the posterior q(x_{t-1} | x_t, x_0), the KL
divergence between Gaussians and how the KL term of the ELBO becomes a weighted squared error.

Every function builds the SymPy expressions of one derivation, checks each step symbolically and
returns the verified result; a step that does not hold raises ``AssertionError``.

Symbols: the book's set (:mod:`ddpm_lib.symbolic._common`). The formulas are written as the book writes them,
with β_t and ᾱ_t, and the results are returned in the primitive symbols ``alpha_t`` (α_t) and ``alphabar_prev``
(ᾱ_{t-1}) by ``in_primitives`` (β_t = 1 - α_t, ᾱ_t = α_t ᾱ_{t-1}), so every identity between the schedule
quantities is checked, not assumed.  The data symbols are scalars: all the Gaussians here are isotropic, so each
coordinate of a vector obeys the same formulas.

Equations (labels of chapter 03): ``eq-posterior-ratio``, ``eq-posterior-exponent``,
``eq-complete-square``, ``eq-posterior-ab``, ``eq-posterior-mean``, ``eq-posterior-variance``,
``eq-derivative-trick``, ``eq-gauss-kl``, ``eq-gauss-kl-iso``, ``eq-kl-mean-mse``,
``eq-loss-x0-weight``, ``eq-x0-weight-snr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ._common import (alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, gaussian_log_density, in_primitives,
                      mu_theta, sigma_t, x0_theta, x_0, x_prev, x_t)
from ._common import latex  # noqa: F401  (re-exported: chapters that import only this module print with it)

__all__ = [
    "posterior_closed_form",
    "posterior_log_exponent",
    "PosteriorDerivation",
    "posterior_by_completing_square",
    "posterior_by_derivative_trick",
    "posterior_bayes_check",
    "gaussian_kl_by_integration",
    "gaussian_kl_by_expectation",
    "gaussian_kl_logvar_form",
    "isotropic_gaussian_kl",
    "kl_to_mean_mse",
    "kl_to_x0_mse",
    "source_eq1_x0_weight",
    "x0_weight_as_snr_difference",
]


# --- the posterior q(x_{t-1} | x_t, x_0) -----------------------------------------------------
def posterior_closed_form():
    """The target of the derivation: (μ̃_t, β̃_t) as written in the book, returned in α_t and ᾱ_{t-1}.

    μ̃_t = β_t √ᾱ_{t-1} / (1-ᾱ_t) · x_0 + (1-ᾱ_{t-1}) √α_t / (1-ᾱ_t) · x_t   (eq. ``posterior-mean``)
    β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t)                                        (eq. ``posterior-variance``)

    Another step, such as DDIM's skip from ᾱ_{t-1} to ᾱ_t (chapter 08), is a substitution for α_t.
    """
    coef_x0 = beta_t * sp.sqrt(alphabar_prev) / (1 - alphabar_t)
    coef_xt = (1 - alphabar_prev) * sp.sqrt(alpha_t) / (1 - alphabar_t)
    mean = coef_x0 * x_0 + coef_xt * x_t
    variance = beta_t * (1 - alphabar_prev) / (1 - alphabar_t)
    return in_primitives(mean), in_primitives(variance)


def posterior_log_exponent():
    """The part of log[q(x_t | x_{t-1}) q(x_{t-1} | x_0)] that depends on x_{t-1}.

    q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t) and q(x_{t-1} | x_0) = N(√ᾱ_{t-1} x_0, 1-ᾱ_{t-1});
    by Bayes with the Markov property q(x_{t-1} | x_t, x_0) is proportional to their product.
    """
    return in_primitives(-((x_t - sp.sqrt(alpha_t) * x_prev) ** 2) / (2 * beta_t)
                         - (x_prev - sp.sqrt(alphabar_prev) * x_0) ** 2 / (2 * (1 - alphabar_prev)))


@dataclass
class PosteriorDerivation:
    """What a derivation of q(x_{t-1} | x_t, x_0) produced, every field verified.

    ``steps`` maps a readable name to the intermediate expression (for the notebook to show).
    """

    mean: sp.Expr
    variance: sp.Expr
    coef_x0: sp.Expr
    coef_xt: sp.Expr
    steps: dict = field(default_factory=dict)


def _split_mean(mean):
    """Coefficients of x_0 and x_t in a mean that is linear in them (checked)."""
    mean = sp.expand(mean)
    coef_x0 = sp.simplify(mean.coeff(x_0))
    coef_xt = sp.simplify(mean.coeff(x_t))
    check_equal(mean, coef_x0 * x_0 + coef_xt * x_t, "the mean is linear in x_0 and x_t, with no constant")
    return coef_x0, coef_xt


def _compare_with_closed_form(mean, variance, coef_x0, coef_xt) -> None:
    target_mean, target_var = posterior_closed_form()
    check_equal(mean, target_mean, "mean equals β_t√ᾱ_{t-1}/(1-ᾱ_t) x_0 + (1-ᾱ_{t-1})√α_t/(1-ᾱ_t) x_t")
    check_equal(variance, target_var, "variance equals β_t(1-ᾱ_{t-1})/(1-ᾱ_t)")
    check_equal(coef_x0, in_primitives(beta_t * sp.sqrt(alphabar_prev) / (1 - alphabar_t)), "coefficient of x_0")
    check_equal(coef_xt, in_primitives((1 - alphabar_prev) * sp.sqrt(alpha_t) / (1 - alphabar_t)), "coefficient of x_t")


def posterior_by_completing_square() -> PosteriorDerivation:
    """μ̃ and β̃ by expanding the exponent and completing the square in x_{t-1} (chapter 03).

    The exponent is a quadratic A x² + B x + C in x = x_{t-1} with A < 0, and
    A x² + B x + C = A (x + B/(2A))² + (C - B²/(4A)), which is -(x - μ̃)²/(2β̃) + const with
    β̃ = -1/(2A) and μ̃ = -B/(2A).
    """
    exponent = posterior_log_exponent()
    poly = sp.Poly(sp.expand(exponent), x_prev)
    if poly.degree() != 2:
        raise AssertionError(f"step failed: the exponent should be quadratic in x_(t-1), got degree {poly.degree()}")
    A, B, C = poly.all_coeffs()
    A, B = sp.simplify(A), sp.simplify(B)
    # A = -(α_t/β_t + 1/(1-ᾱ_{t-1}))/2: the precisions add.
    check_equal(A, in_primitives(-(alpha_t / beta_t + 1 / (1 - alphabar_prev)) / 2),
                "x_{t-1}^2 coefficient is -(α_t/β_t + 1/(1-ᾱ_{t-1}))/2")
    # B = √α_t x_t/β_t + √ᾱ_{t-1} x_0/(1-ᾱ_{t-1}).
    check_equal(B, in_primitives(sp.sqrt(alpha_t) * x_t / beta_t + sp.sqrt(alphabar_prev) * x_0 / (1 - alphabar_prev)),
                "x_{t-1} coefficient is √α_t x_t/β_t + √ᾱ_{t-1} x_0/(1-ᾱ_{t-1})")
    variance = sp.simplify(-1 / (2 * A))
    mean = sp.simplify(-B / (2 * A))
    rest = sp.simplify(C - B**2 / (4 * A))
    # Completing the square: the exponent equals -(x - μ̃)²/(2β̃) + rest, with rest free of x_{t-1}.
    check_equal(exponent, -((x_prev - mean) ** 2) / (2 * variance) + rest, "exponent = -(x-μ̃)²/(2β̃) + rest")
    if rest.has(x_prev):
        raise AssertionError("step failed: the remainder of the completed square depends on x_(t-1)")
    coef_x0, coef_xt = _split_mean(mean)
    _compare_with_closed_form(mean, variance, coef_x0, coef_xt)
    steps = {"exponent": exponent, "A (x^2 coefficient)": A, "B (x coefficient)": B, "rest": rest}
    return PosteriorDerivation(mean, variance, coef_x0, coef_xt, steps)


def posterior_by_derivative_trick() -> PosteriorDerivation:
    """μ̃ and β̃ from the derivatives of the exponent f(x) (the series' part 2 trick).

    For f(x) = -(x-μ)²/(2σ²) + c: f'(μ) = 0 and f''(x) = -1/σ², so the mean is the root of f' and the
    variance is -1/f''.  The second derivative must be constant (the posterior is Gaussian).
    """
    f = posterior_log_exponent()
    d1 = sp.diff(f, x_prev)
    d2 = sp.simplify(sp.diff(f, x_prev, 2))
    if d2.has(x_prev):
        raise AssertionError("step failed: f'' depends on x_(t-1), the posterior would not be Gaussian")
    roots = sp.solve(sp.Eq(d1, 0), x_prev)
    if len(roots) != 1:
        raise AssertionError(f"step failed: f' = 0 should have exactly one root, got {roots}")
    mean = sp.simplify(roots[0])
    variance = sp.simplify(-1 / d2)
    check_equal(d1.subs(x_prev, mean), 0, "f'(μ̃) = 0")
    coef_x0, coef_xt = _split_mean(mean)
    _compare_with_closed_form(mean, variance, coef_x0, coef_xt)
    return PosteriorDerivation(mean, variance, coef_x0, coef_xt, {"f'": d1, "f''": d2})


def posterior_bayes_check() -> sp.Expr:
    """The full density identity, normalizing constants included:

    q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0) = N(x_{t-1}; μ̃_t, β̃_t),

    with q(x_t | x_0) = N(√ᾱ_t x_0, 1-ᾱ_t).  Returns the log of the left side, checked equal to the right.
    """
    mean, variance = posterior_closed_form()
    lhs = in_primitives(
        gaussian_log_density(x_t, sp.sqrt(alpha_t) * x_prev, beta_t)
        + gaussian_log_density(x_prev, sp.sqrt(alphabar_prev) * x_0, 1 - alphabar_prev)
        - gaussian_log_density(x_t, sp.sqrt(alphabar_t) * x_0, 1 - alphabar_t)
    )
    rhs = gaussian_log_density(x_prev, mean, variance)
    # Compare the x-dependent parts (a rational function) and the constants (logs) separately.
    diff = sp.expand(lhs - rhs)
    logs = sum(term for term in sp.Add.make_args(diff) if term.has(sp.log))
    check_equal(logs, 0, "the normalizing constants match")
    check_equal(diff - logs, 0, "the exponents match")
    return lhs


# --- KL divergence between Gaussians ---------------------------------------------------------
_x = sp.Symbol("x", real=True)
mu_1, mu_2 = sp.symbols("mu_1 mu_2", real=True)
s_1, s_2 = sp.symbols("sigma_1 sigma_2", positive=True)


def _kl_target():
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)) = log(σ2/σ1) + (σ1² + (μ1-μ2)²)/(2σ2²) - 1/2  (eq. ``gauss-kl``)."""
    return sp.log(s_2 / s_1) + (s_1**2 + (mu_1 - mu_2) ** 2) / (2 * s_2**2) - sp.Rational(1, 2)


def _log_ratio():
    return sp.expand(gaussian_log_density(_x, mu_1, s_1**2) - gaussian_log_density(_x, mu_2, s_2**2))


def gaussian_kl_by_integration() -> sp.Expr:
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)) = ∫ N(x; μ1, σ1²) log[N(x; μ1, σ1²)/N(x; μ2, σ2²)] dx, integrated by SymPy.

    Also checks that N(x; μ1, σ1²) integrates to 1.  Returns the KL in terms of mu_1, mu_2, sigma_1, sigma_2.
    """
    density = sp.exp(gaussian_log_density(_x, mu_1, s_1**2))
    check_equal(sp.integrate(density, (_x, -sp.oo, sp.oo)), 1, "the Gaussian density integrates to 1")
    log_ratio = _log_ratio()
    # Integrate the polynomial log-ratio term by term against the density.
    kl = 0
    for power, coeff in sp.Poly(log_ratio, _x).as_dict().items():
        moment = sp.integrate(density * _x ** power[0], (_x, -sp.oo, sp.oo))
        kl += coeff * moment
    kl = sp.simplify(kl)
    check_equal(sp.expand_log(kl - _kl_target(), force=True), 0,
                "∫ N1 log(N1/N2) = log(σ2/σ1) + (σ1²+(μ1-μ2)²)/(2σ2²) - 1/2")
    return kl


def gaussian_kl_by_expectation() -> sp.Expr:
    """The same KL from moments only: log(N1/N2) is a quadratic in x, and under N1
    E[x] = μ1, E[x²] = μ1² + σ1² (no integral needed)."""
    log_ratio = _log_ratio()
    poly = sp.Poly(log_ratio, _x)
    if poly.degree() > 2:
        raise AssertionError("step failed: the log-ratio of two Gaussians must be at most quadratic in x")
    moments = {0: 1, 1: mu_1, 2: mu_1**2 + s_1**2}
    kl = sum(coeff * moments[power[0]] for power, coeff in poly.as_dict().items())
    kl = sp.simplify(kl)
    check_equal(sp.expand_log(kl - _kl_target(), force=True), 0, "E_N1[log N1 - log N2] = closed form")
    return kl


def gaussian_kl_logvar_form():
    """The KL in the (mean, log-variance) arguments of ``ddpm_lib.losses.normal_kl``:

    KL = ½ (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (μ1-μ2)² exp(-logvar2)).

    Returns ``(expr, (mean1, logvar1, mean2, logvar2))``; checked equal to the σ form.
    """
    m1, m2 = sp.symbols("mean1 mean2", real=True)
    lv1, lv2 = sp.symbols("logvar1 logvar2", real=True)
    expr = sp.Rational(1, 2) * (-1 + lv2 - lv1 + sp.exp(lv1 - lv2) + (m1 - m2) ** 2 * sp.exp(-lv2))
    sigma_form = _kl_target().subs({mu_1: m1, mu_2: m2, s_1: sp.exp(lv1 / 2), s_2: sp.exp(lv2 / 2)})
    check_equal(sp.expand_log(sp.expand(sigma_form - expr), force=True), 0, "log-variance form equals the σ form")
    return expr, (m1, lv1, m2, lv2)


def isotropic_gaussian_kl(d: int = 3):
    """KL(N(m1, s1² I) ‖ N(m2, s2² I)) in d dimensions (eq. ``gauss-kl-iso``):

    d [log(s2/s1) + s1²/(2 s2²) - 1/2] + ‖m1 - m2‖² / (2 s2²).

    Derived for a concrete ``d`` (default 3): the log-density of an isotropic Gaussian is the sum of
    the coordinates' log-densities, so the log-ratio is a sum and its expectation is the sum of
    the one-dimensional KLs.  Returns ``(expr, m1, m2)`` with vectors of symbols.
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int, got {d!r}")
    m1 = sp.Matrix(sp.symbols(f"m1_1:{d + 1}", real=True))
    m2 = sp.Matrix(sp.symbols(f"m2_1:{d + 1}", real=True))
    xs = sp.Matrix(sp.symbols(f"x_1:{d + 1}", real=True))
    # Log-density of N(m, s² I): -d/2 log(2π s²) - ‖x - m‖²/(2 s²); check it is the sum over coordinates.
    log_iso_1 = -sp.Rational(d, 2) * sp.log(2 * sp.pi * s_1**2) - (xs - m1).dot(xs - m1) / (2 * s_1**2)
    log_sum_1 = sum(gaussian_log_density(xs[i], m1[i], s_1**2) for i in range(d))
    check_equal(sp.expand_log(sp.expand(log_iso_1 - log_sum_1), force=True), 0,
                "isotropic log-density = sum over coordinates")
    # Linearity of expectation: KL = Σ_i KL_1d(m1_i, m2_i).
    kl = sum(_kl_target().subs({mu_1: m1[i], mu_2: m2[i]}) for i in range(d))
    target = d * (sp.log(s_2 / s_1) + s_1**2 / (2 * s_2**2) - sp.Rational(1, 2)) + (m1 - m2).dot(m1 - m2) / (2 * s_2**2)
    check_equal(sp.expand(kl - target), 0, "Σ of 1-D KLs = d[log(s2/s1) + s1²/(2s2²) - 1/2] + ‖m1-m2‖²/(2s2²)")
    return target, m1, m2


# --- the KL term of the ELBO becomes a weighted squared error --------------------------------
def kl_to_mean_mse():
    """L_{t-1} = KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) with p_θ = N(μ_θ, σ_t² I) (eq. ``kl-mean-mse``):

    per coordinate, KL = (μ̃ - μ_θ)²/(2σ_t²) + C(β̃_t, σ_t), where C = ½(β̃/σ² - 1 - log(β̃/σ²)) does not
    depend on θ.  Returns ``(kl, weighted_mse, const)`` (all per coordinate; multiply by d and sum).
    """
    mean, variance = posterior_closed_form()
    kl = _kl_target().subs({mu_1: mean, mu_2: mu_theta, s_1: sp.sqrt(variance), s_2: sigma_t})
    weighted_mse = (mean - mu_theta) ** 2 / (2 * sigma_t**2)
    const = sp.Rational(1, 2) * (variance / sigma_t**2 - 1 - sp.log(variance / sigma_t**2))
    check_equal(kl - weighted_mse, const, "KL = (μ̃-μ_θ)²/(2σ²) + C")
    if const.has(mu_theta):
        raise AssertionError("step failed: the constant depends on μ_θ")
    # With σ_t² = β̃_t the constant vanishes: the KL is exactly the weighted squared error.
    check_equal(const.subs(sigma_t, sp.sqrt(variance)), 0, "C = 0 when σ_t² = β̃_t")
    return kl, weighted_mse, const


def kl_to_x0_mse():
    """With x0-prediction μ_θ = μ̃(x_t, x̃_θ) (the posterior mean with x̃_θ in place of x_0),
    μ̃ - μ_θ = coef_x0 (x_0 - x̃_θ), so (eq. ``loss-x0-weight``)

    (μ̃ - μ_θ)²/(2σ_t²) = [1/(2σ_t²)] β_t² ᾱ_{t-1}/(1-ᾱ_t)² (x̃_θ - x_0)².

    Returns the weight λ_t = β_t² ᾱ_{t-1} / ((1-ᾱ_t)² 2σ_t²).
    """
    mean, _ = posterior_closed_form()
    mu_x0 = mean.subs(x_0, x0_theta)
    _, weighted_mse, _ = kl_to_mean_mse()
    weighted = weighted_mse.subs(mu_theta, mu_x0)
    weight = in_primitives(beta_t**2 * alphabar_prev / (1 - alphabar_t) ** 2 / (2 * sigma_t**2))
    check_equal(sp.expand(mean - mu_x0), mean.coeff(x_0) * (x_0 - x0_theta), "μ̃ - μ_θ = coef_x0 (x_0 - x̃_θ)")
    check_equal(weighted, weight * (x0_theta - x_0) ** 2, "KL = λ_t (x̃_θ - x_0)²")
    check_equal(weight, source_eq1_x0_weight(), "λ_t equals the weight of the source's eq. (1)")
    return weight


def source_eq1_x0_weight():
    """The weight exactly as source 000 writes it in eq. (1): [1/(2σ²(t))] (1-α_t)² ᾱ_{t-1} / (1-ᾱ_t)²."""
    return in_primitives(1 / (2 * sigma_t**2) * (1 - alpha_t) ** 2 * alphabar_prev / (1 - alphabar_t) ** 2)


def x0_weight_as_snr_difference():
    """With σ_t² = β̃_t the x0 weight is ½ (SNR(t-1) - SNR(t)), SNR(t) = ᾱ_t/(1-ᾱ_t) (Kingma et al. 2021).

    Returns ``(weight, snr_prev, snr_t)``.
    """
    _, variance = posterior_closed_form()
    weight = kl_to_x0_mse().subs(sigma_t, sp.sqrt(variance))
    snr_prev = alphabar_prev / (1 - alphabar_prev)
    snr_t = in_primitives(alphabar_t / (1 - alphabar_t))
    check_equal(weight, (snr_prev - snr_t) / 2, "λ_t = (SNR(t-1) - SNR(t))/2 when σ_t² = β̃_t")
    return sp.simplify(weight), snr_prev, snr_t
