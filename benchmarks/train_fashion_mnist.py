"""Train chapter 10's class-conditional Fashion-MNIST UNet on the CPU, and ship its weights.

One seeded command runs the recipe :func:`ddpm_lib.recipes.train_fashion_model` (its configuration is
:data:`ddpm_lib.recipes.FASHION_CONFIG`) and writes

- ``ddpm_lib/weights/fashion_mnist.pt``: the EMA weights in float16 (loaded by ``ddpm_lib.pretrained.load``);
- ``ddpm_lib/weights/fashion_mnist.json``: the manifest — config, seed, steps, the loss log (the first 50 losses
  exactly, then the mean of every 100 steps), wall time, threads, sha256 and this command;
- ``benchmarks/out/fashion_mnist/step_*.pt``: EMA checkpoints along the run (not committed), from which
  ``benchmarks/bench_fashion_mnist.py`` measures quality against training time.

Run: ``python benchmarks/train_fashion_mnist.py`` (about an hour on two CPU cores; needs Debian's
``dataset-fashion-mnist``). ``--quick`` runs a few steps and writes into a temporary folder. On a Colab GPU the same
recipe runs in minutes: ``train_fashion_model(dict(FASHION_CONFIG, mixed_precision=False), device="cuda")``, as
chapter 10 shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib.pretrained import save_weights  # noqa: E402
from ddpm_lib.recipes import FASHION_CONFIG, train_fashion_model  # noqa: E402

FIRST_LOSSES = 50  # logged exactly: tests/test_pretrained.py reruns them
LOG_EVERY = 100


def loss_log(losses: torch.Tensor) -> dict:
    """The manifest's loss log: the first FIRST_LOSSES losses, then the mean of every LOG_EVERY steps."""
    n = losses.numel() // LOG_EVERY * LOG_EVERY
    means = losses[:n].reshape(-1, LOG_EVERY).mean(1)
    return {"first": [float(v) for v in losses[:FIRST_LOSSES]], "every": LOG_EVERY,
            "mean": [round(float(v), 6) for v in means]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the two CPU cores)")
    parser.add_argument("--checkpoints", type=int, default=8, help="EMA checkpoints saved along the run")
    parser.add_argument("--quick", action="store_true", help="a few steps, written to a temporary folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    total = FASHION_CONFIG["steps"]
    steps = 2 * LOG_EVERY if args.quick else total
    folder = Path(tempfile.mkdtemp()) if args.quick else None
    ckpt_dir = (folder or ROOT / "benchmarks" / "out") / "fashion_mnist"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(step, model, ema):
        torch.save({k: v.half() for k, v in ema.model.state_dict().items()}, ckpt_dir / f"step_{step:06d}.pt")
        print(f"step {step}: checkpoint written", flush=True)

    trained = train_fashion_model(steps=steps, callback=save_checkpoint,
                                  callback_every=max(total // args.checkpoints, 1), progress=True)
    info = dict(name="fashion_mnist", config=FASHION_CONFIG, seed=FASHION_CONFIG["seed"], steps=steps,
                threads=args.threads, train_seconds=round(trained.seconds, 1),
                loss_log=loss_log(trained.result.loss_history),
                command="python benchmarks/train_fashion_mnist.py")
    path = save_weights("fashion_mnist", trained.model, info, half=True, folder=folder)
    print(f"{steps} steps in {trained.seconds / 60:.1f} min; weights in {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
