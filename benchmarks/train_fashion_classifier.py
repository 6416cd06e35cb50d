"""Train the fixed Fashion-MNIST classifier that measures chapter 10's samples, and ship its weights.

The classifier is a measuring instrument (:class:`ddpm_lib.classifiers.FashionClassifier`, a small CNN): its
penultimate features define the Fréchet distance of ``book/results/ch10_*``, its predictions the class coverage, the
confidence and the guidance accuracy. It is trained once by this script, seeded and on one CPU thread, and its
weights are committed with a manifest (``ddpm_lib/weights/fashion_classifier.{pt,json}``: config, seed, steps, test
accuracy, sha256, the command), so that measurements never retrain it.

Run: ``python benchmarks/train_fashion_classifier.py`` (a few minutes on one CPU core; needs Debian's
``dataset-fashion-mnist``). ``--quick`` trains a few steps and writes to a temporary folder instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib.classifiers import FashionClassifier, classifier_accuracy, train_classifier  # noqa: E402
from ddpm_lib.data import load_fashion_mnist  # noqa: E402
from ddpm_lib.pretrained import save_weights  # noqa: E402

CONFIG = dict(width=16, steps=3000, batch_size=128, lr=2e-3, weight_decay=1e-2, noise_std=0.1, seed=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps, written to a temporary folder")
    args = parser.parse_args(argv)
    config = dict(CONFIG, steps=20) if args.quick else CONFIG
    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = FashionClassifier(width=config["width"])
    start = time.perf_counter()
    train_classifier(model, train_x, train_y, seed=config["seed"], steps=config["steps"],
                     batch_size=config["batch_size"], lr=config["lr"], weight_decay=config["weight_decay"],
                     noise_std=config["noise_std"], threads=1, progress=True)
    seconds = time.perf_counter() - start
    accuracy = classifier_accuracy(test_x, test_y, model)
    folder = Path(tempfile.mkdtemp()) if args.quick else None
    info = dict(name="fashion_classifier", config=config, seed=config["seed"], steps=config["steps"],
                test_accuracy=accuracy, train_seconds=round(seconds, 1), threads=1,
                command="python benchmarks/train_fashion_classifier.py")
    path = save_weights("fashion_classifier", model, info, folder=folder)
    print(f"test accuracy {accuracy:.4f} after {config['steps']} steps ({seconds:.0f} s); weights in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
