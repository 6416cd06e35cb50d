"""DDIM quality against the number of steps, DDIM inversion, and guidance sweeps (chapters 08 and 09).

Every model is trained here, from scratch, by the shared recipes of :mod:`ddpm_lib.recipes` with their default
budgets and architectures (the mixture MLP; the digits UNet), on Ho et al.'s T = 1000 schedule for the digits too
(``T=1000``: DDIM is about sampling with S << T; the recipe's default T = 100 is chosen for chapter 07's likelihood).
One CPU thread; times are CPU seconds of this process.

Tables written to ``book/results/`` (markdown, and CSV beside each):

- ``ch08_ddim_table``: the DDIM paper's Table 1 on our data. Sample quality at S = 10, 20, 50, 100, 1000 steps
  (leading spacing, the paper's "linear" subsequence) for η = 0, 0.5, 1 and for σ̂ (σ_t² = 1 - ᾱ_t/ᾱ_prev, the β of
  the skipped step: the DDPM "large variance" row, written η̂), on the 2-D mixture (with the exact denoiser and
  with the trained MLP: SW2 ×100 against a fresh draw, and the off-mode percentage, samples farther than 4 standard
  deviations from every mean) and on the digits (classifier-feature Fréchet distance of 500 samples to the test
  split). CPU seconds of each sampling run beside it.
- ``ch08_ddim_spacings``: leading / trailing / linspace at S = 10, 20, 50 with η = 0.
- ``ch08_inversion``: DDIM inversion x_0 → x_T → x_0 with η = 0; per-dimension MSE of the reconstruction against S
  (the paper's Table 2), for the exact mixture denoiser and the digits model.
- ``ch09_guidance``: classifier-free guidance (weight w) and classifier guidance (scale s) on a class-conditional
  digits model: accuracy of the samples under the fixed digits classifier, diversity (mean pairwise distance between
  samples of the same class), Fréchet distance to the test split, with DDIM (50 steps, η = 0) for every scale and
  with DDPM ancestral sampling (all T = 1000 steps) for two scales of each method.

Run: ``python benchmarks/bench_ddim_guidance.py [--part ddim|guidance|all] [--quick]`` (``--quick``: tiny budgets,
a smoke test that writes nothing).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from _common import RESULTS, publish, timed  # first: puts the repository on sys.path
from ddpm_lib import ClassifierFreeGuidance, ClassifierGuidance, ddim_invert, ddim_sample, p_sample_loop
from ddpm_lib import recipes as R
from ddpm_lib.classifiers import classifier_accuracy, classifier_fid, get_digits_classifier, mean_confidence
from ddpm_lib.data import MIXTURE, load_digits, make_gaussian_mixture
from ddpm_lib.evaluation import digits_floor, markdown_table, off_mode_fraction, within_class_distance
from ddpm_lib.exact import OracleDenoiser
from ddpm_lib.metrics import data_floor, sliced_wasserstein
from ddpm_lib.noisy_classifier import NoisyClassifier, train_noisy_classifier

STEPS = (10, 20, 50, 100, 1000)
# the samplers of the DDIM table: keyword arguments of ddim_sample
VARIANTS = (("η = 0", dict(eta=0.0)), ("η = 0.5", dict(eta=0.5)), ("η = 1", dict(eta=1.0)),
            ("η̂ (σ̂² = β of the skipped step)", dict(sigma_hat=True)))
CFG_WEIGHTS = (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
CLF_SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
P_UNCOND = 0.2
MIX_SEEDS = 3
MIX_TRAIN_STEPS = 3000  # the mixture MLP of the DDIM table (chapter 05's bar uses the recipe's default, 8000)


def sample(model, sched, shape, steps, variant: dict, *, seed, clip_denoised, spacing="leading"):
    """DDIM samples with the sampler ``variant`` (η, or the σ̂ row of chapter 08, eq. ``eq-sigma-hat``: the η = 1 mean
    plus noise of variance 1 - ᾱ_t/ᾱ_prev, none at the last step)."""
    return ddim_sample(model, sched, shape, steps=steps, spacing=spacing, generator=torch.Generator().manual_seed(seed),
                       clip_denoised=clip_denoised, progress=False, **variant)


def sw2(x, reference) -> float:
    """SW2 with 256 fixed projections (the same for every entry of the tables)."""
    return sliced_wasserstein(x, reference, n_projections=256, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# chapter 08


def ddim_part(quick: bool, out_dir: Path | None):
    steps_list = (10, 20) if quick else STEPS
    n_mix = 400 if quick else 4000
    n_dig = 100 if quick else 500
    mixture = make_gaussian_mixture(MIXTURE)
    (mix_model, mix_cpu) = timed(lambda: R.train_mixture_model(steps=50 if quick else MIX_TRAIN_STEPS, progress=False))
    (dig_model, dig_cpu) = timed(lambda: R.train_digits_model(steps=20 if quick else R.DIGITS_STEPS, T=1000,
                                                                progress=False))
    oracle = OracleDenoiser(mixture, mix_model.sched)
    models = [
        ("2-D mixture, exact denoiser", oracle, mix_model.sched, (n_mix, 2), False, "mix"),
        ("2-D mixture, trained MLP", mix_model.model, mix_model.sched, (n_mix, 2), False, "mix"),
        ("digits, trained UNet", dig_model.model, dig_model.sched, (n_dig, 1, 8, 8), True, "fd"),
    ]
    classifier, _ = get_digits_classifier()
    test_x, _ = load_digits("test")
    reference = mixture.sample(n_mix, generator=torch.Generator().manual_seed(2))
    floor_gen = torch.Generator().manual_seed(10)
    floor_sw = data_floor(lambda k: mixture.sample(k, generator=floor_gen), n_mix, sw2, repeats=MIX_SEEDS)
    floor_off = 100 * off_mode_fraction(mixture.sample(n_mix, generator=torch.Generator().manual_seed(20)), mixture)
    fd_floor = digits_floor(n_dig, repeats=3, seed=0)

    def run(model, sched, shape, s, variant, clip, metric, spacing="leading"):
        """Quality string and CPU seconds; on the mixture, mean over MIX_SEEDS sampling seeds."""
        seeds = range(1, 1 + (MIX_SEEDS if metric == "mix" else 1))
        xs, secs = zip(*(timed(lambda: sample(model, sched, shape, s, variant, seed=seed, clip_denoised=clip,
                                                 spacing=spacing)) for seed in seeds))
        if metric == "mix":
            sw = sum(sw2(x, reference) for x in xs) / len(xs)
            off = 100 * sum(off_mode_fraction(x, mixture) for x in xs) / len(xs)
            return f"{100 * sw:.1f} / {off:.1f}", secs[0]
        return f"{classifier_fid(xs[0], test_x, classifier):.1f}", secs[0]

    header = ["model", "sampler"] + [f"S = {s}" for s in steps_list] + [f"CPU s, S = {s}" for s in steps_list]
    rows = []
    for name, model, sched, shape, clip, metric in models:
        for vname, variant in VARIANTS:
            vals, seconds = [], []
            for s in steps_list:
                val, sec = run(model, sched, shape, s, variant, clip, metric)
                vals.append(val)
                seconds.append(f"{sec:.1f}")
                print(name, vname, s, vals[-1], seconds[-1], flush=True)
            rows.append([name, vname] + vals + seconds)
    note = (f"Mixture: SW2 ×100 / off-mode % (samples farther than 4 standard deviations from every mean) of {n_mix} "
            f"samples against a fixed draw of the data, mean over {MIX_SEEDS} sampling seeds; floor, two fresh draws of the "
            f"data: SW2 ×100 = {100 * floor_sw.mean:.1f} ± {100 * floor_sw.std:.1f} (the ± is the noise of one SW2 "
            f"value), off-mode {floor_off:.2f} %. Digits: Fréchet distance of {n_dig} samples to the 360 test "
            f"digits in the features of the fixed digits classifier; floor ({n_dig} training digits) {fd_floor.mean:.1f} ± "
            f"{fd_floor.std:.1f}. Leading spacing. CPU seconds of one thread for one sampling run. Training: mixture MLP "
            f"{mix_model.config['steps']} steps ({mix_cpu:.0f} s), digits UNet {dig_model.config['steps']} steps "
            f"({dig_cpu:.0f} s of CPU).")
    publish(out_dir, "ch08_ddim_table", note + "\n\n" + markdown_table(header, rows), header, rows)

    # spacings
    sp_steps = (10, 20) if quick else (10, 20, 50)
    header_sp = ["model", "spacing"] + [f"S = {s}" for s in sp_steps]
    rows_sp = []
    for name, model, sched, shape, clip, metric in models:
        for spacing in ("leading", "trailing", "linspace"):
            vals = [run(model, sched, shape, s, dict(eta=0.0), clip, metric, spacing)[0] for s in sp_steps]
            rows_sp.append([name, spacing] + vals)
            print(name, spacing, vals, flush=True)
    publish(out_dir, "ch08_ddim_spacings", "η = 0; metrics and floors as in the DDIM table.\n\n"
            + markdown_table(header_sp, rows_sp), header_sp, rows_sp)

    # inversion
    inv_steps = (10, 20) if quick else (10, 20, 50, 100, 200, 500, 1000)
    x_mix = mixture.sample(200 if quick else 2000, generator=torch.Generator().manual_seed(5))
    x_dig = test_x[:20 if quick else 100]
    header_inv = ["model"] + [f"S = {s}" for s in inv_steps]
    rows_inv = []
    for name, model, sched, x0 in (("2-D mixture, exact denoiser", oracle, mix_model.sched, x_mix),
                                   ("2-D mixture, trained MLP", mix_model.model, mix_model.sched, x_mix),
                                   ("digits, trained UNet", dig_model.model, dig_model.sched, x_dig)):
        vals = []
        for s in inv_steps:
            x_T = ddim_invert(model, sched, x0, steps=s, progress=False)
            rec = ddim_sample(model, sched, tuple(x0.shape), steps=s, eta=0.0, x_T=x_T, clip_denoised=False,
                              progress=False)
            vals.append(f"{((rec - x0) ** 2).mean().item():.1e}")
        rows_inv.append([name] + vals)
        print(name, vals, flush=True)
    md_inv = ("Per-dimension mean squared error of x_0 → x_T → x_0 with η = 0, leading spacing, no clipping "
              f"({x_mix.shape[0]} mixture points, the first {x_dig.shape[0]} digits of the test split; the data "
              "lie in [-1.6, 1.6] and [-1, 1]).\n\n" + markdown_table(header_inv, rows_inv))
    publish(out_dir, "ch08_inversion", md_inv, header_inv, rows_inv)


# ---------------------------------------------------------------------------------------------
# chapter 09


def guidance_part(quick: bool, out_dir: Path | None):
    per_class = 5 if quick else 30
    labels = torch.arange(10).repeat_interleave(per_class)
    n = labels.shape[0]
    (cond, cond_cpu) = timed(lambda: R.train_digits_model(steps=20 if quick else R.DIGITS_STEPS, T=1000, num_classes=10,
                                                          p_uncond=P_UNCOND, progress=False))
    train_x, train_y = load_digits("train")
    test_x, test_y = load_digits("test")
    torch.manual_seed(0)
    clf = NoisyClassifier()
    clf_res = train_noisy_classifier(clf, cond.sched, train_x, train_y, steps=50 if quick else 3000, seed=0)
    classifier, clf_acc = get_digits_classifier()
    ref_div = within_class_distance(test_x, test_y)
    methods = [("classifier-free", "w", w) for w in ((-1.0, 0.0, 2.0) if quick else CFG_WEIGHTS)]
    methods += [("classifier", "s", s) for s in ((0.0, 4.0) if quick else CLF_SCALES)]
    ddpm_rows = {("classifier-free", 0.0), ("classifier-free", 2.0), ("classifier", 0.0), ("classifier", 8.0)}
    header = ["guidance", "scale", "sampler", "accuracy", "confidence", "within-class distance", "Fréchet distance",
              "CPU s"]
    rows = []
    for method, sym, scale in methods:
        if method == "classifier-free":
            guided = ClassifierFreeGuidance(cond.model, scale)
        else:
            guided = ClassifierGuidance(cond.model, clf, cond.sched, scale)
        samplers = [("DDIM, 50 steps, η = 0", "ddim")]
        if (method, scale) in ddpm_rows and not quick:
            samplers.append(("DDPM, 1000 steps", "ddpm"))
        for sname, kind in samplers:
            loop = p_sample_loop if kind == "ddpm" else functools.partial(ddim_sample, steps=50, eta=0.0)
            x, sec = timed(lambda: loop(guided, cond.sched, (n, 1, 8, 8), y=labels,  # noqa: B023
                                        generator=torch.Generator().manual_seed(5), progress=False))
            row = [method, f"{sym} = {scale:g}", sname, f"{classifier_accuracy(x, labels, classifier):.3f}",
                   f"{mean_confidence(x, classifier):.3f}", f"{within_class_distance(x, labels):.2f}",
                   f"{classifier_fid(x, test_x, classifier):.1f}", f"{sec:.0f}"]
            rows.append(row)
            print(row, flush=True)
    floor = digits_floor(n, repeats=3, seed=0)
    note = (f"{n} samples ({per_class} per class, the same noises for every row) from the class-conditional digits "
            f"UNet of the recipe, trained with label dropout p_uncond = {P_UNCOND} on the T = 1000 schedule "
            f"({cond_cpu:.0f} s of CPU); the noise-aware classifier of chapter 9 trained for {clf_res.meta['steps']} "
            f"steps ({clf_res.seconds:.0f} s). Accuracy and confidence under the fixed digits classifier (test accuracy "
            f"{clf_acc:.3f}); within-class distance of the test digits: {ref_div:.2f}; Fréchet distance of {n} "
            f"training digits to the test split (the floor): {floor.mean:.1f} ± {floor.std:.1f}. w = -1 and s = 0 are the "
            "unconditional model, w = 0 the conditional one.")
    publish(out_dir, "ch09_guidance", note + "\n\n" + markdown_table(header, rows), header, rows)


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
