"""Checks of chapter 10's code exercises (real images: Fashion-MNIST)."""

from __future__ import annotations

import math

import torch

from ..schedules import NoiseSchedule

__all__ = ["check_slerp", "check_shifted_alphas_cumprod"]


def check_slerp(slerp) -> None:
    """``slerp(z0, z1, lam)``: the great circle between two noises (chapter 10, inversion and interpolation).

    Checked against the closed form on random and on orthogonal vectors: both ends exact, the norm of equal-norm
    orthogonal ends kept all along (a straight line loses a factor √2 halfway), and the angle to z0 growing linearly
    with ``lam``."""
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 784, generator=g, dtype=torch.float64)
    for lam in (0.0, 1.0):
        out = slerp(z0, z1, lam)
        assert torch.allclose(out, z0 if lam == 0 else z1, atol=1e-9), f"slerp(z0, z1, {lam}) must be the end itself"
    e0, e1 = torch.eye(784, dtype=torch.float64)[:2] * 28.0  # orthogonal, norm 28
    for lam in (0.25, 0.5, 0.8):
        out = slerp(e0, e1, lam)
        assert abs(out.norm().item() - 28.0) < 1e-6, (
            f"at lam = {lam} the norm is {out.norm().item():.3f}, not 28: a straight line (lerp) shrinks the noise")
        angle = math.atan2(out[1].item(), out[0].item())
        assert abs(angle - lam * math.pi / 2) < 1e-9, (
            f"at lam = {lam} the angle to z0 is {angle:.4f} rad, expected lam * theta = {lam * math.pi / 2:.4f}")
    theta = torch.arccos((z0 @ z1) / (z0.norm() * z1.norm()))
    expected = (torch.sin(0.3 * theta) * z0 + torch.sin(0.7 * theta) * z1) / torch.sin(theta)
    assert torch.allclose(slerp(z0, z1, 0.7), expected, atol=1e-9), "slerp(z0, z1, 0.7) differs from the great circle"


def check_shifted_alphas_cumprod(shifted, s_values=(2, 3.5, 7)) -> None:
    """``shifted(alphas_cumprod, s)``: the ᾱ' whose SNR is SNR / s² at every t (chapter 10, eq. ``eq-logsnr-shift``
    run backwards: the schedule a 28×28 image needs so that its s×s block means see the original schedule).

    Checked on the linear and cosine schedules in float64: log SNR' = log SNR - 2 log s to 1e-9, values in (0, 1),
    and s = 1 changes nothing."""
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
        ab = sched.alphas_cumprod
        same = shifted(ab, 1)
        assert torch.allclose(same, ab, rtol=1e-12, atol=0), "s = 1 must leave the schedule unchanged"
        for s in s_values:
            out = shifted(ab, s)
            assert isinstance(out, torch.Tensor) and out.shape == ab.shape, "return a tensor of the shape of alphas_cumprod"
            assert bool(((out > 0) & (out < 1)).all()), "shifted alphas_cumprod must stay in (0, 1)"
            log_snr = torch.log(out / (1 - out))
            target = torch.log(ab / (1 - ab)) - 2 * math.log(s)
            err = (log_snr - target).abs().max().item()
            assert err < 1e-9, (f"s = {s}: log SNR' differs from log SNR - 2 log s by up to {err:.3g} "
                                "(divide the SNR by s^2, not alphas_cumprod; and not multiply)")
