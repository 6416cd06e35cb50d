"""The probability-flow ODE of the VP diffusion, written through ε̂, and the exact likelihood it gives (chapter 11).

Two coordinate systems (chapter 11, eqs. ``eq-pf-ode`` and ``eq-pf-ode-sigma``):

- (x, t): the VP-SDE dx = -½ β(t) x dt + √β(t) dW, whose Euler–Maruyama discretisation is the forward chain of
  chapter 01, has the probability-flow ODE dx/dt = -½ β(t) [x + ∇ log q_t(x)] = -½ β(t) [x - ε̂/√(1-ᾱ)]
  (:func:`pf_ode_drift`); the score is ∇ log q_t(x_t) = -ε̂/√(1-ᾱ_t) (:func:`score_from_eps`, chapter 04's
  Tweedie section).
- (x̄, σ) with x̄ = x/√ᾱ and σ = √((1-ᾱ)/ᾱ) (:func:`sigma_from_alpha_bar`): x̄ = x_0 + σ ε, a variance-exploding
  process, and the same ODE reads dx̄/dσ = ε̂(x̄ √ᾱ(σ), t(σ)) — the drift *is* the network's ε̂ (Karras et al.
  2022's ODE with scaling s(t) = 1 and σ(t) = t). In code an ``eps_fn(x_bar, sigma) -> ε̂`` is that drift:
  :func:`mixture_eps_fn` (exact, any σ ≥ 0) or :func:`model_eps_fn` (a network, only at the σ of its integer
  timesteps).

The solvers that integrate the ODE from noise to data are in :mod:`ddpm_lib.solvers`; this module integrates it
the other way, from data to noise, with the divergence of the drift: :func:`ode_log_likelihood` (the instantaneous
change of variables, Chen et al. 2018; Song et al. 2021, §4.3 and appendix D.2), with the exact divergence
(:func:`divergence`) or Hutchinson's estimator with Rademacher probes. :func:`dequantize` and
:func:`dequantized_bits_per_dim` turn the density into a bound on the probability of discrete data.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, NamedTuple

import torch

from ._checks import OBJECTIVES, check_choice, check_int, check_positive
from .data import GaussianMixture
from .diffusion import call_model, model_predictions
from .likelihood import bits_per_dim, gaussian_log_density
from .postprocess import from_levels, to_levels
from .schedules import NoiseSchedule

__all__ = [
    "sigma_from_alpha_bar",
    "alpha_bar_from_sigma",
    "timestep_sigmas",
    "score_from_eps",
    "eps_from_score",
    "pf_ode_drift",
    "mixture_eps_fn",
    "model_eps_fn",
    "karras_sigmas",
    "divergence",
    "ODELogLikelihood",
    "ode_log_likelihood",
    "dequantize",
    "dequantized_bits_per_dim",
]

DIVERGENCES = ("exact", "hutchinson")


def _check_alpha_bar(alpha_bar, allow_one: bool = True):
    """ᾱ as a float (a number) or a float64-compatible tensor, in (0, 1] (or (0, 1))."""
    if isinstance(alpha_bar, torch.Tensor):
        if not alpha_bar.is_floating_point():
            raise TypeError(f"alpha_bar must be a floating-point tensor, got dtype {alpha_bar.dtype}")
        bad = (alpha_bar <= 0) | (alpha_bar > 1 if allow_one else alpha_bar >= 1) | ~torch.isfinite(alpha_bar)
        if bool(bad.any()):
            raise ValueError(f"alpha_bar must lie in (0, 1{']' if allow_one else ')'}")
        return alpha_bar
    if isinstance(alpha_bar, bool) or not isinstance(alpha_bar, numbers.Real):
        raise TypeError(f"alpha_bar must be a number or a tensor, got {type(alpha_bar).__name__}")
    alpha_bar = float(alpha_bar)
    if not (0.0 < alpha_bar <= 1.0 if allow_one else 0.0 < alpha_bar < 1.0):
        raise ValueError(f"alpha_bar must lie in (0, 1{']' if allow_one else ')'}, got {alpha_bar!r}")
    return alpha_bar


def _sqrt(a):
    return a.sqrt() if isinstance(a, torch.Tensor) else math.sqrt(a)


def sigma_from_alpha_bar(alpha_bar):
    """σ = √((1-ᾱ)/ᾱ), the noise level of x̄ = x/√ᾱ = x_0 + σ ε (chapter 11, eq. ``eq-xbar-sigma``).

    A number gives a float, a tensor a tensor; ᾱ must lie in (0, 1] (ᾱ = 1, the data, is σ = 0). σ is
    :attr:`NoiseSchedule.sqrt_recipm1_alphas_cumprod` at the schedule's timesteps, and e^{-λ} for the log-SNR λ
    of DPM-Solver (Lu et al. 2022).
    """
    alpha_bar = _check_alpha_bar(alpha_bar)
    return _sqrt((1 - alpha_bar) / alpha_bar)


def alpha_bar_from_sigma(sigma):
    """ᾱ = 1/(1 + σ²), the inverse of :func:`sigma_from_alpha_bar` (chapter 11, eq. ``eq-xbar-sigma``)."""
    if isinstance(sigma, torch.Tensor):
        if not sigma.is_floating_point() or bool((sigma < 0).any()) or not bool(torch.isfinite(sigma).all()):
            raise ValueError("sigma must be a floating-point tensor of finite values >= 0")
        return 1.0 / (1.0 + sigma**2)
    sigma = check_positive("sigma", sigma, allow_zero=True)
    return 1.0 / (1.0 + sigma**2)


def timestep_sigmas(sched: NoiseSchedule, timesteps) -> torch.Tensor:
    """σ of each integer timestep (float64, shape (n,)); the code index -1 (the data, ᾱ = 1) has σ = 0.

    The networks of the book are defined only at the integer timesteps 0..T-1, so the σ grid of every sampler
    in :mod:`ddpm_lib.solvers` is ``timestep_sigmas(sched, ddim_timesteps(T, steps, spacing))`` followed by 0
    (chapter 11, the σ grid of eq. ``eq-xbar-sigma``).
    """
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    ts = torch.as_tensor(timesteps)
    if ts.is_floating_point() or ts.is_complex() or ts.dtype == torch.bool or ts.ndim != 1:
        raise TypeError(f"timesteps must be a 1-D sequence of integer timesteps, got {timesteps!r}")
    if ts.numel() and (int(ts.min()) < -1 or int(ts.max()) > sched.T - 1):
        raise ValueError(f"timesteps must lie in -1..T-1 = -1..{sched.T - 1} (-1 is the data), got "
                         f"values in {int(ts.min())}..{int(ts.max())}")
    ts = ts.long()
    sig = sched.sqrt_recipm1_alphas_cumprod[ts.clamp(min=0)]
    return torch.where(ts >= 0, sig, torch.zeros_like(sig))


def score_from_eps(eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """∇_x log q_t(x) = -ε̂/√(1-ᾱ) (chapter 04's Tweedie section; chapter 11, eq. ``eq-score-eps``).

    ``alpha_bar`` is a number in (0, 1) or a tensor that broadcasts against ``eps``.
    """
    alpha_bar = _check_alpha_bar(alpha_bar, allow_one=False)
    return -eps / _sqrt(1 - alpha_bar)


def eps_from_score(score: torch.Tensor, alpha_bar) -> torch.Tensor:
    """ε̂ = -√(1-ᾱ) ∇_x log q_t(x), the inverse of :func:`score_from_eps` (chapter 11, eq. ``eq-score-eps``)."""
    alpha_bar = _check_alpha_bar(alpha_bar)
    return -_sqrt(1 - alpha_bar) * score


def pf_ode_drift(x: torch.Tensor, eps: torch.Tensor, beta, alpha_bar) -> torch.Tensor:
    """dx/dt = -½ β(t) [x - ε̂/√(1-ᾱ(t))], the probability-flow ODE of the VP-SDE in (x, t) (Song et al. 2021,
    eq. 13 with f = -½ β x, g² = β and the score of :func:`score_from_eps`; chapter 11, eq. ``eq-pf-ode``).

    ``beta`` is the continuous-time rate β(t) = -d log ᾱ/dt at the point (for the discrete schedule,
    β(t) ≈ T β_t when t runs over [0, 1]); ``alpha_bar`` is ᾱ(t) in (0, 1). Numbers or broadcasting tensors.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(eps, torch.Tensor):
        raise TypeError("x and eps must be tensors")
    if x.shape != eps.shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x has shape {tuple(x.shape)}; they must match")
    if not isinstance(beta, torch.Tensor):
        beta = check_positive("beta", beta, allow_zero=True)
    return -0.5 * beta * (x + score_from_eps(eps, alpha_bar))


def _assert_finite_at(x: torch.Tensor, what: str, where: str) -> None:
    """``FloatingPointError`` naming ``where`` (a noise level, not a code timestep) unless ``x`` is finite; the
    continuous-time twin of :func:`ddpm_lib._checks.assert_finite`."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{what} is not finite at {where}; pass check_finite=False to run on regardless")


def _check_eps_fn(eps_fn) -> None:
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be a callable eps_fn(x_bar, sigma) -> eps, got {type(eps_fn).__name__}")


def mixture_eps_fn(mixture: GaussianMixture) -> Callable:
    """The exact drift ε*(x̄, σ) of data from ``mixture``, at any σ ≥ 0 (chapter 11,
    eq. ``eq-pf-ode-sigma``).

    ε* = -√(1-ᾱ) ∇ log q_t(x) at x = x̄ √ᾱ, ᾱ = 1/(1+σ²), with the closed-form score
    (:meth:`ddpm_lib.data.GaussianMixture.score`); differentiable (autograd gives its divergence) and equal to 0
    at σ = 0, where the denoiser form (x̄ - E[x_0|x̄])/σ is 0/0. The continuous-σ twin of
    :class:`ddpm_lib.exact.OracleDenoiser`.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")

    def eps_fn(x_bar: torch.Tensor, sigma: float) -> torch.Tensor:
        sigma = check_positive("sigma", sigma, allow_zero=True)
        alpha_bar = 1.0 / (1.0 + sigma**2)
        x = x_bar * math.sqrt(alpha_bar)
        return -math.sqrt(1.0 - alpha_bar) * mixture.score(x, alpha_bar)

    return eps_fn


def _timestep_of_sigma(sched: NoiseSchedule, sigma: float) -> int:
    """The integer timestep whose σ equals ``sigma`` (relative tolerance 1e-9); ``ValueError`` otherwise."""
    sigmas = sched.sqrt_recipm1_alphas_cumprod
    t = int(torch.argmin((sigmas - sigma).abs()))
    if abs(sigmas[t].item() - sigma) > 1e-9 * max(sigma, 1e-300):
        raise ValueError(f"sigma = {sigma!r} is not the sigma of an integer timestep of the schedule: the network "
                         f"is defined only at those (use timestep_sigmas(sched, timesteps) for the grid)")
    return t


def model_eps_fn(model, sched: NoiseSchedule, *, objective: str = "pred_noise", y=None) -> Callable:
    """A network as the drift ``eps_fn(x_bar, sigma)`` of the ODE in (x̄, σ) (chapter 11,
    eq. ``eq-pf-ode-sigma``).

    The network is defined only at the integer timesteps, so ``sigma`` must be the σ of one of them
    (:func:`timestep_sigmas`; ``ValueError`` otherwise). The model is called at x = x̄ √ᾱ_t and its output turned
    into ε̂ by :func:`ddpm_lib.diffusion.model_predictions` (no clipping). Autograd flows through it (call it
    under ``torch.no_grad()`` when no divergence is needed).
    """
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    check_choice("objective", objective, OBJECTIVES)

    def eps_fn(x_bar: torch.Tensor, sigma: float) -> torch.Tensor:
        t = _timestep_of_sigma(sched, check_positive("sigma", sigma))
        x = x_bar * sched.sqrt_alphas_cumprod[t].item()
        out = call_model(model, x, t, y)
        pred_noise, _ = model_predictions(None, sched, x, t, objective, model_output=out)
        return pred_noise

    return eps_fn


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, i = 0..n-1, descending, float64 (Karras et al.
    2022, eq. 5; chapter 11, eq. ``eq-karras-sigmas``).

    ρ = 7 crowds the steps near σ_min, where the data's fine structure is; ρ = 1 is uniform in σ. Append 0 for a
    sampler that ends at the data; flip for a likelihood integration from the data up.
    """
    steps = check_int("steps", steps, 2)
    sigma_min = check_positive("sigma_min", sigma_min)
    sigma_max = check_positive("sigma_max", sigma_max)
    rho = check_positive("rho", rho)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must be greater than sigma_min, got {sigma_min!r}, {sigma_max!r}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def divergence(fn: Callable, x: torch.Tensor, probes: torch.Tensor | None = None):
    """``(f, div)``: f = fn(x) and the divergence ∇·f of a per-example map (chapter 11, the divergence
    and Hutchinson's estimator, eq. ``eq-hutchinson``).

    With ``probes=None`` the exact trace Σ_i ∂f_i/∂x_i, one backward pass per dimension of an example (fine for
    2-D data); ``div`` has shape (B,). With ``probes`` of shape (P, *x.shape) (e.g. Rademacher ±1), Hutchinson's
    estimator vᵀ (∂f/∂x) v for each probe v, one backward pass per probe, unbiased for the trace when
    E[v vᵀ] = I (Hutchinson 1989; Grathwohl et al. 2019); ``div`` has shape (P, B). ``fn`` must treat the
    examples independently. Both results are detached.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape (B, ...) with a batch dimension")
    if probes is not None and (not isinstance(probes, torch.Tensor) or tuple(probes.shape[1:]) != tuple(x.shape)
                               or probes.ndim != x.ndim + 1):
        raise ValueError(f"probes must be a tensor of shape (P, {', '.join(map(str, x.shape))})")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = fn(x)
        if not isinstance(f, torch.Tensor) or f.shape != x.shape:
            raise ValueError("fn(x) must return a tensor of the shape of x")
        batch = x.shape[0]

        def vjp(v):
            if not f.requires_grad:  # a drift that does not depend on x
                return torch.zeros_like(x)
            (g,) = torch.autograd.grad(f, x, grad_outputs=v, retain_graph=True, allow_unused=True)
            return torch.zeros_like(x) if g is None else g

        if probes is None:
            dims = x[0].numel()
            div = torch.zeros(batch, dtype=x.dtype, device=x.device)
            for i in range(dims):
                e = torch.zeros(batch, dims, dtype=x.dtype, device=x.device)
                e[:, i] = 1
                div = div + vjp(e.reshape(x.shape)).reshape(batch, dims)[:, i]
        else:
            div = torch.stack([(vjp(v) * v).reshape(batch, -1).sum(1) for v in probes.to(x)])
    return f.detach(), div.detach()


class ODELogLikelihood(NamedTuple):
    """What :func:`ode_log_likelihood` returns (all float, shape (B,) unless said otherwise).

    - ``log_prob``: log p(x) in nats per example (the mean over probes for Hutchinson);
    - ``std_error``: its standard error over the probes (zeros with the exact divergence);
    - ``prior_log_prob``: log p_{σ_max}(x̄(σ_max)), the prior term;
    - ``delta_log_prob``: ∫ ∇·ε̂ dσ along the path (mean over probes);
    - ``x_end``: x̄(σ_max), shape of x (its x-space value is x̄ / √(1 + σ_max²));
    - ``nfe``: the number of evaluations of the drift.
    """

    log_prob: torch.Tensor
    std_error: torch.Tensor
    prior_log_prob: torch.Tensor
    delta_log_prob: torch.Tensor
    x_end: torch.Tensor
    nfe: int


def _check_ascending_sigmas(sigmas) -> list:
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    if sig.ndim != 1 or sig.numel() < 2:
        raise ValueError("sigmas must be a 1-D sequence of at least 2 noise levels")
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()) or bool((sig[1:] <= sig[:-1]).any()):
        raise ValueError("sigmas must be finite, >= 0 and strictly increasing (from the data up to sigma_max)")
    return sig.tolist()


def _log_sigma_slope(drift, x: torch.Tensor, sigma: float):
    """The ODE in x = x̄/√(1+σ²) against u = log σ, and the integrand of the log-density: with ᾱ = 1/(1+σ²),
    dx/du = √(1-ᾱ) ε̂ - (1-ᾱ) x and d/du ∫ ∇·ε̂ dσ = σ ∇_x̄·ε̂ (chapter 11, eq. ``eq-ode-likelihood``)."""
    alpha_bar = 1.0 / (1.0 + sigma**2)
    eps, div = drift(x / math.sqrt(alpha_bar), sigma)
    return math.sqrt(1 - alpha_bar) * eps - (1 - alpha_bar) * x, sigma * div


def ode_log_likelihood(eps_fn: Callable, x: torch.Tensor, sigmas, *, divergence_method: str = "exact",
                       num_probes: int = 16, generator: torch.Generator | None = None,
                       prior_log_prob: Callable | None = None, progress: bool = True,
                       check_finite: bool = True) -> ODELogLikelihood:
    """log p(x) through the probability-flow ODE, by the instantaneous change of variables (Chen et al. 2018;
    Song et al. 2021, appendix D.2; chapter 11, eq. ``eq-ode-likelihood``).

    Along dx̄/dσ = ε̂(x̄, σ) the log-density of x̄ obeys d log p_σ(x̄(σ))/dσ = -∇·ε̂(x̄(σ), σ), so

        log p_{σ_0}(x) = log p_{σ_max}(x̄(σ_max)) + ∫_{σ_0}^{σ_max} ∇·ε̂(x̄(σ), σ) dσ,   x̄(σ_0) = x.

    ``eps_fn(x_bar, sigma)`` is the drift (:func:`mixture_eps_fn`, :func:`model_eps_fn`); ``sigmas`` the grid,
    strictly increasing from σ_0 to σ_max (e.g. ``karras_sigmas(...).flip(0)`` with 0 prepended for an exact
    denoiser, or :func:`timestep_sigmas` of ascending timesteps for a network, which is defined only there and
    so gives the density of x̄ at σ_0 = σ(t=0) > 0, a slight blur of the data). The state and the log-density are
    integrated together with Heun's method (two drift evaluations per step, each with its divergence), a
    second-order, fixed-step scheme: the error falls like (steps)^-2 once the grid resolves the data. Each step
    between two σ > 0 is taken in x = x̄/√(1+σ²) against log σ, where dx/d log σ = √(1-ᾱ) ε̂ - (1-ᾱ) x and the
    log-density's integrand σ ∇·ε̂ stay small and smooth at every σ — in σ itself ∫ ∇·ε̂ dσ ≈ d log σ at large σ,
    which a step of the cosine schedule's integer grid (σ = 641 to 2.0e4) gets wrong by tens of nats; a step
    from σ = 0 is taken in σ.

    ``divergence_method="exact"``: the exact trace, one backward pass per dimension (2-D data).
    ``"hutchinson"``: ``num_probes`` Rademacher probes drawn once with ``generator`` and kept along the whole path
    (FFJORD's choice), so each probe gives an unbiased estimate of the discretised integral; ``log_prob`` is their
    mean and ``std_error`` their standard deviation / √num_probes.

    ``prior_log_prob(x_bar_end, sigma_max)`` gives log p_{σ_max} per example; the default is the model's own
    prior: x_T ~ N(0, I) in x-space is x̄ ~ N(0, (1 + σ_max²) I), so log N(x̄; 0, (1 + σ_max²) I) — which is the
    likelihood of the generative model (x_T ~ N(0, I), then the ODE down), not of the true q_t, whose law at
    t = T-1 is not exactly N(0, I) (the gap is the prior term L_T of chapter 07, ~ 1e-4 nats for unit-variance
    data at σ_max ≈ 157, the linear schedule's T-1).

    Discrete data: a density on R^d says nothing about the probability of a grey level; see :func:`dequantize`
    and :func:`dequantized_bits_per_dim` for the upper bound on -log P in bits/dim that goes beside chapter 07's
    variational bound. Returns :class:`ODELogLikelihood`.
    """
    _check_eps_fn(eps_fn)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of shape (B, ...) with a batch dimension")
    check_choice("divergence_method", divergence_method, DIVERGENCES)
    sig = _check_ascending_sigmas(sigmas)
    if prior_log_prob is not None and not callable(prior_log_prob):
        raise TypeError("prior_log_prob must be a callable (x_bar, sigma_max) -> log-density per example, or None")
    probes = None
    if divergence_method == "hutchinson":
        num_probes = check_int("num_probes", num_probes, 2)
        gen_device = generator.device if generator is not None else x.device
        bits = torch.randint(0, 2, (num_probes,) + tuple(x.shape), generator=generator, device=gen_device)
        probes = (2 * bits - 1).to(device=x.device, dtype=x.dtype)

    def drift(x_bar, sigma):
        return divergence(lambda z: eps_fn(z, sigma), x_bar, probes)

    x_bar = x.detach()
    delta = torch.zeros((x.shape[0],) if probes is None else (num_probes, x.shape[0]), dtype=x.dtype, device=x.device)
    pairs = list(zip(sig[:-1], sig[1:]))
    iterator = pairs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(pairs, desc="ODE likelihood", leave=False)
    for s, s_next in iterator:
        if s == 0.0:  # the step from the data itself: Heun in σ (log σ is -inf here; ε̂ is smooth in σ near 0)
            h = s_next - s
            f0, div0 = drift(x_bar, s)
            f1, div1 = drift(x_bar + h * f0, s_next)
            x_bar = x_bar + 0.5 * h * (f0 + f1)
            delta = delta + 0.5 * h * (div0 + div1)
        else:  # Heun in (x, log σ), where both the state and the log-density change slowly at every σ
            h = math.log(s_next / s)
            f0, g0 = _log_sigma_slope(drift, x_bar / math.sqrt(1 + s**2), s)
            x = x_bar / math.sqrt(1 + s**2)
            f1, g1 = _log_sigma_slope(drift, x + h * f0, s_next)
            x_bar = (x + 0.5 * h * (f0 + f1)) * math.sqrt(1 + s_next**2)
            delta = delta + 0.5 * h * (g0 + g1)
        if check_finite:
            _assert_finite_at(x_bar, "the ODE state x_bar", f"sigma = {s_next:.6g}")
    sigma_max = sig[-1]
    if prior_log_prob is None:
        prior = gaussian_log_density(x_bar, 0.0, 1.0 + sigma_max**2).reshape(x.shape[0], -1).sum(1)
    else:
        prior = prior_log_prob(x_bar, sigma_max)
    if probes is None:
        mean_delta, std_error = delta, torch.zeros_like(delta)
    else:
        mean_delta, std_error = delta.mean(0), delta.std(0) / math.sqrt(num_probes)
    return ODELogLikelihood(prior + mean_delta, std_error, prior, mean_delta, x_bar, 2 * len(pairs))


def dequantize(x: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation: each value is moved to its grey level (:func:`ddpm_lib.postprocess.to_levels`),
    then spread uniformly over that level's bin of width Δ = 2/(levels-1) (chapter 11, eq. ``eq-dequantization-bound``).

    Level k sits at -1 + kΔ and owns [-1 + kΔ - Δ/2, -1 + kΔ + Δ/2] (the edge bins reach Δ/2 beyond [-1, 1]).
    Returns a tensor of ``x``'s dtype; the noise u ~ U(-Δ/2, Δ/2) is drawn with ``generator``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    levels = check_int("levels", levels, 2)
    delta = 2.0 / (levels - 1)
    centres = from_levels(to_levels(x, levels), levels).to(device=x.device, dtype=x.dtype)
    gen_device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    return centres + (u - 0.5) * delta


def dequantized_bits_per_dim(log_prob, levels: int, num_dims: int):
    """An upper bound on -log₂ P(k)/d for discrete data, from the density at a dequantised point (chapter 11,
    eq. ``eq-dequantization-bound``).

    With P(k) = ∫_bin p(x) dx = Δ^d E_u[p(k + u)], Jensen's inequality gives
    -log P(k) ≤ E_u[-log p(x_k + u)] - d log Δ, u uniform over the bin of width Δ = 2/(levels-1)
    (:func:`dequantize`; Theis et al. 2016, Ho et al. 2019). ``log_prob`` is log p at dequantised points
    (nats per example, a tensor or a number); the average of the result over u and the data bounds the
    model's bits/dim on the discrete data, to set beside chapter 07's variational bound (which bounds the same
    -log₂ P(k)/d through the discretised decoder L_0). For 8-bit images in [-1, 1] (levels = 256) the correction
    -d log Δ is d log 127.5, the usual one.
    """
    levels = check_int("levels", levels, 2)
    num_dims = check_int("num_dims", num_dims)
    correction = num_dims * math.log(2.0 / (levels - 1))
    return bits_per_dim(-log_prob - correction, num_dims)
