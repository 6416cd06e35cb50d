"""What every SymPy derivation of the book shares: one symbol set, its LaTeX names, one Gaussian log-density and
one step checker.

**One symbol per quantity.** Each quantity of the book has exactly one SymPy symbol, with one printed name, used by
all the chapters' modules (:mod:`.forward`, :mod:`.elbo`, :mod:`.posterior`, :mod:`.noise`, :mod:`.ddim`) and by the
notebooks, so that ᾱ_{t-1} is ``alphabar_prev`` everywhere and results of different chapters can be combined.
The symbols are per coordinate: all the Gaussians of the book are isotropic, so each coordinate of a vector obeys
the same formulas.

**Relations are substitutions.** β_t, ᾱ_t, α_t and ᾱ_{t-1} are four independent symbols. For two adjacent steps
they are tied by β_t = 1 - α_t and ᾱ_t = α_t ᾱ_{t-1} (chapter 01, ``eq-forward-step`` and ``eq-alpha-bar``);
:func:`in_primitives` substitutes both and writes an expression in the primitive symbols α_t and ᾱ_{t-1}, so every
identity between the schedule quantities is checked, not assumed. A derivation that must not tie them, such as
DDIM's skip from ᾱ_{t-1} to any ᾱ_t < ᾱ_{t-1} (chapter 08), simply does not call it.

**Checked steps.** :func:`check_equal` raises ``AssertionError`` naming the step unless SymPy proves lhs = rhs, and
returns the verified right-hand side; :func:`is_zero` is the proof attempt itself.

**Display.** :func:`latex` prints with the book's notation (ᾱ_{t-1}, not ``alphabar_prev``); :func:`show` displays
``lhs = expr`` in a notebook (IPython is imported only when it is called).
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "alpha_t",
    "beta_t",
    "alphabar_t",
    "alphabar_prev",
    "x_0",
    "x_t",
    "x_prev",
    "eps",
    "eps_theta",
    "x0_theta",
    "mu_theta",
    "sigma_t",
    "z",
    "v",
    "snr",
    "eta",
    "SYMBOLS",
    "LATEX_NAMES",
    "PRIMITIVES",
    "in_primitives",
    "latex",
    "show",
    "gaussian_log_density",
    "is_zero",
    "check_equal",
]

# --- the symbol set -------------------------------------------------------------------------------------
alpha_t = sp.Symbol("alpha_t", positive=True)  #: α_t = 1 - β_t, in (0, 1)
beta_t = sp.Symbol("beta_t", positive=True)  #: β_t, the variance of one forward step, in (0, 1)
alphabar_t = sp.Symbol("alphabar_t", positive=True)  #: ᾱ_t = Π_{s≤t} α_s (also ᾱ_T), in (0, 1)
alphabar_prev = sp.Symbol("alphabar_prev", positive=True)  #: ᾱ_{t-1} (or ᾱ of the previous step of a subsequence)
x_0 = sp.Symbol("x_0", real=True)  #: the data
x_t = sp.Symbol("x_t", real=True)  #: the noisy sample at step t
x_prev = sp.Symbol("x_prev", real=True)  #: x_{t-1}
eps = sp.Symbol("epsilon", real=True)  #: ε ~ N(0, 1), the noise with x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε
eps_theta = sp.Symbol("epsilon_theta", real=True)  #: ε̃_θ(x_t, t), the network's estimate of ε
x0_theta = sp.Symbol("x0_theta", real=True)  #: x̃_θ(x_t, t), the network's estimate of x_0
mu_theta = sp.Symbol("mu_theta", real=True)  #: μ_θ(x_t, t), the mean of p_θ(x_{t-1} | x_t)
sigma_t = sp.Symbol("sigma_t", positive=True)  #: σ_t, the standard deviation of a sampling step p_θ(x_{t-1} | x_t)
z = sp.Symbol("z", real=True)  #: z ~ N(0, 1), the fresh noise of a sampling step
v = sp.Symbol("v", real=True)  #: v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (the v-prediction target)
snr = sp.Symbol("SNR", positive=True)  #: SNR(t) = ᾱ_t / (1 - ᾱ_t)
eta = sp.Symbol("eta", nonnegative=True)  #: η = σ_t / σ̃_t of DDIM

SYMBOLS = (alpha_t, beta_t, alphabar_t, alphabar_prev, x_0, x_t, x_prev, eps, eps_theta, x0_theta, mu_theta,
           sigma_t, z, v, snr, eta)

#: how each symbol of the set prints in LaTeX
LATEX_NAMES = {
    alpha_t: r"\alpha_t",
    beta_t: r"\beta_t",
    alphabar_t: r"\bar\alpha_t",
    alphabar_prev: r"\bar\alpha_{t-1}",
    x_0: "x_0",
    x_t: "x_t",
    x_prev: "x_{t-1}",
    eps: r"\epsilon",
    eps_theta: r"\tilde\epsilon_\theta",
    x0_theta: r"\tilde x_\theta",
    mu_theta: r"\mu_\theta",
    sigma_t: r"\sigma_t",
    z: "z",
    v: "v",
    snr: r"\mathrm{SNR}",
    eta: r"\eta",
}

#: β_t and ᾱ_t in the primitive symbols, for two adjacent steps (chapter 01, ``eq-alpha-bar``)
PRIMITIVES = {beta_t: 1 - alpha_t, alphabar_t: alpha_t * alphabar_prev}


def in_primitives(expr):
    """``expr`` with β_t = 1 - α_t and ᾱ_t = α_t ᾱ_{t-1} substituted: written in α_t and ᾱ_{t-1} only."""
    return sp.sympify(expr).subs(PRIMITIVES)


# --- display --------------------------------------------------------------------------------------------
def latex(expr, **kwargs) -> str:
    """``sympy.latex`` with the book's symbol names (ᾱ_{t-1} for ``alphabar_prev``, ...).

    ``symbol_names`` adds or overrides names; every other keyword goes to ``sympy.latex``.
    """
    names = dict(LATEX_NAMES)
    names.update(kwargs.pop("symbol_names", None) or {})
    return sp.latex(expr, symbol_names=names, **kwargs)


def show(lhs: str, expr, **kwargs) -> None:
    """Display ``lhs = expr`` in a notebook: ``lhs`` is LaTeX, ``expr`` is printed by :func:`latex` (``kwargs``
    go to it)."""
    from IPython.display import Math, display

    display(Math(f"{lhs} = {latex(expr, **kwargs)}"))


# --- the Gaussian log-density -------------------------------------------------------------------------------
def gaussian_log_density(x, mean, variance):
    """log N(x; mean, variance) of a scalar, normalizing constant included."""
    return -sp.log(2 * sp.pi * variance) / 2 - (x - mean) ** 2 / (2 * variance)


# --- checked steps ---------------------------------------------------------------------------------------
def _forcing_is_safe(expr) -> bool:
    """Whether logarithms and fractional powers in ``expr`` may be expanded by force: only when the argument of every
    logarithm and the base of every fractional power contain positive symbols only.

    That admits the schedule quantities (positive symbols whose upper bound, α_t < 1, SymPy cannot state) and
    rejects false identities such as √(x²) = x for a real x.
    """
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.log):
            inner = node.args[0]
        elif isinstance(node, sp.Pow) and not node.exp.is_integer:
            inner = node.base
        else:
            continue
        if not all(symbol.is_positive for symbol in inner.free_symbols):
            return False
    return True


def is_zero(expr) -> bool:
    """True when SymPy proves that ``expr`` is identically 0.

    Tried in turn: ``simplify``; a rational normal form (``together``, ``radsimp``); and, where
    :func:`_forcing_is_safe`, with the logarithms and powers expanded by force and, for an expression with
    logarithms, exp(expr) = 1 (equivalent for a real expression, and it lets SymPy cancel products inside the
    logarithms).
    """
    expr = sp.sympify(expr)
    if expr == 0 or sp.simplify(expr) == 0:
        return True
    if sp.simplify(sp.radsimp(sp.together(sp.expand(expr)))) == 0:
        return True
    if not _forcing_is_safe(expr):
        return False
    if sp.simplify(sp.expand(sp.expand_log(sp.powsimp(expr, force=True), force=True))) == 0:
        return True
    return expr.has(sp.log) and sp.simplify(sp.powsimp(sp.exp(sp.expand(expr)), force=True)) == 1


def check_equal(lhs, rhs, step: str):
    """One checked step of a derivation: raise ``AssertionError`` naming ``step`` unless lhs - rhs is proved 0
    (:func:`is_zero`); return ``rhs``, the verified form."""
    difference = sp.sympify(lhs) - sp.sympify(rhs)
    if not is_zero(difference):
        raise AssertionError(f"step '{step}' failed: lhs - rhs does not simplify to 0 "
                             f"(simplify gives {sp.simplify(difference)})")
    return rhs
