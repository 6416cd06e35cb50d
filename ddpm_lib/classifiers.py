"""Fixed image classifiers used as measuring instruments (chapters 05-10), and the measures taken with them.

A Fréchet distance, a class histogram or a guidance accuracy is only as meaningful as the classifier it is
measured with, so the classifier is part of the definition of the metric: it is trained deterministically (the
same seed gives the same weights) and never changes.

- :class:`DigitsClassifier` — a small MLP on the 8×8 digits, trained in a few seconds by
  :func:`train_digits_classifier`; :func:`get_digits_classifier` trains it once per process and hands out a fresh
  copy on every call.
- :class:`FashionClassifier` — a small CNN on 28×28 Fashion-MNIST (chapter 10); its committed weights are loaded by
  :func:`ddpm_lib.pretrained.load_fashion_classifier`.
- :func:`train_classifier` — the deterministic training loop both use.
- :func:`classifier_fid` (the Fréchet distance in the classifier's penultimate features), :func:`class_histogram`,
  :func:`mean_confidence` and :func:`classifier_accuracy` (chapter 09's guidance sweeps).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_int, check_positive, check_seed
from .metrics import frechet_distance
from .runtime import num_threads

__all__ = [
    "DigitsClassifier",
    "FashionClassifier",
    "train_classifier",
    "train_digits_classifier",
    "get_digits_classifier",
    "classifier_fid",
    "class_histogram",
    "mean_confidence",
    "classifier_accuracy",
]


class DigitsClassifier(nn.Module):
    """A small MLP classifier of 8×8 digits in [-1, 1] whose penultimate layer gives the features.

    64 pixels -> 256 -> 256 -> ``feature_dim`` (SiLU after each) -> 10 logits.  :meth:`features`
    returns the ``feature_dim``-dimensional penultimate activations used by :func:`classifier_fid`;
    :meth:`forward` returns the logits.  Inputs of shape (N, 1, 8, 8), (N, 8, 8) or (N, 64).
    """

    image_shape = (1, 8, 8)

    def __init__(self, hidden: int = 256, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        self.hidden = check_int("hidden", hidden)
        self.feature_dim = check_int("feature_dim", feature_dim)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape (N, feature_dim)."""
        _check_images(x, self.image_shape, "x")
        h = F.silu(self.fc1(x.reshape(x.shape[0], 64).to(self.fc1.weight)))
        h = F.silu(self.fc2(h))
        return F.silu(self.fc3(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, 10)."""
        return self.head(self.features(x))


class FashionClassifier(nn.Module):
    """A small CNN classifier of 28×28 Fashion-MNIST images in [-1, 1] (chapter 10).

    Three stages of two 3×3 convolutions (``width``, 2·``width``, 4·``width`` channels, GroupNorm and SiLU), each
    stage but the last followed by a 2×2 max-pool (28 → 14 → 7), then a global average pool to the
    ``4 · width``-dimensional features of :meth:`features` and a linear layer to the 10 logits.
    """

    image_shape = (1, 28, 28)

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.width = check_int("width", width, 4)
        self.num_classes = check_int("num_classes", num_classes, 2)
        chans = [1, width, 2 * width, 4 * width]
        layers = []
        for i in range(3):
            for j in range(2):
                c_in = chans[i] if j == 0 else chans[i + 1]
                layers += [nn.Conv2d(c_in, chans[i + 1], 3, padding=1), nn.GroupNorm(8, chans[i + 1]), nn.SiLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.feature_dim = chans[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features of the last stage, shape (N, 4 · width)."""
        _check_images(x, self.image_shape, "x")
        h = self.body(x.reshape(x.shape[0], *self.image_shape).to(self.head.weight))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, 10)."""
        return self.head(self.features(x))


def _check_images(images, image_shape, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {', '.join(map(str, image_shape))}), "
                        f"got {type(images).__name__}")
    if images.ndim < 2 or math.prod(images.shape[1:]) != math.prod(image_shape):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, image_shape))}) "
                         f"(or (N, {math.prod(image_shape)})), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")


def _check_labels(labels, n: int, num_classes: int, name: str = "labels") -> None:
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer torch.Tensor of shape ({n},)")
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one per image, got {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                     steps: int = 600, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-2,
                     noise_std: float = 0.2, threads: Optional[int] = 1, progress: bool = False) -> nn.Module:
    """Train an image classifier deterministically: the measuring instrument of chapters 05-10.

    AdamW with a cosine learning-rate decay over ``steps`` mini-batches of ``batch_size`` taken in the order of a
    seeded permutation per epoch (the remainder of each epoch is dropped), with Gaussian input noise of std
    ``noise_std`` as augmentation (it makes the features tolerant of the small residual noise of diffusion samples).
    Permutations and noise come from ``seed``; the model's initial weights are the caller's. The loop runs with
    ``threads`` torch threads (restored afterwards; 1 makes the float32 sums independent of the machine's thread
    count). Returns ``model`` on the CPU in eval mode with ``requires_grad`` off for its parameters (gradients with
    respect to the input still work).
    """
    _check_images(images, model.image_shape)
    _check_labels(labels, images.shape[0], model.num_classes)
    steps = check_int("steps", steps)
    batch_size = check_int("batch_size", batch_size)
    seed = check_seed(seed)
    check_positive("noise_std", noise_std, allow_zero=True)
    x = images.detach().to("cpu", torch.float32).reshape(images.shape[0], *model.image_shape)
    y = labels.detach().to("cpu", torch.long)
    n = x.shape[0]
    batch_size = min(batch_size, n)
    batches_per_epoch = n // batch_size
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="classifier", leave=False)
    model.train()
    perm = None
    with num_threads(threads):
        for step in iterator:
            k = step % batches_per_epoch
            if k == 0:
                perm = torch.randperm(n, generator=gen)
            idx = perm[k * batch_size: (k + 1) * batch_size]
            xb = x[idx]
            if noise_std > 0:
                xb = xb + noise_std * torch.randn(xb.shape, generator=gen)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    model.requires_grad_(False)
    return model


def train_digits_classifier(images: torch.Tensor, labels: torch.Tensor, seed: int = 0, steps: int = 600,
                            **kwargs) -> DigitsClassifier:
    """A :class:`DigitsClassifier` initialised from ``seed`` (the global RNG is forked and restored) and trained by
    :func:`train_classifier`. On the train split of the 8×8 digits it takes a few seconds on one CPU core and
    reaches about 97-98 % test accuracy (600 steps)."""
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    return train_classifier(model, images, labels, seed=seed, steps=steps, **kwargs)


@functools.lru_cache(maxsize=None)
def _digits_classifier_weights(seed: int) -> tuple:
    from .data import load_digits

    train_x, train_y = load_digits(split="train")
    test_x, test_y = load_digits(split="test")
    classifier = train_digits_classifier(train_x, train_y, seed=seed)
    accuracy = classifier_accuracy(test_x, test_y, classifier)
    # the cache keeps read-only copies of the weights, never a module a caller could change
    return {k: v.clone() for k, v in classifier.state_dict().items()}, accuracy


def get_digits_classifier(seed: int = 0) -> tuple:
    """The book's fixed digits classifier (chapters 05-09) and its test accuracy: ``(classifier, accuracy)``.

    Trained by :func:`train_digits_classifier` on ``load_digits("train")`` the first time it is asked for in a
    process (a few seconds); later calls build a new module from the same weights, so a caller that changes its
    copy changes no one else's.
    """
    weights, accuracy = _digits_classifier_weights(check_seed(seed))
    classifier = DigitsClassifier()
    classifier.load_state_dict(weights)
    classifier.eval().requires_grad_(False)
    return classifier, accuracy


def _outputs(samples, classifier: nn.Module, what: str, batch_size: int = 1024) -> torch.Tensor:
    if not hasattr(classifier, "features") or not hasattr(classifier, "image_shape"):
        raise TypeError(f"classifier must be one of ddpm_lib.classifiers' classifiers, got {type(classifier).__name__}")
    _check_images(samples, classifier.image_shape, "samples")
    outs = []
    with torch.no_grad():
        for start in range(0, samples.shape[0], batch_size):
            chunk = samples[start: start + batch_size]
            outs.append(classifier.features(chunk) if what == "features" else classifier(chunk))
    return torch.cat(outs).to(torch.float64)


def classifier_fid(samples: torch.Tensor, reference: torch.Tensor, classifier: nn.Module) -> float:
    """Fréchet distance between two image sets in the feature space of ``classifier`` (chapters 05-10).

    Use held-out images as ``reference`` and print the floor (training images against the same reference) beside
    it; never use the training set as the reference (copies of it would score perfectly).
    """
    return frechet_distance(_outputs(samples, classifier, "features"), _outputs(reference, classifier, "features"))


def class_histogram(samples: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
    """Counts of the classifier's predicted class, a long tensor of shape (num_classes,) (chapters 05, 09, 10).

    A sampler that covers every class has no zero entry.
    """
    pred = _outputs(samples, classifier, "logits").argmax(dim=1)
    return torch.bincount(pred.cpu(), minlength=classifier.num_classes)


def mean_confidence(samples: torch.Tensor, classifier: nn.Module) -> float:
    """Mean over samples of the classifier's top softmax probability (chapters 05, 09, 10)."""
    probs = _outputs(samples, classifier, "logits").softmax(dim=1)
    return float(probs.max(dim=1).values.mean())


def classifier_accuracy(samples: torch.Tensor, intended_labels: torch.Tensor, classifier: nn.Module) -> float:
    """Fraction of samples the classifier assigns to their intended class (chapter 09, guidance)."""
    logits = _outputs(samples, classifier, "logits")
    _check_labels(intended_labels, samples.shape[0], classifier.num_classes, "intended_labels")
    return float((logits.argmax(dim=1).cpu() == intended_labels.cpu()).to(torch.float64).mean())
