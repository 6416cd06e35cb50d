"""Chapter 04 (``notebooks/04_predicting_noise``): predicting the noise.

Source 000's eqs. (3)-(7) line by line, including the "some algebra calculation" it skips; the
three objectives (ε, x_0, v), their conversions and relative loss weights; the score view (Tweedie).
Every function checks its steps symbolically and returns the verified expressions; a failed step
raises ``AssertionError``.

Symbols: the book's set (:mod:`ddpm_lib.symbolic._common`). In eqs. (3)-(5) only ᾱ_t appears, as the symbol
``alphabar_t``; from eq. (6) on, where chapter 03's posterior enters, β_t and ᾱ_t are written in the primitive
symbols α_t and ᾱ_{t-1} by ``in_primitives`` (source 000: "note that ᾱ_t = ᾱ_{t-1} α_t").

Equations (labels of chapter 04): ``eq-xt-from-x0-eps``, ``eq-x0-from-eps``, ``eq-x0-tilde``,
``eq-x0-err-eps-err``, ``eq-eps-loss-weight``, ``eq-l-simple``, ``eq-mu-from-eps``,
``eq-sample-step-eps``, ``eq-v-def``, ``eq-v-velocity``, ``eq-conversions``, ``eq-loss-ratios``,
``eq-score-q-xt-x0``, ``eq-tweedie``, ``eq-eps-score``.
"""

from __future__ import annotations

import sympy as sp

from ._common import (alpha_t, alphabar_prev, alphabar_t, beta_t, check_equal, eps, eps_theta, gaussian_log_density,
                      in_primitives, sigma_t, snr, v, x0_theta, x_0, x_t, z)
from .posterior import posterior_closed_form, source_eq1_x0_weight

__all__ = [
    "forward_xt",
    "x0_from_eps",
    "source_eq4_x0",
    "source_eq4_residual",
    "x0_tilde_from_eps_tilde",
    "x0_error_from_eps_error",
    "eps_loss_weight",
    "source_eq6_weight",
    "eps_weight_for_variance",
    "mu_from_eps",
    "source_eq7_mean",
    "mu_from_source_eq5",
    "ddpm_sample_step",
    "v_definition",
    "v_is_velocity",
    "conversions",
    "relative_loss_weights",
    "lucidrains_loss_weights",
    "score_q_xt_given_x0",
    "tweedie_identity",
    "tweedie_gaussian_data",
]


# --- eqs. (3)-(5) ------------------------------------------------------------------------------
def forward_xt(x0=x_0, noise=eps):
    """Source eq. (3), chapter 04 eq. ``xt-from-x0-eps``: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
    return sp.sqrt(alphabar_t) * x0 + sp.sqrt(1 - alphabar_t) * noise


def x0_from_eps():
    """Eq. (3) solved for x_0 (chapter 04 eq. ``x0-from-eps``): x_0 = (x_t - √(1-ᾱ_t) ε)/√ᾱ_t.

    Solved by SymPy, substituted back into eq. (3), and checked equal to lucidrains'
    ``sqrt_recip_alphas_cumprod * x_t - sqrt_recipm1_alphas_cumprod * noise`` = x_t/√ᾱ - √(1/ᾱ - 1) ε.
    """
    solutions = sp.solve(sp.Eq(x_t, forward_xt()), x_0)
    if len(solutions) != 1:
        raise AssertionError(f"step failed: eq. (3) should have one solution for x_0, got {solutions}")
    x0 = solutions[0]
    target = (x_t - sp.sqrt(1 - alphabar_t) * eps) / sp.sqrt(alphabar_t)
    check_equal(x0, target, "x_0 = (x_t - √(1-ᾱ) ε)/√ᾱ")
    check_equal(forward_xt(x0=x0), x_t, "substituting x_0 back into eq. (3) gives x_t")
    lucidrains = x_t / sp.sqrt(alphabar_t) - sp.sqrt(1 / alphabar_t - 1) * eps
    check_equal(x0, lucidrains, "x_0 = sqrt_recip_alphas_cumprod x_t - sqrt_recipm1_alphas_cumprod ε")
    return target


def source_eq4_x0():
    """Source 000, eq. (4) as printed (with a + sign): x_0 = x_t/√ᾱ_t + √(1-ᾱ_t)/√ᾱ_t ε.  Wrong."""
    return x_t / sp.sqrt(alphabar_t) + sp.sqrt(1 - alphabar_t) / sp.sqrt(alphabar_t) * eps


def source_eq4_residual():
    """Substitute the source's eq. (4) into eq. (3): the result is x_t + 2√(1-ᾱ_t) ε, not x_t.

    Returns the residual (eq. (3) right side minus x_t), checked to be 2√(1-ᾱ_t) ε ≠ 0.
    """
    residual = sp.simplify(forward_xt(x0=source_eq4_x0()) - x_t)
    check_equal(residual, 2 * sp.sqrt(1 - alphabar_t) * eps, "the source's eq. (4) leaves 2√(1-ᾱ) ε")
    if residual == 0:
        raise AssertionError("the source's eq. (4) was expected to be wrong")
    return residual


def x0_tilde_from_eps_tilde():
    """Eq. (5) corrected: the network's x̃_θ from its noise estimate ε̃_θ, x̃_θ = (x_t - √(1-ᾱ_t) ε̃_θ)/√ᾱ_t.

    This is eq. ``x0-from-eps`` with ε̃_θ in place of ε (the same map, ``predict_start_from_noise``).
    """
    return x0_from_eps().subs(eps, eps_theta)


def x0_error_from_eps_error():
    """x̃_θ - x_0 = -√((1-ᾱ_t)/ᾱ_t) (ε̃_θ - ε), so ‖x̃_θ - x_0‖² = (1-ᾱ_t)/ᾱ_t ‖ε̃_θ - ε‖² = ‖ε̃_θ - ε‖²/SNR(t)
    (chapter 04 eq. ``x0-err-eps-err``).

    x_t is the same in both: x_0 = x0_from_eps() with the true ε.  The factor is per coordinate, so it
    multiplies the squared norm.  (The source's sign error in (4)/(5) flips both estimates the same way and
    leaves this factor unchanged.)  Returns the factor (1-ᾱ_t)/ᾱ_t.
    """
    diff = sp.expand(x0_tilde_from_eps_tilde() - x0_from_eps())
    check_equal(diff, -sp.sqrt(1 - alphabar_t) / sp.sqrt(alphabar_t) * (eps_theta - eps),
                "x̃_θ - x_0 = -√((1-ᾱ)/ᾱ)(ε̃_θ - ε)")
    factor = sp.simplify(diff**2 / (eps_theta - eps) ** 2)
    check_equal(factor, (1 - alphabar_t) / alphabar_t, "squared ratio = (1-ᾱ)/ᾱ")
    check_equal(factor, 1 / (alphabar_t / (1 - alphabar_t)), "(1-ᾱ)/ᾱ = 1/SNR")
    # The source's (wrong-signed) x̃_θ and x_0 give the same squared error.
    source_diff = source_eq4_x0().subs(eps, eps_theta) - source_eq4_x0()
    check_equal(sp.expand(source_diff**2 - diff**2), 0, "the source's sign error does not change the squared error")
    return factor


# --- eq. (6) -----------------------------------------------------------------------------------
def eps_loss_weight():
    """Eq. (6) (chapter 04 eq. ``eps-loss-weight``): the x0 weight of eq. (1) times (1-ᾱ_t)/ᾱ_t, with ᾱ_t = ᾱ_{t-1} α_t:

    [1/(2σ_t²)] (1-α_t)² ᾱ_{t-1}/(1-ᾱ_t)² · (1-ᾱ_t)/(ᾱ_{t-1} α_t) = [1/(2σ_t²)] (1-α_t)² / ((1-ᾱ_t) α_t).
    """
    weight = source_eq1_x0_weight() * in_primitives(x0_error_from_eps_error())
    target = in_primitives(1 / (2 * sigma_t**2) * beta_t**2 / ((1 - alphabar_t) * alpha_t))
    check_equal(weight, target, "λ_ε = β_t²/(2σ_t² (1-ᾱ_t) α_t)")
    check_equal(weight, source_eq6_weight(),
                "equals the weight of the source's eq. (6), read as (1-α_t)²/((1-ᾱ_t) α_t)")
    return target


def source_eq6_weight():
    """The weight of source 000, eq. (6), read with the subscript t on α (it is typeset as a subscript of
    the whole fraction): [1/(2σ²(t))] (1-α_t)² / ((1-ᾱ_t) α_t)."""
    return in_primitives(1 / (2 * sigma_t**2) * (1 - alpha_t) ** 2 / ((1 - alphabar_t) * alpha_t))


def eps_weight_for_variance(choice: str):
    """λ_ε for the two standard choices of σ_t² (chapter 04): ``"beta"`` (σ² = β_t) gives
    β_t/(2 α_t (1-ᾱ_t)); ``"beta_tilde"`` (σ² = β̃_t) gives β_t/(2 α_t (1-ᾱ_{t-1}))."""
    _, beta_tilde = posterior_closed_form()
    variances = {"beta": in_primitives(beta_t), "beta_tilde": beta_tilde}
    if choice not in variances:
        raise ValueError(f"choice must be one of {sorted(variances)!r}, got {choice!r}")
    weight = sp.simplify(eps_loss_weight().subs(sigma_t, sp.sqrt(variances[choice])))
    targets = {
        "beta": in_primitives(beta_t / (2 * alpha_t * (1 - alphabar_t))),
        "beta_tilde": in_primitives(beta_t / (2 * alpha_t * (1 - alphabar_prev))),
    }
    check_equal(weight, targets[choice], f"λ_ε with σ² = {choice}")
    return targets[choice]


# --- eq. (7): the "some algebra calculation" ------------------------------------------------------
def mu_from_eps():
    """The posterior mean with x̃_θ written through ε̃_θ (chapter 04 eq. ``mu-from-eps``):

    μ̃_θ = (1-ᾱ_{t-1})√α_t/(1-ᾱ_t) x_t + β_t√ᾱ_{t-1}/(1-ᾱ_t) x̃_θ = (1/√α_t) (x_t - β_t/√(1-ᾱ_t) ε̃_θ).

    Returns ``(result, steps)`` with ``steps`` a list of (what was done, expression), each step
    checked equal to the previous one.
    """
    mean, _ = posterior_closed_form()
    coef_x0 = mean.coeff(x_0)
    coef_xt = mean.coeff(x_t)
    x0_tilde = in_primitives(x0_tilde_from_eps_tilde())
    steps = []
    s0 = coef_xt * x_t + coef_x0 * x0_theta
    steps.append(("eq. (2): the posterior mean with x̃_θ in place of x_0", s0))
    s1 = s0.subs(x0_theta, x0_tilde)
    steps.append(("substitute x̃_θ = (x_t - √(1-ᾱ_t) ε̃_θ)/√ᾱ_t", s1))
    # Collect the coefficients of x_t and ε̃_θ.
    c_xt = in_primitives(coef_xt + coef_x0 / sp.sqrt(alphabar_t))
    c_eps = in_primitives(-coef_x0 * sp.sqrt(1 - alphabar_t) / sp.sqrt(alphabar_t))
    s2 = c_xt * x_t + c_eps * eps_theta
    steps.append(("collect x_t and ε̃_θ", s2))
    # √ᾱ_{t-1}/√ᾱ_t = 1/√α_t, so put the x_t coefficient over the common denominator (1-ᾱ_t)√α_t.
    c_xt_3 = in_primitives(((1 - alphabar_prev) * alpha_t + beta_t) / ((1 - alphabar_t) * sp.sqrt(alpha_t)))
    c_eps_3 = in_primitives(-beta_t * sp.sqrt(1 - alphabar_t) / ((1 - alphabar_t) * sp.sqrt(alpha_t)))
    s3 = c_xt_3 * x_t + c_eps_3 * eps_theta
    steps.append(("use √ᾱ_{t-1}/√ᾱ_t = 1/√α_t", s3))
    # The numerator (1-ᾱ_{t-1})α_t + 1 - α_t = 1 - α_t ᾱ_{t-1} = 1 - ᾱ_t cancels the denominator.
    check_equal(sp.expand(in_primitives((1 - alphabar_prev) * alpha_t + beta_t)),
                sp.expand(in_primitives(1 - alphabar_t)), "(1-ᾱ_{t-1})α_t + β_t = 1-ᾱ_t")
    s4 = in_primitives(x_t / sp.sqrt(alpha_t) - beta_t / (sp.sqrt(alpha_t) * sp.sqrt(1 - alphabar_t)) * eps_theta)
    steps.append(("(1-ᾱ_{t-1})α_t + β_t = 1-ᾱ_t cancels; (1-ᾱ_t)/√(1-ᾱ_t) = √(1-ᾱ_t)", s4))
    result = in_primitives((x_t - beta_t / sp.sqrt(1 - alphabar_t) * eps_theta) / sp.sqrt(alpha_t))
    steps.append(("factor out 1/√α_t", result))
    # Step 0 -> 1 is the substitution itself; every later step must equal the one before.
    for (what_a, a), (what_b, b) in zip(steps[1:], steps[2:]):
        check_equal(sp.expand(a - b), 0, f"{what_a} -> {what_b}")
    check_equal(sp.simplify(c_xt), 1 / sp.sqrt(alpha_t), "the coefficient of x_t is 1/√α_t")
    check_equal(sp.simplify(c_eps), in_primitives(-beta_t / sp.sqrt(alpha_t * (1 - alphabar_t))),
                "the coefficient of ε̃_θ is -β_t/√(α_t(1-ᾱ_t))")
    return result, steps


def source_eq7_mean():
    """The mean as source 000 prints it after "some algebra calculation" (and in eq. (7), Algorithm 4):
    x_t/√ᾱ_t + (1-α_t)/√((1-ᾱ_t) α_t) ε̃_θ.  Wrong twice: 1/√ᾱ_t should be 1/√α_t, + should be -."""
    return in_primitives(x_t / sp.sqrt(alphabar_t) + beta_t / sp.sqrt((1 - alphabar_t) * alpha_t) * eps_theta)


def mu_from_source_eq5():
    """What the source's own (sign-flipped) eq. (5) gives when substituted: x_t/√α_t + β_t/√((1-ᾱ_t)α_t) ε̃_θ.

    So the + sign of the source's eq. (7) follows from its eq. (4)/(5) error, while 1/√ᾱ_t instead of 1/√α_t
    is a separate typo.  Returns the expression (checked).
    """
    mean, _ = posterior_closed_form()
    x0_src = in_primitives(source_eq4_x0().subs(eps, eps_theta))
    mu = mean.subs(x_0, x0_src)
    target = in_primitives(x_t / sp.sqrt(alpha_t) + beta_t / sp.sqrt((1 - alphabar_t) * alpha_t) * eps_theta)
    check_equal(sp.expand(mu - target), 0, "the source's eq. (5) substituted into eq. (2)")
    return target


def ddpm_sample_step():
    """Eq. (7) corrected (chapter 04 eq. ``sample-step-eps``), the step of Algorithm 4:

    x_{t-1} = (1/√α_t) (x_t - (1-α_t)/√(1-ᾱ_t) ε̃_θ) + σ_t z.

    Checked equal to eq. (2) (posterior mean with x̃_θ from eq. ``x0-from-eps``) plus σ_t z.
    """
    mu, _ = mu_from_eps()
    step = in_primitives((x_t - (1 - alpha_t) / sp.sqrt(1 - alphabar_t) * eps_theta) / sp.sqrt(alpha_t) + sigma_t * z)
    mean, _ = posterior_closed_form()
    via_eq2 = mean.subs(x_0, in_primitives(x0_tilde_from_eps_tilde())) + sigma_t * z
    check_equal(sp.expand(step - via_eq2), 0, "x_{t-1} = eq. (2) with x̃_θ(ε̃_θ) + σ_t z")
    check_equal(sp.expand(step - mu - sigma_t * z), 0, "x_{t-1} = μ̃_θ + σ_t z")
    return step


# --- the three objectives -----------------------------------------------------------------------
def v_definition():
    """v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022; chapter 04 eq. ``v-def``); lucidrains' ``predict_v``."""
    return sp.sqrt(alphabar_t) * eps - sp.sqrt(1 - alphabar_t) * x_0


def v_is_velocity():
    """With √ᾱ_t = cos φ and √(1-ᾱ_t) = sin φ, x_t = cos φ x_0 + sin φ ε and dx_t/dφ = v: v is the velocity
    of x_t along the quarter circle from x_0 (φ = 0) to ε (φ = π/2).  Returns (x_t(φ), dx_t/dφ)."""
    phi = sp.Symbol("phi", positive=True)
    xt_phi = sp.cos(phi) * x_0 + sp.sin(phi) * eps
    velocity = sp.diff(xt_phi, phi)
    v_phi = sp.cos(phi) * eps - sp.sin(phi) * x_0  # v_definition with √ᾱ = cos φ, √(1-ᾱ) = sin φ
    check_equal(velocity, v_phi, "dx_t/dφ = v")
    check_equal(sp.cos(phi) ** 2 + sp.sin(phi) ** 2, 1, "cos²φ + sin²φ = ᾱ + (1-ᾱ) = 1")
    return xt_phi, velocity


def conversions():
    """The six maps between ε, x_0 and v given x_t (eq. ``v-def`` and ``x0-from-eps``), each checked by
    substituting x_t = √ᾱ x_0 + √(1-ᾱ) ε, and the lucidrains forms checked equal:

    - ``x0_from_eps``: (x_t - √(1-ᾱ) ε)/√ᾱ                 (``predict_start_from_noise``)
    - ``eps_from_x0``: (x_t - √ᾱ x_0)/√(1-ᾱ) = (x_t/√ᾱ - x_0)/√(1/ᾱ - 1)   (``predict_noise_from_start``)
    - ``v_from_x0_eps``: √ᾱ ε - √(1-ᾱ) x_0                 (``predict_v``)
    - ``x0_from_v``: √ᾱ x_t - √(1-ᾱ) v                     (``predict_start_from_v``)
    - ``eps_from_v``: √(1-ᾱ) x_t + √ᾱ v
    - ``v_from_eps``: (ε - √(1-ᾱ) x_t)/√ᾱ

    Returns a dict name -> expression (in x_t, ε, x_0, v, alphabar_t).
    """
    a, s = sp.sqrt(alphabar_t), sp.sqrt(1 - alphabar_t)
    maps = {
        "x0_from_eps": (x_t - s * eps) / a,
        "eps_from_x0": (x_t - a * x_0) / s,
        "v_from_x0_eps": a * eps - s * x_0,
        "x0_from_v": a * x_t - s * v,
        "eps_from_v": s * x_t + a * v,
        "v_from_eps": (eps - s * x_t) / a,
    }
    truth = {x_t: forward_xt(), v: v_definition()}
    expected = {"x0_from_eps": x_0, "eps_from_x0": eps, "v_from_x0_eps": v_definition(), "x0_from_v": x_0, "eps_from_v": eps, "v_from_eps": v_definition()}
    for name, expr in maps.items():
        check_equal(sp.expand(expr.subs(truth) - expected[name]), 0,
                    f"{name} recovers the truth when x_t = √ᾱ x_0 + √(1-ᾱ) ε")
    check_equal(maps["eps_from_x0"], (x_t / a - x_0) / sp.sqrt(1 / alphabar_t - 1),
                "lucidrains' predict_noise_from_start form")
    check_equal(maps["x0_from_eps"], x0_from_eps(), "x0_from_eps is eq. x0-from-eps")
    return maps


def relative_loss_weights():
    """Errors of the three predictions when they are tied together by x_t (one network output, the other two
    derived from it with :func:`conversions`), chapter 04 eq. ``loss-ratios``:

    x̂_0 - x_0 = -√((1-ᾱ)/ᾱ) (ε̂ - ε),  v̂ - v = (ε̂ - ε)/√ᾱ = -(x̂_0 - x_0)/√(1-ᾱ), so

    ‖x̂_0-x_0‖² = ‖ε̂-ε‖²/SNR,  ‖v̂-v‖² = ‖ε̂-ε‖²/ᾱ = ‖ε̂-ε‖² (1+SNR)/SNR,  ‖v̂-v‖² = ‖x̂_0-x_0‖² (1+SNR).

    Returns a dict of the factors written in SNR: ``x0_per_eps``, ``v_per_eps``, ``v_per_x0``.
    """
    maps = conversions()
    eps_hat = sp.Symbol("epsilon_hat", real=True)
    x0_hat = maps["x0_from_eps"].subs(eps, eps_hat)
    v_hat = maps["v_from_eps"].subs(eps, eps_hat)
    truth = {x_t: forward_xt()}
    d_eps = eps_hat - eps
    d_x0 = sp.expand(x0_hat.subs(truth) - x_0)
    d_v = sp.expand(v_hat.subs(truth) - v_definition())
    check_equal(d_x0, -sp.sqrt((1 - alphabar_t) / alphabar_t) * d_eps, "x̂_0 - x_0 = -√((1-ᾱ)/ᾱ)(ε̂-ε)")
    check_equal(d_v, d_eps / sp.sqrt(alphabar_t), "v̂ - v = (ε̂-ε)/√ᾱ")
    check_equal(d_v, -d_x0 / sp.sqrt(1 - alphabar_t), "v̂ - v = -(x̂_0-x_0)/√(1-ᾱ)")
    # The same x̂_0 error whichever quantity the network outputs: start from a v̂ and derive x̂_0, ε̂.
    v_hat_sym = sp.Symbol("v_hat", real=True)
    d_x0_from_v = (maps["x0_from_v"].subs(v, v_hat_sym) - x_0).subs(truth).subs(v_hat_sym, v_hat.subs(truth))
    check_equal(sp.expand(d_x0_from_v - d_x0), 0, "x̂_0 derived from v̂ equals x̂_0 derived from ε̂")
    abar_of_snr = snr / (1 + snr)  # ᾱ = SNR/(1+SNR)
    ratios = {
        "x0_per_eps": sp.simplify((d_x0**2 / d_eps**2).subs(alphabar_t, abar_of_snr)),
        "v_per_eps": sp.simplify((d_v**2 / d_eps**2).subs(alphabar_t, abar_of_snr)),
        "v_per_x0": sp.simplify((d_v**2 / d_x0**2).subs(alphabar_t, abar_of_snr)),
    }
    check_equal(ratios["x0_per_eps"], 1 / snr, "‖x̂_0-x_0‖² = ‖ε̂-ε‖²/SNR")
    check_equal(ratios["v_per_eps"], (1 + snr) / snr, "‖v̂-v‖² = ‖ε̂-ε‖²(1+SNR)/SNR")
    check_equal(ratios["v_per_x0"], 1 + snr, "‖v̂-v‖² = ‖x̂_0-x_0‖²(1+SNR)")
    return ratios


def lucidrains_loss_weights(min_snr_gamma=None):
    """lucidrains' ``loss_weight`` buffers: with ``maybe_clipped_snr`` = min(SNR, γ) (or SNR),
    pred_noise: clipped/SNR, pred_x0: clipped, pred_v: clipped/(SNR+1).

    Multiplied by their own squared errors (:func:`relative_loss_weights`) all three equal
    (clipped/SNR) ‖ε̂-ε‖², i.e. the plain ε-MSE without clipping: the three objectives train the same
    loss and differ only in what the network outputs.  Returns dict objective -> (weight, weight in ε units).
    """
    if min_snr_gamma is not None and (isinstance(min_snr_gamma, bool) or not isinstance(min_snr_gamma, (int, float))
                                      or not min_snr_gamma > 0):
        raise ValueError(f"min_snr_gamma must be None or a number > 0, got {min_snr_gamma!r}")
    clipped = snr if min_snr_gamma is None else sp.Min(snr, sp.nsimplify(min_snr_gamma))
    weights = {"pred_noise": clipped / snr, "pred_x0": clipped, "pred_v": clipped / (snr + 1)}
    ratios = relative_loss_weights()
    per_eps = {"pred_noise": sp.Integer(1), "pred_x0": ratios["x0_per_eps"], "pred_v": ratios["v_per_eps"]}
    out = {}
    for objective, w in weights.items():
        in_eps_units = sp.simplify(w * per_eps[objective])
        check_equal(in_eps_units, clipped / snr, f"{objective}: weight × own MSE = (clipped SNR/SNR) × ε-MSE")
        out[objective] = (w, in_eps_units)
    return out


# --- the score view ------------------------------------------------------------------------------
def score_q_xt_given_x0():
    """∇_{x_t} log q(x_t | x_0) = -(x_t - √ᾱ x_0)/(1-ᾱ) = -ε/√(1-ᾱ) (chapter 04 eq. ``score-q-xt-x0``).

    Returns the score as a function of ε (after substituting eq. (3)).
    """
    log_q = gaussian_log_density(x_t, sp.sqrt(alphabar_t) * x_0, 1 - alphabar_t)
    score = sp.diff(log_q, x_t)
    check_equal(score, -(x_t - sp.sqrt(alphabar_t) * x_0) / (1 - alphabar_t), "∂/∂x_t log q = -(x_t - √ᾱ x_0)/(1-ᾱ)")
    score_eps = sp.simplify(score.subs(x_t, forward_xt()))
    check_equal(score_eps, -eps / sp.sqrt(1 - alphabar_t), "= -ε/√(1-ᾱ)")
    return score_eps


def tweedie_identity():
    """Tweedie's formula for any data density q(x_0) (chapter 04 eq. ``tweedie``):

    E[x_0 | x_t] = (x_t + (1-ᾱ) ∇ log q(x_t))/√ᾱ, and E[ε | x_t] = -√(1-ᾱ) ∇ log q(x_t).

    Proof checked step by step: (i) ∂/∂x_t q(x_t|x_0) = q(x_t|x_0) (√ᾱ x_0 - x_t)/(1-ᾱ); (ii) multiply by q(x_0)
    and integrate over x_0 (linear, so done on the integrand): ∇q(x_t) = (√ᾱ E[x_0|x_t] - x_t) q(x_t)/(1-ᾱ);
    (iii) divide by q(x_t) and solve for E[x_0|x_t]; (iv) E[ε|x_t] from eq. (3) averaged given x_t.
    Returns ``(E_x0, E_eps)`` in terms of the symbol ``score`` = ∇ log q(x_t).
    """
    q_cond = sp.exp(gaussian_log_density(x_t, sp.sqrt(alphabar_t) * x_0, 1 - alphabar_t))
    # (i)
    check_equal(sp.simplify(sp.diff(q_cond, x_t) / q_cond - (sp.sqrt(alphabar_t) * x_0 - x_t) / (1 - alphabar_t)), 0,
                "(i) ∂q(x_t|x_0)/∂x_t")
    # (ii)-(iii): with m = E[x_0|x_t], ∇ log q(x_t) = (√ᾱ m - x_t)/(1-ᾱ)
    m, score = sp.symbols("m score", real=True)
    solved = sp.solve(sp.Eq(score, (sp.sqrt(alphabar_t) * m - x_t) / (1 - alphabar_t)), m)
    if len(solved) != 1:
        raise AssertionError(f"step failed: expected one solution for E[x_0|x_t], got {solved}")
    e_x0 = solved[0]
    check_equal(e_x0, (x_t + (1 - alphabar_t) * score) / sp.sqrt(alphabar_t),
                "(iii) E[x_0|x_t] = (x_t + (1-ᾱ)∇log q)/√ᾱ")
    # (iv) ε = (x_t - √ᾱ x_0)/√(1-ᾱ) is linear in x_0, so E[ε|x_t] = (x_t - √ᾱ E[x_0|x_t])/√(1-ᾱ).
    e_eps = sp.simplify((x_t - sp.sqrt(alphabar_t) * e_x0) / sp.sqrt(1 - alphabar_t))
    check_equal(e_eps, -sp.sqrt(1 - alphabar_t) * score, "(iv) E[ε|x_t] = -√(1-ᾱ) ∇log q(x_t)")
    return e_x0, e_eps, score


def tweedie_gaussian_data():
    """Tweedie checked end to end by integration when x_0 ~ N(m, s²) (1-D):
    q(x_t) = ∫ q(x_0) q(x_t|x_0) dx_0 and E[x_0|x_t] = ∫ x_0 q(x_0) q(x_t|x_0) dx_0 / q(x_t) are integrated by
    SymPy and E[x_0|x_t] is checked equal to (x_t + (1-ᾱ) d/dx_t log q(x_t))/√ᾱ.

    Steps: the exponent of q(x_0) q(x_t|x_0) is -A x_0² + B x_0 + C; with u = x_0 - B/(2A) the integrands become
    exp(-A u²) and (u + B/(2A)) exp(-A u²), which SymPy integrates.  The symbols a = √ᾱ_t, b = √(1-ᾱ_t) are
    positive (the identity holds for any a, b > 0); they are put back at the end.  Returns ``(q_xt, E_x0)``.
    """
    m = sp.Symbol("m", real=True)
    s, a, b = sp.symbols("s a b", positive=True)
    u = sp.Symbol("u", real=True)
    A_pos = sp.Symbol("A", positive=True)
    exponent = sp.expand(-((x_0 - m) ** 2) / (2 * s**2) - (x_t - a * x_0) ** 2 / (2 * b**2))
    A, B, C = -exponent.coeff(x_0, 2), exponent.coeff(x_0, 1), exponent.coeff(x_0, 0)
    check_equal(A, (a**2 / b**2 + 1 / s**2) / 2, "A = (a²/b² + 1/s²)/2 > 0")
    shift = B / (2 * A)
    check_equal(sp.expand(exponent - (-A * (x_0 - shift) ** 2 + C + B**2 / (4 * A))), 0, "completing the square in x_0")
    const = 1 / (2 * sp.pi * s * b)  # the two normalizing constants
    gauss0 = sp.integrate(sp.exp(-A_pos * u**2), (u, -sp.oo, sp.oo)).subs(A_pos, A)
    gauss1 = sp.integrate(u * sp.exp(-A_pos * u**2), (u, -sp.oo, sp.oo)).subs(A_pos, A)
    if gauss1 != 0:
        raise AssertionError("step failed: ∫ u exp(-A u²) du should be 0")
    q_xt = const * sp.exp(C + B**2 / (4 * A)) * gauss0
    first_moment = const * sp.exp(C + B**2 / (4 * A)) * (gauss1 + shift * gauss0)
    expected_q = sp.exp(gaussian_log_density(x_t, a * m, a**2 * s**2 + b**2))
    check_equal(sp.simplify(sp.powsimp(q_xt / expected_q, force=True)), 1, "q(x_t) = N(a m, a² s² + b²)")
    e_x0 = sp.simplify(first_moment / q_xt)
    tweedie = (x_t + b**2 * sp.diff(sp.log(expected_q), x_t)) / a
    check_equal(sp.simplify(e_x0 - tweedie), 0, "E[x_0|x_t] by integration = (x_t + b² ∇log q(x_t))/a")
    # And both equal Gaussian conditioning: m + a s²/(a² s² + b²) (x_t - a m).
    check_equal(sp.simplify(tweedie - (m + a * s**2 / (a**2 * s**2 + b**2) * (x_t - a * m))), 0,
                "Tweedie = Gaussian conditioning")
    back = {a: sp.sqrt(alphabar_t), b: sp.sqrt(1 - alphabar_t)}
    return expected_q.subs(back), sp.simplify(tweedie.subs(back))
