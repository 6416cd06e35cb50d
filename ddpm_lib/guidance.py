"""Guidance: steering a sampler towards a class label (chapter 09).

Both methods are written as wrappers that return a modified ε̂, so they work unchanged with
:func:`ddpm_lib.samplers.p_sample_loop` and :func:`ddpm_lib.ddim.ddim_sample` (objective ``"pred_noise"``).

- :class:`ClassifierFreeGuidance` (Ho & Salimans 2022): ε̃ = (1 + w) ε_θ(x_t, t, y) - w ε_θ(x_t, t, ∅)
  (chapter 09, eq. ``eq-cfg``).
- :class:`ClassifierGuidance` (Dhariwal & Nichol 2021, §4.2): ε̃ = ε_θ(x_t, t) - s √(1-ᾱ_t) ∇_{x_t} log p_φ(y|x_t, t)
  (chapter 09, eq. ``eq-classifier-guidance``), from the score view ε = -√(1-ᾱ_t) ∇ log q(x_t) of chapter 04.
"""

from __future__ import annotations

import math
import numbers

import torch

from ._checks import check_positive
from .schedules import NoiseSchedule, extract

__all__ = ["ClassifierFreeGuidance", "ClassifierGuidance"]


class ClassifierFreeGuidance:
    """ε̃(x, t, y) = (1 + w) ε(x, t, y) - w ε(x, t, ∅) with a conditional model that knows a null label.

    ``model(x, t, y)`` must accept the label ``null_label`` (the library's models expose ``model.null_label``).
    w = 0 is the conditional model, w = -1 the unconditional one. Both passes run as one batch.
    """

    def __init__(self, model, w: float, null_label: int | None = None):
        if null_label is None:
            null_label = getattr(model, "null_label", None)
        if null_label is None:
            raise ValueError("null_label must be given when the model has no `null_label` attribute")
        if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w):
            raise TypeError(f"w must be a finite number, got {w!r}")
        self.model, self.w, self.null_label = model, float(w), int(null_label)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("y (the class labels) is required for classifier-free guidance")
        y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
        null = torch.full_like(y, self.null_label)
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return (1.0 + self.w) * cond - self.w * uncond


class ClassifierGuidance:
    """ε̃(x, t, y) = ε(x, t) - s √(1-ᾱ_t) ∇_x log p_φ(y | x, t) with a noise-aware classifier φ(x, t) -> logits."""

    def __init__(self, model, classifier, sched: NoiseSchedule, scale: float):
        if not isinstance(sched, NoiseSchedule):
            raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
        self.model, self.classifier, self.sched = model, classifier, sched
        self.scale = check_positive("scale", scale, allow_zero=True)

    def grad_log_prob(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇_x log p_φ(y | x, t), one label per example."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = torch.log_softmax(self.classifier(x_in, t), dim=-1)
            selected = log_probs[torch.arange(x.shape[0], device=x.device), y]
            return torch.autograd.grad(selected.sum(), x_in)[0]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("y (the class labels) is required for classifier guidance")
        y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])
        eps = self.model(x, t)
        if self.scale == 0:
            return eps
        sigma = extract(self.sched.sqrt_one_minus_alphas_cumprod, t, x)
        return eps - self.scale * sigma * self.grad_log_prob(x, t, y)
