"""Langevin dynamics, the score view of sampling: annealed Langevin (Song & Ermon 2019) and the predictor–corrector
sampler (Song et al. 2021) (chapter 11, eqs. ``eq-langevin-step`` to ``eq-pc-sampler``).

One Langevin step towards a density p with score s = ∇ log p is

    x' = x + ε s(x) + √(2ε) z,   z ~ N(0, I)                 (chapter 11, eq. ``eq-langevin-step``)

(Song et al. 2021's convention; Song & Ermon 2019 write α/2 and √α, i.e. α = 2ε). For small ε it leaves p nearly
invariant: for a Gaussian N(m, v) the chain's stationary law is N(m, v/(1 - ε/(2v))), an O(ε) bias that a
Metropolis test would remove and these samplers do not. A network's ε̂ gives the score of q_t:
∇ log q_t(x) = -ε̂/√(1-ᾱ_t) (:func:`ddpm_lib.ode.score_from_eps`); the exact mixture score is
:meth:`ddpm_lib.data.GaussianMixture.score`.

- :func:`langevin_step` — the step with a given ε; :func:`snr_step_size` — ε from a signal-to-noise ratio r
  (Song et al. 2021, Algorithms 4 and 5); :func:`langevin_correct` — one corrector step with that ε. The step
  functions take the score (the model output turned into a score) in and give the new sample out.
- :func:`pc_sample` — the predictor–corrector sampler: k corrector steps at each level, then an ancestral
  (DDPM posterior) predictor step.
- :func:`annealed_langevin_sample` — Song & Ermon's annealed Langevin dynamics over a decreasing sequence of noise
  levels, in the variance-exploding variables x̄ = x/√ᾱ, σ = √((1-ᾱ)/ᾱ) of :mod:`ddpm_lib.ode`.
"""

from __future__ import annotations

import math

import torch

from ._checks import assert_finite, check_int, check_positive
from ._loop import initial_noise, randn, run_steps
from .ddim import _pairs, ddim_step, ddim_timesteps
from .diffusion import call_model, model_predictions
from .ode import score_from_eps
from .schedules import NoiseSchedule
from .solvers import _check_loop

__all__ = ["langevin_step", "snr_step_size", "langevin_correct", "pc_sample", "annealed_langevin_sample"]


def _check_pair(x, score):
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape (B, ...) with a batch dimension")
    if not isinstance(score, torch.Tensor) or score.shape != x.shape:
        got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        raise ValueError(f"score must be a tensor of the shape of x, {tuple(x.shape)}, got {got}")


def _noise_like(x, variance_noise, generator):
    if variance_noise is None:
        return randn(x.shape, generator, x.device, x.dtype)
    if not isinstance(variance_noise, torch.Tensor) or variance_noise.shape != x.shape:
        raise ValueError(f"variance_noise must be a tensor of the shape of x, {tuple(x.shape)}")
    return variance_noise


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size, *, variance_noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, check_finite: bool = True) -> torch.Tensor:
    """x' = x + ε score + √(2ε) z (Song et al. 2021, the corrector of Algorithms 4–5; chapter 11,
    eq. ``eq-langevin-step``).

    ``score`` is ∇ log p at ``x``; ``step_size`` ε > 0 is a number or a tensor that broadcasts against ``x``;
    z is ``variance_noise`` or drawn with ``generator``. Returns the new sample.
    """
    _check_pair(x, score)
    if not isinstance(step_size, torch.Tensor):
        step_size = check_positive("step_size", step_size)
    z = _noise_like(x, variance_noise, generator)
    step_root = step_size.sqrt() if isinstance(step_size, torch.Tensor) else math.sqrt(step_size)
    x_new = x + step_size * score + math.sqrt(2.0) * step_root * z
    if check_finite and not bool(torch.isfinite(x_new).all()):
        raise FloatingPointError("the Langevin sample is not finite (step size too large for this score?); "
                                 "pass check_finite=False to run on regardless")
    return x_new


def snr_step_size(score: torch.Tensor, noise: torch.Tensor, snr: float, alpha: float = 1.0) -> float:
    """ε = 2 α (r ‖z‖/‖s‖)², the step at which the drift ε s has r times the norm of the noise √(2ε) z (for α = 1)
    (Song et al. 2021,
    Algorithm 5, with α = α_i = 1 - β_i for the VP-SDE and α = 1 for the VE-SDE, Algorithm 4; chapter 11,
    eq. ``eq-langevin-snr``).

    ‖z‖ and ‖s‖ are the per-example norms of the noise and the score, averaged over the batch, as in the authors'
    code (score_sde's ``LangevinCorrector``): one step for the whole batch, nearly constant once the batch is large.
    Per-example step sizes would grow without bound where ‖s(x)‖ is small (near a mode) and, in low dimension, the
    chain leaves the target (measured: from a 2-D standard normal, 400 steps at r = 0.05 end with variance 5, not 1).
    Returns a Python float.
    """
    if not isinstance(score, torch.Tensor) or not isinstance(noise, torch.Tensor) or score.shape != noise.shape:
        raise ValueError("score and noise must be tensors of the same shape (B, ...)")
    snr = check_positive("snr", snr)
    alpha = check_positive("alpha", alpha)
    batch = score.shape[0]
    score_norm = score.reshape(batch, -1).norm(dim=1).mean().item()
    noise_norm = noise.reshape(batch, -1).norm(dim=1).mean().item()
    if score_norm == 0:
        raise ValueError("the score is zero everywhere: the signal-to-noise step size is undefined")
    return 2.0 * alpha * (snr * noise_norm / score_norm) ** 2


def langevin_correct(x: torch.Tensor, score: torch.Tensor, *, snr: float = 0.16, alpha: float = 1.0,
                     variance_noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     check_finite: bool = True) -> torch.Tensor:
    """One corrector step: :func:`langevin_step` with ε = :func:`snr_step_size` (score, z, ``snr``, ``alpha``)
    (Song et al. 2021, Algorithm 5; chapter 11, eq. ``eq-langevin-snr``).

    The same z enters the step size and the step, as in the algorithm. ``snr`` r = 0.16 by default, the value of
    the authors' sampling configurations. Returns the new sample.
    """
    _check_pair(x, score)
    z = _noise_like(x, variance_noise, generator)
    eps = snr_step_size(score, z, snr, alpha)
    return langevin_step(x, score, eps, variance_noise=z, check_finite=check_finite)


def _score_at(model, sched: NoiseSchedule, x, t: int, y, objective: str, check_finite: bool):
    """∇ log q_t(x) = -ε̂/√(1-ᾱ_t) from one network call at (x, t)."""
    out = call_model(model, x, t, y)
    if check_finite:
        assert_finite(out, "the model output", t)
    eps, _ = model_predictions(None, sched, x, t, objective, model_output=out)
    return score_from_eps(eps, sched.alphas_cumprod[t].item())


@torch.no_grad()
def pc_sample(model, sched: NoiseSchedule, shape, *, steps: int | None = None, spacing: str = "trailing",
              corrector_steps: int = 1, snr: float = 0.16, x_T: torch.Tensor | None = None,
              objective: str = "pred_noise", clip_denoised: bool = False, y=None,
              generator: torch.Generator | None = None, device=None, dtype=torch.float32, progress: bool = True,
              return_all_timesteps: bool = False, check_finite: bool = True):
    """The predictor–corrector sampler (Song et al. 2021, Algorithms 1 and 3; chapter 11,
    eq. ``eq-pc-sampler``).

    At each timestep t of :func:`ddpm_lib.ddim.ddim_timesteps` (all T of them when ``steps`` is None), first
    ``corrector_steps`` Langevin corrector steps towards q_t (:func:`langevin_correct` with the network's score
    -ε̂/√(1-ᾱ_t), signal-to-noise ratio ``snr``, α = α_t = 1 - β_t), then the predictor: the ancestral step to the
    next timestep, DDIM with η = 1, which for consecutive timesteps is DDPM's posterior step with σ_t² = β̃_t
    (chapter 08) — Song et al.'s "ancestral sampling" predictor for the VP-SDE. The step to t_prev = -1 returns x̂_0.
    Corrector first, then predictor, as the authors' code does. Network evaluations: steps · (corrector_steps + 1);
    ``corrector_steps=0`` is plain ancestral sampling. ``clip_denoised=False`` by default (unlike ``ddim_sample``): the
    corrector's scores are the network's, unclamped, and the 2-D data live outside [-1, 1]. Returns x_0, or with
    ``return_all_timesteps`` the pair ``(xs, x_starts)`` (the states after each predictor step and the predictor's
    x̂_0).
    """
    _check_loop(model, sched, objective)
    corrector_steps = check_int("corrector_steps", corrector_steps, 0)
    snr = check_positive("snr", snr)
    timesteps = ddim_timesteps(sched.T, sched.T if steps is None else steps, spacing).tolist()
    x = initial_noise(shape, x_T, generator, device, dtype)

    def step(x, t, t_prev):
        for _ in range(corrector_steps):
            score = _score_at(model, sched, x, t, y, objective, check_finite)
            x = langevin_correct(x, score, snr=snr, alpha=sched.alphas[t].item(), generator=generator,
                                 check_finite=check_finite)
        out = call_model(model, x, t, y)
        return ddim_step(sched, out, t, t_prev, x, eta=1.0, objective=objective, clip_denoised=clip_denoised,
                         generator=generator, check_finite=check_finite)

    return run_steps(step, x, _pairs(timesteps), progress=progress, desc="PC sampling",
                     return_all_timesteps=return_all_timesteps)


@torch.no_grad()
def annealed_langevin_sample(model, sched: NoiseSchedule, shape, *, timesteps, steps_per_level: int = 100,
                             step_size: float = 2e-5, denoise: bool = True, x_T: torch.Tensor | None = None,
                             objective: str = "pred_noise", y=None, generator: torch.Generator | None = None,
                             device=None, dtype=torch.float32, progress: bool = True,
                             return_all_timesteps: bool = False, check_finite: bool = True):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; chapter 11, eq. ``eq-annealed-langevin``), run in
    x̄ = x/√ᾱ where the noise levels are σ_i = σ(t_i) and p_σ = data ⊛ N(0, σ² I), as for Song & Ermon's NCSN.

    ``timesteps``: the levels, a strictly decreasing sequence of integer timesteps (e.g. ``ddim_timesteps(T, 10,
    "linspace")``). At level i, ``steps_per_level`` steps x̄ ← x̄ + (α_i/2) s_i(x̄) + √α_i z with the score
    s_i(x̄) = -ε̂(x̄ √ᾱ_i, t_i)/σ_i and α_i = ``step_size`` · σ_i²/σ_L² (σ_L the last level; Song & Ermon's ε = 2e-5
    with σ_L = 0.01, about σ(t = 0) of the linear schedule). The ratio α_i/σ_i² is the same at every level, so a
    level far below the data's own scale barely moves: choose the last level near the finest scale of the data.

    Starts from x_T (in x-space at t_1, drawn with ``generator`` if None; x̄ = x_T/√ᾱ_{t_1}). Returns x̄ after the
    last level or, with ``denoise``, its Tweedie denoising x̂_0 = x̄ - σ_L ε̂ (one more network call), or with
    ``return_all_timesteps`` the pair ``(xs, x_starts)``: x̄ after each level (the start first) and the x̂_0 at each
    level's end. Network evaluations: len(timesteps) · steps_per_level (+1 with ``denoise``).
    """
    _check_loop(model, sched, objective)
    steps_per_level = check_int("steps_per_level", steps_per_level)
    step_size = check_positive("step_size", step_size)
    if isinstance(timesteps, torch.Tensor):
        timesteps = timesteps.tolist()
    if isinstance(timesteps, (str, bytes)) or not hasattr(timesteps, "__iter__"):
        raise TypeError(f"timesteps must be a sequence of integer timesteps, got {timesteps!r}")
    timesteps = [check_int("timesteps entry", t, 0, sched.T - 1) for t in timesteps]
    if not timesteps or any(a <= b for a, b in zip(timesteps, timesteps[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing sequence, got {timesteps}")
    sig = sched.sqrt_recipm1_alphas_cumprod
    sigma_last = sig[timesteps[-1]].item()
    x_bar = initial_noise(shape, x_T, generator, device, dtype) / sched.sqrt_alphas_cumprod[timesteps[0]].item()

    def eps_at(x_bar, t):
        x = x_bar * sched.sqrt_alphas_cumprod[t].item()
        out = call_model(model, x, t, y)
        if check_finite:
            assert_finite(out, "the model output", t)
        return model_predictions(None, sched, x, t, objective, model_output=out)[0]

    def level(x_bar, t, _t_next):
        sigma = sig[t].item()
        alpha = step_size * (sigma / sigma_last) ** 2
        for _ in range(steps_per_level):
            score = -eps_at(x_bar, t) / sigma
            x_bar = langevin_step(x_bar, score, alpha / 2, generator=generator, check_finite=check_finite)
        x_start = x_bar - sigma * eps_at(x_bar, t) if return_all_timesteps else x_bar  # Tweedie, only if kept
        return x_bar, x_start

    out = run_steps(level, x_bar, _pairs(timesteps), progress=progress, desc="annealed Langevin",
                    return_all_timesteps=return_all_timesteps)
    if return_all_timesteps or not denoise:
        return out
    return out - sigma_last * eps_at(out, timesteps[-1])
