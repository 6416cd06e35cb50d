"""Denoisers whose x̂_0 is held inside the data's range: a clamp to given bounds, and dynamic thresholding
(chapters 06 and 08).

``clip_denoised=True`` in the samplers clamps x̂_0 to [-1, 1], the range of images. Data with another range — the
2-D mixture of chapters 05-08 lies in about [-1.8, 1.8] — need their own bounds: :class:`ClampedDenoiser` wraps a
network so that its output is the one whose x̂_0 is clamped to ``[low, high]`` (per coordinate if the bounds are
tensors), and any sampler run with ``clip_denoised=False`` then sees the clamped prediction. This is what holds the
deterministic DDIM map (η = 0) in: with x̂_0 bounded, the update x_prev = √ᾱ_prev x̂_0 + √((1-ᾱ_prev)/(1-ᾱ_t))
(x_t - √ᾱ_t x̂_0) (chapter 08, eq. ``eq-ddim-x0-form``) shrinks x_t by a factor below 1 at every step, where an extrapolating ε̂ otherwise lets the
1/√ᾱ_T expansion through (chapter 08, the runaway samples).
:class:`DynamicThresholdDenoiser` is Saharia et al.'s (2022) dynamic thresholding: per sample, s = max(1, the
``quantile`` of |x̂_0|), and x̂_0 ← clamp(x̂_0, -s, s)/s.
"""

from __future__ import annotations

import torch

from ._checks import OBJECTIVES, check_choice, check_probability
from .diffusion import call_model, model_predictions, predict_noise_from_start, predict_v
from .schedules import NoiseSchedule

__all__ = ["ClampedDenoiser", "DynamicThresholdDenoiser"]


class _X0Transform:
    """A network whose x̂_0 is transformed; the output keeps the network's objective and is consistent with x_t
    (ε̂ re-derived from the new x̂_0, as ``clip_denoised`` does)."""

    def __init__(self, model, sched: NoiseSchedule, objective: str = "pred_noise"):
        if not isinstance(sched, NoiseSchedule):
            raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
        self.model = model
        self.sched = sched
        check_choice("objective", objective, OBJECTIVES)
        self.objective = objective

    def transform(self, x_start: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        out = call_model(self.model, x_t, t, y)
        _, x_start = model_predictions(None, self.sched, x_t, t, self.objective, model_output=out)
        x_start = self.transform(x_start)
        if self.objective == "pred_x0":
            return x_start
        eps = predict_noise_from_start(self.sched, x_t, t, x_start)
        return eps if self.objective == "pred_noise" else predict_v(self.sched, x_start, t, eps)


class ClampedDenoiser(_X0Transform):
    """``model`` with x̂_0 clamped to [``low``, ``high``] (numbers, or tensors that broadcast against one sample, e.g.
    the per-coordinate minimum and maximum of the training data). ``ClampedDenoiser(model, sched, objective, -1, 1)``
    with ``clip_denoised=False`` samples like ``model`` with ``clip_denoised=True``."""

    def __init__(self, model, sched: NoiseSchedule, objective: str = "pred_noise", low=-1.0, high=1.0):
        super().__init__(model, sched, objective)
        low, high = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
        if not (low < high).all():
            raise ValueError(f"low must be below high everywhere, got low={low.tolist()}, high={high.tolist()}")
        self.low, self.high = low, high

    def transform(self, x_start):
        low, high = self.low.to(x_start), self.high.to(x_start)
        return torch.maximum(torch.minimum(x_start, high), low)


class DynamicThresholdDenoiser(_X0Transform):
    """``model`` with x̂_0 dynamically thresholded (Saharia et al. 2022, Imagen): per sample, s = max(1, the
    ``quantile`` of |x̂_0| over its dimensions), x̂_0 ← clamp(x̂_0, -s, s)/s; s = 1 is the plain clamp to [-1, 1]."""

    def __init__(self, model, sched: NoiseSchedule, objective: str = "pred_noise", quantile: float = 0.995):
        super().__init__(model, sched, objective)
        self.quantile = check_probability("quantile", quantile)

    def transform(self, x_start):
        flat = x_start.flatten(1).abs()
        s = torch.quantile(flat.float(), self.quantile, dim=1).to(x_start).clamp(min=1.0)
        s = s.view(-1, *([1] * (x_start.ndim - 1)))
        return torch.maximum(torch.minimum(x_start, s), -s) / s
