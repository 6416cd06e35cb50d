"""Sampler overhead: ddpm_lib's loops against diffusers' scheduler loops driving the same network (chapter 08).

For each network of the recipes in :mod:`ddpm_lib.recipes` (the 2-D mixture MLP, the digits MLP and, for the
DDIM loop only, the digits UNet; untrained: the cost of a forward pass does not depend on the weights) and each loop,
four timings with the same x_T, batch and number of steps:

- ``network only``: the bare model evaluations at the loop's timesteps, nothing else;
- ``ddpm_lib``: :func:`ddpm_lib.p_sample_loop` (T steps, σ² = β̃) or :func:`ddpm_lib.ddim_sample` (50 steps, η = 0,
  leading spacing), with their default ``check_finite=True`` (one ``isfinite`` test of the model output and one of
  the sample per step), and the same loop with ``check_finite=False``, whose difference is the cost of the test;
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
import platform
import statistics
import time

import torch

from _common import RESULTS, publish  # first: puts the repository on sys.path
from ddpm_lib import NoiseSchedule, ddim_sample, ddim_timesteps, linear_beta_schedule, p_sample_loop
from ddpm_lib.evaluation import markdown_table
from ddpm_lib.models import MLPDenoiser
from ddpm_lib.recipes import _digits_network

NAME = "ch08_sampler_overhead"
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
    ours = ddim_sample(model, sched, shape, steps=DDIM_STEPS, eta=0.0, x_T=x_T.clone(), progress=False)
    theirs = _theirs_ddim(model, ddim_sched, x_T.clone())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    ours = p_sample_loop(model, sched, shape, x_T=x_T.clone(), generator=torch.Generator().manual_seed(2),
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
                ours = lambda check: p_sample_loop(model, sched, shape, x_T=x_T,  # noqa: E731
                                                   generator=torch.Generator().manual_seed(0), progress=False,
                                                   check_finite=check)
                theirs = lambda: _theirs_ddpm(model, ddpm_sched, x_T, torch.Generator().manual_seed(0))  # noqa: E731
            else:
                ours = lambda check: ddim_sample(model, sched, shape, steps=DDIM_STEPS, eta=0.0, x_T=x_T,  # noqa: E731
                                                 progress=False, check_finite=check)
                theirs = lambda: _theirs_ddim(model, ddim_sched, x_T)  # noqa: E731
            fns = {"bare": lambda: _bare(model, x_T, timesteps), "ours": lambda: ours(True),
                   "unchecked": lambda: ours(False), "theirs": theirs}
            med = _median_times(fns, repeats)
            rows.append({
                "network": name,
                "loop": loop_name,
                "batch": shape[0],
                "steps": steps,
                "network_only_s": med["bare"],
                "ddpm_lib_s": med["ours"],
                "ddpm_lib_unchecked_s": med["unchecked"],
                "diffusers_s": med["theirs"],
                "ratio_ours_theirs": med["ours"] / med["theirs"],
                "ours_overhead_ms_per_step": 1e3 * (med["ours"] - med["bare"]) / steps,
                "theirs_overhead_ms_per_step": 1e3 * (med["theirs"] - med["bare"]) / steps,
                "check_finite_ms_per_step": 1e3 * (med["ours"] - med["unchecked"]) / steps,
            })
    return rows


COLUMNS = (("network", "network", "{}"), ("loop", "loop", "{}"), ("batch", "batch", "{}"), ("steps", "steps", "{}"),
           ("network_only_s", "network only (s)", "{:.3f}"), ("ddpm_lib_s", "ddpm_lib (s)", "{:.3f}"),
           ("ddpm_lib_unchecked_s", "ddpm_lib, check_finite=False (s)", "{:.3f}"),
           ("diffusers_s", "diffusers (s)", "{:.3f}"), ("ratio_ours_theirs", "ratio ours/theirs", "{:.2f}"),
           ("ours_overhead_ms_per_step", "overhead/step ours (ms)", "{:.3f}"),
           ("theirs_overhead_ms_per_step", "overhead/step diffusers (ms)", "{:.3f}"),
           ("check_finite_ms_per_step", "check_finite/step (ms)", "{:.3f}"))
"""(key in the rows of :func:`run`, column of the markdown table, format)"""


def to_markdown(rows, repeats: int) -> str:
    clock = ("CPU time of the process (one thread: other processes on the machine do not count)"
             if torch.get_num_threads() == 1 else "wall time")
    note = (f"Median of {repeats} runs on a CPU ({platform.machine()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)); times in seconds of {clock}. Same network, x_T, batch and steps "
            "in each row; the outputs of the two loops were checked equal before timing. Overhead per step = (loop - "
            "network only) / steps; the first row drives a network that costs nothing. check_finite/step: what the "
            "loop's default isfinite tests of the model output and the sample cost per step (ddpm_lib minus "
            "ddpm_lib with check_finite=False).")
    table = [[fmt.format(r[key]) for key, _, fmt in COLUMNS] for r in rows]
    return note + "\n\n" + markdown_table([title for _, title, _ in COLUMNS], table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="DDIM loop only, no files written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.repeats, args.quick)
    publish(None if args.quick else RESULTS, NAME, to_markdown(rows, args.repeats), list(rows[0]),
            [[f"{v:.6g}" if isinstance(v, float) else v for v in r.values()] for r in rows])
    worst = max(r["ratio_ours_theirs"] for r in rows)
    print(f"worst ratio ddpm_lib/diffusers: {worst:.2f} ({'OK' if worst <= 1.0 else 'ABOVE 1.0'})")
    return rows


if __name__ == "__main__":
    main()
