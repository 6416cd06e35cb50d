"""How torch runs: the number of CPU threads, changed for a block and restored afterwards, and mixed precision
where the hardware has it.

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

__all__ = ["num_threads", "bf16_is_fast", "mixed_precision"]


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


def bf16_is_fast(device="cpu") -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively: a CUDA GPU that supports bfloat16, or a CPU
    with AVX512-BF16 or AMX tiles (recent Intel Xeons). Elsewhere bfloat16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def mixed_precision(device="cpu", enabled: Optional[bool] = None):
    """``torch.autocast`` in bfloat16 on ``device`` (convolutions and matrix products in bfloat16, the rest float32)
    when ``enabled``, which defaults to :func:`bf16_is_fast`; a no-op context otherwise (chapter 10 samples under it:
    about twice as fast on such CPUs, with outputs that differ from float32 in the third significant digit)."""
    device = torch.device(device)
    if enabled is None:
        enabled = bf16_is_fast(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
