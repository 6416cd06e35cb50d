"""Learned variances on the digits (Improved DDPM, Nichol & Dhariwal 2021; chapter 07, issue 11).

The digits UNet of :func:`ddpm_lib.recipes.train_digits_model` (its defaults, T = 100) with fixed variances, beside the
same recipe with ``learned_variance=True``: the network also outputs v ∈ [-1, 1] per pixel, σ_t² = exp(v log β_t +
(1 - v) log β̃_t), trained with the hybrid loss L_simple + λ T L_t (the mean detached in the bound term). For each,
over ``SEEDS`` training seeds (mean ± std):

- the variational bound on the 360 test digits in bits/dim (every term exact, 17-bin discretized decoder, x̂_0
  clipped as in sampling; :func:`ddpm_lib.likelihood.vlb_bits_per_dim`), with σ_t² = β_t, β̃_t, or the learned one;
- the Fréchet distance of 1437 samples to the test split as a ratio to the floor, with ancestral sampling on the full
  schedule and on schedules respaced to fewer steps (:func:`ddpm_lib.schedules.respace`, the way Improved DDPM
  samples with fewer steps: the kept steps' ᾱ, β' = 1 - ᾱ_t/ᾱ_prev, and σ² from β' / β̃' or the learned
  interpolation between them).

Writes ``book/results/ch07_learned_variance.md`` (and ``.csv``); models and metrics are cached in
``benchmarks/out/learned_variance/``. One thread.

Run: ``python benchmarks/bench_learned_variance.py [--no-write] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _common import RESULTS, ROOT, cached, mean_std, publish  # first: puts the repository on sys.path
from ddpm_lib import ddim_timesteps, p_sample_loop, vlb_bits_per_dim
from ddpm_lib import recipes as R
from ddpm_lib.data import DIGITS_LEVELS, load_digits
from ddpm_lib.evaluation import digits_quality, markdown_table
from ddpm_lib.likelihood import categorical_bits_per_dim
from ddpm_lib.schedules import RespacedModel, respace

NAME = "ch07_learned_variance"
CACHE = ROOT / "benchmarks" / "out" / "learned_variance"
SEEDS = (0, 1)
N_SAMPLES = 1437
SAMPLE_STEPS = (100, 50, 25, 10)
# (key, label, keyword arguments of train_digits_model, variances to evaluate)
MODELS = [
    ("fixed", "fixed variance (the recipe)", {}, ("fixed_large", "fixed_small")),
    ("learned", "learned variance, λ = 0.001", dict(learned_variance=True, vlb_weight=1e-3), ("learned_range",)),
    ("learned_l01", "learned variance, λ = 0.01", dict(learned_variance=True, vlb_weight=1e-2), ("learned_range",)),
]
VARIANCE_LABEL = {"fixed_large": "σ² = β_t", "fixed_small": "σ² = β̃_t", "learned_range": "learned σ²"}




def trained(key, kwargs, seed, quick):
    path = CACHE / f"model_{key}_s{seed}{'_quick' if quick else ''}.pt"
    extra = {"steps": 5} if quick else {}
    if path.exists():
        state = torch.load(path, weights_only=True)
        tm = R.train_digits_model(seed=seed, progress=False, **dict(kwargs, steps=1))
        tm.model.load_state_dict(state["ema"])
        return tm, state["cpu"]
    c0 = time.process_time()
    tm = R.train_digits_model(seed=seed, progress=False, **kwargs, **extra)
    cpu = time.process_time() - c0
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"ema": tm.model.state_dict(), "cpu": cpu, "config": json.dumps(tm.config, default=str)}, path)
    print(f"  trained {key} seed {seed}: {cpu:.0f} s CPU", flush=True)
    return tm, cpu




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written (a smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quick = args.quick
    n = 64 if quick else N_SAMPLES
    steps_list = (10,) if quick else SAMPLE_STEPS
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    if quick:
        test_x = test_x[:20]
    sfx = "_quick" if quick else ""
    vlb_rows, q_rows, csv_rows = [], [], []
    for key, label, kwargs, variances in MODELS:
        results = {}
        cpus = []
        for seed in SEEDS:
            tm, cpu = trained(key, kwargs, seed, quick)
            cpus.append(cpu)
            for variance in variances:
                def vlb():
                    c0 = time.process_time()
                    r = vlb_bits_per_dim(tm.model, tm.sched, test_x, num_bins=DIGITS_LEVELS, variance=variance,
                                         clip_denoised=True, generator=torch.Generator().manual_seed(3),
                                         progress=False)
                    return {k: r[k].mean().item() for k in ("prior", "terms_sum", "decoder", "total")} | {
                        "cpu": time.process_time() - c0}

                results.setdefault(("vlb", variance), []).append(
                    cached(CACHE / f"vlb_{key}_{variance}_s{seed}{sfx}.json", vlb))
                for S in steps_list:
                    def quality():
                        sched, tmap = respace(tm.sched, ddim_timesteps(tm.sched.T, S, "linspace"))
                        c0 = time.process_time()
                        with torch.no_grad():
                            x = p_sample_loop(RespacedModel(tm.model, tmap), sched, (n, 1, 8, 8), variance=variance,
                                              clip_denoised=True, objective=tm.objective,
                                              generator=torch.Generator().manual_seed(1000 + seed), progress=False)
                        cpu_s = time.process_time() - c0
                        q = digits_quality(x, seed=2)
                        top = (x > 1 - 1 / (DIGITS_LEVELS - 1)).double().mean().item()
                        return dict(ratio=q["ratio"], memorized=q["memorized"], classes=q["classes_covered"],
                                    top=top, cpu=cpu_s)

                    res = cached(CACHE / f"q_{key}_{variance}_S{S}_s{seed}{sfx}.json", quality)
                    results.setdefault(("q", variance, S), []).append(res)
                    print(f"{key} seed {seed} {variance} S={S}: ratio {res['ratio']:.3f}", flush=True)
        cpu = mean_std(cpus)[0]
        for variance in variances:
            r = results[("vlb", variance)]
            stats = {k: mean_std([x[k] for x in r]) for k in ("prior", "terms_sum", "decoder", "total")}
            vlb_rows.append([f"{label}, {VARIANCE_LABEL[variance]}", f"{stats['prior'][0]:.4f}",
                             f"{stats['terms_sum'][0]:.3f} ± {stats['terms_sum'][1]:.3f}",
                             f"{stats['decoder'][0]:.3f} ± {stats['decoder'][1]:.3f}",
                             f"{stats['total'][0]:.3f} ± {stats['total'][1]:.3f}", f"{cpu:.0f}"])
            csv_rows.append(["vlb", key, variance, "", len(r)] + [f"{stats[k][j]:.5g}" for k in
                                                                  ("prior", "terms_sum", "decoder", "total")
                                                                  for j in (0, 1)])
            cells = []
            for S in steps_list:
                rq = results[("q", variance, S)]
                m, s = mean_std([x["ratio"] for x in rq])
                copies = max(x["memorized"] for x in rq)
                classes = min(x["classes"] for x in rq)
                cells.append(f"{m:.2f} ± {s:.2f}" + ("" if classes == 10 and copies <= 0.05 else
                                                     f" ({classes} classes, {100 * copies:.0f} % copies)"))
                csv_rows.append(["quality", key, variance, S, len(rq), f"{m:.5g}", f"{s:.5g}"] + [""] * 6)
            q_rows.append([f"{label}, {VARIANCE_LABEL[variance]}"] + cells)
    categorical = categorical_bits_per_dim(train_x, test_x, DIGITS_LEVELS)
    vlb_rows.append(["per-pixel categorical (train, Laplace smoothing)", "", "", "", f"{categorical:.3f}", ""])
    vlb_header = ["bound on the 360 test digits (bits/dim)", "L_T", "Σ L_{t-1}", "L_0", "total", "training CPU s"]
    q_header = ["sampler"] + [f"{S} steps" for S in steps_list]
    md = (f"### Likelihood\n\nVariational bound of the digits UNet of `train_digits_model` (T = 100) with fixed and "
          f"learned variances, every term exact (T network passes of the test digits), 17-bin discretized decoder, "
          f"x̂_0 clipped as in sampling; mean ± std over {len(SEEDS)} training seeds. The learned variance is trained "
          f"with the hybrid loss L_simple + λ T L_t, the mean detached in L_t (chapter 07). Bar: ≤ 2.30 bits/dim "
          f"(stretch ≤ 2.2).\n\n" + markdown_table(vlb_header, vlb_rows)
          + f"\n### Sample quality with fewer steps\n\nFréchet distance of {n} samples to the test split as a ratio to "
          f"the floor (1437 training digits), ancestral sampling on the schedule respaced to the given number of steps "
          f"(evenly spaced, both ends kept; 100 steps = the full schedule), x̂_0 clipped; mean ± std over "
          f"{len(SEEDS)} training seeds, each sampled with its own seed.\n\n" + markdown_table(q_header, q_rows))
    csv_header = ["table", "model", "variance", "steps", "seeds", "prior_or_ratio_mean", "prior_or_ratio_std",
                  "terms_mean", "terms_std", "decoder_mean", "decoder_std", "total_mean", "total_std"]
    publish(None if (args.no_write or quick) else RESULTS, NAME, md, csv_header, csv_rows)


if __name__ == "__main__":
    main()
