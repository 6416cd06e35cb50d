"""Chapter 10's measurements: the shipped Fashion-MNIST UNet against the data floor, its samplers, guidance,
likelihood, and its quality along the training run.

Everything is measured in the features of the fixed Fashion-MNIST classifier
(``ddpm_lib.pretrained.load_fashion_classifier``), against the 10 000 images of the **test split**, beside the floor:
the same Fréchet distance for the same number of *training* images (real garments score no better). Spreads are the
standard deviation over sampling seeds (or over floor draws).

Tables written to ``book/results/`` (markdown, and CSV beside each):

- ``ch10_quality``: DDIM with S = 10, 20, 50, 100 (η = 0) and DDPM with all 1000 steps, unconditional through the
  null label: Fréchet distance and its ratio to the floor, copies of training images, classes covered, mean
  classifier confidence, CPU time;
- ``ch10_guidance``: classifier-free guidance w = 0 … 4 with DDIM-50, per class: accuracy of the intended class,
  within-class distance (diversity), confidence, Fréchet distance;
- ``ch10_curve``: the EMA checkpoints saved along the training run (``benchmarks/out/fashion_mnist``), DDIM-50
  Fréchet ratio against training time;
- ``ch10_likelihood``: the variational bound in bits/dim on test images (256 grey levels), its terms, beside the
  per-pixel categorical and the uniform baselines.

Run: ``python benchmarks/bench_fashion_mnist.py [--part quality guidance curve likelihood] [--quick]``
(``--quick``: tiny sizes, writes nothing). One CPU thread.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from _common import RESULTS, ROOT, mean_std, pm  # first: puts the repository on sys.path
from ddpm_lib import ClassifierFreeGuidance, ddim_sample, p_sample_loop, vlb_bits_per_dim  # noqa: E402
from ddpm_lib.classifiers import (  # noqa: E402
    class_histogram,
    classifier_accuracy,
    classifier_fid,
    mean_confidence,
)
from ddpm_lib.data import FASHION_MNIST_CLASSES, load_fashion_mnist  # noqa: E402
from ddpm_lib.evaluation import markdown_table, within_class_distance, write_results  # noqa: E402
from ddpm_lib.likelihood import categorical_bits_per_dim, uniform_bits_per_dim  # noqa: E402
from ddpm_lib.metrics import FloorEstimate, memorization_fraction  # noqa: E402
from ddpm_lib.pretrained import build_unet, load, load_fashion_classifier  # noqa: E402
from ddpm_lib.runtime import mixed_precision  # noqa: E402

CHECKPOINTS = ROOT / "benchmarks" / "out" / "fashion_mnist"






class Data:
    """The splits, the classifier and the floors (cached per sample size)."""

    def __init__(self, floor_repeats: int):
        self.train_x, self.train_y = load_fashion_mnist("train")
        self.test_x, self.test_y = load_fashion_mnist("test")
        self.classifier, self.accuracy = load_fashion_classifier()
        self.floor_repeats = floor_repeats
        self._floors = {}

    def floor(self, n: int) -> FloorEstimate:
        """Fréchet distance of n training images (without replacement) to the test split, over repeats."""
        if n not in self._floors:
            gen = torch.Generator().manual_seed(0)
            values = [classifier_fid(self.train_x[torch.randperm(self.train_x.shape[0], generator=gen)[:n]],
                                     self.test_x, self.classifier) for _ in range(self.floor_repeats)]
            self._floors[n] = FloorEstimate(*mean_std(values), tuple(values))
        return self._floors[n]

    def fd(self, samples) -> float:
        return classifier_fid(samples, self.test_x, self.classifier)


def sample(model, sched, n, *, sampler, steps, seed, y=None, batch=500, bf16=True):
    """n samples in batches (the same seed gives the same samples), DDIM (η = 0) or DDPM, clipped x̂_0, under bfloat16
    autocast where the CPU computes it natively (``ddpm_lib.runtime.mixed_precision``) unless ``bf16=False``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with mixed_precision("cpu", enabled=None if bf16 else False):
        for start in range(0, n, batch):
            k = min(batch, n - start)
            yk = None if y is None else y[start:start + k]
            if sampler == "ddim":
                out.append(ddim_sample(model, sched, (k, 1, 28, 28), steps=steps, eta=0.0, y=yk, generator=gen,
                                       progress=False))
            else:
                out.append(p_sample_loop(model, sched, (k, 1, 28, 28), y=yk, generator=gen, progress=False))
    return torch.cat(out).float()


# (sampler, steps, seeds, samples): DDPM's 1000 steps cost 20 DDIM-50 runs, so it gets 200 samples and its own floor
# and DDIM-50 is repeated at 200 samples to compare the two at the same size
SAMPLERS = (("DDIM", 10, 2, 1000), ("DDIM", 20, 2, 1000), ("DDIM", 50, 2, 1000), ("DDIM", 100, 1, 1000),
            ("DDIM", 50, 1, 200), ("DDPM", 1000, 1, 200))


def quality_part(pre, data, quick):
    n = 40 if quick else 1000
    samplers = (("DDIM", 10, 2, 40), ("DDPM", 1000, 1, 4)) if quick else SAMPLERS
    floor = data.floor(n)
    rows = []
    for name, steps, runs, n_run in samplers:
        run_floor = data.floor(n_run)
        fds, copies, covered, conf, secs = [], [], [], [], []
        for seed in range(runs):
            start = time.process_time()
            x = sample(pre.model, pre.sched, n_run, sampler=name.lower(), steps=steps, seed=seed)
            secs.append(time.process_time() - start)
            fds.append(data.fd(x))
            copies.append(memorization_fraction(x, data.train_x, data.test_x[:2000])[0])
            covered.append(int((class_histogram(x, data.classifier) > 0).sum()))
            conf.append(mean_confidence(x, data.classifier))
        ratio = [f / run_floor.mean for f in fds]
        rows.append([f"{name}, S = {steps}", n_run, runs, pm(fds, 2), f"{run_floor.mean:.2f} ± {run_floor.std:.2f}",
                     pm(ratio, 2),
                     f"{100 * max(copies):.1f}", min(covered), pm(conf, 3), f"{sum(secs) / len(secs):.0f}"])
        print(rows[-1], flush=True)
    rows += precision_rows(pre, data, 40 if quick else 300)
    rows += calibration_rows(data, n, floor, quick)
    header = ["sampler", "samples", "seeds", "Fréchet distance", "floor (train vs test)", "ratio",
              "copies % (max)", "classes covered (min)", "confidence", "CPU s per run"]
    md = (f"Fashion-MNIST UNet (``ddpm_lib.pretrained.load('fashion_mnist')``), unconditional through the null label, "
          f"η = 0 for DDIM, clipped x̂₀, sampled under bfloat16 autocast (the two rows below them compare float32). "
          f"Fréchet distance in the fixed classifier's features (test accuracy {data.accuracy:.3f}) to the 10 000 "
          f"test images; floor: as many training images as samples against the same test images "
          f"({data.floor_repeats} draws, "
          f"mean ± std). Spreads: std over the sampling seeds. Copies: samples closer to a training image than half "
          f"the median test-to-train distance.\n\n" + markdown_table(header, rows))
    return "ch10_quality", md, header, rows


def precision_rows(pre, data, n):
    """DDIM-50 from the same seed in float32 and in bfloat16: what sampling in half precision costs."""
    rows = []
    floor = data.floor(n)
    for bf16 in (False, True):
        start = time.process_time()
        x = sample(pre.model, pre.sched, n, sampler="ddim", steps=50, seed=0, bf16=bf16)
        secs = time.process_time() - start
        fd = data.fd(x)
        rows.append([f"DDIM, S = 50, {'bfloat16' if bf16 else 'float32'}, seed 0", n, 1, f"{fd:.2f}",
                     f"{floor.mean:.2f} ± {floor.std:.2f}", f"{fd / floor.mean:.2f}", "", "",
                     f"{mean_confidence(x, data.classifier):.3f}", f"{secs:.0f}"])
        print(rows[-1], flush=True)
    return rows


def calibration_rows(data, n, floor, quick):
    """What the metric says of damaged real images: n training images with Gaussian noise, blurred, and samples of a
    pixel-wise Gaussian fit (the scale the issue's independent extractor was described with)."""
    gen = torch.Generator().manual_seed(1)
    real = data.train_x[torch.randperm(data.train_x.shape[0], generator=gen)[:n]]
    mean, std = data.train_x.mean(0), data.train_x.std(0)
    damaged = {
        "training images + N(0, 0.1²) noise": (real + 0.1 * torch.randn(real.shape, generator=gen)).clamp(-1, 1),
        "training images + N(0, 0.2²) noise": (real + 0.2 * torch.randn(real.shape, generator=gen)).clamp(-1, 1),
        "training images, 3×3 box blur": torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1,
                                                                         count_include_pad=False),
        "pixel-wise Gaussian fit": (mean + std * torch.randn(real.shape, generator=gen)).clamp(-1, 1),
    }
    rows = []
    for name, x in damaged.items():
        fd = data.fd(x)
        rows.append([f"(reference) {name}", n, 1, f"{fd:.2f}", f"{floor.mean:.2f} ± {floor.std:.2f}",
                     f"{fd / floor.mean:.1f}", "", "", f"{mean_confidence(x, data.classifier):.3f}", ""])
    return rows


def guidance_part(pre, data, quick):
    per_class = 4 if quick else 30
    weights = (0.0, 2.0) if quick else (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
    labels = torch.arange(10).repeat_interleave(per_class)
    rows = []
    test_div = within_class_distance(data.test_x[:2000], data.test_y[:2000])
    for w in weights:
        guided = ClassifierFreeGuidance(pre.model, w)
        x = sample(guided, pre.sched, labels.shape[0], sampler="ddim", steps=50, seed=0, y=labels)
        pred = data.classifier(x).argmax(1)
        per = [(pred[labels == c] == c).double().mean().item() for c in range(10)]
        rows.append([f"w = {w:g}", f"{classifier_accuracy(x, labels, data.classifier):.3f}",
                     f"{within_class_distance(x, labels):.2f}", f"{mean_confidence(x, data.classifier):.3f}",
                     f"{data.fd(x):.2f}"] + [f"{p:.2f}" for p in per])
        print(rows[-1], flush=True)
    header = ["guidance", "accuracy", "within-class distance", "confidence", "Fréchet distance"] + \
        [c.split("/")[0] for c in FASHION_MNIST_CLASSES]
    floor = data.floor(labels.shape[0])
    md = (f"Classifier-free guidance (chapter 9) with the shipped model, DDIM-50, {per_class} samples per class. "
          f"Accuracy: the fixed classifier's prediction equals the intended class; within-class distance: mean "
          f"distance between two samples of the same class (test images: {test_div:.2f}); Fréchet distance of the "
          f"{labels.shape[0]} samples to the test split (floor for {labels.shape[0]} training images: "
          f"{floor.mean:.2f} ± {floor.std:.2f}). Last columns: accuracy per class.\n\n" + markdown_table(header, rows))
    return "ch10_guidance", md, header, rows


def curve_part(pre, data, quick):
    files = sorted(CHECKPOINTS.glob("step_*.pt"))
    if not files:
        raise SystemExit(f"no checkpoints in {CHECKPOINTS}: run benchmarks/train_fashion_mnist.py first")
    n = 40 if quick else 500
    floor = data.floor(n)
    total_steps = pre.manifest["steps"]
    minutes = pre.manifest["train_seconds"] / 60
    rows = []
    for path in (files[:1] if quick else files):
        step = int(path.stem.split("_")[1])
        model = build_unet(pre.config)
        model.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
        model.eval().requires_grad_(False)
        x = sample(model, pre.sched, n, sampler="ddim", steps=50, seed=0)
        fd = data.fd(x)
        rows.append([step, f"{minutes * step / total_steps:.0f}", f"{fd:.2f}", f"{fd / floor.mean:.2f}"])
        print(rows[-1], flush=True)
    header = ["training step", "minutes (2 cores)", "Fréchet distance", "ratio to floor"]
    md = (f"Quality along the training run: the EMA weights saved every {total_steps // len(files)} steps, DDIM-50, "
          f"{n} unconditional samples, one seed; floor for {n} training images {floor.mean:.2f} ± {floor.std:.2f}. "
          f"Minutes are the run's wall time ({minutes:.0f} min in all) in proportion to the steps.\n\n"
          + markdown_table(header, rows))
    return "ch10_curve", md, header, rows


def likelihood_part(pre, data, quick):
    n = 8 if quick else 50
    x = data.test_x[:n]
    gen = torch.Generator().manual_seed(0)
    start = time.process_time()
    bpd = vlb_bits_per_dim(pre.model, pre.sched, x, objective=pre.objective, variance="fixed_large",
                           clip_denoised=False, num_bins=256, generator=gen, progress=False)
    secs = time.process_time() - start
    se = lambda v: float(v.std() / math.sqrt(v.numel()))  # noqa: E731
    cat = categorical_bits_per_dim(data.train_x, data.test_x, 256)
    rows = [["VLB, σ² = β_t", f"{float(bpd['total'].mean()):.3f} ± {se(bpd['total']):.3f}",
             f"{float(bpd['prior'].mean()):.1e}", f"{float(bpd['terms_sum'].mean()):.3f}",
             f"{float(bpd['decoder'].mean()):.3f}"],
            ["per-pixel categorical (256 levels, Laplace)", f"{cat:.3f}", "", "", ""],
            ["uniform over 256 levels", f"{uniform_bits_per_dim(256):.3f}", "", "", ""]]
    header = ["model", "bits/dim (test)", "L_T", "Σ L_{t-1}", "L_0"]
    md = (f"Bits per dimension on the first {n} test images (± standard error over images), all T = 1000 terms of "
          f"the bound evaluated exactly ({secs:.0f} s of CPU), 256 grey levels as in chapter 7.\n\n"
          + markdown_table(header, rows))
    return "ch10_likelihood", md, header, rows


PARTS = {"quality": quality_part, "guidance": guidance_part, "curve": curve_part, "likelihood": likelihood_part}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes; writes nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pre = load("fashion_mnist")
    data = Data(floor_repeats=2 if args.quick else 5)
    for part in args.part:
        start = time.perf_counter()
        name, md, header, rows = PARTS[part](pre, data, args.quick)
        print(f"--- {name} ({time.perf_counter() - start:.0f} s) ---\n{md}", flush=True)
        if not args.quick:
            write_results(RESULTS, name, md, header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
