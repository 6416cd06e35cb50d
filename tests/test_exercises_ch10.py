"""Chapter 10's exercise checks accept the reference solutions and reject plausible wrong answers."""

import math

import pytest
import torch

from ddpm_lib.exercises.ch10 import check_shifted_alphas_cumprod, check_slerp


def slerp(z0, z1, lam):
    theta = torch.arccos((z0 * z1).sum() / (z0.norm() * z1.norm()))
    return (torch.sin((1 - lam) * theta) * z0 + torch.sin(lam * theta) * z1) / torch.sin(theta)


def shifted(ab, s):
    return ab / (ab + s**2 * (1 - ab))


def test_references_pass():
    check_slerp(slerp)
    check_shifted_alphas_cumprod(shifted)


@pytest.mark.parametrize("wrong", [
    lambda z0, z1, lam: (1 - lam) * z0 + lam * z1,  # a straight line
    lambda z0, z1, lam: slerp(z0, z1, 1 - lam),  # the ends swapped
    lambda z0, z1, lam: math.sin((1 - lam) * math.pi / 2) * z0 + math.sin(lam * math.pi / 2) * z1,  # assumes 90°
])
def test_wrong_slerps_are_rejected(wrong):
    with pytest.raises(AssertionError):
        check_slerp(wrong)


@pytest.mark.parametrize("wrong", [
    lambda ab, s: ab / (ab + (1 - ab) / s**2),  # SNR multiplied by s^2: the shift the wrong way
    lambda ab, s: ab / s**2,  # alphas_cumprod divided instead of the SNR
    lambda ab, s: ab / (ab + s * (1 - ab)),  # SNR / s: forgets that an s x s block has s^2 pixels
])
def test_wrong_shifts_are_rejected(wrong):
    with pytest.raises(AssertionError):
        check_shifted_alphas_cumprod(wrong)
