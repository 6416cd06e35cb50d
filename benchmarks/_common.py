"""What the benchmarks share: the repository on ``sys.path``, where the tables go, a clock, mean ± std, a JSON cache
and the table writer.

Each benchmark runs as a script (``python benchmarks/NAME.py``), so this module is imported as ``_common`` from the
script's own folder; importing it puts the repository root first on ``sys.path``, so that ``ddpm_lib`` is the working
tree's.
"""

from __future__ import annotations

import json
import math
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


def mean_std(values) -> tuple:
    """Mean and sample standard deviation (0 for a single value) of a sequence of numbers."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def pm(values, digits: int) -> str:
    """``"mean ± std"`` of ``values`` with ``digits`` decimals (the mean alone for a single value)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def cached(path: Path, compute):
    """The JSON stored at ``path``, or ``compute()``'s result, stored there first (a rerun measures only what is
    missing)."""
    if path.exists():
        return json.loads(path.read_text())
    res = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res))
    return res
