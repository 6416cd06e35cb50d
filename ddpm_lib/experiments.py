"""Training and evaluation recipes shared by chapters 05-09 and ``benchmarks/bench_training_sampling.py``.

A chapter never reads files another notebook wrote: when it needs a trained model it calls one of these
recipes, which trains one from scratch, deterministically, in about a minute of CPU or less.

Recipes (each returns a :class:`TrainedDiffusion`):

- :func:`train_toy_model` — a time-conditioned :class:`~ddpm_lib.models.MLPDenoiser` on a 2-D toy set
  (a Gaussian mixture with an exact density, moons, swiss roll); :func:`train_mixture_model` is the same on
  the book's reference mixture ``"8gaussians"`` (chapters 05, 06, 08).
- :func:`train_digits_model` — a denoiser of the 8×8 digits, unconditional or class-conditional with a
  null label for classifier-free guidance (chapters 05, 07, 08, 09).

Evaluation (always next to a data-vs-data floor):

- :func:`toy_quality` — sliced Wasserstein-2 between samples and fresh draws of the data, averaged over
  equal-sized chunks, beside the floor of :func:`ddpm_lib.metrics.data_floor` with the same chunk size.
- :func:`digits_quality` — classifier-feature Fréchet distance to the test split, beside the floor
  (train images vs the test split, the same number of images as the samples), copies of training images,
  classes covered, mean classifier confidence.
- :func:`uniform_bits_per_dim`, :func:`categorical_bits_per_dim` — the likelihood baselines of chapter 07.
- :func:`loss_by_timestep_band` — the training loss per band of timesteps (chapter 05).

Every recipe is seeded: the same arguments give the same weights on the same machine and torch build
(different builds may differ in the last bits, so chapters check trained-model numbers against generous
thresholds, never digit by digit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ._checks import check_choice
from .data import (
    DIGITS_LEVELS,
    GAUSSIAN_MIXTURE_PRESETS,
    GaussianMixture,
    load_digits,
    make_gaussian_mixture,
    make_moons,
    make_swiss_roll,
)
from .diffusion import OBJECTIVES
from .models import MLPDenoiser, UNet
from .samplers import VARIANCES, p_sample_loop
from .schedules import NoiseSchedule
from .train import TrainResult, train

__all__ = [
    "MIXTURE",
    "MIXTURE_STEPS",
    "DIGITS_T",
    "DIGITS_STEPS",
    "TOY_DATASETS",
    "DIGITS_ARCHS",
    "TrainedDiffusion",
    "toy_sampler",
    "make_schedule",
    "train_toy_model",
    "train_mixture_model",
    "train_digits_model",
    "toy_quality",
    "digits_quality",
    "uniform_bits_per_dim",
    "categorical_bits_per_dim",
    "to_levels",
    "loss_by_timestep_band",
]

MIXTURE = "8gaussians"
"""The book's reference 2-D Gaussian mixture (``make_gaussian_mixture("8gaussians")``)."""

TOY_DATASETS = tuple(sorted(set(GAUSSIAN_MIXTURE_PRESETS) - {"2gaussians_1d"})) + ("moons", "swiss_roll")
"""2-D toy sets a recipe can train on: the 2-D mixture presets, ``"moons"`` and ``"swiss_roll"``."""

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


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return seed


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
               variance: str = "fixed_small", clip_denoised: Optional[bool] = None, y=None, use_ema: bool = True,
               noise: Optional[torch.Tensor] = None, return_all_timesteps: bool = False, progress: bool = False):
        """``n`` samples with Algorithm 4 (:func:`~ddpm_lib.samplers.p_sample_loop`, all T steps).

        Randomness comes from ``generator`` or, if None, from a fresh generator seeded with ``seed``
        (default 0). ``clip_denoised`` defaults to :attr:`clip_denoised`; ``use_ema=False`` samples from the
        raw weights; ``y`` (labels) is passed to a class-conditional model. With ``return_all_timesteps`` the
        pair ``(xs, x_starts)`` of :func:`~ddpm_lib.samplers.p_sample_loop` is returned.
        """
        _check_int("n", n)
        check_choice("variance", variance, VARIANCES)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else _check_seed(seed))
        if clip_denoised is None:
            clip_denoised = self.clip_denoised
        model = self.model if use_ema else self.raw_model
        shape = (n,) + tuple(self.data.shape[1:])
        return p_sample_loop(model, self.sched, shape, noise=noise, variance=variance, clip_denoised=clip_denoised,
                             objective=self.objective, y=y, generator=generator, progress=progress,
                             return_all_timesteps=return_all_timesteps)


def _finish(result: TrainResult, **kwargs) -> TrainedDiffusion:
    result.model.eval()
    return TrainedDiffusion(model=result.ema_model, raw_model=result.model, result=result, **kwargs)


# ---------------------------------------------------------------------------------------------
# 2-D toy data


def toy_sampler(dataset: str = MIXTURE) -> Callable[[int, Optional[torch.Generator]], torch.Tensor]:
    """``sample(n, generator=None) -> (n, 2)`` float32 points of a 2-D toy set (see :data:`TOY_DATASETS`).

    Mixtures use :meth:`~ddpm_lib.data.GaussianMixture.sample`, moons and the swiss roll the functions of
    :mod:`ddpm_lib.data` with their default noise.
    """
    check_choice("dataset", dataset, TOY_DATASETS)
    if dataset == "moons":
        return lambda n, generator=None: make_moons(n, generator=generator)
    if dataset == "swiss_roll":
        return lambda n, generator=None: make_swiss_roll(n, generator=generator)
    mixture = make_gaussian_mixture(dataset)
    return lambda n, generator=None: mixture.sample(n, generator=generator)


def make_schedule(T: int = 1000, kind: str = "linear") -> NoiseSchedule:
    """The schedule of the recipes: Ho et al.'s linear β from 1e-4 to 0.02 at T = 1000, with both ends
    scaled by 1000/T for other T so that ᾱ_T stays about the same (``kind="linear"``), or the cosine
    schedule (``kind="cosine"``)."""
    _check_int("T", T, 2)
    check_choice("kind", kind, ("linear", "cosine"))
    if kind == "cosine":
        return NoiseSchedule.cosine(T)
    scale = 1000.0 / T
    return NoiseSchedule.linear(T, min(1e-4 * scale, 0.5), min(0.02 * scale, 0.5))


def train_toy_model(dataset: str = MIXTURE, *, seed: int = 0, steps: int = MIXTURE_STEPS, objective: str = "pred_noise",
                    T: int = 1000, schedule: str = "linear", hidden_dim: int = 128, num_layers: int = 3,
                    batch_size: int = 256, lr: float = 1e-3, ema_decay: Optional[float] = 0.999,
                    n_train: int = 20000, progress: bool = False) -> TrainedDiffusion:
    """Train a time-conditioned MLP on a 2-D toy set with Algorithm 3 (chapter 05).

    ``n_train`` training points are drawn from ``dataset`` with a generator seeded by ``seed``; the MLP
    (``hidden_dim`` wide, ``num_layers`` residual blocks) is initialised from ``seed`` and trained by
    :func:`ddpm_lib.train.train` for ``steps`` steps of ``batch_size`` with AdamW(``lr``) and an EMA of
    decay ``ema_decay``, on :func:`make_schedule` (``T``, ``schedule``). The defaults take about 45 s of
    one CPU core. Samples are not clipped (``clip_denoised=False``): the data extend beyond [-1, 1].
    """
    check_choice("dataset", dataset, TOY_DATASETS)
    check_choice("objective", objective, OBJECTIVES)
    _check_seed(seed)
    _check_int("n_train", n_train)
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


def _digits_network(arch: str, width: int, num_classes: Optional[int]) -> nn.Module:
    if arch == "mlp":
        return MLPDenoiser(64, hidden_dim=width, num_layers=4, num_classes=num_classes)
    return UNet(in_channels=1, base_channels=width, channel_mults=(1, 2), num_classes=num_classes)


def train_digits_model(*, seed: int = 0, steps: int = DIGITS_STEPS, objective: str = "pred_noise",
                       arch: str = "unet", width: Optional[int] = None, T: int = DIGITS_T, schedule: str = "linear",
                       num_classes: Optional[int] = None, p_uncond: float = 0.0, batch_size: int = 128,
                       lr: float = 2e-3, ema_decay: Optional[float] = 0.999,
                       progress: bool = False) -> TrainedDiffusion:
    """Train a denoiser of the 8×8 digits (train split of :func:`ddpm_lib.data.load_digits`) with Algorithm 3.

    ``arch="unet"`` (default): a :class:`~ddpm_lib.models.UNet` with ``width`` (default 32) base channels, levels
    8×8 and 4×4, one residual block each (0.46 M parameters, about 0.1 s per step of 128 on one CPU core);
    ``arch="mlp"``: an :class:`~ddpm_lib.models.MLPDenoiser` on the 64 flattened pixels, 4 residual blocks of
    ``width`` (default 512) units — more parameters, and much worse samples for the same CPU time
    (Fréchet distance about 4× the floor where the UNet reaches about 1×).
    The schedule is :func:`make_schedule` (``T``, default :data:`DIGITS_T` = 100, ``schedule``). The defaults
    (:data:`DIGITS_STEPS` steps of batches of 128, AdamW with lr 2e-3, EMA 0.999) are the budget of the benchmark,
    about 3 minutes of one CPU core.
    With ``num_classes=10`` the network takes the label ``y`` and learns the null label
    (``model.null_label``) with probability ``p_uncond`` (classifier-free guidance, chapter 09).
    Samples are clipped to [-1, 1] by default. Seeded by ``seed`` (initial weights and every draw).
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("arch", arch, DIGITS_ARCHS)
    _check_seed(seed)
    if num_classes not in (None, 10):
        raise ValueError(f"num_classes must be None (unconditional) or 10 (the digits), got {num_classes!r}")
    if p_uncond and num_classes is None:
        raise ValueError("p_uncond > 0 needs a class-conditional model (num_classes=10)")
    if width is None:
        width = 512 if arch == "mlp" else 32
    _check_int("width", width, 2)
    sched = make_schedule(T, schedule)
    data, labels = load_digits("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _digits_network(arch, width, num_classes)
    result = train(model, sched, data, steps=steps, batch_size=batch_size, lr=lr, objective=objective,
                   ema_decay=ema_decay, labels=labels if num_classes else None, p_uncond=p_uncond, seed=seed,
                   progress=progress)
    config = dict(seed=seed, steps=steps, objective=objective, arch=arch, width=width, T=T, schedule=schedule,
                  num_classes=num_classes, p_uncond=p_uncond, batch_size=batch_size, lr=lr, ema_decay=ema_decay)
    return _finish(result, sched=sched, objective=objective, clip_denoised=True, data=data, name="digits",
                   labels=labels if num_classes else None, num_classes=num_classes, config=config)


# ---------------------------------------------------------------------------------------------
# evaluation


def toy_quality(samples: torch.Tensor, dataset: str = MIXTURE, *, chunk: Optional[int] = None, seed: int = 0,
                n_projections: int = 256, floor_repeats: Optional[int] = None) -> dict:
    """Sliced Wasserstein-2 of 2-D samples against fresh draws of ``dataset``, beside the floor (chapters 05, 06, 08).

    The samples are cut into chunks of ``chunk`` points (default: all of them, one chunk); each chunk is
    compared with its own fresh draw of the data, and the mean over chunks is reported beside the floor:
    the same metric between two fresh draws of ``chunk`` points, averaged over ``floor_repeats`` pairs
    (default: the number of chunks, at least 5; :func:`ddpm_lib.metrics.data_floor`).

    SW2 of well-separated clusters is noisy and heavy-tailed: it is dominated by how many points each
    cluster receives, and one draw in ten or twenty can score twice the typical value. A perfect sampler's
    ratio therefore scatters by ±20-30 % around 1 with 5 chunks; use many chunks (and the same ``seed``, hence
    the same fresh draws and floor, for all the models compared). Returns
    ``{"sw2", "sw2_std", "floor", "floor_std", "ratio", "chunk", "chunks"}``.
    """
    from .metrics import data_floor, sliced_wasserstein

    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError("samples must be a tensor of shape (N, 2)")
    n = samples.shape[0]
    chunk = n if chunk is None else _check_int("chunk", chunk, 2)
    if chunk > n:
        raise ValueError(f"chunk must be <= the number of samples {n}, got {chunk}")
    draw = toy_sampler(dataset)
    gen = torch.Generator().manual_seed(_check_seed(seed))
    metric = lambda a, b: sliced_wasserstein(a, b, n_projections=n_projections)  # noqa: E731
    values = [metric(samples[i * chunk:(i + 1) * chunk], draw(chunk, gen)) for i in range(n // chunk)]
    floor_gen = torch.Generator().manual_seed(seed + 1)
    repeats = max(5, len(values)) if floor_repeats is None else _check_int("floor_repeats", floor_repeats)
    floor = data_floor(lambda k: draw(k, floor_gen), chunk, metric, repeats=repeats)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"sw2": mean, "sw2_std": std, "floor": floor.mean, "floor_std": floor.std, "ratio": mean / floor.mean,
            "chunk": chunk, "chunks": len(values)}


def digits_quality(samples: torch.Tensor, *, seed: int = 0, floor_repeats: int = 5) -> dict:
    """Sample quality of 8×8 digits in [-1, 1] against the held-out test split (chapters 05, 06, 08, 09).

    - ``fd``: :func:`ddpm_lib.metrics.digits_fid` between the samples and the 360 test images;
    - ``floor``: the same distance between ``N`` training images (N = number of samples, drawn without
      replacement, all 1437 if N >= 1437) and the test split, averaged over ``floor_repeats`` draws — real
      digits score no better than this with N images; ``ratio = fd / floor``;
    - ``memorized``: :func:`ddpm_lib.metrics.memorization_fraction` (fraction of samples that copy a training
      image) and its ``threshold``;
    - ``histogram`` (list of 10 counts), ``classes_covered``, ``confidence`` (mean top probability) from the
      fixed classifier, and that classifier's ``classifier_accuracy`` on the test split.
    """
    from .metrics import class_histogram, digits_fid, get_digits_classifier, mean_confidence, memorization_fraction

    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or samples[0].numel() != 64:
        raise ValueError("samples must be a tensor of 8x8 digits, shape (N, 1, 8, 8) or (N, 64)")
    _check_int("floor_repeats", floor_repeats)
    samples = samples.reshape(-1, 1, 8, 8)
    classifier, accuracy = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    n = samples.shape[0]
    fd = digits_fid(samples, test_x, classifier)
    gen = torch.Generator().manual_seed(_check_seed(seed))
    if n >= train_x.shape[0]:
        floors = [digits_fid(train_x, test_x, classifier)]
    else:
        floors = [digits_fid(train_x[torch.randperm(train_x.shape[0], generator=gen)[:n]], test_x, classifier)
                  for _ in range(floor_repeats)]
    floor = sum(floors) / len(floors)
    memorized, threshold = memorization_fraction(samples, train_x, test_x)
    hist = class_histogram(samples, classifier)
    return {"fd": fd, "floor": floor, "ratio": fd / floor, "memorized": memorized, "threshold": threshold,
            "histogram": hist.tolist(), "classes_covered": int((hist > 0).sum()),
            "confidence": mean_confidence(samples, classifier), "classifier_accuracy": accuracy, "n": n}


def to_levels(x: torch.Tensor, levels: int = DIGITS_LEVELS) -> torch.Tensor:
    """Integer grey levels k ∈ {0, ..., levels-1} of data in [-1, 1] (x = -1 + 2k/(levels-1)), as a long tensor."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    return torch.round((x.clamp(-1, 1) + 1) / 2 * (levels - 1)).long()


def uniform_bits_per_dim(levels: int = DIGITS_LEVELS) -> float:
    """log2(levels): the bits/dim of a model that gives every grey level the same probability (chapter 07)."""
    _check_int("levels", levels, 2)
    return math.log2(levels)


def categorical_bits_per_dim(train: torch.Tensor, test: torch.Tensor, levels: int = DIGITS_LEVELS,
                             alpha: float = 1.0) -> float:
    """Bits/dim on ``test`` of independent per-pixel categoricals fitted on ``train`` (chapter 07).

    Each pixel i gets its own distribution over the ``levels`` grey levels, p_i(k) = (n_ik + α)/(N + α·levels)
    (Laplace smoothing with ``alpha``, so unseen levels keep a non-zero probability); the result is
    -mean over test pixels of log2 p_i(k). Images in [-1, 1], shape (N, ...).
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    ktr = to_levels(train, levels).flatten(1)
    kte = to_levels(test, levels).flatten(1)
    if ktr.shape[1] != kte.shape[1]:
        raise ValueError(f"train has {ktr.shape[1]} pixels per image but test has {kte.shape[1]}")
    counts = torch.zeros(ktr.shape[1], levels, dtype=torch.float64)
    counts.scatter_add_(1, ktr.T, torch.ones(ktr.T.shape, dtype=torch.float64))
    probs = (counts + alpha) / (ktr.shape[0] + alpha * levels)
    return float(-torch.log2(probs.gather(1, kte.T)).mean())


def loss_by_timestep_band(result: TrainResult, T: int, num_bands: int = 10, last: Optional[int] = None):
    """Mean training loss per band of timesteps (chapter 05): returns ``(edges, losses)``.

    The T timesteps are cut into ``num_bands`` equal bands (``edges`` has num_bands + 1 entries, band j is
    edges[j] <= t < edges[j+1]); ``losses[j]`` is the mean per-example loss over the examples of the last
    ``last`` training steps (default: all) whose t fell in band j (NaN if none).
    """
    _check_int("T", T)
    _check_int("num_bands", num_bands)
    t = result.t_history
    losses = result.example_losses
    if last is not None:
        _check_int("last", last)
        t, losses = t[-last:], losses[-last:]
    edges = torch.linspace(0, T, num_bands + 1).round().long()
    band = torch.bucketize(t.flatten(), edges[1:-1], right=True)
    sums = torch.zeros(num_bands, dtype=torch.float64).scatter_add_(0, band, losses.flatten().double())
    counts = torch.zeros(num_bands, dtype=torch.float64).scatter_add_(0, band, torch.ones_like(sums[band]))
    return edges, sums / counts
