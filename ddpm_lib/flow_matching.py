"""Flow matching with the linear (rectified-flow) path, and its dictionary to the VP diffusion (chapter 11,
eqs. ``eq-flow-path`` to ``eq-flow-ode``).

The path x_s = (1 - s) x_0 + s ε, s ∈ [0, 1], goes from the data (s = 0) to pure noise (s = 1) in a straight line
per pair (x_0, ε) (Liu et al. 2023, rectified flow; Lipman et al. 2023, the optimal-transport conditional path with
σ_min = 0). Its velocity is u = dx_s/ds = ε - x_0; a network û(x_s, s) trained by least squares on that target
(:func:`flow_matching_loss`) learns E[ε - x_0 | x_s], the velocity of an ODE that carries N(0, I) at s = 1 to the
data at s = 0 (:func:`flow_sample`).

The same picture as the VP diffusion (chapter 11, eqs. ``eq-flow-conversions`` and ``eq-flow-vp-map``, checks every
conversion in SymPy; the tests check them numerically): from û at (x_s, s), x̂_0 = x_s - s û and
ε̂ = x_s + (1 - s) û (:func:`flow_predictions`). With a = √ᾱ and b = √(1-ᾱ), x_t = a x_0 + b ε is the point
x_s = x_t/(a + b) of the linear path at s = b/(a + b) (:func:`flow_from_vp`, :func:`vp_from_flow`), i.e.
σ = s/(1-s) in the variables of :mod:`ddpm_lib.ode`; and the velocity is u = (a + b) v + (b - a) x_t for chapter 04's
v = a ε - b x_0 (:func:`velocity_from_v`, :func:`v_from_velocity`).

How s reaches the book's networks: as the float timestep t = s · ``time_scale`` with ``time_scale = 999`` by
default, so s ∈ [0, 1] covers the same range 0..T-1 of the sinusoidal embedding as the diffusion models'
integer t (:func:`ddpm_lib.models.sinusoidal_embedding` and the models' ``t`` accept float tensors).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._checks import check_choice, check_int, check_positive, check_same_shape, check_seed
from ._loop import initial_noise, run_steps
from .data import GaussianMixture
from .diffusion import call_model
from .ode import _assert_finite_at, _check_alpha_bar

__all__ = ["FLOW_TIME_SCALE", "FLOW_SOLVERS", "flow_interpolate", "flow_velocity_target", "flow_predictions",
           "flow_from_vp", "vp_from_flow", "velocity_from_v", "v_from_velocity", "flow_matching_loss",
           "flow_step", "flow_sample", "exact_velocity_model"]

FLOW_TIME_SCALE = 999.0
"""The network sees t = s · 999: the range 0..T-1 of the book's T = 1000 diffusion models."""

FLOW_SOLVERS = ("euler", "heun")


def _s_column(s, x: torch.Tensor, name: str = "s"):
    """s as a float or as a float tensor of shape (B, 1, ..., 1) in x's dtype; ``ValueError`` outside [0, 1]."""
    if isinstance(s, torch.Tensor):
        if not s.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {s.dtype}")
        if s.ndim == 0 or s.numel() == 1:
            s = s.reshape(1)
        if s.ndim != 1 or s.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"{name} must be a number or have shape ({x.shape[0]},), got shape {tuple(s.shape)}")
        if bool(((s < 0) | (s > 1) | ~torch.isfinite(s)).any()):
            raise ValueError(f"{name} must lie in [0, 1]")
        return s.to(device=x.device, dtype=x.dtype).reshape(-1, *((1,) * (x.ndim - 1)))
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0.0 <= s <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] or a tensor, got {s!r}")
    return float(s)


def _check_x(x, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise TypeError(f"{name} must be a tensor of shape (B, ...)")


def flow_interpolate(x_start: torch.Tensor, s, noise: torch.Tensor) -> torch.Tensor:
    """x_s = (1 - s) x_0 + s ε (Liu et al. 2023; chapter 11, eq. ``eq-flow-path``). ``s`` is a number in
    [0, 1] or a tensor of shape (B,)."""
    _check_x(x_start, "x_start")
    check_same_shape(noise, x_start, "noise", "x_start")
    s = _s_column(s, x_start)
    return (1 - s) * x_start + s * noise


def flow_velocity_target(x_start: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = dx_s/ds = ε - x_0, the regression target of flow matching (chapter 11, eq. ``eq-flow-velocity``)."""
    _check_x(x_start, "x_start")
    check_same_shape(noise, x_start, "noise", "x_start")
    return noise - x_start


def flow_predictions(x_s: torch.Tensor, s, velocity: torch.Tensor):
    """(ε̂, x̂_0) from a velocity û at (x_s, s): x̂_0 = x_s - s û, ε̂ = x_s + (1 - s) û (chapter 11,
    eq. ``eq-flow-conversions``) — the flow-matching twin of :func:`ddpm_lib.diffusion.model_predictions`."""
    _check_x(x_s, "x_s")
    check_same_shape(velocity, x_s, "velocity", "x_s")
    s = _s_column(s, x_s)
    return x_s + (1 - s) * velocity, x_s - s * velocity


def _ab(alpha_bar, x: torch.Tensor):
    alpha_bar = _check_alpha_bar(alpha_bar)
    if isinstance(alpha_bar, torch.Tensor):
        alpha_bar = alpha_bar.to(device=x.device, dtype=x.dtype)
        if alpha_bar.numel() != 1:
            alpha_bar = alpha_bar.reshape(-1, *((1,) * (x.ndim - 1)))
        return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)


def flow_from_vp(x_t: torch.Tensor, alpha_bar):
    """(x_s, s) with x_s = x_t/(a + b), s = b/(a + b), a = √ᾱ, b = √(1-ᾱ): the point of the linear path that holds
    the same x_0 and ε as x_t = a x_0 + b ε (chapter 11, eq. ``eq-flow-vp-map``). ``alpha_bar`` is a number
    in (0, 1] or a tensor of shape (B,); ``s`` is returned in the same form."""
    _check_x(x_t, "x_t")
    a, b = _ab(alpha_bar, x_t)
    s = b / (a + b)
    if isinstance(s, torch.Tensor) and s.numel() != 1:
        s = s.reshape(-1)
    return x_t / (a + b), s


def vp_from_flow(x_s: torch.Tensor, s):
    """(x_t, ᾱ): the inverse of :func:`flow_from_vp` for s < 1: ᾱ = (1-s)²/((1-s)² + s²),
    x_t = x_s (√ᾱ + √(1-ᾱ)) (chapter 11, eq. ``eq-flow-vp-map``)."""
    _check_x(x_s, "x_s")
    s_col = _s_column(s, x_s)
    one = (s_col < 1).all() if isinstance(s_col, torch.Tensor) else s_col < 1
    if not bool(one):
        raise ValueError("s must be < 1 (s = 1 is pure noise, ᾱ = 0)")
    alpha_bar = (1 - s_col) ** 2 / ((1 - s_col) ** 2 + s_col**2)
    a, b = _ab(alpha_bar, x_s)
    if isinstance(alpha_bar, torch.Tensor) and alpha_bar.numel() != 1:
        alpha_bar = alpha_bar.reshape(-1)
    return x_s * (a + b), alpha_bar


def velocity_from_v(v: torch.Tensor, x_t: torch.Tensor, alpha_bar) -> torch.Tensor:
    """u = ε - x_0 = (a + b) v + (b - a) x_t from chapter 04's v = a ε - b x_0 at x_t = a x_0 + b ε, with a = √ᾱ,
    b = √(1-ᾱ) (chapter 11, eq. ``eq-flow-conversions``)."""
    _check_x(x_t, "x_t")
    check_same_shape(v, x_t, "v", "x_t")
    a, b = _ab(alpha_bar, x_t)
    return (a + b) * v + (b - a) * x_t


def v_from_velocity(velocity: torch.Tensor, x_s: torch.Tensor, s) -> torch.Tensor:
    """v = a ε̂ - b x̂_0 from û at (x_s, s), with (a, b) = ((1-s), s)/√((1-s)² + s²), the ᾱ of
    :func:`vp_from_flow` (chapter 11, eq. ``eq-flow-conversions``); inverse of :func:`velocity_from_v`."""
    pred_noise, pred_x_start = flow_predictions(x_s, s, velocity)
    s_col = _s_column(s, x_s)
    norm = ((1 - s_col) ** 2 + s_col**2) ** 0.5
    return ((1 - s_col) * pred_noise - s_col * pred_x_start) / norm


def _model_time(s, x: torch.Tensor, time_scale: float) -> torch.Tensor:
    """The float timestep t = s · time_scale of shape (B,) that the network receives."""
    s = s if isinstance(s, torch.Tensor) else torch.tensor(float(s))
    return (s.to(device=x.device, dtype=x.dtype) * time_scale).reshape(-1).expand(x.shape[0])


def flow_matching_loss(model, x_start: torch.Tensor, s=None, noise: torch.Tensor | None = None, *,
                       time_scale: float = FLOW_TIME_SCALE, y=None, generator: torch.Generator | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """‖û(x_s, s) - (ε - x_0)‖², averaged over the non-batch dimensions (Lipman et al. 2023's conditional
    flow-matching loss with the linear path; Liu et al. 2023; chapter 11, eq. ``eq-flow-loss``).

    ``s`` (shape (B,), or a number for the batch) ~ U(0, 1) and ``noise`` ε ~ N(0, I) are drawn with
    ``generator`` when None; the model is called as ``model(x_s, s · time_scale[, y])`` with a float t.
    ``reduction="mean"`` returns a scalar, ``"none"`` the per-example losses (B,).
    """
    check_choice("reduction", reduction, ("mean", "none"))
    time_scale = check_positive("time_scale", time_scale)
    if not isinstance(x_start, torch.Tensor) or x_start.ndim < 2 or not x_start.is_floating_point():
        raise ValueError("x_start must be a floating-point tensor of shape (B, ...) with a batch dimension")
    gen_device = generator.device if generator is not None else x_start.device
    if s is None:
        s = torch.rand(x_start.shape[0], generator=generator, device=gen_device, dtype=x_start.dtype).to(x_start.device)
    if noise is None:
        noise = torch.randn(x_start.shape, generator=generator, device=gen_device, dtype=x_start.dtype)
        noise = noise.to(x_start.device)
    x_s = flow_interpolate(x_start, s, noise)
    out = call_model(model, x_s, _model_time(s, x_start, time_scale), y)
    losses = ((out - flow_velocity_target(x_start, noise)) ** 2).flatten(1).mean(dim=1)
    return losses.mean() if reduction == "mean" else losses


def flow_step(model_output: torch.Tensor, s: float, s_next: float, x_s: torch.Tensor):
    """One Euler step of dx/ds = û from s to s_next (< s): x' = x_s + (s_next - s) û (chapter 11, eq. ``eq-flow-ode``).
    ``model_output`` is û at (x_s, s). Returns ``(x_next, x_start)`` with x̂_0 = x_s - s û."""
    _check_x(x_s, "x_s")
    check_same_shape(model_output, x_s, "model_output", "x_s")
    s, s_next = _s_column(s, x_s), _s_column(s_next, x_s, "s_next")
    if isinstance(s, torch.Tensor) or isinstance(s_next, torch.Tensor) or not s_next < s:
        raise ValueError(f"s and s_next must be numbers with s_next < s, got {s!r}, {s_next!r}")
    return x_s + (s_next - s) * model_output, x_s - s * model_output


@torch.no_grad()
def flow_sample(model, shape, *, steps: int = 50, solver: str = "euler", x_T: torch.Tensor | None = None, y=None,
                time_scale: float = FLOW_TIME_SCALE, generator: torch.Generator | None = None, device=None,
                dtype=torch.float32, progress: bool = True, return_all_timesteps: bool = False,
                check_finite: bool = True):
    """Integrate dx/ds = û(x, s) from s = 1 (x_T ~ N(0, I)) down to s = 0 on the uniform grid s_i = 1 - i/steps
    (Liu et al. 2023; chapter 11, eq. ``eq-flow-ode``).

    ``solver="euler"``: :func:`flow_step`, one evaluation per step. ``"heun"``: the Euler prediction, then the
    average of the velocities at both ends, two evaluations on every step (the velocity is defined at s = 0,
    unlike ε̂/σ at σ = 0, so there is no Euler last step). NFE = steps or 2·steps. Returns x_0, or with
    ``return_all_timesteps`` the pair ``(xs, x_starts)`` of shapes (steps+1, *shape) and (steps, *shape).
    """
    steps = check_int("steps", steps)
    check_choice("solver", solver, FLOW_SOLVERS)
    time_scale = check_positive("time_scale", time_scale)
    if not callable(model):
        raise TypeError(f"model must be callable model(x_s, t[, y]), got {type(model).__name__}")
    x = initial_noise(shape, x_T, generator, device, dtype)

    def velocity(x, s):
        u = call_model(model, x, _model_time(s, x, time_scale), y)
        if check_finite:
            _assert_finite_at(u, "the model output", f"s = {s:.6g}")
        return u

    def step(x, i, _next):
        s, s_next = 1 - i / steps, 1 - (i + 1) / steps
        u = velocity(x, s)
        x_next, x_start = flow_step(u, s, s_next, x)
        if solver == "heun":
            x_next = x + (s_next - s) * 0.5 * (u + velocity(x_next, s_next))
        if check_finite:
            _assert_finite_at(x_next, "the flow sample", f"s = {s_next:.6g}")
        return x_next, x_start

    pairs = [(i, i + 1) for i in range(steps)]
    return run_steps(step, x, pairs, progress=progress, desc=f"flow sampling ({solver})",
                     return_all_timesteps=return_all_timesteps)


def exact_velocity_model(mixture, time_scale: float = FLOW_TIME_SCALE):
    """The exact velocity u*(x_s, s) = E[ε - x_0 | x_s] of data from a :class:`ddpm_lib.data.GaussianMixture`, as a
    model ``model(x_s, t[, y])`` with t = s · ``time_scale`` (chapter 11, eq. ``eq-flow-loss``): the
    minimiser of :func:`flow_matching_loss`, the flow twin of :class:`ddpm_lib.exact.OracleDenoiser`.

    Through the VP dictionary of this module: x_t = x_s (a + b) at ᾱ = (1-s)²/((1-s)² + s²),
    E[x_0 | x_t] in closed form and E[ε | x_t] = -b ∇ log q_t(x_t), both well defined on all of [0, 1] (at s = 0,
    u* = -x_0; at s = 1, u* = x - E[x_0]). Computed in float64, returned in the input's dtype.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    time_scale = check_positive("time_scale", time_scale)

    def model(x_s: torch.Tensor, t, y=None) -> torch.Tensor:
        x = x_s.to(torch.float64)
        s = (torch.as_tensor(t, dtype=torch.float64, device=x.device) / time_scale).reshape(-1).expand(x.shape[0])
        if bool(((s < 0) | (s > 1)).any()):
            raise ValueError(f"t / time_scale must lie in [0, 1], got t in {float(s.min()) * time_scale}.."
                             f"{float(s.max()) * time_scale}")
        alpha_bar = (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
        a, b = alpha_bar.sqrt()[:, None], (1 - alpha_bar).sqrt()[:, None]
        x_t = x * (a + b)
        x_start = mixture.posterior_mean_x0(x_t, alpha_bar)
        eps = -b * mixture.score(x_t, alpha_bar)
        return (eps - x_start).to(x_s.dtype)

    return model
