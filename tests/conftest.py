"""Shared fixtures for the library tests (shared plain helpers are in tests/helpers.py)."""

from types import SimpleNamespace

import pytest
import torch

from ddpm_lib.runtime import num_threads

N_PROJECTIONS = 64  # plenty in 2-D: the sample-to-sample noise dominates the choice of directions


def _sliced_wasserstein(x, y):
    """SW2 between two point clouds: the library's metric (chapters 05, 06, 08)."""
    from ddpm_lib.metrics import sliced_wasserstein

    return sliced_wasserstein(x, y, n_projections=N_PROJECTIONS)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread (restored afterwards): the oracle loops work on small tensors, where
    threads only add overhead, and much of it on a shared, busy machine."""
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """:func:`one_thread` for a whole module, for modules whose module-scoped fixtures train small networks."""
    with num_threads(1):
        yield


@pytest.fixture(scope="session")
def digits():
    """The 8×8 digits as ``(train_x, train_y, test_x, test_y)`` (scikit-learn's, fixed split, in [-1, 1])."""
    from ddpm_lib.data import load_digits

    return load_digits("train") + load_digits("test")


@pytest.fixture(scope="session")
def mixture_reference():
    """The 8-Gaussians mixture with 10 fresh reference draws of N = 2000 points and the data-vs-data floor.

    The floor is the mean SW2 over 20 independent pairs of draws; a sampler's distance is the mean SW2 of its
    samples to the 10 references. Measured once (60 fresh draws standing in for a perfect sampler): their
    ratio to this floor had median 1.01, 97th percentile 1.32 and maximum 1.33; a mixture 10% too wide has 1.79.
    """
    from ddpm_lib.data import make_gaussian_mixture

    n = 2000
    mix = make_gaussian_mixture("8gaussians")
    g = torch.Generator().manual_seed(0)
    draws = [mix.sample(n, generator=g, dtype=torch.float64) for _ in range(50)]
    with num_threads(1):
        floor = sum(_sliced_wasserstein(draws[2 * i], draws[2 * i + 1]) for i in range(20)) / 20
    refs = draws[40:]

    def ratio(x):
        return sum(_sliced_wasserstein(x, r) for r in refs) / len(refs) / floor

    return SimpleNamespace(mixture=mix, n=n, floor=floor, refs=refs, ratio=ratio)
