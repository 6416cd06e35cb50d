"""What the benchmarks share: the repository on ``sys.path``, where the tables go, a clock, and the table writer.

Each benchmark runs as a script (``python benchmarks/NAME.py``), so this module is imported as ``_common`` from the
script's own folder; importing it puts the repository root first on ``sys.path``, so that ``ddpm_lib`` is the working
tree's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Clock:
    """Wall-clock and process CPU seconds of a block: ``with Clock() as c: ...``, then ``c.wall`` and ``c.cpu``."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def timed(fn):
    """``(fn(), CPU seconds of this process that it took)``."""
    with Clock() as c:
        out = fn()
    return out, c.cpu


def publish(out_dir: Path | None, name: str, markdown: str, header, rows) -> None:
    """Print a table and, unless ``out_dir`` is None (``--quick``), write ``name.md`` and ``name.csv`` into it
    (:func:`ddpm_lib.evaluation.write_results`)."""
    from ddpm_lib.evaluation import write_results

    print(markdown)
    if out_dir is not None:
        write_results(out_dir, name, markdown, header, rows)
