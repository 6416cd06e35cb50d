"""Checks for the code exercises of chapter 05 (training: the loss of Algorithm 3 and the EMA of the weights).

Both checks run the reader's function in float64 against the library (:func:`ddpm_lib.p_losses` and
:class:`ddpm_lib.train.EMA`) and name the mistake when the answer reproduces a plausible slip.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..losses import p_losses
from ..schedules import NoiseSchedule
from ..train import EMA
from .ch01 import assert_close, call

__all__ = ["check_p_losses", "check_train_step_with_ema"]


class _FixedNet(nn.Module):
    """A deterministic stand-in for a network: nonlinear in x_t and dependent on t, for any shape (B, ...)."""

    def forward(self, x, t):
        c = torch.sin(0.01 * t.to(x.dtype) + 0.3).reshape(-1, *([1] * (x.ndim - 1)))
        return 0.6 * x + 0.3 * torch.tanh(2 * x) + c


def _slipped_loss(model, sched, x0, t, noise, objective, *, coef="sqrt", alphas="cumulative", target=None,
                  reduce="mean", reshape=True, v_sign=1):
    """The loss of Algorithm 3 with one of the slips the check recognises (all defaults: the correct loss)."""
    table = {"cumulative": sched.alphas_cumprod, "one-step": sched.alphas, "prev": sched.alphas_cumprod_prev}[alphas]
    ab = table[t].to(x0.dtype)
    if reshape:
        ab = ab.reshape(-1, *([1] * (x0.ndim - 1)))
    a, b = (ab.sqrt(), (1 - ab).sqrt()) if coef == "sqrt" else (ab, 1 - ab)
    x_t = a * x0 + b * noise
    out = model(x_t, t)
    if target is None:
        target = {"pred_noise": "eps", "pred_x0": "x0", "pred_v": "v"}[objective]
    abr = sched.alphas_cumprod[t].to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    y = {"eps": noise, "x0": x0, "v": v_sign * (abr.sqrt() * noise - (1 - abr).sqrt() * x0)}[target]
    per_pixel = (out - y) ** 2
    per_example = per_pixel.flatten(1).sum(1) if reduce == "sum" else per_pixel.flatten(1).mean(1)
    return per_example.mean()


def check_p_losses(fn) -> None:
    """Exercise ``ex-05-p-losses``: ``fn(model, sched, x_start, t, noise, objective)`` must return the training loss of
    Algorithm 3 (chapter 05, eq. ``eq-algorithm-3-step``) for ``objective`` in ``pred_noise``, ``pred_x0``, ``pred_v``:
    x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε with one timestep per example, the model's output at (x_t, t) compared with ε, x_0 or
    v = √ᾱ_t ε - √(1-ᾱ_t) x_0 by a squared error averaged over the pixels and then over the batch (a scalar).

    Tried on image batches of shape (8, 1, 8, 8) (the batch size equals the image width, where a missing reshape
    broadcasts silently) and (3, 1, 8, 8), and on 2-D points, with a fixed nonlinear stand-in for the network; the
    reference is :func:`ddpm_lib.p_losses` with the same ``t`` and ``noise``."""
    sched = NoiseSchedule.linear(1000)
    model = _FixedNet()
    g = torch.Generator().manual_seed(0)
    for shape in ((8, 1, 8, 8), (3, 1, 8, 8), (16, 2)):
        x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
        noise = torch.randn(shape, generator=g, dtype=torch.float64)
        t = torch.randint(0, sched.T, (shape[0],), generator=g)
        t[0], t[1] = 0, sched.T - 1
        for objective in ("pred_noise", "pred_x0", "pred_v"):
            what = f"my_p_losses (batch of shape {shape}, objective={objective!r})"
            got = call(fn, what, model, sched, x0, t, noise, objective,
                       hint="reshape the (B,) coefficients to (B, 1, ..., 1) so that they broadcast over the batch.")
            args = (model, sched, x0, t, noise, objective)
            mistakes = {
                "x_t uses the square roots sqrt(alphabar_t) and sqrt(1 - alphabar_t): alphabar_t and 1 - alphabar_t "
                "are the variances, not the scales.": _slipped_loss(*args, coef="plain"),
                "x_t is t steps away from x_0: use the cumulative product alphas_cumprod, not the one-step alphas.":
                    _slipped_loss(*args, alphas="one-step"),
                "index t of the code is the paper's step t+1: use alphas_cumprod[t], not alphas_cumprod_prev[t].":
                    _slipped_loss(*args, alphas="prev"),
                "the loss averages the squared error over the pixels (mean, not sum), then over the batch.":
                    _slipped_loss(*args, reduce="sum"),
            }
            if objective == "pred_noise":
                mistakes["with objective='pred_noise' the target is the noise eps that made x_t, not x_0."] = (
                    _slipped_loss(*args, target="x0"))
            if objective == "pred_x0":
                mistakes["with objective='pred_x0' the target is x_0, not the noise."] = (
                    _slipped_loss(*args, target="eps"))
            if objective == "pred_v":
                mistakes["v = sqrt(alphabar_t) eps - sqrt(1 - alphabar_t) x_0 (eq-v-def): the sign is flipped."] = (
                    _slipped_loss(*args, v_sign=-1))
            if shape[0] == shape[-1]:
                try:
                    mistakes["the (B,) coefficients must be reshaped to (B, 1, ..., 1) before they multiply the batch "
                             "(here B equals the image width, so the missing reshape broadcasts silently)."] = (
                        _slipped_loss(*args, reshape=False))
                except RuntimeError:  # pragma: no cover - shapes that do not broadcast
                    pass
            want = p_losses(model, sched, x0, t, noise=noise, objective=objective)
            assert_close(got, want, what,
                         "x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) noise (coefficients of shape "
                         "(B, 1, ..., 1)); loss = mean over the batch of the mean over the pixels of (model(x_t, t) - "
                         "target)^2, with target eps, x_0 or v.", mistakes, rtol=1e-9, atol=1e-12)


def _batches(steps: int, g: torch.Generator):
    return [(torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randn(16, 2, generator=g, dtype=torch.float64))
            for _ in range(steps)]


def _loss_on(model, x, y):
    return ((model(x) - y) ** 2).mean()


def _slipped_step(model, optimizer, loss_fn, shadow, n, decay, *, swapped=False, before=False, warmup=True,
                  count_from_one=False, zero_grad=True):
    """One training step with the EMA update, with one recognised slip switched on (all defaults: correct)."""
    def ema(shadow):
        m = n + 1 if count_from_one else n
        d = (0.0 if m == 0 else min(decay, (1 + m) / (10 + m))) if warmup else decay
        if swapped:
            d = 1 - d
        with torch.no_grad():
            return [d * s + (1 - d) * p.detach() for s, p in zip(shadow, model.parameters())]

    if before:
        shadow = ema(shadow)
    if zero_grad:
        optimizer.zero_grad()
    loss_fn().backward()
    optimizer.step()
    return shadow if before else ema(shadow)


def _run(step, model0, decay, batches, lr):
    model = copy.deepcopy(model0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    shadow = [p.detach().clone() for p in model.parameters()]
    for n, (x, y) in enumerate(batches):
        shadow = step(model, opt, lambda: _loss_on(model, x, y), shadow, n, decay)
    return model, shadow


def _flat(tensors) -> torch.Tensor:
    return torch.cat([torch.as_tensor(p).detach().double().flatten() for p in tensors])


def check_train_step_with_ema(fn) -> None:
    """Exercise ``ex-05-ema-step``: ``fn(model, optimizer, loss_fn, shadow, n, decay)`` must take one training step
    (zero the gradients, backpropagate ``loss_fn()``, ``optimizer.step()``) and then return the updated EMA of the
    weights (chapter 05, eq. ``eq-ema-update``): the list of θ̄ ← d θ̄ + (1 - d) θ over ``model.parameters()``, with
    the warm-up decay d = min(decay, (1 + n)/(10 + n)) of :class:`ddpm_lib.train.EMA`, where ``n`` is the number of
    updates made before this one (d = 0 at n = 0: the first update copies the weights).

    Tried for 40 steps of SGD on a small linear model with decay 0.7 (the cap is reached at n = 20) and 0.999 (the
    warm-up rules throughout); the reference is :class:`ddpm_lib.train.EMA` updated after every optimizer step."""
    g = torch.Generator().manual_seed(0)
    torch_state = torch.get_rng_state()
    model0 = nn.Linear(4, 2).double()
    torch.set_rng_state(torch_state)
    with torch.no_grad():
        for p in model0.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    for decay in (0.7, 0.999):
        batches = _batches(40, g)
        ref_model = copy.deepcopy(model0)
        opt = torch.optim.SGD(ref_model.parameters(), lr=0.05)
        ema = EMA(ref_model, decay=decay, warmup=True)
        for x, y in batches:
            opt.zero_grad()
            _loss_on(ref_model, x, y).backward()
            opt.step()
            ema.update(ref_model)
        want = _flat(ema.model.parameters())
        what = f"train_step_with_ema (40 steps, decay = {decay})"
        model, shadow = None, None
        try:
            model, shadow = _run(fn, model0, decay, batches, 0.05)
        except Exception as err:  # the reader's code may raise anything; report it as a failed check
            raise AssertionError(f"{what} raised {type(err).__name__}: {err}. Hint: return the list of averaged "
                                 "tensors, one per model.parameters().") from err
        if not isinstance(shadow, (list, tuple)) or len(shadow) != len(list(model0.parameters())):
            raise AssertionError(f"{what}: expected a list of {len(list(model0.parameters()))} tensors (one per "
                                 f"model.parameters()), got {type(shadow).__name__}")
        args = (decay, batches, 0.05)
        mistakes = {
            "theta_bar <- d theta_bar + (1 - d) theta: the decay d multiplies the average, not the new weights.":
                _flat(_run(lambda *a: _slipped_step(*a, swapped=True), model0, *args)[1]),
            "update the average after optimizer.step(), so that it includes the weights of this step (it lags one "
                "step behind otherwise).": _flat(_run(lambda *a: _slipped_step(*a, before=True), model0, *args)[1]),
            "use the warm-up d = min(decay, (1 + n)/(10 + n)); without it the random initial weights dominate a short "
                "run.": _flat(_run(lambda *a: _slipped_step(*a, warmup=False), model0, *args)[1]),
            "n counts the updates made before this one: the first update (n = 0) has d = 0 and copies the weights.":
                _flat(_run(lambda *a: _slipped_step(*a, count_from_one=True), model0, *args)[1]),
            "call optimizer.zero_grad() before loss.backward(): the gradients of earlier steps accumulate otherwise.":
                _flat(_run(lambda *a: _slipped_step(*a, zero_grad=False), model0, *args)[1]),
        }
        assert_close(_flat(shadow), want, what,
                     "zero_grad, loss_fn().backward(), optimizer.step(); then, with d = 0 if n == 0 else min(decay, "
                     "(1 + n)/(10 + n)), return [d * s + (1 - d) * p for s, p in zip(shadow, model.parameters())].",
                     mistakes, rtol=1e-9, atol=1e-12)
