"""Training: Algorithm 3 of the source (000) with the usual engineering around it (chapter 05).

:func:`train` repeats: draw a batch x_0 from the data (with replacement), t ~ U{0..T-1}, ε ~ N(0, I),
take a gradient step on :func:`ddpm_lib.losses.p_losses` (‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖² for
``objective="pred_noise"``), with AdamW, gradient-norm clipping and an exponential moving average of
the weights (:class:`EMA`), which is what one samples from.  For classifier-free guidance (chapter 09)
the labels are replaced by the null label with probability ``p_uncond`` (:func:`drop_labels`).

Every random draw (batch indices, t, ε, label dropout, dropout inside the model) comes from ``seed``,
so a run is reproducible: same seed, same initial weights → the same loss history.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from ._checks import OBJECTIVES, check_choice, check_int, check_positive, check_probability, check_seed
from .losses import p_losses

__all__ = ["EMA", "TrainResult", "LR_SCHEDULES", "drop_labels", "lr_factor", "train", "loss_by_timestep_band",
           "save_checkpoint", "load_checkpoint"]

LR_SCHEDULES = ("constant", "cosine")


class EMA:
    """Exponential moving average of a model's weights (chapter 05, eq. ``ema``).

    ``ema.model`` is a frozen copy of the model in eval mode.  Each :meth:`update` does, for every
    floating-point parameter and buffer, θ̄ ← d θ̄ + (1 - d) θ with d = :meth:`current_decay`; other
    buffers (integers) are copied.  With ``warmup=False`` d is ``decay``; with ``warmup=True`` it is
    diffusers' ``EMAModel`` schedule d_n = min(decay, (1 + s)/(10 + s)) with s = n - 1 at the n-th
    update (d_1 = 0: the first update copies the weights), so that short CPU runs are not dominated
    by the random initial weights (with d = 0.999 their weight is still e^-1 after 1000 steps).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.decay = check_probability("decay", decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        step = self.num_updates  # = (n - 1) for the n-th update
        if step <= 0:
            return 0.0
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̄ ← d θ̄ + (1 - d) θ for every parameter and floating-point buffer of ``model``."""
        d = self.current_decay()
        shadow = self.model.state_dict()
        current = model.state_dict()
        if shadow.keys() != current.keys():
            raise ValueError("model does not have the same parameters as the averaged model")
        averaged, latest = [], []
        for name, value in current.items():
            s = shadow[name]
            if s.is_floating_point():
                averaged.append(s)
                latest.append(value.detach().to(s.dtype))
            else:
                s.copy_(value)
        if averaged:
            # θ̄ + (1 - d)(θ - θ̄) = d θ̄ + (1 - d) θ, all tensors in one call (a Python loop costs more than the math)
            torch._foreach_lerp_(averaged, latest, 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])


def drop_labels(y: torch.Tensor, p_uncond: float, null_label: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label by ``null_label`` independently with probability ``p_uncond`` (chapter 09).

    This is the label dropout of classifier-free guidance (Ho & Salimans 2022, Algorithm 1): one
    network learns both ε(x_t, t, y) and the unconditional ε(x_t, t, ∅).  Returns a new tensor.
    """
    check_probability("p_uncond", p_uncond)
    mask = torch.rand(y.shape, generator=generator, dtype=torch.float64) < p_uncond
    return torch.where(mask.to(y.device), torch.full_like(y, null_label), y)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    - ``model``: the trained network (last weights); ``ema``: the :class:`EMA` (or None);
      ``ema_model``: the averaged network (``model`` when there is no EMA) — sample from this one;
    - ``loss_history``: float tensor (steps,), the batch loss at each step;
    - ``t_history``: long tensor (steps, batch_size), the timesteps drawn at each step, and
      ``example_losses``: float tensor (steps, batch_size), the loss of each example — together
      they give the loss per timestep band (chapter 05);
    - ``seconds``: wall time of the loop.
    """

    model: nn.Module
    ema: Optional[EMA]
    loss_history: torch.Tensor
    t_history: torch.Tensor
    example_losses: torch.Tensor
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def ema_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """The multiplier of the learning rate at optimizer step ``step`` (0-based) of ``steps`` (chapter 05).

    A linear warm-up over the first ``warmup_steps`` steps ((step + 1) / warmup_steps), then 1 (``"constant"``)
    or a half cosine from 1 down to 0 at the last step (``"cosine"``, Loshchilov & Hutter 2017).
    """
    check_choice("lr_schedule", schedule, LR_SCHEDULES)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


def train(
    model: nn.Module,
    sched,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    lr_schedule: str = "constant",
    lr_schedule_steps: Optional[int] = None,
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    objective: str = "pred_noise",
    loss_weighting: Optional[str] = None,
    learned_variance: bool = False,
    vlb_weight: float = 1e-3,
    num_bins: int = 256,
    ema_decay: Optional[float] = 0.999,
    ema_warmup: bool = True,
    grad_clip: Optional[float] = 1.0,
    labels: Optional[torch.Tensor] = None,
    p_uncond: float = 0.0,
    null_label: Optional[int] = None,
    mixed_precision: bool = False,
    seed: int = 0,
    progress: bool = True,
    device="cpu",
    log_every: int = 50,
    callback: Optional[Callable[[int, nn.Module, Optional[EMA]], None]] = None,
    callback_every: int = 0,
    loss_fn: Optional[Callable] = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with Algorithm 3 (source 000; chapter 05, eq. ``l-simple``).

    ``data``: tensor of training examples (N, ...); each step draws ``batch_size`` of them with
    replacement.  ``labels`` (N,) long, optional: the class of each example, passed to the model as
    ``y``; with ``p_uncond > 0`` each label is replaced by the null label (``model.null_label``, or
    ``null_label``) with that probability.  The loss is ``p_losses(model, sched, x_0, t, ε,
    objective, loss_weighting, y)`` (with ``learned_variance``, the hybrid loss of a network that also predicts its
    variance, ``vlb_weight`` λ and ``num_bins`` grey levels for the decoder term; chapter 07); the optimiser is AdamW(lr, weight_decay) (the default lr 2e-4 is
    Ho et al.'s; the short CPU runs of chapter 05 train faster with 1e-3 to 2e-3), its learning rate multiplied by
    :func:`lr_factor` (``lr_schedule``, ``warmup_steps``, over ``lr_schedule_steps`` steps, default ``steps``: a
    shorter run then follows the start of a longer run's schedule); gradients are clipped to norm ``grad_clip`` (None: no
    clipping); ``ema_decay=None`` disables the EMA.  ``mixed_precision=True`` runs the network's forward pass
    under ``torch.autocast`` in bfloat16 (the weights, gradients, optimizer and loss stay float32); on CPUs with
    bfloat16 matrix units it is about twice as fast, at the price of results that depend on the hardware in the
    last bits.

    All randomness comes from ``seed`` (a CPU ``torch.Generator`` for the batch indices, t, ε and
    label dropout; the global RNG, forked and restored, for dropout layers), so two calls with the
    same seed and the same initial weights give identical loss histories.  A tqdm bar shows the loss
    averaged over the last ``log_every`` steps (``progress=False`` turns it off).  ``callback(step, model,
    ema)`` is called after every ``callback_every`` optimizer steps (``step`` counts the steps done), e.g. to
    save checkpoints of a long run.  ``loss_fn(model, x_start, y, generator)``, when given, replaces the
    diffusion loss: it returns the per-example losses (B,) of the batch and draws its own randomness from
    ``generator`` (chapter 11 trains flow matching this way); ``sched`` is then unused and ``t_history`` holds -1.
    The model is moved to ``device`` and left in train mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] == 0:
        raise ValueError("data must be a tensor of training examples of shape (N, ...) with N >= 1")
    steps = check_int("steps", steps)
    batch_size = check_int("batch_size", batch_size)
    log_every = check_int("log_every", log_every)
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    lr_schedule_steps = steps if lr_schedule_steps is None else check_int("lr_schedule_steps", lr_schedule_steps)
    callback_every = check_int("callback_every", callback_every, minimum=0)
    seed = check_seed(seed)
    check_positive("lr", lr)
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    check_choice("objective", objective, OBJECTIVES)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (model, x_start, y, generator) or None, got {type(loss_fn).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (step, model, ema) or None, got {type(callback).__name__}")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (data.shape[0],):
            raise ValueError(f"labels must be a tensor of shape ({data.shape[0]},), one label per example")
        if labels.is_floating_point():
            raise TypeError(f"labels must be integers (torch.long), got dtype {labels.dtype}")
    check_probability("p_uncond", p_uncond)
    if p_uncond > 0:
        if labels is None:
            raise ValueError("p_uncond > 0 needs labels (label dropout is for class-conditional training)")
        if null_label is None:
            null_label = getattr(model, "null_label", None)
        if null_label is None:
            raise ValueError("p_uncond > 0 needs a null label: a model with .null_label, or null_label=...")

    device = torch.device(device)
    model.to(device)
    model.train()
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    data_dev = data.to(device=device, dtype=dtype)
    labels_dev = labels.to(device=device, dtype=torch.long) if labels is not None else None

    # foreach=True: one fused call per state tensor list instead of a Python loop over parameters (also on CPU)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    ema = EMA(model, ema_decay, warmup=ema_warmup) if ema_decay is not None else None
    gen = torch.Generator().manual_seed(seed)
    N = data.shape[0]
    loss_history = torch.empty(steps, dtype=torch.float32)
    t_history = torch.empty(steps, batch_size, dtype=torch.long)
    example_losses = torch.empty(steps, batch_size, dtype=torch.float32)
    scheduled = lr_schedule != "constant" or warmup_steps > 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", leave=False)
    fork_devices = [device] if device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        for step in range(steps):
            if scheduled:
                for group in optimizer.param_groups:
                    group["lr"] = lr * lr_factor(step, lr_schedule_steps, lr_schedule, warmup_steps)
            idx = torch.randint(0, N, (batch_size,), generator=gen)
            if loss_fn is None:
                t = torch.randint(0, sched.T, (batch_size,), generator=gen)
                noise = torch.randn((batch_size,) + tuple(data.shape[1:]), generator=gen, dtype=torch.float32)
            else:
                t = torch.full((batch_size,), -1, dtype=torch.long)
            x_start = data_dev[idx.to(device)]
            y = None
            if labels_dev is not None:
                y = labels_dev[idx.to(device)]
                if p_uncond > 0:
                    y = drop_labels(y, p_uncond, null_label, generator=gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision):
                if loss_fn is None:
                    losses = p_losses(model, sched, x_start, t.to(device), noise=noise.to(device=device, dtype=dtype),
                                      objective=objective, loss_weighting=loss_weighting, y=y,
                                      learned_variance=learned_variance, vlb_weight=vlb_weight, num_bins=num_bins,
                                      reduction="none")
                else:
                    losses = loss_fn(model, x_start, y, gen)
            losses = losses.float()
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            loss_history[step] = loss.detach().float().cpu()
            t_history[step] = t
            example_losses[step] = losses.detach().float().cpu()
            if bar is not None:
                bar.update(1)
                if (step + 1) % log_every == 0 or step + 1 == steps:
                    bar.set_postfix(loss=f"{loss_history[max(0, step + 1 - log_every): step + 1].mean().item():.4f}")
            if callback is not None and callback_every and (step + 1) % callback_every == 0:
                callback(step + 1, model, ema)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    meta = {"steps": steps, "batch_size": batch_size, "lr": lr, "objective": objective, "seed": seed}
    return TrainResult(model, ema, loss_history, t_history, example_losses, seconds, meta)


def loss_by_timestep_band(result: TrainResult, T: int, num_bands: int = 10, last: Optional[int] = None):
    """Mean training loss per band of timesteps (chapter 05): returns ``(edges, losses)``.

    The T timesteps are cut into ``num_bands`` equal bands (``edges`` has num_bands + 1 entries, band j is
    edges[j] <= t < edges[j+1]); ``losses[j]`` is the mean per-example loss over the examples of the last
    ``last`` training steps (default: all) whose t fell in band j (NaN if none).
    """
    T = check_int("T", T)
    num_bands = check_int("num_bands", num_bands)
    t = result.t_history
    losses = result.example_losses
    if last is not None:
        last = check_int("last", last)
        t, losses = t[-last:], losses[-last:]
    edges = torch.linspace(0, T, num_bands + 1).round().long()
    band = torch.bucketize(t.flatten(), edges[1:-1], right=True)
    sums = torch.zeros(num_bands, dtype=torch.float64).scatter_add_(0, band, losses.flatten().double())
    counts = torch.zeros(num_bands, dtype=torch.float64).scatter_add_(0, band, torch.ones_like(sums[band]))
    return edges, sums / counts


_ALLOWED_META = (bool, int, float, str, type(None), torch.Tensor)


def _check_meta(value, path="meta"):
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path} keys must be strings, got {k!r}")
            _check_meta(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_meta(v, f"{path}[{i}]")
    elif not isinstance(value, _ALLOWED_META):
        raise TypeError(
            f"{path} must hold only numbers, strings, None, tensors, lists, tuples and dicts "
            f"(what torch.load(weights_only=True) can read back), got {type(value).__name__}"
        )


def save_checkpoint(path, model: nn.Module, ema: Optional[EMA] = None, **meta) -> None:
    """Save the weights of ``model`` (and of the ``ema``) with free-form metadata (``meta``: numbers,
    strings, tensors, lists, dicts — what ``torch.load(weights_only=True)`` accepts)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if ema is not None and not isinstance(ema, EMA):
        raise TypeError(f"ema must be an EMA or None, got {type(ema).__name__}")
    _check_meta(meta)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "meta": meta}, path)


def load_checkpoint(path, model: nn.Module, ema: Optional[EMA] = None, map_location="cpu") -> dict:
    """Load weights saved by :func:`save_checkpoint` into ``model`` (and ``ema``); returns the metadata.

    Uses ``torch.load(weights_only=True)``: a checkpoint cannot run code when it is opened.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint")
    model.load_state_dict(state["model"])
    if ema is not None:
        if state.get("ema") is None:
            raise ValueError(f"{path} holds no EMA weights, but ema was given")
        ema.load_state_dict(state["ema"])
    return state.get("meta", {})
