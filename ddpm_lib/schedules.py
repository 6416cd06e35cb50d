"""Noise schedules β_1..β_T and every quantity derived from them.

Chapter 01 (``notebooks/01_forward_process``) derives these quantities; chapter 03 derives the
posterior ones (eqs. ``eq-posterior-mean``, ``eq-posterior-variance``).  Everything is computed in float64;
:func:`extract` hands out entries in the dtype of the tensor they will be combined with.

Index convention: the entry at index ``t`` (0-based, ``0..T-1``) belongs to the paper's step t+1.
"""

from __future__ import annotations

import math

import torch

from ._checks import check_int

__all__ = [
    "linear_beta_schedule",
    "cosine_beta_schedule",
    "sigmoid_beta_schedule",
    "NoiseSchedule",
    "extract",
    "rescale_zero_terminal_snr",
    "respace",
    "RespacedModel",
]


def linear_beta_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020, §4; chapter 01).

    Same as diffusers' ``beta_schedule="linear"``.
    """
    T = check_int("T", T)
    if not (0.0 < beta_start < 1.0 and 0.0 < beta_end < 1.0):
        raise ValueError(f"beta_start and beta_end must lie in (0, 1), got {beta_start!r}, {beta_end!r}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def _betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor, max_beta: float) -> torch.Tensor:
    """β_t = 1 - ᾱ_t / ᾱ_{t-1}, clipped at ``max_beta`` (improved DDPM, eq. 17)."""
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(min=0.0, max=max_beta)


def cosine_beta_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """ᾱ(t) = cos²(((t/T + s)/(1 + s)) π/2), β clipped at 0.999 (Nichol & Dhariwal 2021, eq. 17).

    Equal to diffusers' ``beta_schedule="squaredcos_cap_v2"``.
    """
    T = check_int("T", T)
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s!r}")
    x = torch.arange(T + 1, dtype=torch.float64) / T
    alphas_cumprod = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
    return _betas_from_alphas_cumprod(alphas_cumprod, max_beta)


def sigmoid_beta_schedule(
    T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> torch.Tensor:
    """ᾱ(t) follows a reversed, rescaled sigmoid (Jabri et al. 2022; lucidrains' ``sigmoid_beta_schedule``)."""
    T = check_int("T", T)
    if not end > start:
        raise ValueError(f"end must be greater than start, got start={start!r}, end={end!r}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    x = torch.arange(T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alphas_cumprod = (-torch.sigmoid((x * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    return _betas_from_alphas_cumprod(alphas_cumprod, max_beta)


class NoiseSchedule:
    """All the per-step constants of a diffusion with variances ``betas`` (shape (T,)).

    Attributes (float64 tensors of shape (T,), index t = paper's step t+1):

    - ``betas`` β_t, ``alphas`` α_t = 1 - β_t, ``alphas_cumprod`` ᾱ_t = Π α_s (chapter 01, eq. ``eq-q-xt-x0``),
      ``alphas_cumprod_prev`` ᾱ_{t-1} with ᾱ_0 = 1;
    - ``sqrt_alphas_cumprod`` √ᾱ_t, ``sqrt_one_minus_alphas_cumprod`` √(1-ᾱ_t),
      ``sqrt_recip_alphas_cumprod`` 1/√ᾱ_t, ``sqrt_recipm1_alphas_cumprod`` √(1/ᾱ_t - 1)
      (chapter 04, eq. ``eq-x0-from-eps``);
    - ``posterior_variance`` β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t) and ``posterior_log_variance_clipped``
      (log β̃ with the first entry, which is 0, replaced by the second), ``posterior_mean_coef1``
      β_t √ᾱ_{t-1}/(1-ᾱ_t) (multiplies x_0) and ``posterior_mean_coef2`` (1-ᾱ_{t-1}) √α_t/(1-ᾱ_t)
      (multiplies x_t) (chapter 03, eqs. ``eq-posterior-mean``, ``eq-posterior-variance``);
    - ``snr`` ᾱ_t / (1-ᾱ_t).
    """

    def __init__(self, betas: torch.Tensor):
        if not isinstance(betas, torch.Tensor):
            betas = torch.as_tensor(betas, dtype=torch.float64)  # Python floats never pass through float32
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        betas = betas.detach().to(device="cpu", dtype=torch.float64)
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
            raise ValueError(
                f"betas must all lie in the open interval (0, 1), got min {betas.min().item():.3g}, max {betas.max().item():.3g}"
            )
        self.T = int(betas.numel())
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃ at the first step is 0; its log is clipped to the next value (as in Ho et al.'s code).
        second = self.posterior_variance[1:2] if self.T > 1 else self.betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([second, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        return cls(linear_beta_schedule(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> "NoiseSchedule":
        return cls(cosine_beta_schedule(T, s))

    @classmethod
    def sigmoid(cls, T: int = 1000, **kwargs) -> "NoiseSchedule":
        return cls(sigmoid_beta_schedule(T, **kwargs))

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, beta_1={self.betas[0].item():.3g}, beta_T={self.betas[-1].item():.3g})"


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a[t]`` reshaped to (B, 1, ..., 1) so it broadcasts against ``x``, in ``x``'s dtype and device."""
    out = a.to(x.device)[t.to(x.device)]
    return out.to(x.dtype).reshape(t.shape[0], *((1,) * (x.ndim - 1)))


def rescale_zero_terminal_snr(betas: torch.Tensor, terminal_alphas_cumprod: float = 0.0) -> torch.Tensor:
    """Betas whose ᾱ_T is zero: the schedule reaches pure noise (Lin et al. 2024, "Common diffusion noise schedules
    and sample steps are flawed", Algorithm 1; chapter 08, the runaway samples of η = 0).

    √ᾱ_t is shifted so that its last value is 0 and scaled so that its first value is unchanged, and the betas are
    recomputed from it. With the default ``terminal_alphas_cumprod=0`` this is diffusers'
    ``rescale_zero_terminal_snr`` (the last β is exactly 1, which :class:`NoiseSchedule` rejects: ε-prediction is
    undefined there, x̂_0 = (x_T - ε̂)/√ᾱ_T divides by zero, hence v-prediction). A positive
    ``terminal_alphas_cumprod`` c shifts √ᾱ_t to end at √c instead of 0 (√ᾱ_t ← √c + (√ᾱ_t - √ᾱ_T)(√ᾱ_1 - √c)/(√ᾱ_1 -
    √ᾱ_T), monotone, first value unchanged), so that the schedule is a valid :class:`NoiseSchedule`; pair it with ``objective="pred_v"``, whose x̂_0 = √ᾱ x_t -
    √(1-ᾱ) v̂ stays bounded where ᾱ → 0. Returns float64 betas of the same length.
    """
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() < 2:
        raise ValueError(f"betas must be a 1-D tensor with at least 2 entries, got shape {tuple(betas.shape)}")
    if not (0.0 <= terminal_alphas_cumprod < 1.0):
        raise ValueError(f"terminal_alphas_cumprod must lie in [0, 1), got {terminal_alphas_cumprod!r}")
    sqrt_ac = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    target = math.sqrt(terminal_alphas_cumprod)
    if not target < last:
        raise ValueError(f"terminal_alphas_cumprod must be below the schedule's own ᾱ_T = {last.item() ** 2:.3g}")
    sqrt_ac = (sqrt_ac - last) * (first - target) / (first - last) + target
    alphas_cumprod = sqrt_ac ** 2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def respace(sched: "NoiseSchedule", timesteps) -> tuple:
    """A shorter schedule that visits only the code indices ``timesteps`` of ``sched`` (Nichol & Dhariwal 2021, §4;
    improved-diffusion's ``SpacedDiffusion``; chapter 07): its ᾱ'_k are ᾱ at the kept steps, in increasing order, and
    β'_k = 1 - ᾱ'_k/ᾱ'_{k-1}. Ancestral sampling with the new schedule (and σ'² of its own β' or β̃', or a learned
    interpolation between them) takes len(timesteps) steps with a network trained on ``sched``, called at the
    original timesteps through :class:`RespacedModel`. Returns ``(NoiseSchedule, timestep_map)``, the map a long
    tensor of the kept indices in increasing order.
    """
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    kept = torch.as_tensor(timesteps).flatten()
    if kept.numel() == 0 or kept.is_floating_point() or kept.dtype == torch.bool:
        raise ValueError("timesteps must be a non-empty sequence of integer code indices")
    kept = torch.unique(kept.long())  # sorted, increasing
    if kept[0] < 0 or kept[-1] >= sched.T:
        raise ValueError(f"timesteps must lie in 0..{sched.T - 1}, got {kept[0].item()}..{kept[-1].item()}")
    ac = sched.alphas_cumprod[kept]
    betas = 1.0 - torch.cat([ac[:1], ac[1:] / ac[:-1]])
    return NoiseSchedule(betas), kept


class RespacedModel:
    """A network trained on a long schedule, called with the indices of a schedule made by :func:`respace`:
    ``model(x, t, y)`` becomes ``model(x, timestep_map[t], y)`` (improved-diffusion's ``_WrappedModel``; chapter 07)."""

    def __init__(self, model, timestep_map: torch.Tensor):
        self.model = model
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long)

    def __call__(self, x, t, y=None):
        t = self.timestep_map.to(t.device)[t]
        return self.model(x, t) if y is None else self.model(x, t, y)
