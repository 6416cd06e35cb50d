"""Chapter 11 (``notebooks/11_continuous_time``): from the chain to the SDE and the probability-flow ODE, DDIM as
Euler's method, DPM-Solver++ as an exponential integrator, the instantaneous change of variables, Hutchinson's
estimator, and the dictionary between flow matching and the VP diffusion.

Every function builds the expressions of one derivation, checks each step with :func:`check_equal` (or a series
expansion, where the claim is an order in the step size) and returns the verified result; a failed step raises
``AssertionError`` naming it. Symbols: the book's set (:mod:`ddpm_lib.symbolic._common`) and, for continuous time,
the ones defined here: the time ``tau`` (printed t), the step ``dt`` (Δt), β(t) = ``beta_of(tau)`` and
ᾱ(t) = ``abar_of(tau)`` as undetermined functions, the noise level ``sigma`` (σ), the flow time ``s``, and ``a``,
``b`` for √ᾱ, √(1-ᾱ) where a derivation needs them as plain symbols.

Equations (labels of chapter 11): ``eq-vp-sde``, ``eq-alpha-bar-continuous``, ``eq-fokker-planck``,
``eq-vp-moments``, ``eq-pf-ode``, ``eq-score-eps``, ``eq-xbar-sigma``, ``eq-pf-ode-sigma``, ``eq-ddim-euler``,
``eq-dpm-solver-exact``, ``eq-dpm-solver-2m``, ``eq-ode-likelihood``, ``eq-hutchinson``, ``eq-flow-path``,
``eq-flow-velocity``, ``eq-flow-conversions``, ``eq-flow-vp-map``, ``eq-flow-ode``.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import sympy as sp

from ._common import alphabar_prev, alphabar_t, check_equal, eps, eps_theta, v, x0_theta, x_0, x_t
from ._common import latex  # noqa: F401  (re-exported: the chapter prints with it)

__all__ = [
    "tau", "dt", "beta", "x", "sigma", "sigma_prev", "s", "a", "b", "h", "r", "u", "beta_of", "abar_of",
    "forward_step_is_euler_maruyama",
    "alpha_bar_continuous",
    "fokker_planck_operator",
    "gaussian_marginals_solve_fokker_planck",
    "probability_flow_ode",
    "score_through_eps",
    "pf_ode_in_xbar_sigma",
    "ddim_is_euler",
    "dpm_solver_exact_step",
    "dpm_solver_2m_local_error",
    "change_of_variables_gaussian",
    "hutchinson_moments",
    "flow_conversions",
    "flow_ode_is_pf_ode",
    "flow_euler_is_ddim",
]

# --- symbols of continuous time ------------------------------------------------------------------------------
tau = sp.Symbol("t", nonnegative=True)  #: continuous time t ∈ [0, 1] (``tau`` in Python: ``t`` is a code index)
dt = sp.Symbol("Delta_t", positive=True)  #: the time step Δt = 1/T
beta = sp.Symbol("beta", positive=True)  #: β(t) at the current time, as a number (one step)
x = sp.Symbol("x", real=True)  #: a point of the state space (one coordinate)
sigma = sp.Symbol("sigma", positive=True)  #: σ = √((1-ᾱ)/ᾱ), the noise level of x̄ = x/√ᾱ
sigma_prev = sp.Symbol("sigma_prev", nonnegative=True)  #: σ of the next (lower) level of a sampler
s = sp.Symbol("s", positive=True)  #: the time of the linear (flow-matching) path, in (0, 1)
a = sp.Symbol("a", positive=True)  #: √ᾱ, as a plain symbol
b = sp.Symbol("b", positive=True)  #: √(1-ᾱ), as a plain symbol (a² + b² = 1)
h = sp.Symbol("h", positive=True)  #: the step in λ = -log σ: h = log(σ/σ_prev)
r = sp.Symbol("r", positive=True)  #: the ratio of the previous step to this one, h_last / h
u = sp.Symbol("u", real=True)  #: the velocity of the linear path, u = dx_s/ds
beta_of = sp.Function("beta", positive=True)  #: β(t), the continuous-time noise rate
abar_of = sp.Function("alphabar", positive=True)  #: ᾱ(t)

_mu, _s0 = sp.symbols("mu s_0", positive=True)  # Gaussian data N(μ, s_0²) (per coordinate)
_c = sp.Symbol("c", real=True)  # a standardized starting point: x(0) = μ + c s_0


def forward_step_is_euler_maruyama():
    """One step of the chain, x_t = √(1-β_t) x_{t-1} + √β_t ε (chapter 01, ``eq-forward-step``), with β_t = β(t) Δt,
    is the Euler–Maruyama step of the VP-SDE dx = -½β(t) x dt + √β(t) dW (eq. ``eq-vp-sde``) up to O(Δt²):

        √(1-βΔt) = 1 - ½βΔt + O(Δt²),  √(βΔt) ε = √β · √Δt ε  (and √Δt ε ~ N(0, Δt) is the Brownian increment).

    Returns ``(chain_step, euler_maruyama_step, difference_series)``; the series of the difference in Δt has no
    term of order < 2 (checked).
    """
    chain = sp.sqrt(1 - beta * dt) * x + sp.sqrt(beta * dt) * eps
    drift, diffusion = -beta * x / 2, sp.sqrt(beta)
    em = x + drift * dt + diffusion * sp.sqrt(dt) * eps
    series = sp.series(chain - em, dt, 0, 2).removeO()
    check_equal(series, 0, "chain step - Euler–Maruyama step = O(Δt²)")
    check_equal(sp.series(sp.sqrt(1 - beta * dt), dt, 0, 2).removeO(), 1 - beta * dt / 2, "√(1-βΔt) = 1 - βΔt/2 + O(Δt²)")
    return chain, em, sp.series(chain - em, dt, 0, 3)


def alpha_bar_continuous():
    """ᾱ(t) = exp(-∫_0^t β) (eq. ``eq-alpha-bar-continuous``): the product of the α = 1 - β(t_i)Δt of the chain has
    log ᾱ = Σ log(1 - β(t_i)Δt) = -Σ β(t_i)Δt + O(Δt) in total (each term is -βΔt + O(Δt²), checked), a Riemann sum
    of -∫β; and ᾱ(t) = exp(-∫_0^t β) solves dᾱ/dt = -β(t) ᾱ with ᾱ(0) = 1, as does the solution SymPy's ODE
    solver finds (both checked; the solution is unique). Returns exp(-∫_0^t β)."""
    check_equal(sp.series(sp.log(1 - beta * dt), dt, 0, 2).removeO(), -beta * dt, "log(1-βΔt) = -βΔt + O(Δt²)")
    ode = sp.Eq(abar_of(tau).diff(tau), -beta_of(tau) * abar_of(tau))
    solution = sp.dsolve(ode, abar_of(tau), ics={abar_of(0): 1}).rhs
    t_ = sp.Symbol("t'", nonnegative=True)
    closed = sp.exp(-sp.Integral(beta_of(t_), (t_, 0, tau)))
    for name, expr in (("SymPy's solution", solution), ("exp(-∫_0^t β)", closed)):
        check_equal(expr.diff(tau), -beta_of(tau) * expr, f"{name} solves dᾱ/dt = -β ᾱ")
        check_equal(expr.subs(tau, 0), 1, f"{name} has ᾱ(0) = 1")
    return closed


def fokker_planck_operator(p, drift, diffusion_sq):
    """∂p/∂t = -∂_x(f p) + ½ g² ∂²_x p, the Fokker–Planck equation of dx = f dt + g dW (eq. ``eq-fokker-planck``):
    the right-hand side for a density ``p`` (an expression in x), drift f and g² = ``diffusion_sq``."""
    return -sp.diff(drift * p, x) + diffusion_sq * sp.diff(p, x, 2) / 2


def _gaussian_density(mean, variance):
    return sp.exp(-(x - mean) ** 2 / (2 * variance)) / sp.sqrt(2 * sp.pi * variance)


@lru_cache(maxsize=None)
def gaussian_marginals_solve_fokker_planck():
    """For Gaussian data N(μ, s_0²), the VP-SDE's marginal is N(m(t), v(t)) with (eq. ``eq-vp-moments``)

        m(t) = √ᾱ(t) μ,   v(t) = ᾱ(t) s_0² + 1 - ᾱ(t),   ᾱ(t) = exp(-∫_0^t β):

    the Gaussian with these moments is substituted into the Fokker–Planck equation with f = -½β x, g² = β and
    β = -ᾱ'/ᾱ, and the residual divided by the density is checked to be 0 for every x and t (so the moment ODEs
    m' = -½βm, v' = β(1 - v) hold). At s_0 → 0 (data at the point μ = x_0) it is chapter 01's
    q(x_t | x_0) = N(√ᾱ_t x_0, 1 - ᾱ_t) (``eq-q-xt-x0``). Returns ``(m, v)`` in ᾱ(t).
    """
    A = abar_of(tau)
    beta_t = -A.diff(tau) / A
    m, var = sp.sqrt(A) * _mu, A * _s0**2 + 1 - A
    p = _gaussian_density(m, var)
    residual = sp.diff(p, tau) - fokker_planck_operator(p, -beta_t * x / 2, beta_t)
    check_equal(sp.expand(sp.simplify(residual / p)), 0, "N(√ᾱ μ, ᾱ s_0² + 1 - ᾱ) solves the Fokker–Planck equation")
    check_equal(sp.diff(m, tau), -beta_t * m / 2, "m' = -½β m")
    check_equal(sp.diff(var, tau), beta_t * (1 - var), "v' = β (1 - v)")
    check_equal(m.subs(A, alphabar_t).subs(_mu, x_0), sp.sqrt(alphabar_t) * x_0, "s_0 = 0: mean √ᾱ_t x_0")
    check_equal(var.subs(A, alphabar_t).subs(_s0, 0), 1 - alphabar_t, "s_0 = 0: variance 1 - ᾱ_t")
    return m, var


def probability_flow_ode():
    """The probability-flow ODE (Song et al. 2021, eq. 13; chapter 11, eqs. ``eq-pf-ode`` and ``eq-score-eps``).

    For any density p(x, t), -∂_x(f p) + ½g² ∂²_x p = -∂_x[(f - ½g² ∂_x log p) p] (checked for an undetermined p):
    the Fokker–Planck equation of the SDE is the continuity equation of the deterministic flow
    dx/dt = f - ½g² ∇ log p_t, which therefore has the same marginals. For the VP-SDE, with the score written through
    ε̂ (``eq-score-eps``), dx/dt = -½β(t) [x - ε̂/√(1-ᾱ)]. Checked on Gaussian data as well: the trajectory
    x(t) = m(t) + c √v(t) (a fixed standardized position in the moving Gaussian of
    :func:`gaussian_marginals_solve_fokker_planck`) solves dx/dt = -½β (x + ∇ log p_t). Returns the drift in ε̂ and ᾱ
    (symbols ``eps_theta``, ``alphabar_t``, ``beta``).
    """
    p = sp.Function("p", positive=True)(x, tau)
    f = sp.Function("f", real=True)(x, tau)
    g2 = sp.Symbol("g^2", positive=True)
    lhs = fokker_planck_operator(p, f, g2)
    rhs = -sp.diff((f - g2 * sp.diff(sp.log(p), x) / 2) * p, x)
    check_equal(sp.expand(lhs), sp.expand(rhs), "Fokker–Planck = continuity equation of f - ½g² ∇log p")
    # Gaussian data: the flow moves every point with its standardized position c fixed
    A = abar_of(tau)
    beta_t = -A.diff(tau) / A
    m, var = gaussian_marginals_solve_fokker_planck()
    traj = m + _c * sp.sqrt(var)
    score = -(x - m) / var
    velocity = (-beta_t * (x + score) / 2).subs(x, traj)
    check_equal(sp.diff(traj, tau) - velocity, 0, "x(t) = m + c√v solves dx/dt = -½β(x + score)")
    drift = -beta * (x_t - eps_theta / sp.sqrt(1 - alphabar_t)) / 2
    check_equal(drift, -beta * (x_t + score_through_eps()) / 2, "score = -ε̂/√(1-ᾱ) in the drift")
    return drift


def score_through_eps():
    """∇_x log q(x_t | x_0) = -(x_t - √ᾱ x_0)/(1-ᾱ) = -ε/√(1-ᾱ) (chapter 04, ``eq-score-q-xt-x0``), and so, for the
    network's ε̂ = E[ε | x_t] (chapter 04, ``eq-eps-score``), ∇ log q_t(x_t) = -ε̂/√(1-ᾱ) (eq. ``eq-score-eps``).
    Returns the score in ε̂ (``eps_theta``)."""
    log_q = -(x_t - sp.sqrt(alphabar_t) * x_0) ** 2 / (2 * (1 - alphabar_t))
    score = sp.diff(log_q, x_t).subs(x_t, sp.sqrt(alphabar_t) * x_0 + sp.sqrt(1 - alphabar_t) * eps)
    check_equal(score, -eps / sp.sqrt(1 - alphabar_t), "∇ log q(x_t | x_0) = -ε/√(1-ᾱ)")
    return -eps_theta / sp.sqrt(1 - alphabar_t)


def pf_ode_in_xbar_sigma():
    """In x̄ = x/√ᾱ and σ = √((1-ᾱ)/ᾱ) (eq. ``eq-xbar-sigma``) the probability-flow ODE is dx̄/dσ = ε̂
    (eq. ``eq-pf-ode-sigma``).

    Checked: x̄ = x_0 + σ ε for x_t = √ᾱ x_0 + √(1-ᾱ) ε; and, with x(t) moving by dx/dt = -½β(x - ε̂/√(1-ᾱ)),
    β = -ᾱ'/ᾱ, the chain rule gives dx̄/dt = ½β ε̂/√(ᾱ(1-ᾱ)) and dσ/dt = ½β/√(ᾱ(1-ᾱ)), whose ratio is ε̂.
    Returns ``(dxbar_dt, dsigma_dt)`` in ᾱ (``alphabar_t``), β and ε̂.
    """
    sig = sp.sqrt((1 - alphabar_t) / alphabar_t)
    xbar_of_noise = (sp.sqrt(alphabar_t) * x_0 + sp.sqrt(1 - alphabar_t) * eps) / sp.sqrt(alphabar_t)
    check_equal(xbar_of_noise, x_0 + sig * eps, "x̄ = x_0 + σ ε")
    A = abar_of(tau)
    X = sp.Function("x", real=True)(tau)
    beta_t = -A.diff(tau) / A
    dx = -beta_t * (X - eps_theta / sp.sqrt(1 - A)) / 2
    dxbar = sp.diff(X / sp.sqrt(A), tau).subs(X.diff(tau), dx)
    dsig = sp.diff(sp.sqrt((1 - A) / A), tau)
    plain = {A.diff(tau): -beta * alphabar_t}  # β = -ᾱ'/ᾱ, then ᾱ(t) as the symbol ᾱ
    dxbar, dsig = (e.subs(plain).subs(A, alphabar_t) for e in (dxbar, dsig))
    want_dxbar = beta * eps_theta / (2 * sp.sqrt(alphabar_t * (1 - alphabar_t)))
    want_dsig = beta / (2 * sp.sqrt(alphabar_t * (1 - alphabar_t)))
    check_equal(dxbar, want_dxbar, "dx̄/dt = ½β ε̂/√(ᾱ(1-ᾱ)): the x terms cancel")
    check_equal(dsig, want_dsig, "dσ/dt = ½β/√(ᾱ(1-ᾱ))")
    check_equal(dxbar / dsig, eps_theta, "dx̄/dσ = ε̂")
    return want_dxbar, want_dsig


def ddim_is_euler():
    """DDIM with η = 0 (chapter 08, ``eq-ddim-step``), x' = √ᾱ' x̂_0 + √(1-ᾱ') ε̂ with x̂_0 = (x - √(1-ᾱ) ε̂)/√ᾱ, is
    exactly one Euler step of dx̄/dσ = ε̂ (eq. ``eq-ddim-euler``): x'/√ᾱ' = x/√ᾱ + (σ' - σ) ε̂, for any pair of levels
    ᾱ = ``alphabar_t`` < ᾱ' = ``alphabar_prev``. Returns the Euler step in x̄."""
    x0_hat = (x_t - sp.sqrt(1 - alphabar_t) * eps_theta) / sp.sqrt(alphabar_t)
    ddim = sp.sqrt(alphabar_prev) * x0_hat + sp.sqrt(1 - alphabar_prev) * eps_theta
    sig, sig_prev = (sp.sqrt((1 - ab) / ab) for ab in (alphabar_t, alphabar_prev))
    euler = x_t / sp.sqrt(alphabar_t) + (sig_prev - sig) * eps_theta
    check_equal(ddim / sp.sqrt(alphabar_prev), euler, "DDIM η = 0 in x̄ = x̄ + (σ' - σ) ε̂")
    return euler


def dpm_solver_exact_step():
    """DPM-Solver++ (Lu et al. 2022) as an exponential integrator (eqs. ``eq-dpm-solver-exact``, ``eq-dpm-solver-2m``).

    With ε̂ = (x̄ - x̂_0)/σ the ODE reads dx̄/dσ = (x̄ - x̂_0)/σ; in λ = -log σ it is dx̄/dλ = x̂_0(λ) - x̄, whose
    exact solution over a step of size h from λ to λ' = λ + h (σ' = σ e^{-h}) is

        x̄(λ') = e^{-h} x̄(λ) + ∫_λ^{λ'} e^{-(λ'-ℓ)} x̂_0(ℓ) dℓ.

    The linear part is solved exactly; only x̂_0 is approximated. With x̂_0(ℓ) = x̂_0 + (ℓ - λ) D_1 (a line in λ):
    x̄' = e^{-h} x̄ + (1 - e^{-h}) x̂_0 + (h - 1 + e^{-h}) D_1 (integral done by SymPy; and the closed form is
    checked to solve the ODE). D_1 = 0 is DPM-Solver++(1) = DDIM = the Euler step (checked against
    :func:`ddim_is_euler` in σ). Returns ``(exact_step, first_order_step)`` in the symbols x̄ = ``x``, x̂_0 =
    ``x0_theta``, D_1 = ``D_1``, h, σ, σ' = ``sigma_prev``.
    """
    lam, ell = sp.symbols("lambda ell", real=True)
    d1 = sp.Symbol("D_1", real=True)
    x0_line = x0_theta + (ell - lam) * d1
    integral = sp.integrate(sp.exp(-(lam + h - ell)) * x0_line, (ell, lam, lam + h))
    step = sp.exp(-h) * x + integral
    closed = sp.exp(-h) * x + (1 - sp.exp(-h)) * x0_theta + (h - 1 + sp.exp(-h)) * d1
    check_equal(step, closed, "∫ e^{-(λ'-ℓ)} (x̂_0 + (ℓ-λ) D_1) dℓ in closed form")
    # the closed form, as a function of the end point λ + h, solves dx̄/dλ = x̂_0(λ) - x̄ and starts at x̄
    check_equal(sp.diff(closed, h), x0_line.subs(ell, lam + h) - closed, "dx̄/dλ = x̂_0(λ) - x̄")
    check_equal(closed.subs(h, 0), x, "x̄(λ) at h = 0")
    first = closed.subs(d1, 0).subs(h, sp.log(sigma / sigma_prev))
    eps_hat = (x - x0_theta) / sigma
    check_equal(first, x + (sigma_prev - sigma) * eps_hat, "DPM-Solver++(1) = Euler in σ = DDIM η = 0")
    return closed, first


def dpm_solver_2m_local_error():
    """DPM-Solver++(2M) takes D_1 from the previous x̂_0, D_1 ≈ (x̂_0 - x̂_0^{last})/h_last with h_last = r h, and
    replaces the exact coefficient (h - 1 + e^{-h}) of :func:`dpm_solver_exact_step` by (1 - e^{-h}) h/2, so that
    (eq. ``eq-dpm-solver-2m``)

        x̄' = e^{-h} x̄ + (1 - e^{-h}) [(1 + 1/(2r)) x̂_0 - 1/(2r) x̂_0^{last}].

    Checked: the two coefficients agree up to O(h³) (series), so with x̂_0 - x̂_0^{last} = O(h) the step's local error
    is O(h³) and the method is second order; and the update in the bracket form is the exact-integral form with the
    replaced coefficient. Returns the difference of the coefficients as a series in h.
    """
    exact, used = h - 1 + sp.exp(-h), (1 - sp.exp(-h)) * h / 2
    diff = sp.series(exact - used, h, 0, 4)
    check_equal(sp.series(exact - used, h, 0, 3).removeO(), 0, "(h - 1 + e^{-h}) - (1 - e^{-h}) h/2 = O(h³)")
    x0_last = sp.Symbol("x0_last", real=True)
    d1 = (x0_theta - x0_last) / (r * h)
    bracket = sp.exp(-h) * x + (1 - sp.exp(-h)) * ((1 + 1 / (2 * r)) * x0_theta - x0_last / (2 * r))
    check_equal(bracket, sp.exp(-h) * x + (1 - sp.exp(-h)) * x0_theta + used * d1, "2M = exact form with (1-e^{-h})h/2")
    return diff


def change_of_variables_gaussian():
    """The instantaneous change of variables (Chen et al. 2018; eq. ``eq-ode-likelihood``) on Gaussian data in
    (x̄, σ): p_σ = N(μ, s_0² + σ²), the drift ε̂ = -σ ∂_x̄ log p_σ = σ (x̄ - μ)/(s_0² + σ²), and along the trajectory
    x̄(σ) = μ + c √(s_0² + σ²) (which solves dx̄/dσ = ε̂, checked) the log-density obeys
    d log p_σ(x̄(σ))/dσ = -∂_x̄ ε̂. Returns ``(drift, divergence)``."""
    var = _s0**2 + sigma**2
    log_p = -sp.log(2 * sp.pi * var) / 2 - (x - _mu) ** 2 / (2 * var)
    drift = -sigma * sp.diff(log_p, x)
    check_equal(drift, sigma * (x - _mu) / var, "ε̂ = σ (x̄ - μ)/(s_0² + σ²)")
    traj = _mu + _c * sp.sqrt(var)
    check_equal(sp.diff(traj, sigma), drift.subs(x, traj), "x̄(σ) = μ + c√(s_0²+σ²) solves dx̄/dσ = ε̂")
    div = sp.diff(drift, x)
    check_equal(sp.diff(log_p.subs(x, traj), sigma), -div.subs(x, traj), "d log p/dσ = -∇·ε̂ along the path")
    return drift, div


def hutchinson_moments(n: int = 3):
    """Hutchinson's estimator (Hutchinson 1989; eq. ``eq-hutchinson``) for an n×n matrix J of symbols and a Rademacher
    probe v (each of the 2^n sign patterns equally likely): E[vᵀJv] = tr J, and
    Var[vᵀJv] = Σ_{i<j} (J_ij + J_ji)² — only the off-diagonal entries cost variance. Both by enumeration.
    Returns ``(J, mean, variance)``."""
    J = sp.Matrix(n, n, lambda i, j: sp.Symbol(f"J_{i + 1}{j + 1}", real=True))
    values = [(sp.Matrix(signs).T * J * sp.Matrix(signs))[0] for signs in product((1, -1), repeat=n)]
    mean = sp.expand(sum(values) / len(values))
    variance = sp.expand(sum((val - mean) ** 2 for val in values) / len(values))
    check_equal(mean, J.trace(), "E[vᵀJv] = tr J")
    want = sum((J[i, j] + J[j, i]) ** 2 for i in range(n) for j in range(i + 1, n))
    check_equal(variance, want, "Var[vᵀJv] = Σ_{i<j} (J_ij + J_ji)²")
    return J, mean, variance


def flow_conversions():
    """The linear path and its dictionary to the VP diffusion (Liu et al. 2023; Lipman et al. 2023; chapter 11,
    eqs. ``eq-flow-path``, ``eq-flow-velocity``, ``eq-flow-conversions``, ``eq-flow-vp-map``).

    - x_s = (1-s) x_0 + s ε, u = dx_s/ds = ε - x_0;
    - from (x_s, u): x̂_0 = x_s - s u, ε̂ = x_s + (1-s) u (solved by SymPy);
    - x_t = a x_0 + b ε (a = √ᾱ, b = √(1-ᾱ)) divided by a + b is the path's point at s = b/(a+b), i.e.
      σ = b/a = s/(1-s), and back ᾱ = (1-s)²/((1-s)² + s²);
    - chapter 04's v = a ε - b x_0 (``eq-v-def``) gives u = (a+b) v + (b-a) x_t (using a² + b² = 1).

    Returns a dict of the verified expressions.
    """
    x_s_sym = sp.Symbol("x_s", real=True)
    path = (1 - s) * x_0 + s * eps
    velocity = sp.diff(path, s)
    check_equal(velocity, eps - x_0, "u = dx_s/ds = ε - x_0")
    sol = sp.solve([sp.Eq(x_s_sym, (1 - s) * x_0 + s * eps), sp.Eq(u, eps - x_0)], [x_0, eps], dict=True)[0]
    check_equal(sol[x_0], x_s_sym - s * u, "x̂_0 = x_s - s u")
    check_equal(sol[eps], x_s_sym + (1 - s) * u, "ε̂ = x_s + (1-s) u")
    vp = a * x_0 + b * eps
    s_of_ab = b / (a + b)
    check_equal(vp / (a + b), path.subs(s, s_of_ab), "x_t/(a+b) = the path at s = b/(a+b)")
    check_equal(s_of_ab / (1 - s_of_ab), b / a, "s/(1-s) = b/a = σ")
    ab_of_s = (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
    root = {a: sp.sqrt(alphabar_t), b: sp.sqrt(1 - alphabar_t)}
    check_equal(ab_of_s.subs(s, s_of_ab).subs(root), alphabar_t, "ᾱ = (1-s)²/((1-s)² + s²)")
    v_expr = a * eps - b * x_0
    u_from_v = ((a + b) * v + (b - a) * x_t).subs({v: v_expr, x_t: vp})
    check_equal(u_from_v.subs(root), (eps - x_0), "u = (a+b) v + (b-a) x_t")
    return {"path": path, "velocity": velocity, "x0_hat": sol[x_0], "eps_hat": sol[eps], "s_of_vp": s_of_ab,
            "alpha_bar_of_s": ab_of_s, "u_from_v": (a + b) * v + (b - a) * x_t}


def flow_ode_is_pf_ode():
    """The flow ODE dx_s/ds = û (eq. ``eq-flow-ode``) is the probability-flow ODE dx̄/dσ = ε̂ in other coordinates:
    with x_s = x̄ (1-s) and s = σ/(1+σ) (so 1 - s = 1/(1+σ)), a path x̄(σ) solving dx̄/dσ = ε̂ gives
    dx_s/ds = (ε̂ - x_s)/(1-s), which is the û of (x_s, ε̂) by ``eq-flow-conversions`` (û = (ε̂ - x_s)/(1-s)).
    Returns dx_s/ds in x_s, s, ε̂."""
    X = sp.Function("xbar", real=True)(sigma)
    x_s_sym = sp.Symbol("x_s", real=True)
    x_s_of_sigma = X / (1 + sigma)
    dxs_dsigma = sp.diff(x_s_of_sigma, sigma).subs(X.diff(sigma), eps_theta)
    ds_dsigma = sp.diff(sigma / (1 + sigma), sigma)
    dxs_ds = (dxs_dsigma / ds_dsigma).subs(X, x_s_sym * (1 + sigma)).subs(sigma, s / (1 - s))
    want = (eps_theta - x_s_sym) / (1 - s)
    check_equal(dxs_ds, want, "dx_s/ds = (ε̂ - x_s)/(1-s)")
    u_of_eps = sp.solve(sp.Eq(eps_theta, x_s_sym + (1 - s) * u), u)[0]
    check_equal(u_of_eps, want, "= û from ε̂ = x_s + (1-s) û")
    return want


def flow_euler_is_ddim():
    """Euler's method on the flow ODE (eq. ``eq-flow-ode``) is Euler's method on dx̄/dσ = ε̂, i.e. DDIM with η = 0
    (eq. ``eq-ddim-euler``), on the grid σ = s/(1-s): with x_s = x̄ (1-s) and û = (ε̂ - x_s)/(1-s)
    (:func:`flow_ode_is_pf_ode`), the step x_s' = x_s + (s' - s) û, divided by 1 - s', is x̄ + (σ' - σ) ε̂. The two
    samplers differ only in their grids. Returns the step in x̄."""
    s_next = sp.Symbol("s'", positive=True)
    x_bar, sig = sp.Symbol("xbar", real=True), lambda q: q / (1 - q)
    x_s_sym = x_bar * (1 - s)
    u_hat = (eps_theta - x_s_sym) / (1 - s)
    step = (x_s_sym + (s_next - s) * u_hat) / (1 - s_next)
    euler = x_bar + (sig(s_next) - sig(s)) * eps_theta
    check_equal(step, euler, "flow Euler step = Euler step in (x̄, σ) with σ = s/(1-s)")
    return euler
