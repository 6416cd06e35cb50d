"""What holds the digits UNet at twice the Fréchet floor, and what fixes it within 3 minutes of one CPU core (issue 11).

Every candidate of the study is a row of ``book/results/ch05_digits_recipe.md`` (and ``.csv``), whether it helps or
not: a training configuration of :func:`ddpm_lib.recipes.train_digits_model` (budget, width, depth, batch,
learning-rate schedule, EMA, noise schedule, objective, loss weighting), the weights sampled (EMA of some decay, or the
last weights) and the sampler (DDPM with σ_t² = β̃_t or β_t, x̂_0 clipped, not clipped or dynamically thresholded,
DDIM with S steps and η). Each row is measured for ``SEEDS`` training seeds (each model sampled with its own seed):

- training CPU seconds (``time.process_time`` of the training call, one thread; the extra EMAs the study keeps for
  its EMA rows are timed apart and left out) and wall seconds;
- the Fréchet distance of 1437 samples to the 360 test digits in the fixed classifier's features, as a ratio to the
  floor (the 1437 training digits against the same test split), mean ± std over the seeds; the same for the samples
  rounded to the 17 grey levels of the data;
- the percentage of samples that copy a training digit, the classes covered, and the share of pixels at the
  brightest grey level (16), against the training set's.

Models and evaluations are cached in ``benchmarks/out/digits_recipe/`` (a rerun measures only what is missing;
``--fresh`` starts over). One thread; run it alone on the machine, the CPU seconds are the budget.

Run: ``python benchmarks/bench_digits_recipe.py [--only NAME[,NAME...]] [--no-write] [--fresh] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from _common import RESULTS, ROOT, mean_std, publish  # first: puts the repository on sys.path
from ddpm_lib import ddim_sample, p_sample_loop
from ddpm_lib import recipes as R
from ddpm_lib.classifiers import classifier_fid, get_digits_classifier
from ddpm_lib.data import DIGITS_LEVELS, load_digits
from ddpm_lib.evaluation import digits_floor, digits_quality, markdown_table
from ddpm_lib.metrics import _sqrt_psd
from ddpm_lib.postprocess import from_levels, to_levels
from ddpm_lib.thresholding import DynamicThresholdDenoiser
from ddpm_lib.train import EMA

NAME = "ch05_digits_recipe"
CACHE = ROOT / "benchmarks" / "out" / "digits_recipe"
SEEDS = (0, 1)
REPS = 2  # sample sets per trained model (sampling seeds)
N_SAMPLES = 1437
EXTRA_EMAS = (0.99, 0.995, 0.9995)  # kept beside the recipe's EMA for the EMA rows (all with the warm-up)

# the recipe (DIGITS_STEPS = 1600, AdamW 2e-3 constant, EMA 0.999, width 32, T = 100 linear)
OLD = dict(steps=1600, width=32, channel_mults=(1, 2), num_res_blocks=1, batch_size=128, lr=2e-3,
           lr_schedule="constant", warmup_steps=0, ema_decay=0.999, T=100, schedule="linear", objective="pred_noise",
           loss_weighting=None)


def cfg(**kw):
    out = dict(OLD)
    out.update(kw)
    return out


# training configurations (keyword arguments of train_digits_model)
COS = dict(lr=3e-3, lr_schedule="cosine", warmup_steps=100)
TRAINS = {
    "old": cfg(),
    # about 170 s of one CPU core each on the study machine (the old recipe's 1600 steps took 175-185 s there)
    "cos": cfg(steps=1500, **COS),
    "w16": cfg(steps=3400, width=16, **COS),
    "mults122": cfg(steps=1300, channel_mults=(1, 2, 2), **COS),
    "w48": cfg(steps=680, width=48, **COS),
    "v": cfg(steps=1500, objective="pred_v", **COS),
    "x0": cfg(steps=1500, objective="pred_x0", **COS),
    "minsnr": cfg(steps=1500, loss_weighting="min_snr", **COS),
    "cosched": cfg(steps=1500, schedule="cosine", **COS),
    # about ten minutes of one CPU core
    "long": cfg(steps=5000, **COS),
}

# samplers: keyword arguments of sample()
SAMPLERS = {
    "ddpm": dict(kind="ddpm", variance="fixed_small", clip="clip"),
    "ddpm_large": dict(kind="ddpm", variance="fixed_large", clip="clip"),
    "ddpm_noclip": dict(kind="ddpm", variance="fixed_small", clip="none"),
    "ddpm_dynamic": dict(kind="ddpm", variance="fixed_small", clip="dynamic", p=0.995),
    "ddim100": dict(kind="ddim", steps=100, eta=0.0, clip="clip"),
    "ddim50": dict(kind="ddim", steps=50, eta=0.0, clip="clip"),
}

G0, G1, G2 = "0. the recipe (unchanged by the study)", "1. weights sampled", "2. sampler"
G3 = "3. learning-rate schedule, width and depth at equal CPU time"
G4 = "4. objective, loss weighting and noise schedule (cosine lr from 3e-3, width 32, 1500 steps)"
G5 = "5. ten minutes of training"
# rows: (key, group, label, training, weights, sampler[, sample sets per training seed, default REPS])
CANDIDATES = [
    ("old", G0, "width 32, 1600 steps of 128, AdamW 2e-3 constant, EMA 0.999 (warm-up); DDPM (T = 100), σ² = β̃, "
     "x̂_0 clipped", "old", "ema0.999", "ddpm"),
    ("old_raw", G1, "last weights (no EMA)", "old", "raw", "ddpm", 1),
    ("old_ema0.99", G1, "EMA 0.99 (warm-up)", "old", "ema0.99", "ddpm", 1),
    ("old_large", G2, "σ² = β_t", "old", "ema0.999", "ddpm_large", 1),
    ("old_noclip", G2, "x̂_0 not clipped", "old", "ema0.999", "ddpm_noclip", 1),
    ("old_dynamic", G2, "dynamic thresholding of x̂_0 (99.5 % quantile)", "old", "ema0.999", "ddpm_dynamic", 1),
    ("old_ddim100", G2, "DDIM η = 0, 100 steps", "old", "ema0.999", "ddim100"),
    ("old_ddim50", G2, "DDIM η = 0, 50 steps", "old", "ema0.999", "ddim50", 1),
    ("cos", G3, "cosine lr decay from 3e-3 (100 warm-up steps), width 32, 1500 steps", "cos", "ema0.999", "ddpm"),
    ("w16", G3, "same, width 16, 3400 steps", "w16", "ema0.999", "ddpm"),
    ("mults122", G3, "same, width 32, levels 8×8/4×4/2×2 (channel_mults (1, 2, 2)), 1300 steps", "mults122",
     "ema0.999", "ddpm", 1),
    ("w48", G3, "same, width 48, 680 steps", "w48", "ema0.999", "ddpm", 1),
    ("v", G4, "v-prediction (loss on v)", "v", "ema0.999", "ddpm", 1),
    ("x0", G4, "x_0-prediction (loss on x_0)", "x0", "ema0.999", "ddpm", 1),
    ("minsnr", G4, "ε-prediction, min-SNR-5 loss weighting", "minsnr", "ema0.999", "ddpm", 1),
    ("cosched", G4, "cosine noise schedule (T = 100)", "cosched", "ema0.999", "ddpm", 1),
    ("long", G5, "cosine lr decay from 3e-3, width 32, 5000 steps", "long", "ema0.999", "ddpm"),
]


# ---------------------------------------------------------------------------------------------
# sampling


def sample(model, sched, objective, spec: dict, n: int, seed: int):
    gen = torch.Generator().manual_seed(1000 + seed)
    clip = spec.get("clip", "clip")
    if clip == "dynamic":
        model = DynamicThresholdDenoiser(model, sched, objective, spec.get("p", 0.995))
    kw = dict(objective=objective, clip_denoised=clip == "clip", generator=gen, progress=False)
    if spec["kind"] == "ddpm":
        return p_sample_loop(model, sched, (n, 1, 8, 8), variance=spec.get("variance", "fixed_small"), **kw)
    return ddim_sample(model, sched, (n, 1, 8, 8), steps=spec["steps"], eta=spec.get("eta", 0.0),
                       spacing=spec.get("spacing", "trailing"), **kw)


# ---------------------------------------------------------------------------------------------
# training and evaluation, cached


def _key(d) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def train_cached(name: str, seed: int, fresh: bool):
    """(state dicts of the raw and averaged weights, info) of TRAINS[name] with ``seed``, from the cache if there."""
    config = TRAINS[name]
    path = CACHE / f"train_{name}_s{seed}.pt"
    if path.exists() and not fresh:
        state = torch.load(path, weights_only=True)
        if state["info"]["config"] == _key(config):
            return state
    extras, spent = {}, [0.0]

    def keep_extra_emas(step, model, ema):
        c0 = time.process_time()
        if not extras:
            extras.update({d: EMA(model, d, warmup=True) for d in EXTRA_EMAS if d != config["ema_decay"]})
        for e in extras.values():
            e.update(model)
        spent[0] += time.process_time() - c0

    c0, w0 = time.process_time(), time.perf_counter()
    tm = R.train_digits_model(seed=seed, progress=False, callback=keep_extra_emas, callback_every=1, **config)
    cpu, wall = time.process_time() - c0 - spent[0], time.perf_counter() - w0
    weights = {"raw": tm.raw_model.state_dict(), f"ema{config['ema_decay']}": tm.model.state_dict()}
    weights.update({f"ema{d}": e.model.state_dict() for d, e in extras.items()})
    loss = tm.result.loss_history
    info = dict(config=_key(config), cpu=cpu, wall=wall, extra_ema_cpu=spent[0],
                final_loss=float(loss[-100:].mean()), steps=config["steps"])
    state = {"weights": weights, "info": info}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    print(f"  trained {name} seed {seed}: {cpu:.0f} s CPU ({wall:.0f} s wall), loss {info['final_loss']:.4f}",
          flush=True)
    return state


def network(config: dict, state_dict):
    model = R._digits_network("unet", config["width"], None, tuple(config["channel_mults"]), config["num_res_blocks"],
                              config.get("learned_variance", False))
    model.load_state_dict(state_dict)
    return model.eval()


def _features(x):
    classifier, _ = get_digits_classifier()
    with torch.no_grad():
        return classifier.features(x.reshape(-1, 1, 8, 8)).double(), classifier(x.reshape(-1, 1, 8, 8)).argmax(1)


def weighted_frechet(feats, weights, ref) -> float:
    """Fréchet distance between the Gaussian fitted to ``feats`` with sample weights and the one fitted to ``ref``."""
    w = weights / weights.sum()
    mu = (w[:, None] * feats).sum(0)
    d = feats - mu
    cov = (w[:, None] * d).T @ d / (1 - (w ** 2).sum())
    mu_r, cov_r = ref.mean(0), torch.cov(ref.T)
    root = _sqrt_psd(cov)
    trace_sqrt = torch.linalg.eigvalsh(root @ cov_r @ root).clamp(min=0).sqrt().sum()
    return float(((mu - mu_r) ** 2).sum() + torch.trace(cov) + torch.trace(cov_r) - 2 * trace_sqrt)


def train_class_proportions():
    _, y = load_digits("train")
    counts = torch.bincount(y, minlength=10).double()
    return counts / counts.sum()


def iid_floor(n: int = N_SAMPLES, repeats: int = 300, seed: int = 0):
    """What a perfect sampler of the training digits scores: the training digits with their class proportions
    redrawn as an i.i.d. sampler draws them (class counts ~ Multinomial(n, training proportions); each training digit
    weighted by n_c / N_c), against the test split, as a ratio to the floor. Returns (mean, std) over ``repeats``."""
    train_x, y = load_digits("train")
    test_x, _ = load_digits("test")
    f_train, _ = _features(train_x)
    f_test, _ = _features(test_x)
    floor = digits_floor(N_SAMPLES).mean
    p = train_class_proportions()
    counts = torch.bincount(y, minlength=10).double()
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(repeats):
        n_c = torch.bincount(torch.multinomial(p, n, replacement=True, generator=gen), minlength=10).double()
        values.append(weighted_frechet(f_train, (n_c / counts)[y], f_test) / floor)
    return mean_std(values)


def bootstrap_floor(n: int = N_SAMPLES, repeats: int = 300, seed: int = 0):
    """What a sampler that draws training digits at random (with replacement) scores against the test split, as a
    ratio to the floor: class counts multinomial and some digits drawn twice. Returns (mean, std) over ``repeats``."""
    classifier, _ = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    floor = digits_floor(N_SAMPLES).mean
    gen = torch.Generator().manual_seed(seed)
    return mean_std([classifier_fid(train_x[torch.randint(len(train_x), (n,), generator=gen)], test_x, classifier)
                     / floor for _ in range(repeats)])


def evaluate(x: torch.Tensor) -> dict:
    q = digits_quality(x, seed=2)
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    xq = from_levels(to_levels(x, DIGITS_LEVELS), DIGITS_LEVELS)
    fd_q = classifier_fid(xq, test_x, classifier)
    top = (to_levels(x, DIGITS_LEVELS) == DIGITS_LEVELS - 1).double().mean().item()
    # diagnostics: the class proportions of the samples (by the classifier) against the training set's, and the
    # distance once each sample is weighted so that the classes get the training proportions
    feats, pred = _features(x)
    f_test, _ = _features(test_x)
    p = train_class_proportions()
    counts = torch.bincount(pred, minlength=10).double()
    chi2 = float((((counts - p * len(x)) ** 2) / (p * len(x))).sum())
    balanced = weighted_frechet(feats, (p / (counts / len(x)).clamp(min=1e-12))[pred], f_test) / q["floor"]
    return dict(fd=q["fd"], floor=q["floor"], ratio=q["ratio"], ratio_q=fd_q / q["floor"], memorized=q["memorized"],
                classes=q["classes_covered"], top=top, confidence=q["confidence"], chi2=chi2, balanced=balanced)


def eval_cached(row, seed: int, rep: int, fresh: bool, n: int):
    """Metrics of the ``rep``-th sample set (sampling seed 1000 + seed + 100 rep) of the model trained with ``seed``."""
    key, _, _, train_name, weights, sampler_name = row
    spec = SAMPLERS[sampler_name]
    config = TRAINS[train_name]
    path = CACHE / f"eval_{key}_s{seed}_r{rep}.json"
    ident = _key([config, weights, spec, n])
    if path.exists() and not fresh:
        res = json.loads(path.read_text())
        if res.get("ident") == ident:
            return res
    state = train_cached(train_name, seed, fresh)
    model = network(config, state["weights"][weights])
    sched = R.make_schedule(config["T"], config["schedule"])
    c0 = time.process_time()
    with torch.no_grad():
        x = sample(model, sched, config["objective"], spec, n, seed + 100 * rep)
    sample_cpu = time.process_time() - c0
    torch.save(x, path.with_suffix(".pt"))
    res = evaluate(x)
    res.update(ident=ident, sample_cpu=sample_cpu, train_cpu=state["info"]["cpu"],
               train_wall=state["info"]["wall"], final_loss=state["info"]["final_loss"])
    path.write_text(json.dumps(res))
    print(f"  {key} seed {seed} rep {rep}: ratio {res['ratio']:.3f} (rounded {res['ratio_q']:.3f}, classes balanced "
          f"{res['balanced']:.3f}, chi2 {res['chi2']:.1f}), copies {100 * res['memorized']:.1f} %, classes "
          f"{res['classes']}, top {100 * res['top']:.1f} %", flush=True)
    return res




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated candidate keys (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print the table, write nothing to book/results")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written (a smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        global CACHE
        CACHE = CACHE.parent / "digits_recipe_quick"
        for name in TRAINS:
            TRAINS[name] = dict(TRAINS[name], steps=3)
    n = 64 if args.quick else N_SAMPLES
    only = None if args.only is None else set(args.only.split(","))
    rows, csv_rows = [], []
    train_x, _ = load_digits("train")
    top_train = (to_levels(train_x, DIGITS_LEVELS) == DIGITS_LEVELS - 1).double().mean().item()
    metrics = ("ratio", "balanced", "chi2", "ratio_q", "memorized", "top", "train_cpu", "train_wall", "sample_cpu",
               "final_loss")
    for row in CANDIDATES:
        key, group, label, train_name, weights, sampler_name = row[:6]
        reps = row[6] if len(row) > 6 else REPS
        cached = all((CACHE / f"eval_{key}_s{s}_r{r}.json").exists() for s in SEEDS for r in range(reps))
        if only is not None and key not in only and not cached:
            continue
        print(key, flush=True)
        fresh = args.fresh and (only is None or key in only)
        res = [eval_cached(row[:6], s, r, fresh, n) for s in SEEDS for r in range(reps)]
        stat = {k: mean_std([r[k] for r in res]) for k in metrics}
        per_model = [mean_std([r["ratio"] for r in res[i * reps:(i + 1) * reps]])[0] for i in range(len(SEEDS))]
        classes = min(r["classes"] for r in res)
        rows.append([group, label, f"{stat['train_cpu'][0]:.0f} ({stat['train_wall'][0]:.0f})",
                     f"{stat['ratio'][0]:.2f} ± {stat['ratio'][1]:.2f}",
                     " / ".join(f"{v:.2f}" for v in per_model),
                     f"{stat['balanced'][0]:.2f} ± {stat['balanced'][1]:.2f}", f"{stat['chi2'][0]:.0f}",
                     f"{stat['ratio_q'][0]:.2f} ± {stat['ratio_q'][1]:.2f}",
                     f"{100 * stat['memorized'][0]:.1f}", f"{classes}", f"{100 * stat['top'][0]:.1f}",
                     f"{stat['final_loss'][0]:.4f}", f"{stat['sample_cpu'][0]:.0f}"])
        csv_rows.append([key, group, label, train_name, weights, sampler_name, len(SEEDS), reps]
                        + [f"{stat[k][j]:.5g}" for k in metrics for j in (0, 1)] + [classes])
    floor = digits_floor(N_SAMPLES).mean
    iid = iid_floor(n)
    rows.insert(0, ["reference", "a perfect i.i.d. sampler of the training digits (class counts multinomial, 300 draws)",
                    "", f"{iid[0]:.2f} ± {iid[1]:.2f}", "", "1.00", "9 (expected)", "", "", "10", f"{100 * top_train:.1f}",
                    "", ""])
    csv_rows.insert(0, ["iid_floor", "reference", "training digits, multinomial class counts", "", "", "", 300, 1,
                        f"{iid[0]:.5g}", f"{iid[1]:.5g}"] + [""] * (2 * len(metrics) - 2) + [10])
    boot = bootstrap_floor(n)
    rows.insert(1, ["reference", "training digits drawn at random with replacement (300 draws)", "",
                    f"{boot[0]:.2f} ± {boot[1]:.2f}", "", "", "", "", "", "10", f"{100 * top_train:.1f}", "", ""])
    csv_rows.insert(1, ["bootstrap_floor", "reference", "training digits drawn with replacement", "", "", "", 300, 1,
                        f"{boot[0]:.5g}", f"{boot[1]:.5g}"] + [""] * (2 * len(metrics) - 2) + [10])
    header = ["group", "candidate", "training CPU s (wall s)", "ratio to the floor", "per model",
              "ratio, classes rebalanced", "class χ²", "ratio, rounded to 17 levels", "copies %",
              "classes (worst)", "brightest level %", "loss (last 100 steps)", "sampling CPU s"]
    note = (f"Fréchet distance of {n} samples to the 360 test digits in the fixed classifier's features "
            f"(`digits_quality`), as a ratio to the floor {floor:.2f} (the {N_SAMPLES} training digits against the same "
            f"test split); mean ± std over {len(SEEDS)} training seeds × {REPS} sample sets each (sampling seeds; one set per seed where the candidate says so), "
            f"\"per model\" the mean of each training seed's sample sets. The ratio of one sample set scatters by about "
            f"±0.3 even for a perfect sampler of the training digits, and its mean is above 1: its class counts are "
            f"multinomial (first row; the second also draws some digits twice), which moves the feature mean, while "
            f"the floor's training digits have the test split's class proportions. Diagnostics: \"classes "
            f"rebalanced\", the same distance with each sample weighted so that the classes (by the classifier) get the "
            f"training proportions (this removes that noise, and any class bias of the model); class χ² of the "
            f"classifier's histogram against the training proportions (9 expected for an unbiased sampler); "
            f"\"rounded\", the samples rounded to the 17 grey levels first. Copies: samples whose nearest training digit "
            f"is closer than half the median test-to-train distance (mean %). Brightest level: share of pixels at grey "
            f"level 16 (training set: {100 * top_train:.1f} %). Training: CPU seconds of one thread (wall seconds on the "
            f"shared machine in brackets), {platform.machine()}, torch {torch.__version__}; the machine was shared, so "
            f"CPU seconds per step varied by about ±20 % between runs. Bars: ratio ≤ 1.2, copies ≤ 5 %, 10/10 classes, "
            f"training ≤ 180 s of CPU.")
    csv_header = ["key", "group", "candidate", "training", "weights", "sampler", "seeds", "sample_sets"] + [
        f"{k}_{s}" for k in metrics for s in ("mean", "std")] + ["classes_worst"]
    out_dir = None if (args.no_write or args.quick or only is not None) else RESULTS
    publish(out_dir, NAME, note + "\n\n" + markdown_table(header, rows), csv_header, csv_rows)


if __name__ == "__main__":
    main()
