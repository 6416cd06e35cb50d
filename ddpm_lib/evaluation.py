"""Sample-quality evaluation on the book's data sets, always beside a data-vs-data floor, and the tables the
benchmarks write (chapters 05-10).

- :func:`toy_quality` — sliced Wasserstein-2 of 2-D samples against fresh draws of the data, averaged over chunks,
  beside the floor of the same metric between two fresh draws of the data.
- :func:`off_mode_fraction` — the fraction of 2-D samples far from every mode of a Gaussian mixture (chapter 08's
  runaway samples).
- :func:`digits_quality` — Fréchet distance to the test split in a fixed classifier's features beside the
  train-vs-test floor (:func:`digits_floor`), copies of training images, classes covered, confidence.
- :func:`within_class_distance` — the diversity of labelled samples (chapter 09's guidance sweeps).
- :func:`markdown_table`, :func:`write_results` — the tables of ``book/results/``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import torch

from ._checks import check_int, check_positive, check_seed
from .classifiers import class_histogram, classifier_fid, get_digits_classifier, mean_confidence
from .data import MIXTURE, GaussianMixture, load_digits, toy_sampler
from .metrics import FloorEstimate, data_floor, memorization_fraction, sliced_wasserstein

__all__ = [
    "toy_quality",
    "off_mode_fraction",
    "digits_floor",
    "digits_quality",
    "within_class_distance",
    "markdown_table",
    "write_results",
]


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
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError("samples must be a tensor of shape (N, 2)")
    n = samples.shape[0]
    chunk = n if chunk is None else check_int("chunk", chunk, 2)
    if chunk > n:
        raise ValueError(f"chunk must be <= the number of samples {n}, got {chunk}")
    draw = toy_sampler(dataset)
    gen = torch.Generator().manual_seed(check_seed(seed))
    metric = lambda a, b: sliced_wasserstein(a, b, n_projections=n_projections)  # noqa: E731
    values = [metric(samples[i * chunk:(i + 1) * chunk], draw(chunk, gen)) for i in range(n // chunk)]
    floor_gen = torch.Generator().manual_seed(seed + 1)
    repeats = max(5, len(values)) if floor_repeats is None else check_int("floor_repeats", floor_repeats)
    floor = data_floor(lambda k: draw(k, floor_gen), chunk, metric, repeats=repeats)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"sw2": mean, "sw2_std": std, "floor": floor.mean, "floor_std": floor.std, "ratio": mean / floor.mean,
            "chunk": chunk, "chunks": len(values)}


def digits_quality(samples: torch.Tensor, *, seed: int = 0, floor_repeats: int = 5) -> dict:
    """Sample quality of 8×8 digits in [-1, 1] against the held-out test split (chapters 05, 06, 08, 09).

    - ``fd``: :func:`~ddpm_lib.classifiers.classifier_fid` between the samples and the 360 test images, in the
      features of the fixed digits classifier;
    - ``floor``: :func:`digits_floor` with as many training images as samples (``floor_repeats`` draws, ``seed``);
      ``ratio = fd / floor``;
    - ``memorized``: :func:`ddpm_lib.metrics.memorization_fraction` (fraction of samples that copy a training
      image) and its ``threshold``;
    - ``histogram`` (list of 10 counts), ``classes_covered``, ``confidence`` (mean top probability) from the
      fixed classifier, and that classifier's ``classifier_accuracy`` on the test split.
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim < 2 or samples[0].numel() != 64:
        raise ValueError("samples must be a tensor of 8x8 digits, shape (N, 1, 8, 8) or (N, 64)")
    samples = samples.reshape(-1, 1, 8, 8)
    classifier, accuracy = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    n = samples.shape[0]
    fd = classifier_fid(samples, test_x, classifier)
    floor = digits_floor(n, floor_repeats, seed).mean
    memorized, threshold = memorization_fraction(samples, train_x, test_x)
    hist = class_histogram(samples, classifier)
    return {"fd": fd, "floor": floor, "ratio": fd / floor, "memorized": memorized, "threshold": threshold,
            "histogram": hist.tolist(), "classes_covered": int((hist > 0).sum()),
            "confidence": mean_confidence(samples, classifier), "classifier_accuracy": accuracy, "n": n}


def off_mode_fraction(samples: torch.Tensor, mixture: GaussianMixture, radius: float = 4.0) -> float:
    """Fraction of samples farther than ``radius`` standard deviations (of the widest component) from every mean of
    ``mixture`` (chapter 08). For the 2-D data themselves, radius 4 leaves e^-8 ≈ 0.03 % off-mode."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[1] != mixture.dim:
        raise ValueError(f"samples must be a tensor of shape (N, {mixture.dim})")
    check_positive("radius", radius)
    d = torch.cdist(samples.double(), mixture.means).min(dim=1).values
    return float((d > radius * mixture.stds.max()).double().mean())


def digits_floor(n: int, repeats: int = 5, seed: int = 0) -> FloorEstimate:
    """The Fréchet floor of ``n`` digits: :func:`~ddpm_lib.classifiers.classifier_fid` of ``n`` training images
    (drawn without replacement) against the test split, over ``repeats`` draws (one draw, all 1437 images, when
    ``n`` >= 1437). Real digits score no better than this with ``n`` images; the spread is the metric's sampling
    noise (chapters 05, 08, 09)."""
    n = check_int("n", n)
    repeats = check_int("repeats", repeats)
    classifier, _ = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    if n >= train_x.shape[0]:
        values = [classifier_fid(train_x, test_x, classifier)]
    else:
        gen = torch.Generator().manual_seed(check_seed(seed))
        values = [classifier_fid(train_x[torch.randperm(train_x.shape[0], generator=gen)[:n]], test_x, classifier)
                  for _ in range(repeats)]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return FloorEstimate(mean, std, tuple(values))


def within_class_distance(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Diversity of labelled samples: the mean Euclidean distance between two different samples of the same class,
    averaged over the classes (chapter 09). Classes with fewer than two samples have no pair and are skipped;
    ``ValueError`` if no class has two."""
    if not isinstance(samples, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("samples and labels must be torch tensors")
    if labels.shape != (samples.shape[0],):
        raise ValueError(f"labels must have shape ({samples.shape[0]},), one per sample, got {tuple(labels.shape)}")
    flat = samples.reshape(samples.shape[0], -1).double()
    values = []
    for c in labels.unique():
        group = flat[labels == c]
        n = group.shape[0]
        if n >= 2:
            values.append(float(torch.cdist(group, group).sum() / (n * (n - 1))))
    if not values:
        raise ValueError("within_class_distance needs a class with at least two samples")
    return sum(values) / len(values)


def markdown_table(header, rows) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned (numbers)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out_dir, name: str, markdown: str, header, rows) -> None:
    """Write ``name.md`` (the ``markdown`` text, which the book includes) and ``name.csv`` (``header`` and ``rows``)
    into ``out_dir`` (``book/results/`` for the benchmarks)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown, encoding="utf-8")
    with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
