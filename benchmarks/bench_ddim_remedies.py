"""Deterministic DDIM (η = 0) on trained networks: the runaway samples of chapter 08 and their remedies (issue 11).

Mixture part: the 2-D mixture MLP of :func:`ddpm_lib.recipes.train_mixture_model` (its default budget, T = 1000), for
``SEEDS`` training seeds, sampled with DDIM η = 0 at S = 10, 20, 50, 100, 1000 and with DDPM (all 1000 steps, σ² =
β̃), beside the exact denoiser (:class:`~ddpm_lib.exact.OracleDenoiser`) on the same schedule. Remedies, side by side:

- trailing spacing (the first step at t = T-1) instead of leading;
- x̂_0 clamped to the training data's range (per coordinate; :class:`~ddpm_lib.thresholding.ClampedDenoiser`),
  as ``clip_denoised`` clamps images to [-1, 1];
- an x_0- or v-predicting network (``objective``);
- the schedule rescaled to zero terminal SNR (Lin et al. 2024; ``make_schedule(kind="linear_zero_snr")``) with a
  v-predicting network and trailing spacing: training then covers the pure-noise end.

Metrics: SW2 of 4000 samples in chunks of 1000, each against its own fresh draw of the data, as a ratio to the
data-vs-data floor (:func:`ddpm_lib.evaluation.toy_quality`), and the off-mode percentage (farther than 4 standard
deviations from every mean, :func:`ddpm_lib.evaluation.off_mode_fraction`); mean ± std over the seeds (a trained
model per seed, each sampled with its own noise; the exact denoiser over as many sampling seeds).

Digits part: the digits UNet of :func:`ddpm_lib.recipes.train_digits_model` (its defaults, on Ho et al.'s T = 1000
schedule as in ``bench_ddim_guidance.py``), for ``SEEDS`` seeds, DDIM η = 0 at the same S and DDPM-1000: Fréchet
distance of 500 samples to the test digits as a ratio to the floor of 500 training digits.

Writes ``book/results/ch08_ddim_remedies.md`` (and ``.csv``). Models and samples' metrics are cached in
``benchmarks/out/ddim_remedies/``. One thread.

Run: ``python benchmarks/bench_ddim_remedies.py [--part mixture|digits|all] [--seeds 0,1,2] [--no-write] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _common import RESULTS, ROOT, cached, mean_std, publish  # first: puts the repository on sys.path
from ddpm_lib import ddim_sample, p_sample_loop
from ddpm_lib import recipes as R
from ddpm_lib.classifiers import classifier_fid, get_digits_classifier
from ddpm_lib.data import MIXTURE, load_digits, make_gaussian_mixture
from ddpm_lib.evaluation import digits_floor, markdown_table, off_mode_fraction, toy_quality
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.thresholding import ClampedDenoiser

NAME = "ch08_ddim_remedies"
CACHE = ROOT / "benchmarks" / "out" / "ddim_remedies"
SEEDS = (0, 1, 2)
STEPS = (10, 20, 50, 100, 1000)
N_MIX, CHUNK, N_DIG = 4000, 1000, 500

MIX_MODELS = {
    "eps": dict(objective="pred_noise", schedule="linear"),
    "v": dict(objective="pred_v", schedule="linear"),
    "x0": dict(objective="pred_x0", schedule="linear"),
    "v_zsnr": dict(objective="pred_v", schedule="linear_zero_snr"),
    # three times the recipe's budget: is what remains a matter of how well the network has learned the data?
    "v_long": dict(objective="pred_v", schedule="linear", steps=3 * R.MIXTURE_STEPS),
}
# rows: key, label, network ("exact:<schedule>" or a MIX_MODELS key), spacing, clamp x̂_0 to the data's range
MIX_ROWS = [
    ("exact", "exact denoiser", "exact:linear", "leading", False),
    ("exact_trailing", "exact denoiser, trailing", "exact:linear", "trailing", False),
    ("exact_zsnr", "exact denoiser, zero terminal SNR, trailing", "exact:linear_zero_snr", "trailing", False),
    ("eps", "MLP, ε (the recipe)", "eps", "leading", False),
    ("eps_trailing", "MLP, ε, trailing", "eps", "trailing", False),
    ("eps_clamp", "MLP, ε, x̂_0 clamped to the data's range", "eps", "leading", True),
    ("eps_clamp_trailing", "MLP, ε, x̂_0 clamped, trailing", "eps", "trailing", True),
    ("x0", "MLP, x_0-prediction", "x0", "leading", False),
    ("v", "MLP, v-prediction", "v", "leading", False),
    ("v_trailing", "MLP, v, trailing", "v", "trailing", False),
    ("v_zsnr", "MLP, v, zero terminal SNR, trailing", "v_zsnr", "trailing", False),
    ("v_zsnr_clamp", "MLP, v, zero terminal SNR, trailing, x̂_0 clamped", "v_zsnr", "trailing", True),
    ("v_long", "MLP, v-prediction, 3× the training steps", "v_long", "leading", False),
]






# ---------------------------------------------------------------------------------------------
# mixture


_MIX_NETS = {}


def mix_network(name: str, seed: int, quick: bool):
    """(denoiser, schedule, objective, data range) of a row's network."""
    mixture = make_gaussian_mixture(MIXTURE)
    if name.startswith("exact:"):
        sched = R.make_schedule(1000, name.split(":")[1])
        data = mixture.sample(20000, generator=torch.Generator().manual_seed(seed))
        return OracleDenoiser(mixture, sched), sched, "pred_noise", (data.min(0).values, data.max(0).values), 0.0
    key = (name, seed)
    if key not in _MIX_NETS:
        path = CACHE / f"mix_{name}_s{seed}{'_quick' if quick else ''}.pt"
        cfg = dict(MIX_MODELS[name])
        steps = 50 if quick else cfg.pop("steps", R.MIXTURE_STEPS)
        cfg.pop("steps", None)
        if path.exists():
            state = torch.load(path, weights_only=True)
            tm = R.train_mixture_model(seed=seed, steps=1, progress=False, **cfg)
            tm.model.load_state_dict(state["ema"])
            cpu = state["cpu"]
        else:
            c0 = time.process_time()
            tm = R.train_mixture_model(seed=seed, steps=steps, progress=False, **cfg)
            cpu = time.process_time() - c0
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save({"ema": tm.model.state_dict(), "cpu": cpu}, path)
            print(f"  trained {name} seed {seed} in {cpu:.0f} s CPU", flush=True)
        _MIX_NETS[key] = (tm.model, tm.sched, cfg["objective"], (tm.data.min(0).values, tm.data.max(0).values), cpu)
    return _MIX_NETS[key]


def mix_metrics(x):
    mixture = make_gaussian_mixture(MIXTURE)
    q = toy_quality(x, MIXTURE, chunk=min(CHUNK, x.shape[0] // 4), seed=2)
    return dict(ratio=q["ratio"], sw2=q["sw2"], floor=q["floor"], off=off_mode_fraction(x, mixture, 4.0),
                far=off_mode_fraction(x, mixture, 6.0), max_dist=float(torch.cdist(x.double(), mixture.means)
                                                                        .min(1).values.max()))


def mix_run(net_name, seed, S, spacing, clamp, quick):
    """Metrics of one sample set; S = "ddpm" for DDPM with all T steps."""
    n = 400 if quick else N_MIX
    tag = "ddpm" if S == "ddpm" else f"ddim{S}_{'all' if S == 1000 else spacing}"
    path = CACHE / f"mixrun_{net_name.replace(':', '-')}_{tag}_{'clamp' if clamp else 'free'}_s{seed}" \
                   f"{'_quick' if quick else ''}.json"

    def compute():
        model, sched, objective, (lo, hi), _ = mix_network(net_name, seed, quick)
        if clamp:
            model = ClampedDenoiser(model, sched, objective, lo, hi)
        gen = torch.Generator().manual_seed(100 + seed)
        c0 = time.process_time()
        with torch.no_grad():
            if S == "ddpm":
                x = p_sample_loop(model, sched, (n, 2), objective=objective, clip_denoised=False, generator=gen,
                                  progress=False)
            else:
                x = ddim_sample(model, sched, (n, 2), steps=S, eta=0.0, spacing=spacing, objective=objective,
                                clip_denoised=False, generator=gen, progress=False)
        res = mix_metrics(x)
        res["cpu"] = time.process_time() - c0
        return res

    return cached(path, compute)


def mixture_part(seeds, quick):
    steps = (10, 20) if quick else STEPS
    header = ["sampler"] + [f"S = {s}" for s in steps] + ["DDPM, 1000 steps", "S = 50 / DDPM", "training CPU s"]
    rows_sw, rows_off, csv_rows = [], [], []
    summary = {}
    for key, label, net, spacing, clamp in MIX_ROWS:
        per_seed = {}
        for seed in seeds:
            for S in list(steps) + ["ddpm"]:
                if S == "ddpm" and net.startswith("exact:") and key != "exact":
                    continue
                per_seed.setdefault(S, []).append(mix_run(net, seed, S, spacing, clamp, quick))
            print(key, seed, [f"{r[-1]['ratio']:.2f}/{100 * r[-1]['off']:.2f}" for r in per_seed.values()],
                  flush=True)
        cols = [S for S in list(steps) + ["ddpm"] if S in per_seed]
        stats = {S: {m: mean_std([r[m] for r in per_seed[S]]) for m in ("ratio", "off", "far", "max_dist")}
                 for S in cols}
        summary[key] = stats
        cpu = "—" if net.startswith("exact:") else f"{mean_std([mix_network(net, s, quick)[4] for s in seeds])[0]:.0f}"
        rel = "—"
        if "ddpm" in stats and 50 in stats:
            rel = f"{stats[50]['ratio'][0] / stats['ddpm']['ratio'][0]:.2f}"
        fmt_sw = [f"{stats[S]['ratio'][0]:.2f} ± {stats[S]['ratio'][1]:.2f}" if S in stats else "—"
                  for S in list(steps) + ["ddpm"]]
        fmt_off = [f"{100 * stats[S]['off'][0]:.2f} ± {100 * stats[S]['off'][1]:.2f}" if S in stats else "—"
                   for S in list(steps) + ["ddpm"]]
        rows_sw.append([label] + fmt_sw + [rel, cpu])
        rows_off.append([label] + fmt_off + ["", cpu])
        for S in cols:
            csv_rows.append(["mixture", key, label, S, len(per_seed[S])]
                            + [f"{stats[S][m][j]:.5g}" for m in ("ratio", "off", "far", "max_dist") for j in (0, 1)])
    return header, rows_sw, rows_off, csv_rows, summary


# ---------------------------------------------------------------------------------------------
# digits


def digits_part(seeds, quick, spacings=("leading",)):
    steps = (10, 20) if quick else STEPS
    n = 64 if quick else N_DIG
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    floor = digits_floor(n, repeats=3, seed=0)
    per = {}
    cpus = []
    for seed in seeds:
        path = CACHE / f"digits_s{seed}{'_quick' if quick else ''}.pt"
        if path.exists():
            state = torch.load(path, weights_only=True)
            tm = R.train_digits_model(seed=seed, steps=1, T=1000, progress=False)
            tm.model.load_state_dict(state["ema"])
            cpu = state["cpu"]
        else:
            c0 = time.process_time()
            tm = R.train_digits_model(seed=seed, T=1000, progress=False, **({"steps": 20} if quick else {}))
            cpu = time.process_time() - c0
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save({"ema": tm.model.state_dict(), "cpu": cpu, "config": json.dumps(tm.config, default=str)},
                       path)
            print(f"  trained digits seed {seed} in {cpu:.0f} s CPU", flush=True)
        cpus.append(cpu)
        for spacing in spacings:
            for S in list(steps) + ["ddpm"]:
                if S == "ddpm" and spacing != spacings[0]:
                    continue
                tag = "ddpm" if S == "ddpm" else f"ddim{S}_{'all' if S == 1000 else spacing}"
                rpath = CACHE / f"digrun_{tag}_s{seed}{'_quick' if quick else ''}.json"

                def compute():
                    gen = torch.Generator().manual_seed(100 + seed)
                    c0 = time.process_time()
                    with torch.no_grad():
                        if S == "ddpm":
                            x = p_sample_loop(tm.model, tm.sched, (n, 1, 8, 8), objective=tm.objective,
                                              generator=gen, progress=False)
                        else:
                            x = ddim_sample(tm.model, tm.sched, (n, 1, 8, 8), steps=S, eta=0.0, spacing=spacing,
                                            objective=tm.objective, generator=gen, progress=False)
                    fd = classifier_fid(x, test_x, classifier)
                    return dict(fd=fd, cpu=time.process_time() - c0)

                res = cached(rpath, compute)
                per.setdefault((spacing, S), []).append(res["fd"] / floor.mean)
                print(f"digits seed {seed} {spacing} {S}: ratio {per[(spacing, S)][-1]:.3f}", flush=True)
    header = ["sampler"] + [f"S = {s}" for s in steps] + ["DDPM, 1000 steps"]
    rows, csv_rows = [], []
    for spacing in spacings:
        cells = []
        for S in list(steps) + ["ddpm"]:
            if (spacing, S) in per:
                m, s = mean_std(per[(spacing, S)])
                cells.append(f"{m:.2f} ± {s:.2f}")
                csv_rows.append(["digits", f"eta0_{spacing}", spacing, S, len(per[(spacing, S)]), f"{m:.5g}",
                                 f"{s:.5g}"] + [""] * 6)
            else:
                cells.append("—")
        rows.append([f"UNet, DDIM η = 0, {spacing}"] + cells)
        # the same seeds' ratios divided by their S = 1000 ratio: the bars compare a model with itself
        last = max(steps)
        rel_cells = []
        for S in list(steps) + ["ddpm"]:
            if (spacing, S) in per and (spacing, last) in per:
                m, s_ = mean_std([a / b for a, b in zip(per[(spacing, S)], per[(spacing, last)])])
                rel_cells.append(f"{m:.3f} ± {s_:.3f}")
            else:
                rel_cells.append("—")
        rows.append([f"same, divided by its S = {last} value (per seed)"] + rel_cells)
    return header, rows, csv_rows, floor, mean_std(cpus)[0], per


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("mixture", "digits", "all"), default="all")
    parser.add_argument("--seeds", default=",".join(str(s) for s in SEEDS))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written (a smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    parts = []
    csv_all = []
    if args.part in ("mixture", "all"):
        header, rows_sw, rows_off, csv_rows, summary = mixture_part(seeds, args.quick)
        csv_all += csv_rows
        parts.append(
            f"### 2-D mixture: SW2 ratio to the floor\n\nDDIM η = 0 and DDPM, {N_MIX} samples in chunks of {CHUNK} "
            f"(toy_quality), mean ± std over {len(seeds)} seeds (a network trained per seed by `train_mixture_model`, "
            f"{R.MIXTURE_STEPS} steps, T = 1000; the exact denoiser over as many sampling seeds). \"S = 50 / DDPM\": the "
            f"bar is ≤ 1.2.\n\n" + markdown_table(header, rows_sw))
        parts.append("### 2-D mixture: off-mode %\n\nSamples farther than 4 standard deviations from every mean (the "
                     "data themselves: about 0.03 %). Bar: at most twice the exact denoiser's at every S ≥ 20.\n\n"
                     + markdown_table(header[:-2] + ["", "training CPU s"], rows_off))
    if args.part in ("digits", "all"):
        header, rows, csv_rows, floor, cpu, _ = digits_part(seeds, args.quick, ("leading", "trailing"))
        csv_all += csv_rows
        parts.append(f"### Digits UNet, T = 1000\n\nFréchet distance of {N_DIG} samples to the 360 test digits as a "
                     f"ratio to the floor of {N_DIG} training digits ({floor.mean:.2f} ± {floor.std:.2f}), mean ± std "
                     f"over {len(seeds)} seeds (a UNet trained per seed by `train_digits_model(T=1000)`, {cpu:.0f} s "
                     f"of CPU each). Bars: S = 50 within 1.1× of S = 1000, S = 20 ≤ 1.3× of S = 1000.\n\n"
                     + markdown_table(header, rows))
    csv_header = ["part", "row", "label", "S", "seeds", "ratio_mean", "ratio_std", "off_mean", "off_std",
                  "far_mean", "far_std", "max_dist_mean", "max_dist_std"]
    out_dir = None if (args.no_write or args.quick or args.part != "all") else RESULTS
    publish(out_dir, NAME, "\n\n".join(parts), csv_header, csv_all)


if __name__ == "__main__":
    main()
