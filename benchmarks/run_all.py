"""Run every benchmark of the book, write their tables to ``book/results/`` and print them.

One command for chapters 05-11:

- ``bench_training_sampling.py`` (chapters 05-07): sample quality of the trained models against the data floors,
  the likelihood in bits/dim -> ``book/results/ch05_07_quality.md``/``.csv``;
- ``bench_ddim_guidance.py`` (chapters 08-09): DDIM quality against the number of steps, spacings, inversion,
  and the guidance sweeps -> ``ch08_ddim_table``, ``ch08_ddim_spacings``, ``ch08_inversion``, ``ch09_guidance``;
- ``bench_overhead.py`` (chapter 08): ddpm_lib's sampling loops against diffusers' scheduler loops and against the
  bare network evaluations -> ``ch08_sampler_overhead``;
- ``bench_digits_recipe.py`` (chapter 05): what holds the digits UNet at twice its Fréchet floor, every candidate of
  the study -> ``ch05_digits_recipe``;
- ``bench_learned_variance.py`` (chapter 07): learned variances, bound and sample quality -> ``ch07_learned_variance``;
- ``bench_ddim_remedies.py`` (chapter 08): DDIM η = 0 on trained networks and its remedies -> ``ch08_ddim_remedies``;
- ``bench_fashion_mnist.py`` (chapter 10): the shipped Fashion-MNIST model against its floor -> ``ch10_*``;
- ``bench_continuous_time.py`` (chapter 11): ODE solvers, likelihood, Langevin, flow matching -> ``ch11_*``.

The Fashion-MNIST model itself is trained once by ``train_fashion_mnist.py`` (hours) and shipped; it is not rerun.

Each runs in its own process (so one failure does not stop the others, and each gets a fresh torch), one after the
other so that their timings do not disturb each other. The book includes the tables from ``book/results.md``.

Run: ``python benchmarks/run_all.py [--quick] [--only NAME ...]`` (``--quick``: every benchmark's smoke test, which
writes nothing). The full run takes several hours on one CPU core (the digits recipe study alone about three); the scripts cache their trained models in
``benchmarks/out/``, so a rerun measures only what is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, ROOT

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_training_sampling", "bench_ddim_guidance", "bench_overhead", "bench_digits_recipe",
              "bench_learned_variance", "bench_ddim_remedies", "bench_fashion_mnist", "bench_continuous_time")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run each benchmark's --quick smoke test")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = parser.parse_args(argv)
    names = args.only or BENCHMARKS
    failed = []
    start_all = time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT)
        print(f"=== {name}: exit {proc.returncode} after {time.perf_counter() - start:.0f} s ===\n", flush=True)
        if proc.returncode != 0:
            failed.append(name)
    if not args.quick:
        print("=" * 100)
        print(f"Tables in {RESULTS.relative_to(ROOT)} (included by book/results.md):\n")
        for path in sorted(RESULTS.glob("*.md")):
            print(f"--- {path.name} ---")
            print(path.read_text(encoding="utf-8"))
    print(f"all benchmarks: {time.perf_counter() - start_all:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all succeeded"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
