"""What every sampling loop shares: the starting noise x_T, the walk over its steps, and the trajectory.

The DDPM loop (:func:`ddpm_lib.samplers.p_sample_loop`), the DDIM loops (:func:`ddpm_lib.ddim.ddim_sample`,
:func:`ddpm_lib.ddim.ddim_invert`) and the ODE solvers (:mod:`ddpm_lib.solvers`) differ only in their step
function; :func:`run_steps` is the rest. A step function takes the current sample and the pair (t, t_next) of
code indices and returns ``(x_next, x_start)``, the new sample and the x̂_0 it used (as diffusers' schedulers'
``step`` returns ``prev_sample`` and ``pred_original_sample``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["randn", "initial_noise", "run_steps"]


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn with ``generator`` (on the generator's device), then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def initial_noise(shape, x_T: torch.Tensor | None, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """The starting point x_T of a loop: ``x_T`` itself (checked against ``shape``), or N(0, I) drawn with
    ``generator``."""
    shape = tuple(shape)
    if x_T is None:
        return randn(shape, generator, device, dtype)
    if not isinstance(x_T, torch.Tensor):
        raise TypeError(f"x_T must be a torch.Tensor or None, got {type(x_T).__name__}")
    if tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {shape}; they must match")
    return x_T


def run_steps(step: Callable[[torch.Tensor, int, int], tuple], x: torch.Tensor, pairs: Sequence[tuple], *,
              progress: bool, desc: str, return_all_timesteps: bool):
    """Run ``x, x_start = step(x, t, t_next)`` over the ``(t, t_next)`` pairs in order.

    Returns the last sample or, with
    ``return_all_timesteps``, the pair ``(xs, x_starts)``: ``xs`` of shape (len(pairs)+1, *x.shape) holds the
    starting point and every sample after it, ``x_starts`` of shape (len(pairs), *x.shape) the x̂_0 of each step.
    """
    xs, x_starts = [x], []
    iterator = pairs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(pairs, desc=desc, total=len(pairs), leave=False)
    for t, t_next in iterator:
        x, x_start = step(x, t, t_next)
        if return_all_timesteps:
            xs.append(x)
            x_starts.append(x_start)
    if return_all_timesteps:
        return torch.stack(xs), torch.stack(x_starts)
    return x
