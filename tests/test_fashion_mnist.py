"""Fashion-MNIST from IDX files (chapter 10): ddpm_lib.data.read_idx and load_fashion_mnist.

The format and every error are tested on small IDX files written here; one test reads the real files of Debian's
``dataset-fashion-mnist`` when they are installed (CI installs them).
"""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lib.data import FASHION_MNIST_DIR, load_fashion_mnist, read_idx


def write_idx(path: Path, array: np.ndarray, *, magic: bytes | None = None, truncate: int = 0, compress=None):
    """An IDX file of unsigned bytes: 0, 0, 0x08, ndim, big-endian sizes, data (optionally damaged)."""
    header = (magic if magic is not None else bytes([0, 0, 0x08, array.ndim]))
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - truncate] if truncate else raw
    compress = path.suffix == ".gz" if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(raw)
    return path


def fake_split(root: Path, split: str, n: int = 7, seed: int = 0, gz: bool = True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the grey scale
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
def test_load_fake_split_values_shapes_and_labels(tmp_path, gz):
    images, labels = fake_split(tmp_path, "test", gz=gz)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.long and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    # v / 255 * 2 - 1, independently computed in float64
    expected = torch.from_numpy(images.astype(np.float64) / 255.0 * 2.0 - 1.0).float()[:, None]
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-7)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0


def test_read_idx_round_trip_any_ndim(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.idx", a), 3), a)
    b = np.array([5, 0, 9], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b.gz", b), 1), b)


def test_wrong_magic_is_a_clear_error(tmp_path):
    a = np.zeros((2, 28, 28), np.uint8)
    path = write_idx(tmp_path / "x.gz", a, magic=bytes([0, 0, 0x0D, 3]))  # type 0x0D = float
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(path, 3)
    path = write_idx(tmp_path / "y.gz", a, magic=b"\x1f\x8b\x08\x03")  # e.g. a doubly compressed file
    with pytest.raises(ValueError, match="magic"):
        read_idx(path, 3)


def test_wrong_number_of_dimensions(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros((4, 2), np.uint8))
    with pytest.raises(ValueError, match="holds 2 dimensions, expected 1"):
        read_idx(path, 1)


def test_truncated_data_and_header(tmp_path):
    a = np.ones((3, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=r"announces shape \(3, 28, 28\).*holds 2347"):
        read_idx(write_idx(tmp_path / "short.idx", a, truncate=5), 3)
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(write_idx(tmp_path / "hdr.idx", a, truncate=3 * 28 * 28 + 6), 3)


def test_truncated_gzip_archive(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.ones((3, 28, 28), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot read the IDX file"):
        read_idx(path, 3)


def test_wrong_image_shape_and_mismatched_counts(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 32, 32), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="must be 28x28, got 32x32"):
        load_fashion_mnist("test", root=tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        load_fashion_mnist("test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        load_fashion_mnist("test", root=tmp_path)


def test_missing_files_name_the_package_and_the_colab_route(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("train", root=tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert 'load_torchvision("fashion_mnist", download=True)' in message.replace("'", '"')


def test_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist("validation")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_files_of_debian_package():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and y.shape == (10_000,)
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))  # the test split is balanced
    assert x.min() == -1.0 and x.max() == 1.0
    # half the pixels are background (grey level 0 -> -1), and the mean grey level is about 73 of 255
    grey = ((x + 1) / 2 * 255).round()
    assert abs((grey == 0).double().mean().item() - 0.5) < 0.01 and abs(grey.mean().item() - 73.1) < 0.5
