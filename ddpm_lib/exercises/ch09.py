"""Checks for the code exercises of chapter 09 (classifier-free and classifier guidance).

The checks drive the reader's guidance function with a small fixed conditional noise model and a small fixed
time-conditioned classifier (float64, seeded), compare it with :class:`ddpm_lib.ClassifierFreeGuidance` and
:class:`ddpm_lib.ClassifierGuidance`, and name the mistake when the answer reproduces a plausible slip.
"""

from __future__ import annotations

import torch

from ..guidance import ClassifierFreeGuidance, ClassifierGuidance
from ..schedules import NoiseSchedule
from .ch01 import assert_close, call

__all__ = ["ToyConditionalModel", "ToyNoisyClassifier", "check_cfg_eps", "check_classifier_guided_eps"]


class ToyConditionalModel:
    """A fixed ε-model ``model(x, t, y=None)`` for vectors of ``dim`` numbers with ``num_classes`` labels and a null
    label (``null_label = num_classes``, used when ``y`` is None). It records the batch size of every call in
    ``calls``."""

    def __init__(self, dim: int, num_classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
        self.embedding = torch.randn(num_classes + 1, dim, generator=g, dtype=torch.float64)
        self.null_label = num_classes
        self.calls = []

    def __call__(self, x, t, y=None):
        if y is None:
            y = torch.full((x.shape[0],), self.null_label)
        self.calls.append(x.shape[0])
        return torch.tanh(x @ self.weight) + self.embedding[y] * (1 + t.double()[:, None] / 100)


class ToyNoisyClassifier:
    """A fixed time-conditioned classifier ``classifier(x, t) -> logits`` for vectors of ``dim`` numbers (float64,
    seeded with its own generator, so that it leaves torch's global random state alone)."""

    def __init__(self, dim: int, num_classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.hidden = torch.randn(dim + 1, 16, generator=g, dtype=torch.float64) / (dim + 1) ** 0.5
        self.out = torch.randn(16, num_classes, generator=g, dtype=torch.float64) / 4

    def __call__(self, x, t):
        return torch.tanh(torch.cat([x, t.double()[:, None] / 1000], dim=1) @ self.hidden) @ self.out


def _inputs(batch: int, dim: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (batch,), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return x, t, y


def check_cfg_eps(fn) -> None:
    """Exercise ``ex-09-cfg``: ``fn(model, x, t, y, w)`` must return ε̃ = (1 + w) ε(x, t, y) - w ε(x, t, ∅)
    (chapter 09, eq. ``eq-cfg``), with ∅ the label ``model.null_label``, from ONE call of ``model`` on a batch of
    2B (the conditional and the unconditional inputs concatenated). The reference is
    :class:`ddpm_lib.ClassifierFreeGuidance`."""
    for w, (batch, dim) in ((2.0, (8, 5)), (0.5, (3, 8)), (4.0, (1, 4))):
        model = ToyConditionalModel(dim, seed=batch)
        x, t, y = _inputs(batch, dim, 1000, seed=dim)
        what = f"cfg_eps (w = {w}, batch of shape {(batch, dim)})"
        got = call(fn, what, model, x, t, y, w)
        calls, model.calls = model.calls, []
        cond, uncond = model(x, t, y), model(x, t)
        mistakes = {
            "(1 + w) multiplies the conditional prediction and -w the unconditional one, not the other way round.":
                (1 + w) * uncond - w * cond,
            "w is not diffusers' guidance_scale: eps_uncond + w (eps_cond - eps_uncond) is the scale 1 + w = w, one "
            "too small.": uncond + w * (cond - uncond),
            "the unconditional pass uses the null label model.null_label, not y.": cond,
            "extrapolate away from the unconditional prediction: + w (eps_cond - eps_uncond), not minus.":
                cond - w * (cond - uncond),
        }
        assert_close(got, ClassifierFreeGuidance(model, w)(x, t, y), what,
                     "eps_tilde = (1 + w) model(x, t, y) - w model(x, t, null).", mistakes)
        if calls != [2 * batch]:
            raise AssertionError(f"{what}: the model was called with batches of sizes {calls}. Hint: evaluate the "
                                 f"conditional and the unconditional prediction in one call on a batch of 2B = "
                                 f"{2 * batch} (torch.cat the inputs, then .chunk(2) the output).")


def _grad(classifier, x, t, y, log_softmax: bool, reduce: str) -> torch.Tensor:
    """∇_x of the selected log-probability (or logit), summed or averaged over the batch."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        out = classifier(x_in, t)
        out = torch.log_softmax(out, dim=-1) if log_softmax else out
        selected = out[torch.arange(x.shape[0]), y]
        total = selected.sum() if reduce == "sum" else selected.mean()
        return torch.autograd.grad(total, x_in)[0]


def check_classifier_guided_eps(fn) -> None:
    """Exercise ``ex-09-classifier-guidance``: ``fn(model, classifier, sched, x, t, y, s)`` must return
    ε̃ = ε(x, t) - s √(1-ᾱ_t) ∇_x log p_φ(y | x, t) (chapter 09, eq. ``eq-classifier-guidance``) for a batch with one
    timestep ``t`` and one label ``y`` per example, where ``model(x, t)`` is the unconditional ε-model and
    ``classifier(x, t)`` returns logits. Tried on batches whose size equals the data dimension (where a (B,)
    coefficient broadcasts silently against the last axis) and on others; the reference is
    :class:`ddpm_lib.ClassifierGuidance`."""
    cases = ((NoiseSchedule.linear(1000), 6, 6, 3.0), (NoiseSchedule.cosine(100), 5, 3, 1.5),
             (NoiseSchedule.linear(1000), 4, 4, 8.0))
    for sched, batch, dim, s in cases:
        model, classifier = ToyConditionalModel(dim, seed=1), ToyNoisyClassifier(dim, seed=dim)
        x, t, y = _inputs(batch, dim, sched.T, seed=batch)
        what = f"classifier_guided_eps (T = {sched.T}, s = {s}, batch of shape {(batch, dim)})"
        got = call(fn, what, model, classifier, sched, x, t, y, s)
        if isinstance(got, torch.Tensor):
            got = got.detach()
        eps = model(x, t)
        sigma = sched.sqrt_one_minus_alphas_cumprod[t][:, None]
        grad = _grad(classifier, x, t, y, log_softmax=True, reduce="sum")
        mistakes = {
            "guidance moves eps against the classifier's gradient: eps - s sqrt(1 - alphabar_t) grad, not plus.":
                eps + s * sigma * grad,
            "the gradient is scaled by sqrt(1 - alphabar_t) (eq-eps-score: eps = -sqrt(1 - alphabar_t) score).":
                eps - s * grad,
            "the coefficient is sqrt(1 - alphabar_t), not sqrt(alphabar_t).":
                eps - s * sched.sqrt_alphas_cumprod[t][:, None] * grad,
            "differentiate the log-probability log_softmax(logits)[y], not the logit itself.":
                eps - s * sigma * _grad(classifier, x, t, y, log_softmax=False, reduce="sum"),
            "sum the selected log-probabilities over the batch before autograd.grad (the mean divides every "
            "gradient by B).": eps - s * sigma * _grad(classifier, x, t, y, log_softmax=True, reduce="mean"),
        }
        if batch == dim:
            mistakes["reshape the (B,) coefficient sqrt(1 - alphabar_t) to (B, 1) before it multiplies the gradient "
                     "(here B equals the dimension, so the missing reshape broadcasts silently)."] = (
                eps - s * sched.sqrt_one_minus_alphas_cumprod[t] * grad)
        assert_close(got, ClassifierGuidance(model, classifier, sched, s)(x, t, y), what,
                     "eps_tilde = model(x, t) - s * sqrt(1 - alphabar_t) * grad_x log_softmax(classifier(x, t))[y], "
                     "one timestep per example.", mistakes, rtol=1e-9, atol=1e-10)
