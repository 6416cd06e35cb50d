"""Guidance, chapter 09: classifier-free guidance and classifier guidance as wrappers of ε̂.

Classifier-free guidance is compared with (1 + w) ε(x, t, y) - w ε(x, t, ∅) computed by hand; classifier guidance
with the closed-form gradient of a softmax-linear classifier, ∇_x log p(y|x) = W_y - Σ_k p_k W_k, and with autograd.
"""

import math

import pytest
import torch

from ddpm_lib import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    NoiseSchedule,
    ddim_sample,
    p_sample_loop,
)

from helpers import F64, gen

SCHED = NoiseSchedule.cosine(100)


class CondModel:
    """A fixed conditional 'network' with a null label (index 3 among labels 0..2 plus ∅)."""

    null_label = 3

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], y.clone()))
        shift = torch.tensor([0.5, -1.0, 2.0, 0.0], **F64)[y].to(x)[:, None]
        return torch.sin(x + shift) + 0.01 * t.to(x)[:, None]


def _inputs(B=6, d=3, seed=0):
    g = gen(seed)
    x = torch.randn(B, d, generator=g, **F64)
    t = torch.randint(0, SCHED.T, (B,), generator=g)
    y = torch.randint(0, 3, (B,), generator=g)
    return x, t, y


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0, 3.0, 7.5, -1.0])
def test_cfg_equals_formula(w):
    model = CondModel()
    x, t, y = _inputs()
    out = ClassifierFreeGuidance(model, w)(x, t, y)
    cond = CondModel()(x, t, y)
    uncond = CondModel()(x, t, torch.full_like(y, 3))
    torch.testing.assert_close(out, (1 + w) * cond - w * uncond, rtol=1e-14, atol=1e-14)
    if w == 0.0:
        torch.testing.assert_close(out, cond, rtol=0, atol=0)
    if w == -1.0:
        torch.testing.assert_close(out, uncond, rtol=0, atol=0)
    # one batched call of size 2B: labels first, then the null label
    assert len(model.calls) == 1 and model.calls[0][0] == 2 * x.shape[0]
    assert torch.equal(model.calls[0][1], torch.cat([y, torch.full_like(y, 3)]))


def test_cfg_null_label_argument_and_scalar_label():
    x, t, _ = _inputs()

    def plain(x, t, y):  # no null_label attribute
        return x * (y.to(x)[:, None] + 1)

    cfg = ClassifierFreeGuidance(plain, 2.0, null_label=5)
    out = cfg(x, t, torch.tensor(1))  # one label for the whole batch
    torch.testing.assert_close(out, 3 * (2 * x) - 2 * (6 * x), rtol=1e-14, atol=1e-14)


def test_cfg_in_samplers_w0_equals_conditional_model():
    """Guidance wraps ε̂ so the samplers use it unchanged: with w = 0 both samplers give the conditional result."""
    model = CondModel()
    y = torch.tensor([0, 1, 2, 1])
    xT = torch.randn(4, 3, generator=gen(6), **F64)
    for sample in (
        lambda m: ddim_sample(m, SCHED, (4, 3), steps=10, x_T=xT.clone(), y=y, progress=False),
        lambda m: p_sample_loop(m, SCHED, (4, 3), x_T=xT.clone(), y=y, progress=False,
                                generator=gen(0)),
    ):
        guided = sample(ClassifierFreeGuidance(model, 0.0))
        plain = sample(model)
        torch.testing.assert_close(guided, plain, rtol=1e-12, atol=1e-12)
    strong = ddim_sample(ClassifierFreeGuidance(model, 4.0), SCHED, (4, 3), steps=10, x_T=xT.clone(), y=y,
                         progress=False)
    assert not torch.allclose(strong, plain)


class LinearClassifier:
    """logits = x W^T + b(t), a noise-aware softmax classifier with an analytic gradient."""

    def __init__(self, K=3, d=3, seed=1):
        g = gen(seed)
        self.W = torch.randn(K, d, generator=g, **F64)
        self.b = torch.randn(K, generator=g, **F64)

    def __call__(self, x, t):
        return x @ self.W.T + self.b + 0.001 * t.to(x)[:, None]

    def grad_log_prob(self, x, t, y):
        p = torch.softmax(self(x, t), dim=-1)
        return self.W[y] - p @ self.W


def test_classifier_gradient_closed_form_and_autograd():
    clf = LinearClassifier()
    x, t, y = _inputs(seed=2)
    guide = ClassifierGuidance(lambda x, t: torch.zeros_like(x), clf, SCHED, scale=1.0)
    grad = guide.grad_log_prob(x, t, y)
    torch.testing.assert_close(grad, clf.grad_log_prob(x, t, y), rtol=1e-12, atol=1e-12)
    x_req = x.clone().requires_grad_(True)
    lp = torch.log_softmax(clf(x_req, t), -1)[torch.arange(len(y)), y].sum()
    (auto,) = torch.autograd.grad(lp, x_req)
    torch.testing.assert_close(grad, auto, rtol=1e-12, atol=1e-12)
    # the input tensor is left alone
    assert not x.requires_grad


def test_binary_logistic_gradient():
    """Two classes with logits (0, a·x + c): ∇ log p(1|x) = (1 - σ(a·x + c)) a."""
    a = torch.tensor([0.7, -1.2], **F64)
    clf = lambda x, t: torch.stack([torch.zeros(x.shape[0], **F64), x @ a + 0.3], 1)  # noqa: E731
    x = torch.randn(5, 2, **F64)
    t = torch.zeros(5, dtype=torch.long)
    guide = ClassifierGuidance(lambda x, t: x, clf, SCHED, scale=2.0)
    grad = guide.grad_log_prob(x, t, torch.ones(5, dtype=torch.long))
    torch.testing.assert_close(grad, (1 - torch.sigmoid(x @ a + 0.3))[:, None] * a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("scale", [0.0, 0.5, 3.0])
def test_classifier_guidance_shifts_eps(scale):
    """ε̃ = ε - s √(1-ᾱ_t) ∇_x log p(y|x_t) (chapter 09, eq. classifier-guidance)."""
    clf = LinearClassifier()
    x, t, y = _inputs(seed=3)
    eps_model = lambda x, t: torch.cos(x) * 0.5  # noqa: E731
    out = ClassifierGuidance(eps_model, clf, SCHED, scale)(x, t, y)
    sigma = SCHED.sqrt_one_minus_alphas_cumprod[t][:, None]
    torch.testing.assert_close(out, eps_model(x, t) - scale * sigma * clf.grad_log_prob(x, t, y), rtol=1e-12, atol=1e-12)
    if scale == 0.0:
        torch.testing.assert_close(out, eps_model(x, t), rtol=0, atol=0)


def test_classifier_guidance_moves_samples_towards_the_class():
    """With a large scale, DDIM samples are classified as the requested label more often than without guidance."""
    clf = LinearClassifier(K=2, d=2, seed=4)
    eps_model = lambda x, t: 0.3 * x  # noqa: E731
    y = torch.ones(200, dtype=torch.long)
    xT = torch.randn(200, 2, generator=gen(5), **F64)
    kw = dict(steps=20, x_T=xT, clip_denoised=False, progress=False)
    plain = ddim_sample(lambda x, t, y: eps_model(x, t), SCHED, (200, 2), y=y, **kw)
    guided = ddim_sample(ClassifierGuidance(eps_model, clf, SCHED, scale=5.0), SCHED, (200, 2), y=y, **kw)
    t0 = torch.zeros(200, dtype=torch.long)
    acc = lambda x: (clf(x, t0).argmax(1) == 1).double().mean().item()  # noqa: E731
    assert acc(guided) > acc(plain) + 0.1
    assert math.isfinite(guided.abs().max().item())
