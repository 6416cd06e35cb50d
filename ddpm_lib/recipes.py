"""Training recipes shared by chapters 05-11 and the benchmarks: each trains one model from scratch,
deterministically, within a CPU budget, and returns a :class:`TrainedDiffusion` ready to sample.

A chapter never reads files another notebook wrote: when it needs a trained model it calls one of these
recipes.

- :func:`train_toy_model` — a time-conditioned :class:`~ddpm_lib.models.MLPDenoiser` on a 2-D toy set
  (a Gaussian mixture with an exact density, moons, swiss roll); :func:`train_mixture_model` is the same on
  the book's reference mixture :data:`~ddpm_lib.data.MIXTURE` (chapters 05, 06, 08).
- :func:`train_digits_model` — a denoiser of the 8×8 digits, unconditional or class-conditional with a
  null label for classifier-free guidance (chapters 05, 07, 08, 09).

Their quality is measured by :mod:`ddpm_lib.evaluation` (sample quality beside the data floors) and
:mod:`ddpm_lib.likelihood` (bits/dim), in ``benchmarks/``; ``book/results/`` holds the figures.

Every recipe is seeded: the same arguments give the same weights on the same machine and torch build
(different builds may differ in the last bits, so chapters check trained-model numbers against generous
thresholds, never digit by digit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from ._checks import OBJECTIVES, VARIANCES, check_choice, check_int, check_probability, check_seed
from .data import DIGITS_LEVELS, MIXTURE, TOY_DATASETS, load_digits, toy_sampler
from .models import MLPDenoiser, UNet
from .samplers import p_sample_loop
from .schedules import NoiseSchedule, rescale_zero_terminal_snr
from .train import TrainResult, train

__all__ = [
    "FASHION_CONFIG",
    "train_fashion_model",
    "MIXTURE_STEPS",
    "DIGITS_T",
    "DIGITS_STEPS",
    "DIGITS_ARCHS",
    "TrainedDiffusion",
    "make_schedule",
    "SCHEDULE_KINDS",
    "ZERO_SNR_ALPHAS_CUMPROD",
    "train_toy_model",
    "train_mixture_model",
    "train_digits_model",
]

DIGITS_ARCHS = ("mlp", "unet")

MIXTURE_STEPS = 8000
"""Default training steps of :func:`train_mixture_model` / :func:`train_toy_model`: the budget of chapter 05's
benchmark bar (SW2 within 1.2× of the floor after at most 60 s of CPU training), about 45 s of one CPU core."""

DIGITS_T = 100
"""Default number of diffusion steps of :func:`train_digits_model`: the linear schedule scaled to
β_1 = 1e-3, β_T = 0.2 (:func:`make_schedule`). Chapter 07 explains the choice: with 17 grey levels, Ho et al.'s
β_1 = 1e-4 (T = 1000) spends about a hundred steps below the grid spacing, where the bound pays for every step a
smooth network does not snap to the grid. Pass ``T=1000`` for Ho et al.'s schedule."""

DIGITS_STEPS = 1600
"""Default training steps of :func:`train_digits_model` (about 3 minutes of one CPU core for the UNet)."""


# ---------------------------------------------------------------------------------------------
# the result of a recipe


@dataclass
class TrainedDiffusion:
    """A trained denoiser with everything needed to sample from it (returned by every recipe).

    - ``model``: the EMA-averaged network in eval mode — sample from this one;
    - ``raw_model``: the network with its last weights (chapter 05 compares the two), in eval mode;
    - ``sched``: the :class:`~ddpm_lib.schedules.NoiseSchedule` it was trained with;
    - ``objective``: ``"pred_noise"``, ``"pred_x0"`` or ``"pred_v"``;
    - ``clip_denoised``: the default for sampling: True for images in [-1, 1], False for 2-D toy data,
      which extends beyond [-1, 1];
    - ``data``: the training set (a tensor (N, ...)), ``labels`` (N,) or None;
    - ``result``: the :class:`~ddpm_lib.train.TrainResult` (loss history, timesteps drawn, wall time);
    - ``name``: the data set; ``num_classes``: None or 10 for a class-conditional digits model.
    """

    model: nn.Module
    raw_model: nn.Module
    sched: NoiseSchedule
    objective: str
    clip_denoised: bool
    data: torch.Tensor
    result: TrainResult
    name: str
    labels: Optional[torch.Tensor] = None
    num_classes: Optional[int] = None
    config: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Wall time of the training loop, in seconds."""
        return self.result.seconds

    def sample(self, n: int, *, seed: Optional[int] = None, generator: Optional[torch.Generator] = None,
               variance: Optional[str] = None, clip_denoised: Optional[bool] = None, y=None, use_ema: bool = True,
               x_T: Optional[torch.Tensor] = None, return_all_timesteps: bool = False, progress: bool = True):
        """``n`` samples with Algorithm 4 (:func:`~ddpm_lib.samplers.p_sample_loop`, all T steps).

        Randomness comes from ``generator`` or, if None, from a fresh generator seeded with ``seed``
        (default 0). ``variance`` defaults to ``"learned_range"`` for a network that learns its variance
        (``config["learned_variance"]``), else ``"fixed_small"`` (σ_t² = β̃_t). ``clip_denoised`` defaults to
        :attr:`clip_denoised`; ``use_ema=False`` samples from the
        raw weights; ``y`` (labels) is passed to a class-conditional model; ``x_T`` is the starting noise (drawn
        with the generator if None). With ``return_all_timesteps`` the pair ``(xs, x_starts)`` of
        :func:`~ddpm_lib.samplers.p_sample_loop` is returned.
        """
        check_int("n", n)
        if variance is None:
            variance = "learned_range" if self.config.get("learned_variance") else "fixed_small"
        check_choice("variance", variance, VARIANCES)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else check_seed(seed))
        if clip_denoised is None:
            clip_denoised = self.clip_denoised
        model = self.model if use_ema else self.raw_model
        shape = (n,) + tuple(self.data.shape[1:])
        return p_sample_loop(model, self.sched, shape, x_T=x_T, variance=variance, clip_denoised=clip_denoised,
                             objective=self.objective, y=y, generator=generator, progress=progress,
                             return_all_timesteps=return_all_timesteps)


def _finish(result: TrainResult, **kwargs) -> TrainedDiffusion:
    result.model.eval()
    return TrainedDiffusion(model=result.ema_model, raw_model=result.model, result=result, **kwargs)


# ---------------------------------------------------------------------------------------------
# 2-D toy data


SCHEDULE_KINDS = ("linear", "cosine", "linear_zero_snr")

ZERO_SNR_ALPHAS_CUMPROD = 2.0 ** -24
"""ᾱ_T of ``make_schedule(kind="linear_zero_snr")``: zero terminal SNR as close as float32 sampling allows (diffusers'
Euler scheduler uses the same value); the exact ᾱ_T = 0 of Lin et al. makes β_T = 1, outside a NoiseSchedule."""


def make_schedule(T: int = 1000, kind: str = "linear") -> NoiseSchedule:
    """The schedule of the recipes: Ho et al.'s linear β from 1e-4 to 0.02 at T = 1000, with both ends
    scaled by 1000/T for other T so that ᾱ_T stays about the same (``kind="linear"``), the cosine
    schedule (``kind="cosine"``), or the linear one rescaled to (almost) zero terminal SNR, ᾱ_T =
    :data:`ZERO_SNR_ALPHAS_CUMPROD` (``kind="linear_zero_snr"``, :func:`~ddpm_lib.schedules.rescale_zero_terminal_snr`,
    Lin et al. 2024; chapter 08: train it with ``objective="pred_v"`` and sample with trailing spacing)."""
    check_int("T", T, 2)
    check_choice("kind", kind, SCHEDULE_KINDS)
    if kind == "cosine":
        return NoiseSchedule.cosine(T)
    scale = 1000.0 / T
    sched = NoiseSchedule.linear(T, min(1e-4 * scale, 0.5), min(0.02 * scale, 0.5))
    if kind == "linear_zero_snr":
        sched = NoiseSchedule(rescale_zero_terminal_snr(sched.betas, ZERO_SNR_ALPHAS_CUMPROD))
    return sched


def train_toy_model(dataset: str = MIXTURE, *, seed: int = 0, steps: int = MIXTURE_STEPS, objective: str = "pred_noise",
                    T: int = 1000, schedule: str = "linear", hidden_dim: int = 128, num_layers: int = 3,
                    batch_size: int = 256, lr: float = 1e-3, ema_decay: Optional[float] = 0.999,
                    n_train: int = 20000, progress: bool = True) -> TrainedDiffusion:
    """Train a time-conditioned MLP on a 2-D toy set with Algorithm 3 (chapter 05).

    ``n_train`` training points are drawn from ``dataset`` with a generator seeded by ``seed``; the MLP
    (``hidden_dim`` wide, ``num_layers`` residual blocks) is initialised from ``seed`` and trained by
    :func:`ddpm_lib.train.train` for ``steps`` steps of ``batch_size`` with AdamW(``lr``) and an EMA of
    decay ``ema_decay``, on :func:`make_schedule` (``T``, ``schedule``). The defaults take about 45 s of
    one CPU core. Samples are not clipped (``clip_denoised=False``): the data extend beyond [-1, 1].
    """
    check_choice("dataset", dataset, TOY_DATASETS)
    check_choice("objective", objective, OBJECTIVES)
    check_seed(seed)
    check_int("n_train", n_train)
    sched = make_schedule(T, schedule)
    data = toy_sampler(dataset)(n_train, torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPDenoiser(2, hidden_dim=hidden_dim, num_layers=num_layers)
    result = train(model, sched, data, steps=steps, batch_size=batch_size, lr=lr, objective=objective,
                   ema_decay=ema_decay, seed=seed, progress=progress)
    config = dict(dataset=dataset, seed=seed, steps=steps, objective=objective, T=T, schedule=schedule,
                  hidden_dim=hidden_dim, num_layers=num_layers, batch_size=batch_size, lr=lr,
                  ema_decay=ema_decay, n_train=n_train)
    return _finish(result, sched=sched, objective=objective, clip_denoised=False, data=data, name=dataset,
                   config=config)


def train_mixture_model(*, seed: int = 0, steps: int = MIXTURE_STEPS, objective: str = "pred_noise",
                        **kwargs) -> TrainedDiffusion:
    """:func:`train_toy_model` on the reference mixture :data:`MIXTURE` (chapters 05, 06, 08).

    Its exact density is ``make_gaussian_mixture(MIXTURE)``; ``OracleDenoiser`` of that mixture is the
    perfect network to compare with. Other keyword arguments go to :func:`train_toy_model`.
    """
    return train_toy_model(MIXTURE, seed=seed, steps=steps, objective=objective, **kwargs)


# ---------------------------------------------------------------------------------------------
# digits


def _digits_network(arch: str, width: int, num_classes: Optional[int], channel_mults=(1, 2), num_res_blocks: int = 1,
                    learned_variance: bool = False) -> nn.Module:
    if arch == "mlp":
        return MLPDenoiser(64, hidden_dim=width, num_layers=4, num_classes=num_classes,
                           learned_variance=learned_variance)
    return UNet(in_channels=1, base_channels=width, channel_mults=channel_mults, num_res_blocks=num_res_blocks,
                num_classes=num_classes, learned_variance=learned_variance)


def train_digits_model(*, seed: int = 0, steps: int = DIGITS_STEPS, objective: str = "pred_noise",
                       arch: str = "unet", width: Optional[int] = None, T: int = DIGITS_T, schedule: str = "linear",
                       num_classes: Optional[int] = None, p_uncond: float = 0.0, batch_size: int = 128,
                       lr: float = 2e-3, lr_schedule: str = "constant", warmup_steps: int = 0,
                       ema_decay: Optional[float] = 0.999, channel_mults=(1, 2), num_res_blocks: int = 1,
                       loss_weighting: Optional[str] = None, learned_variance: bool = False, vlb_weight: float = 1e-3,
                       callback=None, callback_every: int = 0, progress: bool = True) -> TrainedDiffusion:
    """Train a denoiser of the 8×8 digits (train split of :func:`ddpm_lib.data.load_digits`) with Algorithm 3.

    ``arch="unet"`` (default): a :class:`~ddpm_lib.models.UNet` with ``width`` (default 32) base channels, levels
    8×8 and 4×4, one residual block each (0.46 M parameters, about 0.1 s per step of 128 on one CPU core);
    ``arch="mlp"``: an :class:`~ddpm_lib.models.MLPDenoiser` on the 64 flattened pixels, 4 residual blocks of
    ``width`` (default 512) units — more parameters, and much worse samples for the same CPU time
    (``book/results/ch05_07_quality.md`` has the measured Fréchet distances of both, beside the floor).
    The schedule is :func:`make_schedule` (``T``, default :data:`DIGITS_T` = 100, ``schedule``). The defaults
    (:data:`DIGITS_STEPS` steps of batches of 128, AdamW with lr 2e-3, EMA 0.999) are the budget of the benchmark,
    about 3 minutes of one CPU core.
    With ``num_classes=10`` the network takes the label ``y`` and learns the null label
    (``model.null_label``) with probability ``p_uncond`` (classifier-free guidance, chapter 09).
    Samples are clipped to [-1, 1] by default. Seeded by ``seed`` (initial weights and every draw).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("arch", arch, DIGITS_ARCHS)
    check_seed(seed)
    check_probability("p_uncond", p_uncond)
    if num_classes not in (None, 10):
        raise ValueError(f"num_classes must be None (unconditional) or 10 (the digits), got {num_classes!r}")
    if p_uncond and num_classes is None:
        raise ValueError("p_uncond > 0 needs a class-conditional model (num_classes=10)")
    if width is None:
        width = 512 if arch == "mlp" else 32
    check_int("width", width, 2)
    sched = make_schedule(T, schedule)
    data, labels = load_digits("train")
    channel_mults = tuple(channel_mults)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _digits_network(arch, width, num_classes, channel_mults, num_res_blocks, learned_variance)
    result = train(model, sched, data, steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                   warmup_steps=warmup_steps, objective=objective, loss_weighting=loss_weighting,
                   learned_variance=learned_variance, vlb_weight=vlb_weight, num_bins=DIGITS_LEVELS,
                   ema_decay=ema_decay, labels=labels if num_classes else None, p_uncond=p_uncond, seed=seed,
                   progress=progress, callback=callback, callback_every=callback_every)
    config = dict(seed=seed, steps=steps, objective=objective, arch=arch, width=width, T=T, schedule=schedule,
                  num_classes=num_classes, p_uncond=p_uncond, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                  warmup_steps=warmup_steps, ema_decay=ema_decay, channel_mults=channel_mults,
                  num_res_blocks=num_res_blocks, loss_weighting=loss_weighting, learned_variance=learned_variance,
                  vlb_weight=vlb_weight)
    return _finish(result, sched=sched, objective=objective, clip_denoised=True, data=data, name="digits",
                   labels=labels if num_classes else None, num_classes=num_classes, config=config)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (chapter 10): too long for a chapter; benchmarks/train_fashion_mnist.py runs it once and ships the
# weights (ddpm_lib.pretrained.load("fashion_mnist"))

FASHION_CONFIG = dict(
    base_channels=48, channel_mults=(1, 2, 2), num_res_blocks=1, attention=True, num_classes=10, dropout=0.0,
    schedule="cosine", T=1000, objective="pred_noise", p_uncond=0.1, batch_size=64, lr=2e-3, lr_schedule="cosine",
    warmup_steps=500, ema_decay=0.9995, grad_clip=1.0, mixed_precision=True, steps=11000, seed=0,
)
"""The recipe of chapter 10's class-conditional Fashion-MNIST UNet (see ``book/results/ch10_*`` for how it was
chosen and what it reaches)."""


def train_fashion_model(config: Optional[dict] = None, *, steps: Optional[int] = None, callback=None,
                        callback_every: int = 0, device="cpu", progress: bool = True) -> TrainedDiffusion:
    """Train the class-conditional Fashion-MNIST UNet of chapter 10 with Algorithm 3 and label dropout.

    ``config`` defaults to :data:`FASHION_CONFIG`: a :class:`~ddpm_lib.models.UNet` (levels 28, 14, 7) with a
    class embedding and a null label (``p_uncond`` of the labels dropped, so ``y=None`` samples unconditionally and
    classifier-free guidance works, chapter 09), on the cosine schedule, AdamW with a warm-up and a cosine decay,
    an EMA, and the forward pass in bfloat16 (``mixed_precision``). ``steps`` overrides ``config["steps"]`` (the
    learning-rate schedule still spans ``config["steps"]``, so the first steps of a short run are those of the full
    run). ``callback(step, model, ema)`` is called every ``callback_every`` steps. The whole recipe takes about an
    hour of the two CPU cores (``benchmarks/train_fashion_mnist.py``), minutes on a GPU (``device="cuda"``; there,
    pass ``dict(FASHION_CONFIG, mixed_precision=False)`` unless the GPU computes bfloat16 natively); in a chapter,
    load its result with :func:`ddpm_lib.pretrained.load` instead.
    """
    from .data import load_fashion_mnist
    from .pretrained import build_unet, make_pretrained_schedule

    config = dict(FASHION_CONFIG if config is None else config)
    total = check_int("config['steps']", config["steps"])
    steps = total if steps is None else check_int("steps", steps, 1, total)
    seed = check_seed(config["seed"])
    sched = make_pretrained_schedule(config)
    data, labels = load_fashion_mnist("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_unet(config)
    result = train(model, sched, data, steps=steps, batch_size=config["batch_size"], lr=config["lr"],
                   lr_schedule=config["lr_schedule"], lr_schedule_steps=total, warmup_steps=config["warmup_steps"],
                   objective=config["objective"], ema_decay=config["ema_decay"], grad_clip=config["grad_clip"],
                   labels=labels, p_uncond=config["p_uncond"], mixed_precision=config["mixed_precision"], seed=seed,
                   progress=progress, callback=callback, callback_every=callback_every, device=device)
    return _finish(result, sched=sched, objective=config["objective"], clip_denoised=True, data=data,
                   name="fashion_mnist", labels=labels, num_classes=config["num_classes"], config=config)
