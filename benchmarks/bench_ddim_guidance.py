"""DDIM quality against the number of steps, DDIM inversion, and guidance sweeps (chapters 08 and 09).

Every model is trained here, from scratch, by the shared recipes of :mod:`ddpm_lib.experiments` (the same calls as
the chapters, with the recipes' default budgets), on one CPU thread; times are CPU seconds of this process.

Tables written to ``book/results/`` (markdown, and CSV beside each):

- ``ch08_ddim_table``: the DDIM paper's Table 1 on our data. Sample quality at S = 10, 20, 50, 100, 1000 steps
  (leading spacing, the paper's "linear" subsequence) for η = 0, 0.5, 1 and for σ̂ (σ_t² = 1 - ᾱ_t/ᾱ_prev, the β of
  the skipped step: the DDPM "large variance" row, written η̂), on the 2-D mixture (SW2 ×100 against fresh draws,
  with the exact denoiser and with the trained MLP) and on the digits (classifier-feature Fréchet distance to the
  test split). CPU seconds of each sampling run beside it.
- ``ch08_ddim_spacings``: leading / trailing / linspace at S = 10, 20, 50 with η = 0.
- ``ch08_inversion``: DDIM inversion x_0 → x_T → x_0 with η = 0; per-dimension MSE of the reconstruction against S
  (the paper's Table 2), for the exact mixture denoiser and the digits model.
- ``ch09_guidance``: classifier-free guidance (weight w) and classifier guidance (scale s) on a class-conditional
  digits model: accuracy of the samples under the fixed digits classifier, diversity (mean pairwise distance between
  samples of the same class), Fréchet distance to the test split, with DDPM ancestral sampling (T steps) and DDIM
  (50 steps, η = 0).

Run: ``python benchmarks/bench_ddim_guidance.py [--part ddim|guidance|all] [--quick]`` (``--quick``: tiny budgets,
a smoke test that writes nothing).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib import (  # noqa: E402
    ClassifierFreeGuidance,
    ClassifierGuidance,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    p_sample_loop,
)
from ddpm_lib import experiments as E  # noqa: E402
from ddpm_lib.data import OracleDenoiser, load_digits, make_gaussian_mixture  # noqa: E402
from ddpm_lib.diffusion import call_model  # noqa: E402
from ddpm_lib.metrics import classifier_accuracy, digits_fid, get_digits_classifier, mean_confidence  # noqa: E402
from ddpm_lib.noisy_classifier import NoisyClassifier, train_noisy_classifier  # noqa: E402

RESULTS = ROOT / "book" / "results"
STEPS = (10, 20, 50, 100, 1000)
VARIANTS = (("η = 0", 0.0), ("η = 0.5", 0.5), ("η = 1", 1.0), ("η̂ (σ̂² = β of the skipped step)", "hat"))
CFG_WEIGHTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
CLF_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
P_UNCOND = 0.2


# ---------------------------------------------------------------------------------------------
# samplers


@torch.no_grad()
def ddim_sample_sigma_hat(model, sched, shape, steps, spacing="leading", *, noise=None, generator=None,
                          clip_denoised=True, y=None, objective="pred_noise"):
    """DDIM's σ̂ row (chapter 08, eq. ``eq-sigma-hat``): the η = 1 mean (the skipped step's DDPM posterior mean) plus
    noise of variance σ̂² = 1 - ᾱ_t/ᾱ_prev, none at the last step (as the DDIM paper's code, whose ``ddpm_steps``
    uses the posterior mean with log-variance log β of the skipped step)."""
    timesteps = ddim_timesteps(sched.T, steps, spacing).tolist()
    x = torch.randn(shape, generator=generator) if noise is None else noise
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = call_model(model, x, t, y)
        mean, _ = ddim_step(sched, out, t, t_prev, x, eta=1.0, noise=torch.zeros_like(x), objective=objective,
                            clip_denoised=clip_denoised)
        if t_prev >= 0:
            a_t, a_prev = sched.alphas_cumprod[t].item(), sched.alphas_cumprod[t_prev].item()
            mean = mean + math.sqrt(1.0 - a_t / a_prev) * torch.randn(shape, generator=generator)
        x = mean
    return x


def sample(model, sched, n_shape, steps, variant, *, seed, clip_denoised, spacing="leading", y=None):
    gen = torch.Generator().manual_seed(seed)
    if variant == "hat":
        return ddim_sample_sigma_hat(model, sched, n_shape, steps, spacing, generator=gen,
                                     clip_denoised=clip_denoised, y=y)
    return ddim_sample(model, sched, n_shape, steps=steps, eta=variant, spacing=spacing, generator=gen,
                       clip_denoised=clip_denoised, y=y, progress=False)


def timed(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


# ---------------------------------------------------------------------------------------------
# metrics


def within_class_distance(samples: torch.Tensor, labels: torch.Tensor) -> float:
    """Diversity: the mean Euclidean distance between two different samples of the same class, averaged over classes."""
    flat = samples.reshape(samples.shape[0], -1).double()
    values = []
    for c in labels.unique():
        group = flat[labels == c]
        if group.shape[0] < 2:
            continue
        d = torch.cdist(group, group)
        n = group.shape[0]
        values.append((d.sum() / (n * (n - 1))).item())
    return sum(values) / len(values)


def digits_floor(n: int, repeats: int = 3) -> float:
    """Fréchet distance of n training images (drawn without replacement) to the test split: what real digits score."""
    classifier, _ = get_digits_classifier()
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    gen = torch.Generator().manual_seed(0)
    n = min(n, train_x.shape[0])
    vals = [digits_fid(train_x[torch.randperm(train_x.shape[0], generator=gen)[:n]], test_x, classifier)
            for _ in range(repeats)]
    return sum(vals) / len(vals)


def _markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write(name: str, md: str, header, rows, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
    with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# chapter 08


def ddim_part(quick: bool, out_dir: Path | None):
    steps_list = (10, 20) if quick else STEPS
    n_mix, chunk = (400, 200) if quick else (4000, 1000)
    n_dig = 200 if quick else 1000
    mixture = make_gaussian_mixture(E.MIXTURE)
    mix_model = E.train_mixture_model(steps=50 if quick else 3000)
    dig_model = E.train_digits_model(steps=50 if quick else 4000)
    oracle = OracleDenoiser(mixture, mix_model.sched)
    models = [
        ("2-D mixture, exact denoiser", oracle, mix_model.sched, (n_mix, 2), False, "sw2"),
        ("2-D mixture, trained MLP", mix_model.model, mix_model.sched, (n_mix, 2), False, "sw2"),
        ("digits, trained MLP", dig_model.model, dig_model.sched, (n_dig, 1, 8, 8), True, "fd"),
    ]
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    header = ["model", "sampler"] + [f"S = {s}" for s in steps_list] + [f"CPU s at S = {s}" for s in steps_list]
    rows, floors = [], {}
    for name, model, sched, shape, clip, metric in models:
        for vname, variant in VARIANTS:
            quality, seconds = [], []
            for s in steps_list:
                x, sec = timed(lambda: sample(model, sched, shape, s, variant, seed=1, clip_denoised=clip))
                if metric == "sw2":
                    q = E.toy_quality(x, chunk=chunk, seed=2)
                    quality.append(f"{100 * q['sw2']:.2f} ± {100 * q['sw2_std']:.2f}")
                    floors[name] = f"{100 * q['floor']:.2f}"
                else:
                    quality.append(f"{digits_fid(x, test_x, classifier):.1f}")
                seconds.append(f"{sec:.1f}")
                print(name, vname, s, quality[-1], seconds[-1], flush=True)
            rows.append([name, vname] + quality + seconds)
    floors["digits, trained MLP"] = f"{digits_floor(n_dig):.1f}"
    note = (f"SW2 ×100 on {n_mix} points (mean ± std over chunks of {chunk} against fresh draws; data-vs-data floor "
            f"{floors.get('2-D mixture, exact denoiser')}); digits: Fréchet distance of {n_dig} samples to the "
            f"360 test images in the features of the fixed digits classifier (floor with {n_dig} training images: "
            f"{floors['digits, trained MLP']}). Leading spacing; CPU seconds of one thread for the whole sampling run. "
            f"Training: mixture {mix_model.seconds:.0f} s, digits {dig_model.seconds:.0f} s (CPU wall of the loop).")
    md = note + "\n\n" + _markdown_table(header, rows)
    print(md)
    if out_dir is not None:
        _write("ch08_ddim_table", md, header, rows, out_dir)

    # spacings
    sp_steps = (10, 20) if quick else (10, 20, 50)
    header_sp = ["model", "spacing"] + [f"S = {s}" for s in sp_steps]
    rows_sp = []
    for name, model, sched, shape, clip, metric in models:
        for spacing in ("leading", "trailing", "linspace"):
            vals = []
            for s in sp_steps:
                x = sample(model, sched, shape, s, 0.0, seed=1, clip_denoised=clip, spacing=spacing)
                if metric == "sw2":
                    q = E.toy_quality(x, chunk=chunk, seed=2)
                    vals.append(f"{100 * q['sw2']:.2f} ± {100 * q['sw2_std']:.2f}")
                else:
                    vals.append(f"{digits_fid(x, test_x, classifier):.1f}")
            rows_sp.append([name, spacing] + vals)
            print(name, spacing, vals, flush=True)
    md_sp = "η = 0; metrics as in the DDIM table.\n\n" + _markdown_table(header_sp, rows_sp)
    print(md_sp)
    if out_dir is not None:
        _write("ch08_ddim_spacings", md_sp, header_sp, rows_sp, out_dir)

    # inversion
    inv_steps = (10, 20) if quick else (10, 20, 50, 100, 200, 500, 1000)
    x_mix = mixture.sample(200 if quick else 2000, generator=torch.Generator().manual_seed(4)).float()
    header_inv = ["model"] + [f"S = {s}" for s in inv_steps]
    rows_inv = []
    for name, model, sched, x0 in (("2-D mixture, exact denoiser", oracle, mix_model.sched, x_mix),
                                   ("digits, trained MLP", dig_model.model, dig_model.sched, test_x)):
        vals = []
        for s in inv_steps:
            x_T = ddim_invert(model, sched, x0, steps=s, progress=False)
            rec = ddim_sample(model, sched, tuple(x0.shape), steps=s, eta=0.0, noise=x_T, clip_denoised=False,
                              progress=False)
            vals.append(f"{((rec - x0) ** 2).mean().item():.2e}")
        rows_inv.append([name] + vals)
        print(name, vals, flush=True)
    md_inv = ("Per-dimension mean squared error of x_0 → x_T → x_0 with η = 0, leading spacing, no clipping "
              f"({x_mix.shape[0]} mixture points, the 360 digits of the test split).\n\n" + _markdown_table(header_inv, rows_inv))
    print(md_inv)
    if out_dir is not None:
        _write("ch08_inversion", md_inv, header_inv, rows_inv, out_dir)


# ---------------------------------------------------------------------------------------------
# chapter 09


def guidance_part(quick: bool, out_dir: Path | None):
    per_class = 5 if quick else 50
    labels = torch.arange(10).repeat_interleave(per_class)
    n = labels.shape[0]
    cond = E.train_digits_model(steps=50 if quick else 4000, num_classes=10, p_uncond=P_UNCOND)
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    torch.manual_seed(0)
    clf = NoisyClassifier()
    clf_res = train_noisy_classifier(clf, cond.sched, train_x, train_y, steps=50 if quick else 3000, seed=0)
    classifier, clf_acc = get_digits_classifier()
    ref_div = within_class_distance(test_x, test_y)
    samplers = [("DDIM, 50 steps, η = 0", "ddim")] if quick else [("DDPM, 1000 steps", "ddpm"),
                                                                   ("DDIM, 50 steps, η = 0", "ddim")]
    methods = [("classifier-free", "w", w) for w in ((-1.0, 0.0, 2.0) if quick else CFG_WEIGHTS)]
    methods += [("classifier", "s", s) for s in ((0.0, 4.0) if quick else CLF_SCALES)]
    header = ["guidance", "scale", "sampler", "accuracy", "confidence", "within-class distance", "Fréchet distance",
              "CPU s"]
    rows = []
    for method, sym, scale in methods:
        if method == "classifier-free":
            guided = ClassifierFreeGuidance(cond.model, scale)
        else:
            guided = ClassifierGuidance(cond.model, clf, cond.sched, scale)
        for sname, kind in samplers:
            gen = torch.Generator().manual_seed(5)
            if kind == "ddpm":
                fn = lambda: p_sample_loop(guided, cond.sched, (n, 1, 8, 8), y=labels, generator=gen,  # noqa: E731
                                           progress=False)
            else:
                fn = lambda: ddim_sample(guided, cond.sched, (n, 1, 8, 8), steps=50, eta=0.0, y=labels,  # noqa: E731
                                         generator=gen, progress=False)
            x, sec = timed(fn)
            row = [method, f"{sym} = {scale:g}", sname, f"{classifier_accuracy(x, labels, classifier):.3f}",
                   f"{mean_confidence(x, classifier):.3f}", f"{within_class_distance(x, labels):.2f}",
                   f"{digits_fid(x, test_x, classifier):.1f}", f"{sec:.0f}"]
            rows.append(row)
            print(row, flush=True)
    floor = digits_floor(n)
    note = (f"{n} samples ({per_class} per class) from a class-conditional digits MLP trained with label dropout "
            f"p_uncond = {P_UNCOND} ({cond.seconds:.0f} s); the noise-aware classifier of chapter 09 trained for "
            f"{clf_res.meta['steps']} steps ({clf_res.seconds:.0f} s). Accuracy and confidence under the fixed digits "
            f"classifier (test accuracy {clf_acc:.3f}); within-class distance of the test split: {ref_div:.2f}; "
            f"Fréchet distance of {n} training images to the test split: {floor:.1f}. w = -1 is the unconditional "
            f"model, w = 0 the conditional one; s = 0 is the unconditional model.")
    md = note + "\n\n" + _markdown_table(header, rows)
    print(md)
    if out_dir is not None:
        _write("ch09_guidance", md, header, rows, out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("ddim", "guidance", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = None if args.quick else RESULTS
    if args.part in ("ddim", "all"):
        ddim_part(args.quick, out_dir)
    if args.part in ("guidance", "all"):
        guidance_part(args.quick, out_dir)


if __name__ == "__main__":
    main()
