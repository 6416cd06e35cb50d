"""The number of CPU threads torch uses, changed for a block and restored afterwards.

Small tensors (2-D points, 8×8 digits) run faster on one thread than on several, which only add synchronisation,
and much faster on a shared, busy machine; one thread also makes float32 sums independent of the machine's thread
count. The library never changes the thread count for good: it uses :func:`num_threads` around the loops that
need it, and so do the tests and benchmarks.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ._checks import check_int

__all__ = ["num_threads"]


@contextlib.contextmanager
def num_threads(n: Optional[int]):
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count afterwards (None: unchanged)."""
    if n is None:
        yield
        return
    n = check_int("n", n)
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
