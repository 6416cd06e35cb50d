"""Sampler overhead: ddpm_lib's loops against diffusers' scheduler loops driving the same network (chapter 08).

For each network of the recipes in :mod:`ddpm_lib.experiments` (the 2-D mixture MLP, the digits MLP and, for the
DDIM loop only, the digits UNet; untrained: the cost of a forward pass does not depend on the weights) and each loop,
three timings with the same x_T, batch and number of steps:

- ``network only``: the bare model evaluations at the loop's timesteps, nothing else;
- ``ddpm_lib``: :func:`ddpm_lib.p_sample_loop` (T steps, σ² = β̃) or :func:`ddpm_lib.ddim_sample` (50 steps, η = 0,
  leading spacing);
- ``diffusers``: the usual ``for t in scheduler.timesteps: x = scheduler.step(model(x, t), t, x).prev_sample`` loop
  with ``DDPMScheduler`` / ``DDIMScheduler`` configured identically (linear β from 1e-4 to 0.02, clipping of x̂_0).

A first row drives a network that returns zeros, which isolates the loops' own cost per step.
Before timing, the two loops are checked to compute the same thing (on the mixture MLP): same x_T and generator →
outputs agree to float32 round-off. Each timing is the median of ``--repeats`` runs, ours and theirs interleaved so that a change
in machine load hits both. The ratio ours/theirs must stay ≤ 1.0; the overhead per step is (loop - network) / steps.

Writes ``book/results/ch08_sampler_overhead.md`` and ``.csv`` and prints the table.
Run: ``python benchmarks/bench_overhead.py [--repeats 5] [--threads 1] [--quick]``. One thread by default: these
networks are small, and on a shared machine several spinning threads per process cost more than they bring.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib import NoiseSchedule, ddim_sample, ddim_timesteps, linear_beta_schedule, p_sample_loop  # noqa: E402
from ddpm_lib.experiments import _digits_network  # noqa: E402
from ddpm_lib.models import MLPDenoiser  # noqa: E402

RESULTS = ROOT / "book" / "results"
T = 1000
DDIM_STEPS = 50


def _networks(quick: bool):
    """(name, model, shape, loops) for the networks of the recipes (untrained, eval mode): the architectures of
    ``train_mixture_model`` and ``train_digits_model`` (``arch="mlp"`` and ``"unet"``, default widths)."""
    torch.manual_seed(0)
    mlp = MLPDenoiser(2, hidden_dim=128, num_layers=3).eval()
    digits_mlp = _digits_network("mlp", 512, None).eval()
    unet = _digits_network("unet", 32, None).eval()
    both = ("ddpm", "ddim")
    return [
        ("no network (ε̂ = 0)", ZeroNet(), (1000, 2), ("ddim",) if quick else both),
        ("2-D mixture, MLP", mlp, (1000, 2), ("ddim",) if quick else both),
        ("digits 8×8, MLP", digits_mlp, (256, 1, 8, 8), ("ddim",) if quick else both),
        ("digits 8×8, UNet", unet, (64, 1, 8, 8), ("ddim",)),
    ]


def _diffusers_schedulers():
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=True,
                  prediction_type="epsilon")
    ddpm = DDPMScheduler(variance_type="fixed_small", **common)
    ddim = DDIMScheduler(set_alpha_to_one=True, timestep_spacing="leading", **common)
    ddpm.set_timesteps(T)
    ddim.set_timesteps(DDIM_STEPS)
    return ddpm, ddim


@torch.no_grad()
def _bare(model, x, timesteps):
    for t in timesteps:
        model(x, torch.full((x.shape[0],), int(t), dtype=torch.long))
    return x


@torch.no_grad()
def _theirs_ddpm(model, scheduler, x, generator):
    for t in scheduler.timesteps:
        out = model(x, t.expand(x.shape[0]))
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


@torch.no_grad()
def _theirs_ddim(model, scheduler, x):
    for t in scheduler.timesteps:
        out = model(x, t.expand(x.shape[0]))
        x = scheduler.step(out, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    return x


def _clock():
    """CPU time of this process with one thread (insensitive to other processes on a shared machine),
    wall time otherwise."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def _median_times(fns: dict, repeats: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return {k: statistics.median(v) for k, v in times.items()}


class ZeroNet(torch.nn.Module):
    """ε̂ = 0 at (almost) no cost: a loop driving it measures the sampler's own overhead."""

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def check_parity(model, shape, ddpm_sched, ddim_sched, sched) -> None:
    """Our loops and diffusers' compute the same samples from the same x_T and generator."""
    gen = torch.Generator().manual_seed(1)
    x_T = torch.randn(shape, generator=gen)
    ours = ddim_sample(model, sched, shape, steps=DDIM_STEPS, eta=0.0, noise=x_T.clone(), progress=False)
    theirs = _theirs_ddim(model, ddim_sched, x_T.clone())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    ours = p_sample_loop(model, sched, shape, noise=x_T.clone(), generator=torch.Generator().manual_seed(2),
                         progress=False)
    theirs = _theirs_ddpm(model, ddpm_sched, x_T.clone(), torch.Generator().manual_seed(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)


def run(repeats: int = 5, quick: bool = False):
    sched = NoiseSchedule(linear_beta_schedule(T))
    ddpm_sched, ddim_sched = _diffusers_schedulers()
    assert ddim_sched.timesteps.tolist() == ddim_timesteps(T, DDIM_STEPS, "leading").tolist()
    rows = []
    nets = _networks(quick)
    check_parity(nets[1][1], (8, 2), ddpm_sched, ddim_sched, sched)
    for name, model, shape, kinds in nets:
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        loops = [("DDPM (p_sample_loop)", T, ddpm_sched.timesteps.tolist(), "ddpm"),
                 ("DDIM η=0 (ddim_sample)", DDIM_STEPS, ddim_sched.timesteps.tolist(), "ddim")]
        for loop_name, steps, timesteps, kind in [lp for lp in loops if lp[3] in kinds]:
            if kind == "ddpm":
                fns = {
                    "bare": lambda: _bare(model, x_T, timesteps),
                    "ours": lambda: p_sample_loop(model, sched, shape, noise=x_T, generator=torch.Generator().manual_seed(0),
                                                  progress=False),
                    "theirs": lambda: _theirs_ddpm(model, ddpm_sched, x_T, torch.Generator().manual_seed(0)),
                }
            else:
                fns = {
                    "bare": lambda: _bare(model, x_T, timesteps),
                    "ours": lambda: ddim_sample(model, sched, shape, steps=DDIM_STEPS, eta=0.0, noise=x_T, progress=False),
                    "theirs": lambda: _theirs_ddim(model, ddim_sched, x_T),
                }
            med = _median_times(fns, repeats)
            rows.append({
                "network": name,
                "loop": loop_name,
                "batch": shape[0],
                "steps": steps,
                "network_only_s": med["bare"],
                "ddpm_lib_s": med["ours"],
                "diffusers_s": med["theirs"],
                "ratio_ours_theirs": med["ours"] / med["theirs"],
                "ours_overhead_ms_per_step": 1e3 * (med["ours"] - med["bare"]) / steps,
                "theirs_overhead_ms_per_step": 1e3 * (med["theirs"] - med["bare"]) / steps,
            })
    return rows


def to_markdown(rows, repeats: int) -> str:
    lines = [
        f"Median of {repeats} runs on a CPU ({platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)); times in seconds of "
        f"{'CPU time of the process (one thread: other processes on the machine do not count)' if torch.get_num_threads() == 1 else 'wall time'}. "
        "Same network, x_T, batch and steps in each row; the outputs of the two loops were checked equal before timing. "
        "Overhead per step = (loop - network only) / steps; the first row drives a network that costs nothing.",
        "",
        "| network | loop | batch | steps | network only (s) | ddpm_lib (s) | diffusers (s) | ratio ours/theirs "
        "| overhead/step ours (ms) | overhead/step diffusers (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['loop']} | {r['batch']} | {r['steps']} | {r['network_only_s']:.3f} | "
            f"{r['ddpm_lib_s']:.3f} | {r['diffusers_s']:.3f} | {r['ratio_ours_theirs']:.2f} | "
            f"{r['ours_overhead_ms_per_step']:.3f} | {r['theirs_overhead_ms_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write(rows, repeats: int, out_dir: Path = RESULTS) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, repeats)
    (out_dir / "ch08_sampler_overhead.md").write_text(md, encoding="utf-8")
    with open(out_dir / "ch08_sampler_overhead.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return md


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="DDIM loop only, no files written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.repeats, args.quick)
    if args.quick:
        print(to_markdown(rows, args.repeats))
    else:
        print(write(rows, args.repeats))
    worst = max(r["ratio_ours_theirs"] for r in rows)
    print(f"worst ratio ddpm_lib/diffusers: {worst:.2f} ({'OK' if worst <= 1.0 else 'ABOVE 1.0'})")
    return rows


if __name__ == "__main__":
    main()
