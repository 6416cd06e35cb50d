"""Exact references: what a perfect network or a perfect reverse process would do, computed in closed form.

Nothing here is learned and nothing needs SymPy; the chapters and tests hold the library's samplers and bounds
against these.

- :class:`OracleDenoiser` — the exact ε-, x_0- or v-prediction for data from a
  :class:`~ddpm_lib.data.GaussianMixture`: the "perfect network", which separates the error of a sampler from the
  error of learning (chapter 06).
- The exact one-dimensional Gaussian example of chapter 02: data x_0 ~ N(μ_0, s_0²) diffused by DDPM's forward
  process. Then q(x_t) = N(√ᾱ_t μ_0, ᾱ_t s_0² + 1 - ᾱ_t), the true reverse conditional q(x_{t-1} | x_t) is
  Gaussian, so the best Gaussian reverse process p(x_{t-1} | x_t) is known in closed form, the model's marginal
  p(x_0) is Gaussian (exact log-likelihood) and every term of L = L_T + Σ_{t=2}^T L_{t-1} + L_0 is a closed-form
  expectation of Gaussian quantities (:func:`true_reverse_process`, :func:`elbo_terms`, :func:`elbo_gap_kl`, ...).
  Chapter 02 derives the formulas in SymPy (:mod:`ddpm_lib.symbolic.elbo`); these are their float64 evaluations.

Index convention of the 1-D helpers: arrays of length T+1 are indexed by the paper's time 0..T (index 0 is the
data); arrays of length T describing step t (paper t = 1..T) sit at index t-1, which is the code's timestep index
of :class:`ddpm_lib.NoiseSchedule`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from ._checks import OBJECTIVES, check_batch, check_choice, check_int, check_positive, check_timesteps
from .data import GaussianMixture
from .diffusion import predict_noise_from_start, predict_v
from .likelihood import gaussian_log_density, normal_kl
from .schedules import NoiseSchedule

__all__ = [
    "OracleDenoiser",
    "GaussianReverseProcess",
    "REVERSE_VARIANCES",
    "PRIORS",
    "data_marginals",
    "true_reverse_process",
    "model_marginals",
    "exact_log_likelihood",
    "elbo_terms",
    "elbo",
    "data_expectation",
    "elbo_gap_kl",
    "sample_trajectories",
    "first_form_terms",
    "second_form_terms",
    "consistency_as_kl",
]


class OracleDenoiser:
    """The exact ε-prediction for data drawn from a :class:`GaussianMixture` (chapter 06).

    ``model(x_t, t)`` returns ε*(x_t, t) = E[ε | x_t] = (x_t - √ᾱ_t E[x_0 | x_t]) / √(1 - ᾱ_t)
    (:func:`ddpm_lib.diffusion.predict_noise_from_start` at the exact E[x_0 | x_t]),
    with ᾱ_t = ``sched.alphas_cumprod[t]``: the minimiser of L_simple, i.e. what a perfect network
    would output.  With it the DDPM and DDIM samplers reproduce the mixture up to their own
    discretisation error.  ``objective`` selects what it predicts: ``"pred_noise"`` (ε*),
    ``"pred_x0"`` (E[x_0 | x_t]) or ``"pred_v"`` (√ᾱ ε* - √(1-ᾱ) E[x_0 | x_t]).  Computed in float64,
    returned in ``x_t``'s dtype.  A plain callable, not an ``nn.Module`` (it has no parameters).
    """

    def __init__(self, mixture: GaussianMixture, sched, objective: str = "pred_noise"):
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        if not isinstance(sched, NoiseSchedule):
            raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
        check_choice("objective", objective, OBJECTIVES)
        self.mixture = mixture
        self.sched = sched
        self.objective = objective

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x_t must be a tensor, got {type(x_t).__name__}")
        if x_t.ndim != 2:
            raise ValueError(f"x_t must have shape (B, {self.mixture.dim}), got shape {tuple(x_t.shape)}")
        t = check_timesteps(t, self.sched.T)
        if isinstance(t, int):
            t = torch.full((x_t.shape[0],), t, dtype=torch.long)
        check_batch(t, x_t, "t", "x_t")
        t = t.expand(x_t.shape[0])
        x = x_t.to(torch.float64)
        x0 = self.mixture.posterior_mean_x0(x, self.sched.alphas_cumprod[t.cpu()].to(x.device))
        if self.objective == "pred_x0":
            return x0.to(x_t.dtype)
        eps = predict_noise_from_start(self.sched, x, t, x0)
        out = eps if self.objective == "pred_noise" else predict_v(self.sched, x0, t, eps)
        return out.to(x_t.dtype)


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _alphabar_0T(sched) -> torch.Tensor:
    """ᾱ_t for the paper's t = 0..T (ᾱ_0 = 1), shape (T+1,)."""
    return torch.cat([torch.ones(1, dtype=torch.float64), sched.alphas_cumprod])


def _check_data_params(mu0, s0):
    if not isinstance(mu0, (int, float)) or isinstance(mu0, bool) or not math.isfinite(mu0):
        raise TypeError(f"mu0 must be a finite float, got {mu0!r}")
    check_positive("s0", s0)


def _kl(m1, v1, m2, v2):
    """KL(N(m1, v1) ‖ N(m2, v2)) via :func:`ddpm_lib.likelihood.normal_kl` (eq. ``eq-kl-gaussians-1d``)."""
    return normal_kl(m1, torch.log(v1), m2, torch.log(v2))


def data_marginals(sched, mu0: float, s0: float):
    """Means and variances of q(x_t), t = 0..T (shape (T+1,) each), for data N(mu0, s0²)
    (chapter 02, eq. ``eq-gaussian-data-marginal``)."""
    _check_data_params(mu0, s0)
    ab = _alphabar_0T(sched)
    return ab.sqrt() * mu0, ab * s0**2 + 1.0 - ab


class GaussianReverseProcess(NamedTuple):
    """p(x_T) = N(prior_mean, prior_variance); p(x_{t-1} | x_t) = N(coef[t-1] x_t + offset[t-1], variance[t-1])
    for the paper's t = 1..T (chapter 02, eq. ``eq-reverse-chain``). p(x_0 | x_1) is the last step."""

    coef: torch.Tensor
    offset: torch.Tensor
    variance: torch.Tensor
    prior_mean: float = 0.0
    prior_variance: float = 1.0


REVERSE_VARIANCES = ("true", "fixed_large", "fixed_small")
PRIORS = ("standard", "exact")


def true_reverse_process(sched, mu0: float, s0: float, variance: str = "true", variance_scale: float = 1.0,
                         prior: str = "standard") -> GaussianReverseProcess:
    """The best Gaussian reverse process for data N(mu0, s0²): p(x_{t-1} | x_t) = q(x_{t-1} | x_t)
    (chapter 02, eq. ``eq-true-reverse``), optionally mis-specified.

    - ``variance``: ``"true"`` (v_{t-1} β_t / v_t), ``"fixed_large"`` (β_t) or ``"fixed_small"`` (β̃_t,
      whose value 0 at t = 1 is replaced by β̃_2 as in ``posterior_log_variance_clipped``); the mean
      is always the true E[x_{t-1} | x_t];
    - ``variance_scale``: multiplies the variance (1 = as chosen);
    - ``prior``: ``"standard"`` p(x_T) = N(0, 1) as in DDPM, or ``"exact"`` p(x_T) = q(x_T), which
      makes p(x_{0:T}) = q(x_{0:T}) and the bound tight when ``variance="true"``.
    """
    check_choice("variance", variance, REVERSE_VARIANCES)
    check_choice("prior", prior, PRIORS)
    check_positive("variance_scale", variance_scale)
    m, v = data_marginals(sched, mu0, s0)
    alphas = sched.alphas
    coef = alphas.sqrt() * v[:-1] / v[1:]
    offset = m[:-1] - coef * m[1:]
    var = {
        "true": v[:-1] * sched.betas / v[1:],
        "fixed_large": sched.betas.clone(),
        "fixed_small": sched.posterior_log_variance_clipped.exp(),
    }[variance] * variance_scale
    if prior == "standard":
        return GaussianReverseProcess(coef, offset, var, 0.0, 1.0)
    return GaussianReverseProcess(coef, offset, var, float(m[-1]), float(v[-1]))


def model_marginals(rev: GaussianReverseProcess):
    """Means and variances of the model's p(x_t), t = 0..T (shape (T+1,)), by running the reverse chain
    on the moments: m_{t-1} = coef m_t + offset, v_{t-1} = coef² v_t + σ_t² (chapter 02, eq.
    ``eq-model-marginal``)."""
    T = rev.coef.numel()
    means = torch.empty(T + 1, dtype=torch.float64)
    variances = torch.empty(T + 1, dtype=torch.float64)
    means[T], variances[T] = rev.prior_mean, rev.prior_variance
    for t in range(T, 0, -1):
        means[t - 1] = rev.coef[t - 1] * means[t] + rev.offset[t - 1]
        variances[t - 1] = rev.coef[t - 1] ** 2 * variances[t] + rev.variance[t - 1]
    return means, variances


def exact_log_likelihood(x0, rev: GaussianReverseProcess) -> torch.Tensor:
    """log p(x_0) of the model, exactly (nats), element-wise in x0."""
    means, variances = model_marginals(rev)
    return gaussian_log_density(_f64(x0), means[0], variances[0])


def elbo_terms(x0, sched, rev: GaussianReverseProcess) -> dict:
    """The terms of L = L_T + Σ_{t=2}^T L_{t-1} + L_0 in nats for each x0, in closed form (chapter 02,
    eq. ``eq-elbo-terms``).

    - ``"L_T"`` (shape of x0): KL(q(x_T|x_0) ‖ p(x_T));
    - ``"L_tm1"`` (x0.shape + (T-1,)): column j is L_{j+1} = E_{q(x_{j+2}|x_0)} KL(q(x_{j+1}|x_{j+2},x_0) ‖
      p(x_{j+1}|x_{j+2})), i.e. the paper's t = j+2 (x_t is integrated out analytically: the KL is
      quadratic in x_t);
    - ``"L_0"``: -E_{q(x_1|x_0)} log p(x_0|x_1) (a continuous density here, no discretization);
    - ``"total"``: their sum, = -ELBO.
    """
    x0 = _f64(x0)
    T = sched.T
    if rev.coef.numel() != T:
        raise ValueError(f"rev has {rev.coef.numel()} steps but sched has T = {T}")
    ab = _alphabar_0T(sched)
    # L_T
    L_T = _kl(ab[T].sqrt() * x0, (1 - ab[T]).expand_as(x0), _f64(rev.prior_mean), _f64(rev.prior_variance))
    # L_{t-1}, t = 2..T: q(x_{t-1}|x_t,x_0) = N(c1 x_0 + c2 x_t, β̃_t), p = N(a x_t + b, σ²), x_t ~ N(√ᾱ_t x_0, 1-ᾱ_t)
    idx = torch.arange(1, T)  # code index of paper t = 2..T
    c1, c2, bt = sched.posterior_mean_coef1[idx], sched.posterior_mean_coef2[idx], sched.posterior_variance[idx]
    a, b, s2 = rev.coef[idx], rev.offset[idx], rev.variance[idx]
    xx = x0[..., None]
    d_mean = c1 * xx - b + (c2 - a) * ab[idx + 1].sqrt() * xx  # E over x_t of (μ̃ - μ_p)
    d_var = (c2 - a) ** 2 * (1 - ab[idx + 1])  # its variance
    L_tm1 = 0.5 * (torch.log(s2 / bt) + (bt + d_mean**2 + d_var) / s2 - 1.0)
    # L_0 = -E log N(x_0; a_1 x_1 + b_1, σ_1²), x_1 ~ N(√ᾱ_1 x_0, 1-ᾱ_1)
    a1, b1, s1 = rev.coef[0], rev.offset[0], rev.variance[0]
    r_mean = x0 - b1 - a1 * ab[1].sqrt() * x0
    r_var = a1**2 * (1 - ab[1])
    L_0 = 0.5 * torch.log(2 * math.pi * s1) + (r_mean**2 + r_var) / (2 * s1)
    return {"L_T": L_T, "L_tm1": L_tm1, "L_0": L_0, "total": L_T + L_tm1.sum(-1) + L_0}


def elbo(x0, sched, rev: GaussianReverseProcess) -> torch.Tensor:
    """ELBO(x_0) = -(L_T + Σ L_{t-1} + L_0) in nats (chapter 02, eqs. ``eq-elbo-jensen``, ``eq-elbo-terms``)."""
    return -elbo_terms(x0, sched, rev)["total"]


def data_expectation(fn: Callable, mu0: float, s0: float, nodes: int = 8):
    """E_{x_0 ~ N(mu0, s0²)}[fn(x_0)] by Gauss–Hermite quadrature with ``nodes`` nodes, exact for
    polynomials of degree < 2·nodes (every quantity of the Gaussian example is quadratic in x_0).

    ``fn`` maps a float64 tensor of shape (nodes,) to a tensor whose first dimension is ``nodes``.
    """
    _check_data_params(mu0, s0)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-z²/2)
    w = torch.as_tensor(w / w.sum(), dtype=torch.float64)
    vals = fn(mu0 + s0 * torch.as_tensor(z, dtype=torch.float64))
    return torch.tensordot(w, vals, dims=([0], [0]))


def _forward_joint(x0: float, sched):
    """Mean (T,) and covariance (T, T) of q(x_{1:T} | x_0): x_t = √α_t x_{t-1} + √β_t ε_t."""
    T = sched.T
    M = torch.zeros(T, T, dtype=torch.float64)  # x_{1:T} = mean + M ε
    mean = torch.zeros(T, dtype=torch.float64)
    prev_row, prev_mean = torch.zeros(T, dtype=torch.float64), torch.tensor(float(x0), dtype=torch.float64)
    for t in range(T):
        row = sched.alphas[t].sqrt() * prev_row
        row[t] = sched.betas[t].sqrt()
        M[t], mean[t] = row, sched.alphas[t].sqrt() * prev_mean
        prev_row, prev_mean = row, mean[t]
    return mean, M @ M.T


def _reverse_joint(rev: GaussianReverseProcess):
    """Mean (T+1,) and covariance of the model's joint p(x_{0:T}), index = paper time."""
    T = rev.coef.numel()
    A = torch.zeros(T + 1, T + 1, dtype=torch.float64)  # x = mean + A z, z ~ N(0, I_{T+1})
    mean = torch.zeros(T + 1, dtype=torch.float64)
    A[T, T], mean[T] = math.sqrt(rev.prior_variance), rev.prior_mean
    for t in range(T, 0, -1):
        A[t - 1] = rev.coef[t - 1] * A[t]
        A[t - 1, t - 1] = rev.variance[t - 1].sqrt()
        mean[t - 1] = rev.coef[t - 1] * mean[t] + rev.offset[t - 1]
    return mean, A @ A.T


def _mvn_kl(m1, S1, m2, S2) -> float:
    L2 = torch.linalg.cholesky(S2)
    L1 = torch.linalg.cholesky(S1)
    k = m1.numel()
    trace = torch.cholesky_solve(S1, L2).diagonal().sum()
    diff = (m2 - m1)[:, None]
    maha = (diff * torch.cholesky_solve(diff, L2)).sum()
    logdet = 2 * (L2.diagonal().log().sum() - L1.diagonal().log().sum())
    return 0.5 * float(trace + maha - k + logdet)


def elbo_gap_kl(x0: float, sched, rev: GaussianReverseProcess) -> float:
    """KL(q(x_{1:T} | x_0) ‖ p(x_{1:T} | x_0)) from the two T-dimensional Gaussians (chapter 02, eq.
    ``eq-elbo-gap``). It must equal log p(x_0) - ELBO(x_0): an independent check of both."""
    m_q, S_q = _forward_joint(x0, sched)
    m_p, S_p = _reverse_joint(rev)
    # condition the model's joint on x_0
    s00, s0r, srr = S_p[0, 0], S_p[0, 1:], S_p[1:, 1:]
    m_post = m_p[1:] + s0r / s00 * (float(x0) - m_p[0])
    S_post = srr - torch.outer(s0r, s0r) / s00
    return _mvn_kl(m_q, S_q, m_post, S_post)


def sample_trajectories(x0: float, sched, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n forward trajectories x_{0:T} ~ q(x_{1:T} | x_0) by iterating eq. ``eq-forward-step``; shape (n, T+1)."""
    n = check_int("n", n)
    eps = torch.randn(n, sched.T, generator=generator, dtype=torch.float64)
    xs = torch.empty(n, sched.T + 1, dtype=torch.float64)
    xs[:, 0] = float(x0)
    for t in range(sched.T):
        xs[:, t + 1] = sched.alphas[t].sqrt() * xs[:, t] + sched.betas[t].sqrt() * eps[:, t]
    return xs


def first_form_terms(xs: torch.Tensor, sched, rev: GaussianReverseProcess) -> dict:
    """Single-trajectory Monte Carlo values of the first form (chapter 02, eq. ``eq-elbo-first-form``).

    ``xs`` (n, T+1) from :func:`sample_trajectories`. Returns ``reconstruction`` log p(x_0|x_1) (n,),
    ``prior_matching`` log p(x_T) - log q(x_T|x_{T-1}) (n,), ``consistency`` (n, T-1) with column
    t-1 = log p(x_t|x_{t+1}) - log q(x_t|x_{t-1}) for t = 1..T-1, and ``total`` (n,).
    """
    T = sched.T
    lp_step = gaussian_log_density(xs[:, :-1], rev.coef * xs[:, 1:] + rev.offset, rev.variance)  # log p(x_{t-1}|x_t), t=1..T
    lq_step = gaussian_log_density(xs[:, 1:], sched.alphas.sqrt() * xs[:, :-1], sched.betas)  # log q(x_t|x_{t-1}), t=1..T
    lp_T = gaussian_log_density(xs[:, T], _f64(rev.prior_mean), _f64(rev.prior_variance))
    reconstruction = lp_step[:, 0]
    prior_matching = lp_T - lq_step[:, T - 1]
    consistency = lp_step[:, 1:] - lq_step[:, :-1]
    return {
        "reconstruction": reconstruction,
        "prior_matching": prior_matching,
        "consistency": consistency,
        "total": reconstruction + prior_matching + consistency.sum(1),
    }


def second_form_terms(xs: torch.Tensor, sched, rev: GaussianReverseProcess) -> dict:
    """Single-trajectory Monte Carlo values of the second form (chapter 02, eq. ``eq-elbo-terms``), with
    each L_{t-1} given x_t as the closed-form KL (the Rao–Blackwellized estimator of source 002).

    Returns ``L_T`` (a constant, broadcast to (n,)), ``L_tm1`` (n, T-1) (paper t = 2..T),
    ``L_0`` = -log p(x_0|x_1) (n,) and ``total`` (n,) = -(estimate of the ELBO).
    """
    x0 = xs[:, 0]
    T = sched.T
    ab_T = sched.alphas_cumprod[-1]
    L_T = _kl(ab_T.sqrt() * x0, (1 - ab_T).expand_as(x0), _f64(rev.prior_mean), _f64(rev.prior_variance))
    idx = torch.arange(1, T)
    x_t = xs[:, 2:]
    mu_q = sched.posterior_mean_coef1[idx] * x0[:, None] + sched.posterior_mean_coef2[idx] * x_t
    mu_p = rev.coef[idx] * x_t + rev.offset[idx]
    L_tm1 = _kl(mu_q, sched.posterior_variance[idx].expand_as(mu_q), mu_p, rev.variance[idx].expand_as(mu_p))
    L_0 = -gaussian_log_density(x0, rev.coef[0] * xs[:, 1] + rev.offset[0], rev.variance[0])
    return {"L_T": L_T, "L_tm1": L_tm1, "L_0": L_0, "total": L_T + L_tm1.sum(1) + L_0}


def consistency_as_kl(x0: float, sched, rev: GaussianReverseProcess) -> dict:
    """The consistency terms computed two ways, exactly (chapter 02, the note after eq. ``eq-elbo-first-form``).

    - ``"exact"`` (T-1,): E_{q(x_{1:T}|x_0)}[log p(x_t|x_{t+1}) - log q(x_t|x_{t-1})], t = 1..T-1, as they
      enter the ELBO;
    - ``"as_kl"`` (T-1,): -E_{q(x_{t-1}, x_{t+1}|x_0)} KL(q(x_t|x_{t-1}) ‖ p(x_t|x_{t+1})), the rewriting
      found in some tutorials, which draws x_t from q(x_t|x_{t-1}) independently of x_{t+1};
    - ``"difference"``: as_kl - exact = -coef_{t+1} √α_{t+1} β_t / σ_{t+1}²; not zero, so the
      rewriting is not an identity.

    Both are Gaussian expectations of quadratics, computed from the joint moments of q(x_{0:T}|x_0).
    """
    T = sched.T
    m, S = _forward_joint(x0, sched)
    mean = torch.cat([_f64([float(x0)]), m])  # paper index 0..T
    cov = torch.zeros(T + 1, T + 1, dtype=torch.float64)
    cov[1:, 1:] = S
    exact, as_kl = [], []
    for t in range(1, T):
        a, b, s2 = rev.coef[t], rev.offset[t], rev.variance[t]  # p(x_t | x_{t+1}) is step t+1
        ra, beta = sched.alphas[t - 1].sqrt(), sched.betas[t - 1]  # q(x_t | x_{t-1}) is step t

        def e_sq(cov_tt1):  # E[(x_t - a x_{t+1} - b)²] given Cov(x_t, x_{t+1})
            d = mean[t] - a * mean[t + 1] - b
            return d**2 + cov[t, t] + a**2 * cov[t + 1, t + 1] - 2 * a * cov_tt1

        e_log_q = -0.5 * torch.log(2 * math.pi * beta) - 0.5  # E log q(x_t|x_{t-1}) under q(x_t|x_{t-1})
        log_norm_p = -0.5 * torch.log(2 * math.pi * s2)
        exact.append(log_norm_p - e_sq(cov[t, t + 1]) / (2 * s2) - e_log_q)
        # x_t' ~ q(x_t|x_{t-1}) independent of x_{t+1} given x_{t-1}: Cov(x_t', x_{t+1}) = √α_t Cov(x_{t-1}, x_{t+1})
        as_kl.append(log_norm_p - e_sq(ra * cov[t - 1, t + 1]) / (2 * s2) - e_log_q)
    exact, as_kl = torch.stack(exact), torch.stack(as_kl)
    return {"exact": exact, "as_kl": as_kl, "difference": as_kl - exact}
