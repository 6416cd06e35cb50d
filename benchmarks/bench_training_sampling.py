"""Training, sampling and likelihood: the quality bars of chapters 05-07, measured.

Every model is trained here, from scratch, by the shared recipes of :mod:`ddpm_lib.recipes` (the same calls
as the chapters, with the recipes' full budgets). Times are wall-clock seconds of the training loop and CPU
seconds of this process (``time.process_time``), on ``--threads`` torch threads (default 1).

Measured (issue 4):

- 2-D Gaussian mixture (``8gaussians``): sliced Wasserstein-2 of 10 000 samples (5 chunks of 2000, each against
  its own fresh draw of the data) beside the data-vs-data floor with 2000 points; for the MLP trained by
  ``train_mixture_model`` (EMA and raw weights), for the two other objectives under the same budget, and for the
  exact denoiser ``OracleDenoiser`` through the same sampler (T = 1000, σ_t² = β̃_t). Bar: SW2 within 1.2× the
  floor after at most 60 s of CPU training.
- 8×8 digits: classifier-feature Fréchet distance of 1437 samples to the 360 test digits beside the floor (the
  1437 training digits against the test split), fraction of samples copying a training digit, classes covered,
  mean classifier confidence. Bars: within 1.2× the floor after at most 3 minutes of CPU training, at most 5 %
  copies, all ten classes.
- Likelihood: the variational bound on the test split in bits/dim, with L_T, Σ L_{t-1} and L_0, for
  σ_t² = β_t and β̃_t, beside the uniform (log2 17 = 4.09) and per-pixel categorical baselines; and, as an
  ablation that chapter 07 quotes, the bound of the same UNet trained for the same number of steps on Ho et al.'s
  T = 1000 schedule (β_1 = 1e-4). Bar: below the per-pixel categorical baseline.

Writes ``book/results/ch05_07_quality.md`` (three tables) and ``book/results/ch05_07_quality.csv`` (one row per
measured figure), and prints the markdown.

Run: ``python benchmarks/bench_training_sampling.py [--quick] [--no-ablation] [--threads N]``
(``--quick``: tiny budgets, a smoke test that writes nothing).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

from _common import RESULTS, Clock, publish  # first: puts the repository on sys.path
from ddpm_lib import p_sample_loop, vlb_bits_per_dim
from ddpm_lib import recipes as R
from ddpm_lib.data import DIGITS_LEVELS, MIXTURE, load_digits, make_gaussian_mixture
from ddpm_lib.evaluation import digits_quality, markdown_table, toy_quality
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.likelihood import categorical_bits_per_dim, uniform_bits_per_dim
from ddpm_lib.postprocess import to_levels

NAME = "ch05_07_quality"
MIXTURE_BAR_S, DIGITS_BAR_S = 60.0, 180.0


def _fmt(v, digits=3):
    return f"{v:.{digits}f}"


def mixture_part(quick: bool, record):
    steps = 40 if quick else R.MIXTURE_STEPS
    chunk = 200 if quick else 1000
    n_main, n_side = (8 * chunk, 4 * chunk) if quick else (20 * chunk, 10 * chunk)
    rows = []
    models = {}
    for objective in ("pred_noise", "pred_x0", "pred_v"):
        with Clock() as c:
            models[objective] = R.train_mixture_model(seed=0, steps=steps, objective=objective, progress=False)
        record(f"mixture_train_wall_s_{objective}", models[objective].seconds)
        record(f"mixture_train_cpu_s_{objective}", c.cpu)
    main = models["pred_noise"]
    record("mixture_steps", steps)
    mixture = make_gaussian_mixture(MIXTURE)
    variants = [("MLP, EMA weights", main.model, "pred_noise"), ("MLP, raw weights", main.raw_model, "pred_noise"),
                ("MLP, pred_x0, EMA", models["pred_x0"].model, "pred_x0"),
                ("MLP, pred_v, EMA", models["pred_v"].model, "pred_v"),
                ("exact denoiser", OracleDenoiser(mixture, main.sched), "pred_noise")]
    keys = ["ema", "raw", "pred_x0", "pred_v", "oracle"]
    for key, (label, model, objective) in zip(keys, variants):
        n = n_main if key in ("ema", "oracle") else n_side
        with Clock() as c:
            x = p_sample_loop(model, main.sched, (n, 2), objective=objective, clip_denoised=False, progress=False,
                              generator=torch.Generator().manual_seed(1))
        q = toy_quality(x, MIXTURE, chunk=chunk, seed=2, floor_repeats=n_main // chunk)
        record(f"mixture_sw2_{key}", q["sw2"])
        record(f"mixture_ratio_{key}", q["ratio"])
        record(f"mixture_sample_cpu_s_{key}", c.cpu)
        train_s = models[objective].seconds if key != "oracle" else 0.0
        bar = "≤ 1.2" if key == "ema" else ""
        status = ("pass" if q["ratio"] <= 1.2 and train_s <= MIXTURE_BAR_S else "not reached") if key == "ema" else ""
        rows.append([label, f"{q['sw2']:.4f} ± {q['sw2_std']:.4f} ({q['chunks']})",
                     f"{q['floor']:.4f} ± {q['floor_std']:.4f}", _fmt(q["ratio"], 2), bar, status,
                     "—" if key == "oracle" else f"{train_s:.0f}", f"{c.cpu:.0f} ({n})"])
        print(label, rows[-1], flush=True)
    record("mixture_floor", q["floor"])
    header = ["2-D mixture (8 Gaussians), T = 1000", "SW2 (mean ± std over chunks, number of chunks)", "floor",
              "ratio", "bar", "status", "training s", "sampling CPU s (points)"]
    note = (f"MLP of `train_mixture_model` ({steps} steps of batch 256, T = 1000, σ_t² = β̃_t); SW2 in chunks of "
            f"{chunk} samples, each against its own fresh draw of the data (the same draws for every row); floor: two "
            f"fresh draws of {chunk} points, as many pairs as chunks. SW2 of separated clusters is heavy-tailed (a "
            f"perfect sampler's ratio scatters by ±20 % with 10 chunks), hence 20 chunks for the main rows and the "
            f"exact denoiser as the reference a perfect network would reach. Training s: wall-clock seconds of the "
            f"loop on this machine. Bar: ratio ≤ 1.2 after ≤ {MIXTURE_BAR_S:.0f} s of training.")
    return note + "\n\n" + markdown_table(header, rows), main.sched


def digits_part(quick: bool, ablation: bool, record):
    steps = 20 if quick else R.DIGITS_STEPS
    n = 100 if quick else 1437
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    if quick:
        test_x = test_x[:50]
    with Clock() as c:
        dig = R.train_digits_model(seed=0, steps=steps, progress=False)
    record("digits_train_wall_s", dig.seconds)
    record("digits_train_cpu_s", c.cpu)
    record("digits_steps", steps)
    with Clock() as cs:
        x = dig.sample(n, seed=1, progress=False)
    q = digits_quality(x, seed=2)
    for k in ("fd", "floor", "ratio", "memorized", "classes_covered", "confidence", "classifier_accuracy"):
        record(f"digits_{k}", q[k])
    record("digits_sample_cpu_s", cs.cpu)
    ok = q["ratio"] <= 1.2 and dig.seconds <= DIGITS_BAR_S
    rows = [["Fréchet distance to the test split", _fmt(q["fd"], 2), _fmt(q["floor"], 2), _fmt(q["ratio"], 2),
             "≤ 1.2", "pass" if ok else "not reached"],
            ["samples copying a training digit", f"{100 * q['memorized']:.1f} %", "", "", "≤ 5 %",
             "pass" if q["memorized"] <= 0.05 else "not reached"],
            ["classes covered", f"{q['classes_covered']} / 10", "", "", "10",
             "pass" if q["classes_covered"] == 10 else "not reached"],
            ["mean classifier confidence", _fmt(q["confidence"], 3), "", "", "", ""],
            ["training time (s)", f"{dig.seconds:.0f}", "", "", f"≤ {DIGITS_BAR_S:.0f}",
             "pass" if dig.seconds <= DIGITS_BAR_S else "over"],
            [f"sampling CPU s ({n} samples, {dig.sched.T} steps)", f"{cs.cpu:.0f}", "", "", "", ""]]
    # where the distance comes from: the share of pixels at the brightest grey level (16), samples vs training set
    top_samples = (to_levels(x, DIGITS_LEVELS) == DIGITS_LEVELS - 1).double().mean().item()
    top_train = (to_levels(train_x, DIGITS_LEVELS) == DIGITS_LEVELS - 1).double().mean().item()
    record("digits_top_level_samples", top_samples)
    record("digits_top_level_train", top_train)
    rows.append(["pixels at the brightest level (16)", f"{100 * top_samples:.1f} %", f"{100 * top_train:.1f} % (train)",
                 "", "", ""])
    header = ["8×8 digits", "value", "floor", "ratio", "bar", "status"]
    note = (f"UNet of `train_digits_model` ({dig.config['width']} base channels, {steps} steps of batch "
            f"{dig.config['batch_size']}, T = {dig.sched.T}); {n} samples (σ_t² = β̃_t, x̂_0 clipped) against the 360 "
            f"test digits in the features of the fixed digits classifier (test accuracy "
            f"{q['classifier_accuracy']:.3f}); floor: the {n} training digits against the test split. Copies: nearest "
            f"training digit closer than {q['threshold']:.2f} (half the median test-to-train distance).")
    md_samples = note + "\n\n" + markdown_table(header, rows)

    uniform = uniform_bits_per_dim(DIGITS_LEVELS)
    categorical = categorical_bits_per_dim(train_x, test_x if not quick else load_digits("test")[0], DIGITS_LEVELS)
    record("uniform_bpd", uniform)
    record("categorical_bpd", categorical)
    lrows = []
    best = math.inf
    for variance, label in (("fixed_large", "β_t"), ("fixed_small", "β̃_t")):
        with Clock() as cv:
            r = vlb_bits_per_dim(dig.model, dig.sched, test_x, num_bins=DIGITS_LEVELS, variance=variance,
                                 clip_denoised=True, generator=torch.Generator().manual_seed(3), progress=False)
        total = r["total"].mean().item()
        best = min(best, total)
        for k in ("prior", "terms_sum", "decoder", "total"):
            record(f"vlb_{variance}_{k}", r[k].mean().item())
        record(f"vlb_{variance}_cpu_s", cv.cpu)
        lrows.append([f"DDPM bound, T = {dig.sched.T}, σ_t² = {label}", _fmt(r["prior"].mean().item(), 4),
                      _fmt(r["terms_sum"].mean().item()), _fmt(r["decoder"].mean().item()), _fmt(total),
                      "pass" if total < categorical else "not reached", f"{cv.cpu:.0f}"])
        print(lrows[-1], flush=True)
    record("vlb_best", best)
    if ablation:
        with Clock() as ca:
            dig1000 = R.train_digits_model(seed=0, steps=steps, T=1000, progress=False)
            r = vlb_bits_per_dim(dig1000.model, dig1000.sched, test_x, num_bins=DIGITS_LEVELS, variance="fixed_large",
                                 clip_denoised=True, generator=torch.Generator().manual_seed(3), progress=False)
        for k in ("prior", "terms_sum", "decoder", "total"):
            record(f"vlb_T1000_{k}", r[k].mean().item())
        lrows.append(["same UNet and steps, T = 1000 (β_1 = 1e-4), σ_t² = β_t", _fmt(r["prior"].mean().item(), 4),
                      _fmt(r["terms_sum"].mean().item()), _fmt(r["decoder"].mean().item()),
                      _fmt(r["total"].mean().item()), "", f"{ca.cpu:.0f} (incl. training)"])
        print(lrows[-1], flush=True)
    lrows.append(["per-pixel categorical (train, Laplace smoothing)", "", "", "", _fmt(categorical), "", ""])
    lrows.append(["uniform over 17 levels", "", "", "", _fmt(uniform), "", ""])
    header = ["likelihood on the 360 test digits (bits/dim)", "L_T", "Σ L_{t-1}", "L_0", "total",
              "below categorical?", "CPU s"]
    note = ("Variational bound of the same digits model, every term exact (T network passes of the 360 test digits), "
            "discretized decoder with 17 bins, x̂_0 clipped as in sampling. Bar: below the per-pixel categorical "
            "baseline.")
    md_vlb = note + "\n\n" + markdown_table(header, lrows)
    return md_samples, md_vlb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--no-ablation", action="store_true", help="skip the T = 1000 likelihood ablation")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = {}

    def record(key, value):
        figures[key] = float(value)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    start = time.perf_counter()
    md_mix, _ = mixture_part(args.quick, record)
    md_samples, md_vlb = digits_part(args.quick, not args.no_ablation and not args.quick, record)
    total = time.perf_counter() - start
    header = (f"Measured by `benchmarks/bench_training_sampling.py` on {platform.machine()} "
              f"({os.cpu_count()} logical CPUs, load average {load:.1f} at the start), torch {torch.__version__}, "
              f"{args.threads} thread(s); total {total / 60:.0f} min. Times depend on the machine; the ratios "
              f"to the floors do not, much.")
    md = "\n".join([header, "", "### 2-D mixture", "", md_mix, "### Digits: samples", "", md_samples,
                    "### Digits: likelihood", "", md_vlb])
    publish(None if args.quick else RESULTS, NAME, md, ["figure", "value"],
            [[k, f"{v:.6g}"] for k, v in figures.items()])

if __name__ == "__main__":
    main()
