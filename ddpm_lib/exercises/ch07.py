"""Checks for the code exercises of chapter 07 (post-processing and likelihood).

- :func:`check_to_uint8` — the map of a sample in [-1, 1] to 8-bit pixels, against
  :func:`ddpm_lib.postprocess.to_uint8` (diffusers' ``numpy_to_pil``);
- :func:`check_level_probs` — the probabilities of the K grey levels under the discretized Gaussian decoder
  (chapter 07, eq. ``eq-discretized-decoder``), against :func:`ddpm_lib.discretized_gaussian_log_likelihood`.

Each check runs the reader's function on inputs chosen so that the plausible slips show, and names the slip when
the answer reproduces it.
"""

from __future__ import annotations

import torch

from ..likelihood import discretized_gaussian_log_likelihood
from ..postprocess import to_uint8
from .ch01 import assert_close, call

__all__ = ["check_to_uint8", "check_level_probs"]


def _uint8_inputs(dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Images (4, 1, 8, 8) in ``dtype``: the landmarks -1, -0.5, 0, 0.5, 1, values just inside and outside [-1, 1],
    far outside, and uniform draws in [-1.1, 1.1] kept away from the rounding ties of 255 (x/2 + 1/2), so that every
    correct way of writing the map gives the same bytes."""
    fixed = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 0.999, -0.999, 1.004, 1.03, -1.004, -1.03, 1.5, -2.0, 3.0,
                          0.25, -0.25], dtype=torch.float64)
    rand = torch.rand(4000, generator=generator, dtype=torch.float64) * 2.2 - 1.1
    rand = rand.to(dtype).double()
    v = (rand.clamp(-1, 1) / 2 + 0.5) * 255
    rand = rand[((v - v.floor()) - 0.5).abs() > 1e-3][: 256 - fixed.numel()]
    return torch.cat([fixed, rand]).to(dtype).reshape(4, 1, 8, 8)


def check_to_uint8(fn) -> None:
    """Exercise ``ex-07-to-uint8``: ``fn(x)`` must map images ``x`` (a float tensor of shape (N, C, H, W), values
    about [-1, 1], possibly a little outside) to a ``torch.uint8`` tensor of the same shape,
    v = round(255 · clamp(x/2 + 1/2, 0, 1)).

    Tried in float32 and float64 on the landmarks -1, -0.5, 0, 0.5, 1, on values outside [-1, 1] and on random
    values; the reference is :func:`ddpm_lib.postprocess.to_uint8`, which gives the bytes of diffusers'
    ``numpy_to_pil``."""
    g = torch.Generator().manual_seed(0)
    general = "v = round(255 * clamp(x / 2 + 1 / 2, 0, 1)), then .to(torch.uint8)."
    for dtype in (torch.float32, torch.float64):
        x = _uint8_inputs(dtype, g)
        what = f"to_uint8 on {dtype} images"
        got = call(fn, what, x.clone())
        if not isinstance(got, torch.Tensor):
            raise AssertionError(f"{what}: expected a torch tensor, got {type(got).__name__}. Hint: {general}")
        if got.shape != x.shape:
            raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(x.shape)}. Hint: keep the "
                                 "layout (N, C, H, W).")
        if got.dtype != torch.uint8:
            raise AssertionError(f"{what}: dtype {got.dtype}, expected torch.uint8. Hint: {general}")
        want = to_uint8(x)
        if torch.equal(got, want):
            continue
        got_i, x64 = got.long(), x.double()
        u = (x64.clamp(-1, 1) / 2 + 0.5)
        inside = (x64.abs() <= 1) & (x64 < 0.99)          # where every wrong scale still fits into 0..255
        wrong = ~(got == want)
        hint = general
        if not wrong[inside].any():
            hint = ("clamp x / 2 + 1 / 2 to [0, 1] before scaling: a value outside [-1, 1] gives a number outside "
                    "0..255, which uint8 wraps around modulo 256 (the brightest pixels turn black).")
        else:
            candidates = {
                "round to the nearest level before converting: .to(torch.uint8) truncates towards zero, so every "
                "pixel is half a level too dark on average (0 becomes 127, not 128).": (u * 255).floor(),
                "scale by 255, not 256: the 256 levels 0..255 are 255 steps apart, so x = 1 must give 255 "
                "(and 0.5 gives 191, not 192).": (u * 256).round(),
                "scale by 255, not 256 (and round, not truncate): x = 1 must give 255, 0.5 gives 191.":
                    (u * 256).floor(),
                "map [-1, 1] to [0, 1] first (x / 2 + 1 / 2): the samples are in [-1, 1], not in [0, 1].":
                    (x64.clamp(0, 1) * 255).round(),
            }
            for text, value in candidates.items():
                if torch.equal(got_i[inside], value[inside].long()):
                    hint = text
                    break
        k = wrong.nonzero()[0].tolist()
        raise AssertionError(f"{what}: {int(wrong.sum())} of {x.numel()} pixels differ, e.g. x = "
                             f"{x[tuple(k)].item():.4f} gives {got[tuple(k)].item()}, expected "
                             f"{want[tuple(k)].item()}. Hint: {hint}")


def _slipped_level_probs(mu, sigma, K, *, half_width=None, open_edges=True, levels01=False):
    """P(level k) for every level of a K-level grid, with one of the recognised slips (defaults: the correct ones)."""
    levels = torch.arange(K, dtype=torch.float64) / (K - 1)
    if not levels01:
        levels = 2 * levels - 1
    delta = 1.0 / (K - 1) if half_width is None else half_width
    upper = torch.special.ndtr((levels[None] + delta - mu[:, None]) / sigma[:, None])
    lower = torch.special.ndtr((levels[None] - delta - mu[:, None]) / sigma[:, None])
    if open_edges:
        upper[:, -1] = 1.0
        lower[:, 0] = 0.0
    return upper - lower


def check_level_probs(fn) -> None:
    """Exercise ``ex-07-level-probs``: ``fn(mu, sigma, K)`` must return, for float64 tensors ``mu`` and ``sigma`` of
    shape (B,) (the mean and the standard deviation of the decoder's Gaussian for one pixel each) and an integer
    ``K``, the (B, K) tensor of the probabilities of the K grey levels x_k = -1 + 2k/(K-1), k = 0..K-1, under the
    discretized decoder (chapter 07, eq. ``eq-discretized-decoder``): the Gaussian mass of
    [x_k - 1/(K-1), x_k + 1/(K-1)], with the first bin open to -∞ and the last to +∞.

    Tried with K = 17 (the digits), 256 (8-bit images) and 2, with means inside and outside [-1, 1] and widths
    from a fraction of a bin to wider than the data; the reference is
    :func:`ddpm_lib.discretized_gaussian_log_likelihood` evaluated at every level."""
    g = torch.Generator().manual_seed(0)
    general = ("P(x_k) = Phi((x_k + d - mu) / sigma) - Phi((x_k - d - mu) / sigma) with x_k = -1 + 2k/(K-1), "
               "d = 1/(K-1), Phi(+d edge of the last bin) = 1 and Phi(-d edge of the first bin) = 0.")
    for K in (17, 256, 2):
        mu = torch.cat([torch.tensor([0.3, -0.9, 1.1, -1.3, 0.0, 1.0], dtype=torch.float64),
                        torch.rand(10, generator=g, dtype=torch.float64) * 2.4 - 1.2])
        sigma = torch.cat([torch.tensor([0.05, 0.2, 0.03, 0.4, 1.5, 0.01], dtype=torch.float64),
                           torch.exp(torch.rand(10, generator=g, dtype=torch.float64) * 5 - 4.5)])
        what = f"level_probs (K = {K})"
        got = call(fn, what, mu.clone(), sigma.clone(), K)
        levels = -1 + 2 * torch.arange(K, dtype=torch.float64) / (K - 1)
        B = mu.shape[0]
        want = discretized_gaussian_log_likelihood(levels[None].expand(B, K).contiguous(),
                                                   mu[:, None].expand(B, K).contiguous(),
                                                   sigma.log()[:, None].expand(B, K), num_bins=K).exp()
        args = (mu, sigma, K)
        mistakes = {
            "the K levels are 2/(K-1) apart, so the bins have width 2/(K-1) (half-width 1/(K-1)), not 2/K.":
                _slipped_level_probs(*args, half_width=1.0 / K),
            "1/(K-1) is the half-width of a bin: the bin of x_k is [x_k - 1/(K-1), x_k + 1/(K-1)].":
                _slipped_level_probs(*args, half_width=2.0 / (K - 1)),
            "the first bin extends to -infinity and the last to +infinity (eq-discretized-decoder), otherwise the "
            "mass of the Gaussian beyond the edges is lost and the probabilities do not sum to 1.":
                _slipped_level_probs(*args, open_edges=False),
            "the levels lie in [-1, 1], x_k = -1 + 2k/(K-1), as the data do; not k/(K-1) in [0, 1].":
                _slipped_level_probs(*args, levels01=True),
        }
        assert_close(got, want, what, general, mistakes, rtol=1e-9, atol=1e-12)
