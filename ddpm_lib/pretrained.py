"""Weights that a chapter cannot train in three minutes, shipped with the package (chapter 10).

Each file in ``ddpm_lib/weights/`` comes with a manifest ``NAME.json``: the recipe (config), the seed, the number of
steps, the loss log, the sha256 of the weights file and the command that made them (a script in ``benchmarks/``).
The files ship in the wheel, so ``pip install`` from the repository (Colab) gets them too. They are read with
``torch.load(weights_only=True)``: opening them cannot run code.

- :func:`load` — a trained diffusion model: ``load("fashion_mnist")`` returns the class-conditional Fashion-MNIST
  UNet (EMA weights, eval mode; ``y=None`` is the null label) with its schedule and objective.
- :func:`load_fashion_classifier` — the fixed Fashion-MNIST classifier that measures chapter 10's samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._checks import check_choice
from .classifiers import FashionClassifier
from .models import UNet
from .schedules import NoiseSchedule

__all__ = ["WEIGHTS_DIR", "MODELS", "Pretrained", "manifest", "weights_path", "sha256", "save_weights", "load",
           "load_fashion_classifier", "build_unet", "make_pretrained_schedule"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The folder of the shipped weights and their manifests (inside the installed package)."""

MODELS = ("fashion_mnist",)
"""The diffusion models :func:`load` knows."""


def manifest(name: str) -> dict:
    """The manifest ``NAME.json`` of a shipped weights file (config, seed, steps, loss log, sha256, command)."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no manifest {path.name} in {WEIGHTS_DIR}; shipped: {known}")
    return json.loads(path.read_text(encoding="utf-8"))


def weights_path(name: str) -> Path:
    """The weights file named by the manifest of ``name``."""
    return WEIGHTS_DIR / manifest(name)["file"]


def sha256(path) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_weights(name: str, model: nn.Module, info: dict, *, half: bool = False, folder=None) -> Path:
    """Write ``model``'s state dict to ``NAME.pt`` (float16 with ``half``) and the manifest ``NAME.json``: ``info``
    (config, seed, steps, loss log, command, ...) plus the file name and its sha256. Used by the scripts in
    ``benchmarks/`` that make the shipped weights; ``folder`` defaults to :data:`WEIGHTS_DIR`."""
    folder = WEIGHTS_DIR if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    path = folder / f"{name}.pt"
    torch.save(state, path)
    record = dict(info, file=path.name, dtype="float16" if half else "float32", sha256=sha256(path))
    (folder / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def _state_dict(name: str) -> dict:
    """The float32 state dict of ``name``, after checking the file's sha256 against its manifest."""
    info = manifest(name)
    path = WEIGHTS_DIR / info["file"]
    digest = sha256(path)
    if digest != info["sha256"]:
        raise ValueError(f"{path} has sha256 {digest}, but its manifest says {info['sha256']}: the file is "
                         "damaged or was replaced without rerunning the command of the manifest")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def build_unet(config: dict) -> UNet:
    """The UNet of a recipe's ``config`` (keys ``base_channels``, ``channel_mults``, ``num_res_blocks``,
    ``attention``, ``num_classes``, ``dropout``)."""
    return UNet(in_channels=1, base_channels=config["base_channels"], channel_mults=tuple(config["channel_mults"]),
                num_res_blocks=config["num_res_blocks"], attention=config["attention"],
                num_classes=config["num_classes"], dropout=config.get("dropout", 0.0))


def make_pretrained_schedule(config: dict) -> NoiseSchedule:
    """The noise schedule of a recipe's ``config`` (keys ``schedule`` = "cosine" or "linear", ``T``)."""
    check_choice("schedule", config["schedule"], ("cosine", "linear"))
    return NoiseSchedule.cosine(config["T"]) if config["schedule"] == "cosine" else NoiseSchedule.linear(config["T"])


@dataclass
class Pretrained:
    """A shipped diffusion model: ``model`` (EMA weights, eval mode, gradients off), ``sched``, ``objective``,
    ``num_classes`` (the null label is ``model.null_label``; ``y=None`` means it), ``config`` (the recipe) and
    ``manifest`` (everything the manifest file says)."""

    model: nn.Module
    sched: NoiseSchedule
    objective: str
    num_classes: int
    config: dict
    manifest: dict


def load(name: str = "fashion_mnist", device="cpu") -> Pretrained:
    """Load a shipped diffusion model (chapter 10): ``load("fashion_mnist")``.

    The weights' sha256 is checked against the manifest; they are stored in float16 and returned as float32.
    """
    check_choice("name", name, MODELS)
    info = manifest(name)
    config = info["config"]
    model = build_unet(config)
    model.load_state_dict(_state_dict(name))
    model.eval().requires_grad_(False).to(device)
    return Pretrained(model=model, sched=make_pretrained_schedule(config), objective=config["objective"],
                      num_classes=config["num_classes"], config=config, manifest=info)


def load_fashion_classifier(device="cpu") -> tuple:
    """The fixed Fashion-MNIST classifier of chapter 10 and its test accuracy: ``(classifier, accuracy)``.

    A new module on every call (eval mode, gradients off), from the shipped weights ``fashion_classifier``.
    """
    info = manifest("fashion_classifier")
    classifier = FashionClassifier(width=info["config"]["width"])
    classifier.load_state_dict(_state_dict("fashion_classifier"))
    classifier.eval().requires_grad_(False).to(device)
    return classifier, info["test_accuracy"]
