"""A noise-aware classifier p_φ(y | x_t, t) for classifier guidance (chapter 09).

Classifier guidance (Dhariwal & Nichol 2021, §4) needs ∇_{x_t} log p_φ(y | x_t, t) at every noise level the sampler
visits, so the classifier is trained on noised images x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with t ~ U{0..T-1}, and told t
(chapter 09, eq. ``eq-classifier-guidance``). A classifier trained on clean digits only would be asked about
inputs it never saw. :class:`NoisyClassifier` is a small time-conditioned MLP sized for the 8×8 digits on a CPU;
:func:`train_noisy_classifier` trains it with cross-entropy on (x_t, t, y); :func:`noisy_accuracy` measures its
accuracy at one noise level. Use it with :class:`ddpm_lib.guidance.ClassifierGuidance`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_int, check_positive, check_seed, check_timestep
from .diffusion import q_sample
from .models import sinusoidal_embedding
from .schedules import NoiseSchedule

__all__ = ["NoisyClassifier", "NoisyClassifierResult", "train_noisy_classifier", "noisy_accuracy"]


class NoisyClassifier(nn.Module):
    """Time-conditioned classifier φ(x_t, t) → logits of shape (B, num_classes) (chapter 09).

    An MLP on the flattened image (``data_dim`` = C·H·W features, 64 for the 8×8 digits): two hidden layers of
    width ``hidden_dim``, each followed by LayerNorm, the time embedding added, and SiLU; then a linear layer to
    the logits. The time embedding is :func:`ddpm_lib.models.sinusoidal_embedding` followed by a two-layer MLP,
    as in the denoisers. Small on purpose: classifier guidance back-propagates through it at every sampling step.
    ``forward(x, t)``: ``x`` of shape (B, ...) with ``data_dim`` features, ``t`` a long tensor of shape (B,).
    """

    def __init__(self, data_dim: int = 64, num_classes: int = 10, hidden_dim: int = 256, time_emb_dim: int = 64):
        super().__init__()
        self.data_dim = check_int("data_dim", data_dim)
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        check_int("hidden_dim", hidden_dim)
        self.time_emb_dim = check_int("time_emb_dim", time_emb_dim, minimum=2)
        self.time_mlp = nn.Sequential(nn.Linear(time_emb_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))
        self.fc1 = nn.Linear(data_dim, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.emb1 = nn.Linear(hidden_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.emb2 = nn.Linear(hidden_dim, hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.data_dim:
            raise ValueError(f"x must have shape (B, ...) with {self.data_dim} features per example, "
                             f"got shape {tuple(x.shape)}")
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"t must be a tensor of shape ({x.shape[0]},), got {t!r}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timesteps (torch.long), got dtype {t.dtype}")
        t = t.to(x.device).expand(x.shape[0])
        emb = F.silu(self.time_mlp(sinusoidal_embedding(t, self.time_emb_dim).to(x.dtype)))
        h = F.silu(self.norm1(self.fc1(x.reshape(x.shape[0], -1))) + self.emb1(emb))
        h = F.silu(self.norm2(self.fc2(h)) + self.emb2(emb))
        return self.head(h)


@dataclass
class NoisyClassifierResult:
    """What :func:`train_noisy_classifier` returns: the trained ``classifier`` (eval mode), the cross-entropy of
    every step (``loss_history``, float tensor (steps,)) and the wall time of the loop in ``seconds``."""

    classifier: NoisyClassifier
    loss_history: torch.Tensor
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)


def train_noisy_classifier(
    classifier: nn.Module,
    sched: NoiseSchedule,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device="cpu",
) -> NoisyClassifierResult:
    """Train ``classifier`` on noised images: minimise E_{x_0, y, t, ε} [-log p_φ(y | √ᾱ_t x_0 + √(1-ᾱ_t) ε, t)].

    Each step draws ``batch_size`` examples with replacement, t ~ U{0..T-1} and ε ~ N(0, I) from a
    ``torch.Generator`` seeded with ``seed`` (same seed and initial weights → same loss history), noises the images
    with :func:`ddpm_lib.diffusion.q_sample` and takes an AdamW step on the cross-entropy; the learning rate
    decays with a cosine to 0. The classifier is returned in eval mode.
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or images.shape[0] == 0:
        raise ValueError("images must be a tensor of shape (N, ...) with N >= 1")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},), one label per image")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers (torch.long), got dtype {labels.dtype}")
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_positive("lr", lr)
    seed = check_seed(seed)
    device = torch.device(device)
    classifier.to(device).train()
    x_all, y_all = images.to(device), labels.to(device).long()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    losses = torch.empty(steps)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen).to(device)
        t = torch.randint(0, sched.T, (batch_size,), generator=gen).to(device)
        noise = torch.randn((batch_size,) + tuple(images.shape[1:]), generator=gen).to(device)
        x_t = q_sample(sched, x_all[idx], t, noise)
        loss = F.cross_entropy(classifier(x_t, t), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach().cpu()
    seconds = time.perf_counter() - start
    classifier.eval()
    meta = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    return NoisyClassifierResult(classifier, losses, seconds, meta)


@torch.no_grad()
def noisy_accuracy(classifier: nn.Module, sched: NoiseSchedule, images: torch.Tensor, labels: torch.Tensor, t: int,
                   *, generator: Optional[torch.Generator] = None) -> float:
    """Fraction of ``images`` noised to code index ``t`` (one ε per image, drawn with ``generator``) that
    ``classifier`` labels correctly. At t near T-1 it falls to chance (1/num_classes): x_t holds almost no signal."""
    t = check_timestep(t, sched.T)
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},), one label per image")
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    tt = torch.full((images.shape[0],), t, dtype=torch.long, device=images.device)
    x_t = q_sample(sched, images, tt, noise)
    pred = classifier(x_t, tt).argmax(dim=-1)
    return (pred == labels.to(pred.device)).float().mean().item()
