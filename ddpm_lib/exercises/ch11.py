"""Checks for the code exercises of chapter 11 (continuous time: the probability-flow ODE, its solvers and the
likelihood through it).

Each check compares the reader's function with an independent reference of the library (tested against diffusers
and against closed-form solutions in ``tests/``) and names the plausible mistake when the answer reproduces one.
"""

from __future__ import annotations

import math

import torch

from ..data import GaussianMixture, make_gaussian_mixture
from ..diffusion import predict_start_from_noise
from ..ode import divergence, mixture_eps_fn
from ..schedules import NoiseSchedule
from ..solvers import dpm_solver_step, solve_pf_ode
from .ch01 import assert_close, call

__all__ = ["check_heun_step", "check_dpm_solver_update", "check_hutchinson"]

_SIGMA_PAIRS = ((80.0, 30.0), (3.0, 1.7), (0.6, 0.35), (0.2, 0.05), (0.4, 0.0))


def _drifts():
    """Exact drifts ε*(x̄, σ) to try: the 8-Gaussians mixture (2-D) and a 1-D Gaussian N(0.3, 0.5²)."""
    return (("8-Gaussians mixture", mixture_eps_fn(make_gaussian_mixture("8gaussians")), 2),
            ("1-D Gaussian", mixture_eps_fn(GaussianMixture([[0.3]], 0.5)), 1))


def check_heun_step(fn) -> None:
    """Exercise ``ex-11-heun``: ``fn(eps_fn, x_bar, sigma, sigma_next)`` must return one step of Heun's method for
    dx̄/dσ = ε̂(x̄, σ) (chapter 11, eq. ``eq-heun-step``): the Euler prediction, then the average of the slopes at both
    ends, except on the step to σ_next = 0, which stays the Euler step (Karras et al. 2022, Algorithm 1).

    Tried with the exact drifts of a 2-D mixture and a 1-D Gaussian on five pairs of levels, the last ending at 0.
    The reference is :func:`ddpm_lib.solvers.solve_pf_ode` with ``solver="heun"`` on the grid [σ, σ_next]."""
    g = torch.Generator().manual_seed(11)
    for name, eps_fn, dim in _drifts():
        for sigma, sigma_next in _SIGMA_PAIRS:
            x_bar = torch.randn(64, dim, generator=g, dtype=torch.float64) * math.sqrt(1 + sigma**2)
            what = f"heun_step on the {name} from sigma = {sigma} to {sigma_next}"
            got = call(fn, what, eps_fn, x_bar, sigma, sigma_next)
            want = solve_pf_ode(eps_fn, x_bar, [sigma, sigma_next], solver="heun")
            d = sigma_next - sigma
            e0 = eps_fn(x_bar, sigma)
            x_e = x_bar + d * e0
            mistakes = {
                "the slope at the far end is taken at the Euler prediction x_bar + (sigma_next - sigma) eps, not at "
                "x_bar.": x_bar + d * 0.5 * (e0 + eps_fn(x_bar, sigma_next)) if sigma_next > 0 else None,
                "the second slope is evaluated at sigma_next, the level the prediction reached.":
                    x_bar + d * 0.5 * (e0 + eps_fn(x_e, sigma)) if sigma_next > 0 else None,
                "average the two slopes: multiply their sum by 1/2.": x_bar + d * (e0 + eps_fn(x_e, sigma_next))
                if sigma_next > 0 else None,
                "the step goes down: multiply the slope by (sigma_next - sigma), which is negative.":
                    x_bar - d * e0 if sigma_next == 0 else x_bar - d * 0.5 * (e0 + eps_fn(x_bar - d * e0, sigma_next)),
            }
            if sigma_next == 0:
                mistakes["the step to sigma_next = 0 stays the Euler step (Algorithm 1 of Karras et al.): the network "
                         "is not defined at sigma = 0, so there is no second slope."] = (
                    x_bar + d * 0.5 * (e0 + eps_fn(x_e, 0.0)))
            assert_close(got, want, what,
                         "x_e = x_bar + (sigma_next - sigma) eps(x_bar, sigma); if sigma_next > 0, "
                         "x_bar + (sigma_next - sigma) (eps(x_bar, sigma) + eps(x_e, sigma_next)) / 2, else x_e.",
                         {k: val for k, val in mistakes.items() if val is not None}, rtol=1e-9, atol=1e-10)


def check_dpm_solver_update(fn) -> None:
    """Exercise ``ex-11-dpm-solver``: ``fn(x_bar, x0_hat, sigma, sigma_next, x0_last, sigma_last)`` must return
    DPM-Solver++(2M)'s x̄ at ``sigma_next`` (chapter 11, eq. ``eq-dpm-solver-2m``): first order
    (x̄' = (σ'/σ) x̄ + (1 - σ'/σ) x̂_0) when ``x0_last`` is None (the first step) or when σ' = 0 (the last step, where
    h = ∞), else with D = (1 + 1/(2r)) x̂_0 - x̂_0^{last}/(2r), r = h_last/h, h = log(σ/σ'), h_last = log(σ_last/σ).

    Tried on the linear and cosine schedules at integer timesteps (first, middle and last steps of a run); the
    reference is :func:`ddpm_lib.solvers.dpm_solver_step` (equal to diffusers' DPMSolverMultistepScheduler, tested),
    its x_prev divided by √ᾱ_prev."""
    g = torch.Generator().manual_seed(12)
    for sched in (NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)):
        sig = sched.sqrt_recipm1_alphas_cumprod
        for t_last, t, t_prev in ((None, 999, 899), (900, 700, 500), (400, 300, 250), (80, 40, 10), (60, 20, -1)):
            x_t = torch.randn(32, 2, generator=g, dtype=torch.float64)
            out = torch.randn(32, 2, generator=g, dtype=torch.float64)
            prev = None if t_last is None else torch.randn(32, 2, generator=g, dtype=torch.float64)
            x_prev, x0 = dpm_solver_step(sched, out, t, t_prev, x_t, prev_x_start=prev, t_last=t_last)
            a_prev = sched.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
            want = x_prev / math.sqrt(a_prev)
            s, s_next = sig[t].item(), (sig[t_prev].item() if t_prev >= 0 else 0.0)
            s_last = None if t_last is None else sig[t_last].item()
            x_bar = x_t / math.sqrt(sched.alphas_cumprod[t].item())
            assert torch.allclose(x0, predict_start_from_noise(sched, x_t, t, out))
            what = (f"dpm_solver_update (T = {sched.T}, {'first' if prev is None else 'last' if t_prev < 0 else 'a'}"
                    f" step, sigma = {s:.4g} -> {s_next:.4g})")
            got = call(fn, what, x_bar, x0, s, s_next, prev, s_last)
            if t_prev < 0 and isinstance(got, torch.Tensor) and not bool(torch.isfinite(got).all()):
                raise AssertionError(f"{what}: not finite. Hint: the last step (sigma_next = 0) is first order: h is "
                                     "infinite there, and x_bar' = x0_hat.")
            ratio = s_next / s
            first = ratio * x_bar + (1 - ratio) * x0
            mistakes = {}
            if prev is not None and s_next > 0:
                h, h_last = math.log(s / s_next), math.log(s_last / s)
                r = h_last / h

                def second(rr, sign=1.0):
                    return ratio * x_bar + (1 - ratio) * ((1 + sign * 0.5 / rr) * x0 - sign * 0.5 / rr * prev)

                r_sigma = (s_last - s) / (s - s_next)
                mistakes = {
                    "use the previous x0_hat: after the first step the update is second order.": first,
                    "r = h_last / h (the previous step over this one), not h / h_last.": second(1 / r),
                    "sign error: D = (1 + 1/(2r)) x0_hat - x0_last/(2r) extrapolates away from x0_last.":
                        second(r, -1.0),
                    "the steps are measured in lambda = -log(sigma): h = log(sigma/sigma_next), not sigma - "
                    "sigma_next.": second(r_sigma),
                }
            if s_next > 0:
                mistakes["exp(-h) = sigma_next / sigma multiplies x_bar (the exact linear part), not sigma / "
                         "sigma_next."] = x_bar / ratio + (1 - 1 / ratio) * x0
            assert_close(got, want, what,
                         "x_bar' = (sigma_next/sigma) x_bar + (1 - sigma_next/sigma) D with D = x0_hat on the first and "
                         "the last step, else D = (1 + 1/(2r)) x0_hat - x0_last/(2r), r = log(sigma_last/sigma) / "
                         "log(sigma/sigma_next).", mistakes, rtol=1e-9, atol=1e-10)


def check_hutchinson(fn) -> None:
    """Exercise ``ex-11-hutchinson``: ``fn(f, x, probes)`` must return Hutchinson's estimates vᵀ (∂f/∂x) v of the
    divergence of a per-example map f at a batch x, one per probe v and example: shape (P, B) for probes of shape
    (P, *x.shape) (chapter 11, eq. ``eq-hutchinson``). The reference is :func:`ddpm_lib.ode.divergence` with the
    same probes."""
    g = torch.Generator().manual_seed(13)
    A = torch.tensor([[0.5, 2.0, -0.3], [-1.0, 1.5, 0.7], [0.2, -0.4, -0.8]], dtype=torch.float64)

    def f_vec(z):  # a non-symmetric Jacobian: A plus a diagonal that depends on z
        return z @ A.T + torch.sin(z)

    def f_img(z):  # an image-shaped map mixing neighbouring pixels
        return torch.tanh(z + 0.5 * z.roll(1, dims=-1)) * 1.3

    for name, f, shape in (("a map of 3-vectors", f_vec, (6, 3)), ("a map of 1x2x2 images", f_img, (5, 1, 2, 2))):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        probes = (2 * torch.randint(0, 2, (4,) + shape, generator=g) - 1).to(torch.float64)
        what = f"hutchinson on {name}"
        got = call(fn, what, f, x, probes, hint="use torch.autograd.grad(f(x), x, grad_outputs=v) for the product vᵀJ.")
        _, want = divergence(f, x, probes)
        if isinstance(got, torch.Tensor) and got.shape == want.shape[1:]:
            raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}. Hint: return one "
                                 "estimate per probe and example, shape (P, B); their mean over the probes is the "
                                 "estimate of the divergence, and their spread its standard error.")
        xg = x.detach().requires_grad_(True)
        fx = f(xg)
        (ones_j,) = torch.autograd.grad(fx, xg, grad_outputs=torch.ones_like(fx), retain_graph=True)
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        mistakes = {
            "the estimate is vᵀ J v with J = df/dx, not vᵀ f(x).":
                torch.stack([flat(v * fx.detach()).sum(1) for v in probes]),
            "vᵀJ comes from autograd.grad(f(x), x, grad_outputs=v); grad_outputs=ones gives 1ᵀJ, the column sums.":
                torch.stack([flat(v * ones_j).sum(1) for v in probes]),
        }
        assert_close(got, want, what, "for each probe v: (autograd.grad(f(x), x, grad_outputs=v)[0] * v) summed over "
                     "every dimension but the batch.", mistakes, rtol=1e-9, atol=1e-10)
