"""The image data sets of the book, all in [-1, 1] (chapters 05-10).

- :func:`load_digits` — scikit-learn's bundled 8×8 digits with a fixed split (no download).
- :func:`load_fashion_mnist` — Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist``
  (:func:`read_idx`; no download).
- :func:`load_torchvision` — MNIST / Fashion-MNIST / CIFAR-10 when torchvision is installed (Colab only), through
  :func:`image_to_model_range`.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import check_choice
from ..postprocess import from_levels

__all__ = [
    "load_digits",
    "DIGITS_LEVELS",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "read_idx",
    "load_fashion_mnist",
    "image_to_model_range",
    "load_torchvision",
]


# ---------------------------------------------------------------------------------------------
# digits

DIGITS_LEVELS = 17
"""The 8×8 digits take the integer values 0..16: 17 grey levels (use ``num_bins=17`` in the decoder)."""

_DIGITS_SPLITS = {"train", "test", "all"}


def load_digits(split: str = "train"):
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, no download), scaled to [-1, 1].

    Returns ``(images, labels)``: ``images`` float32 of shape (N, 1, 8, 8) and ``labels`` long (N,).
    Each pixel holds an integer v ∈ {0, ..., 16} (``DIGITS_LEVELS = 17`` grey levels) and is mapped to
    v / 16 · 2 - 1, so the data lie on the 17 points {-1, -7/8, ..., 7/8, 1}.  The split is fixed and
    deterministic: 20 % test, stratified by label, ``train_test_split(random_state=0)``; ``split`` is
    ``"train"`` (1437 images), ``"test"`` (360) or ``"all"`` (1797, in scikit-learn's order).
    """
    check_choice("split", split, _DIGITS_SPLITS)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - scikit-learn is in requirements.txt
        raise ImportError(
            "load_digits needs scikit-learn (its 8x8 digits ship with the package, nothing is downloaded); "
            "install it with `pip install scikit-learn` or `pip install ddpm_lib[data]`"
        ) from err
    bunch = _sk_load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), integers 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    if split == "all":
        idx = np.arange(len(labels))
    else:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
        )
        idx = np.sort(train_idx if split == "train" else test_idx)
    images = from_levels(torch.from_numpy(values[idx].astype(np.int64)), DIGITS_LEVELS)[:, None]
    return images, torch.from_numpy(labels[idx]).long()


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from Debian's dataset-fashion-mnist (chapter 10)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's package ``dataset-fashion-mnist`` puts the four IDX files (``apt-get install dataset-fashion-mnist``)."""

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
"""The ten Fashion-MNIST classes, in label order (Xiao et al. 2017)."""

_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes


def read_idx(path, ndim: int) -> np.ndarray:
    """An IDX file (the format of MNIST and Fashion-MNIST; gzip-compressed when the name ends in ``.gz``) as a
    uint8 array with ``ndim`` dimensions.

    The header is two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, then each size as a
    big-endian uint32; the data follow. A file whose header or length does not match raises ``ValueError``
    naming the file and what is wrong.
    """
    import gzip
    from pathlib import Path

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these for a truncated or corrupt archive
        raise ValueError(f"{path}: cannot read the IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'}, "
                         f"expected 000008{ndim:02x})")
    if raw[3] != ndim:
        raise ValueError(f"{path}: holds {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, the header alone needs {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise ValueError(f"{path}: the header announces shape {shape}, i.e. {size} bytes of data, "
                         f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _fashion_file(root, name: str):
    from pathlib import Path

    for candidate in (Path(root) / (name + ".gz"), Path(root) / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}(.gz) not found in {root}. On Debian or Ubuntu install the data set with "
        f"`sudo apt-get install dataset-fashion-mnist` (the book's `make book` and `make test` do this). "
        f"In Colab, use `ddpm_lib.data.load_torchvision('fashion_mnist', download=True)` instead, "
        f"or pass root= the folder that holds the four IDX files."
    )


def load_fashion_mnist(split: str = "train", root=None):
    """Fashion-MNIST (Xiao et al. 2017) from its IDX files, scaled to [-1, 1] (chapter 10; no download).

    Returns ``(images, labels)``: ``images`` float32 of shape (N, 1, 28, 28) with v ↦ v / 255 · 2 - 1 (the map of
    :func:`image_to_model_range`), ``labels`` long (N,) in 0..9 (names in :data:`FASHION_MNIST_CLASSES`).
    ``split`` is ``"train"`` (60 000 images) or ``"test"`` (10 000). ``root`` defaults to
    :data:`FASHION_MNIST_DIR`, where Debian's ``dataset-fashion-mnist`` installs them; plain or ``.gz`` files are
    read. Missing files raise ``FileNotFoundError`` naming the package (and, for Colab, the torchvision route);
    malformed files raise ``ValueError`` (see :func:`read_idx`).
    """
    check_choice("split", split, set(_FASHION_FILES))
    root = FASHION_MNIST_DIR if root is None else root
    image_name, label_name = _FASHION_FILES[split]
    images = read_idx(_fashion_file(root, image_name), 3)
    labels = read_idx(_fashion_file(root, label_name), 1)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_name}: images must be 28x28, got {images.shape[1]}x{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split} split: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_name}: labels must lie in 0..9, got a {int(labels.max())}")
    return from_levels(torch.from_numpy(images.astype(np.int64)), 256)[:, None], torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# torchvision data sets (Colab)

_TORCHVISION_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def image_to_model_range(image) -> torch.Tensor:
    """An 8-bit image (PIL image, numpy array or uint8 tensor; H×W or H×W×C) as a float32 C×H×W
    tensor in [-1, 1]: v ↦ v / 255 · 2 - 1 (0 → -1, 255 → 1).

    This is the transform :func:`load_torchvision` applies (what torchvision's ``ToTensor`` followed by
    ``Normalize(0.5, 0.5)`` does), written without torchvision so it can be tested anywhere.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"image must hold 8-bit values (dtype uint8), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got shape {arr.shape}")
    return from_levels(torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.int64)), 256)


def load_torchvision(name: str = "mnist", root: str = "./data", train: bool = True, download: bool = False):
    """MNIST or Fashion-MNIST (1×28×28) or CIFAR-10 (3×32×32) as a torch ``Dataset`` of (image in [-1, 1], label).

    Uses torchvision, which the book only installs in Colab; ``download=True`` fetches the files into
    ``root``.  Images go through :func:`image_to_model_range`.
    """
    check_choice("name", name, set(_TORCHVISION_SETS))
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(
            "torchvision is not installed; it is used only in Colab for MNIST/CIFAR-10 "
            "(`pip install torchvision` there). On a CPU use load_digits() instead."
        ) from err
    cls = getattr(torchvision.datasets, _TORCHVISION_SETS[name])
    return cls(root=root, train=train, download=download, transform=image_to_model_range)
