"""Parity with Hugging Face diffusers' DDPMScheduler and DDIMScheduler, in float64 with the same noise tensors.

diffusers keeps its schedule in float32; to compare the update formulas to 1e-12 the schedulers' buffers are
replaced by the same quantities in float64 (its own recipe: α = 1 - β, ᾱ = cumprod α), and the betas themselves
are compared separately at float32 precision. DDPMScheduler draws its noise with
``randn_tensor(shape, generator, device, dtype)``, i.e. ``torch.randn(shape, generator=g, dtype=float64)`` on the
CPU: two generators with the same seed give both libraries the same z.

Mapping: prediction_type epsilon / sample / v_prediction = objective pred_noise / pred_x0 / pred_v; beta_schedule
linear / squaredcos_cap_v2 = linear_beta_schedule / cosine_beta_schedule.

The forward process (q_sample, predict_v) is compared with the schedulers' add_noise / get_velocity, ddpm_step with
DDPMScheduler.step for every variance type (learned_range included), ddim_step with DDIMScheduler.step, and
ddim_invert with DDIMInverseScheduler. The last part documents a bug of diffusers' DDIMScheduler.step that ddpm_lib
does not copy: it steps to ``t - T // steps`` instead of the next entry of its own timestep list.
"""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ddpm_lib import (  # noqa: E402
    NoiseSchedule,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    model_predictions,
    p_sample,
    predict_v,
    q_sample,
)
from helpers import F64, gen, toy_eps_model  # noqa: E402

T = 1000
OBJECTIVE = {"epsilon": "pred_noise", "sample": "pred_x0", "v_prediction": "pred_v"}
OURS = {"linear": NoiseSchedule.linear(T), "squaredcos_cap_v2": NoiseSchedule.cosine(T)}
PREDICTIONS = sorted(OBJECTIVE)


def _to_float64(scheduler, sched):
    scheduler.betas = sched.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    scheduler.one = torch.tensor(1.0, **F64)
    for name in ("final_alpha_cumprod", "initial_alpha_cumprod"):  # ᾱ = 1 beyond the ends (set_alpha_to_one)
        if hasattr(scheduler, name):
            setattr(scheduler, name, torch.tensor(1.0, **F64))
    return scheduler


def _ddim_scheduler(beta_schedule="linear", spacing="leading", steps=50, clip=False, prediction="epsilon", Tn=T):
    s = diffusers.DDIMScheduler(num_train_timesteps=Tn, beta_schedule=beta_schedule, clip_sample=clip,
                                prediction_type=prediction, set_alpha_to_one=True, timestep_spacing=spacing)
    s.set_timesteps(steps)
    sched = OURS[beta_schedule] if Tn == T else NoiseSchedule.cosine(Tn)
    return _to_float64(s, sched)


def _inputs(seed, shape=(4, 3, 5)):
    g = gen(seed)
    x = 1.2 * torch.randn(shape, generator=g, **F64)
    out = 1.5 * torch.randn(shape, generator=g, **F64)
    return x, out


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_betas_equal_diffusers(beta_schedule):
    s = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule)
    ours = OURS[beta_schedule]
    assert s.betas.dtype == torch.float32
    torch.testing.assert_close(ours.betas.float(), s.betas, rtol=3e-7, atol=0)
    torch.testing.assert_close(ours.alphas_cumprod.float(), s.alphas_cumprod, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- the forward process


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_q_sample_and_predict_v_equal_add_noise_and_get_velocity(beta_schedule):
    """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε and v = √ᾱ_t ε - √(1-ᾱ_t) x_0 at every t, against diffusers' own code."""
    sched = OURS[beta_schedule]
    s = _to_float64(diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule), sched)
    g = gen(0)
    x0 = torch.randn(T, 3, generator=g, **F64)
    eps = torch.randn(T, 3, generator=g, **F64)
    t = torch.arange(T)
    torch.testing.assert_close(q_sample(sched, x0, t, eps), s.add_noise(x0, eps, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(predict_v(sched, x0, t, eps), s.get_velocity(x0, eps, t), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- DDPM


def _ddpm_output(prediction_out, x, variance):
    """The model output for ``variance``: twice the channels with learned_range (the prediction, then v ∈ [-1, 1])."""
    if variance != "learned_range":
        return prediction_out
    v = torch.rand(x.shape, generator=gen(5), **F64) * 2 - 1
    return torch.cat([prediction_out, v], dim=1)


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddpm_step_matches_diffusers(beta_schedule, variance, clip, prediction):
    """ddpm_step = DDPMScheduler.step (variance_type = variance) with z from equally seeded generators.

    learned_range: the output has 2C channels, the prediction and v ∈ [-1, 1]; diffusers' lower end is
    log(clamp(β̃_t, 1e-20)), equal to our clipped log β̃_t for t >= 1. At t = 0 only the mean matters: no noise is
    added there, so the two variances (ours clipped to β̃_1, diffusers' clamp at 1e-20) never enter x_prev."""
    sched = OURS[beta_schedule]
    s = _to_float64(diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, variance_type=variance,
                                            clip_sample=clip, prediction_type=prediction), sched)
    objective = OBJECTIVE[prediction]
    clipped_somewhere = False
    for t in (0, 1, 2, 10, 250, 500, 998, 999):
        x, out = _inputs(t)
        out = _ddpm_output(out, x, variance)
        ref = s.step(out, t, x, generator=gen(100 + t))
        x_prev, x0 = ddpm_step(sched, out, t, x, variance=variance, clip_denoised=clip, objective=objective,
                               generator=gen(100 + t))
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-12, atol=1e-12)
        _, raw = model_predictions(None, sched, x, t, objective, model_output=out[:, : x.shape[1]])
        clipped_somewhere |= bool((raw.abs() > 1).any())
    assert clipped_somewhere  # the clip branch is exercised


def test_ddpm_noise_is_drawn_like_diffusers():
    """The z of both libraries comes from the same generator draw (without it the samples would differ)."""
    sched = OURS["linear"]
    s = _to_float64(diffusers.DDPMScheduler(num_train_timesteps=T), sched)
    x, out = _inputs(7)
    ref = s.step(out, 500, x, generator=gen(1)).prev_sample
    same, _ = p_sample(lambda xx, tt: out, sched, x, 500, generator=gen(1))
    other, _ = p_sample(lambda xx, tt: out, sched, x, 500, generator=gen(2))
    torch.testing.assert_close(same, ref, rtol=1e-12, atol=1e-12)
    assert (other - ref).abs().max() > 1e-3


# ---------------------------------------------------------------- DDIM


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [50, 8])
def test_ddim_step_matches_diffusers(beta_schedule, clip, prediction, steps):
    """Leading spacing with steps dividing T, where diffusers' t - T//steps is the next entry; η ∈ {0, 0.5, 1},
    the same z passed as variance_noise, use_clipped_model_output=True (ε re-derived from the clipped x̂_0)."""
    sched = OURS[beta_schedule]
    s = _ddim_scheduler(beta_schedule, "leading", steps, clip, prediction)
    ts = s.timesteps.tolist()
    assert ts == ddim_timesteps(T, steps, "leading").tolist()
    for i in sorted({0, 1, len(ts) // 2, len(ts) - 2, len(ts) - 1}):
        t = ts[i]
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        assert (t - T // steps) == t_prev or (t_prev == -1 and t - T // steps < 0)
        x, out = _inputs(1000 + t)
        z = torch.randn(x.shape, generator=gen(t), **F64)
        for eta in (0.0, 0.5, 1.0):
            ref = s.step(out, t, x, eta=eta, use_clipped_model_output=clip, variance_noise=z)
            x_prev, x0 = ddim_step(sched, out, t, t_prev, x, eta=eta, variance_noise=z, objective=OBJECTIVE[prediction],
                                   clip_denoised=clip)
            torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(x_prev, ref.prev_sample, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("steps", [50, 8])
def test_ddim_invert_matches_ddim_inverse_scheduler(beta_schedule, steps):
    """ddim_invert (pred_noise) = DDIMInverseScheduler (leading spacing, steps dividing T, no clipping, ᾱ = 1
    before the first step), state by state. Its step(model_output, t, x) goes from the level t - T//steps (the
    source) to t, with the model evaluated at (x_source, t): that source is the previous entry of the ascending list
    (or the data, ᾱ = 1, for the first), which is what ddim_invert uses."""
    sched = OURS[beta_schedule]
    inv = diffusers.DDIMInverseScheduler(num_train_timesteps=T, beta_schedule=beta_schedule, clip_sample=False,
                                         set_alpha_to_one=True, timestep_spacing="leading")
    inv.set_timesteps(steps)
    inv = _to_float64(inv, sched)
    ts = inv.timesteps.tolist()
    assert ts == ddim_timesteps(T, steps, "leading").flip(0).tolist()
    assert [max(t - T // steps, -1) for t in ts] == [-1] + ts[:-1]  # a negative level is the data, ᾱ = 1
    x0 = torch.rand(8, 3, generator=gen(9), **F64) * 2 - 1
    xs, _ = ddim_invert(toy_eps_model, sched, x0, steps=steps, spacing="leading", progress=False,
                        return_all_timesteps=True)
    x = x0.clone()
    for i, t in enumerate(ts):
        x = inv.step(toy_eps_model(x, torch.full((8,), t)), t, x).prev_sample
        torch.testing.assert_close(xs[i + 1], x, rtol=1e-10, atol=1e-10)
    assert (x - x0).abs().max() > 0.5


TIMESTEP_CASES = [(1, 1), (2, 1), (2, 2), (10, 3), (10, 10), (15, 4), (15, 13), (50, 7), (100, 30), (999, 50),
                  (1000, 1), (1000, 3), (1000, 7), (1000, 30), (1000, 50), (1000, 61), (1000, 103), (1000, 250),
                  (1000, 999), (1000, 1000), (1001, 10), (4000, 333)]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("Tn,steps", TIMESTEP_CASES)
def test_ddim_timesteps_match_diffusers(spacing, Tn, steps):
    """ddim_timesteps equals DDIMScheduler(timestep_spacing=...).set_timesteps(steps).timesteps.

    Exception: for some (T, steps) diffusers' trailing spacing, np.round(np.arange(T, 0, -T/steps)) - 1, gets one
    entry too many from the floating-point arange (a final -1, e.g. T=15, steps=13 or T=1000, steps=61); there
    the correct list is its first ``steps`` entries.
    """
    s = diffusers.DDIMScheduler(num_train_timesteps=Tn, timestep_spacing=spacing)
    s.set_timesteps(steps)
    theirs = s.timesteps.tolist()
    if len(theirs) == steps + 1:
        assert spacing == "trailing" and theirs[-1] == -1
        theirs = theirs[:steps]
    assert ddim_timesteps(Tn, steps, spacing).tolist() == theirs


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_timesteps_match_diffusers_sweep(spacing):
    """Every 1 <= steps <= T for T <= 120, and every steps for T = 999 and 1000 (rounding ties included:
    e.g. T = 999, steps = 50 has the trailing entry round(499.5 ± ulp) - 1, where only diffusers' own arithmetic
    gives its answer). Same exception as above for diffusers' spurious final -1."""
    bad = []
    for Tn in list(range(1, 121)) + [999, 1000]:
        s = diffusers.DDIMScheduler(num_train_timesteps=Tn, timestep_spacing=spacing)
        for steps in range(1, Tn + 1):
            s.set_timesteps(steps)
            theirs = s.timesteps.tolist()
            if len(theirs) == steps + 1 and spacing == "trailing" and theirs[-1] == -1:
                theirs = theirs[:steps]
            if ddim_timesteps(Tn, steps, spacing).tolist() != theirs:
                bad.append((Tn, steps))
    assert not bad, f"{len(bad)} (T, steps) differ from diffusers, e.g. {bad[:5]}"


# ---------------------------------------------------------------- diffusers' previous-step bug


@pytest.mark.parametrize("spacing,steps", [("trailing", 7), ("trailing", 30), ("linspace", 7), ("linspace", 30),
                                           ("leading", 30)])
def test_diffusers_prev_step_is_not_the_next_entry(spacing, steps):
    """diffusers' DDIM step goes to t - T//steps. That is the next entry of the timestep list for leading spacing
    only; ddim_sample uses the actual next entry. Both loops are written out by hand with ddim_step: ddim_sample
    equals the one over the actual next entries, diffusers equals the one over t - T//steps, and for trailing and
    linspace spacings the two differ."""
    ts = ddim_timesteps(T, steps, spacing).tolist()
    nxt = ts[1:] + [-1]
    buggy = [max(t - T // steps, -1) for t in ts]
    mismatches = [(t, a, b) for t, a, b in zip(ts, nxt, buggy) if a != b]
    assert bool(mismatches) == (spacing != "leading"), mismatches

    sched = OURS["squaredcos_cap_v2"]
    xT = torch.randn(64, 2, generator=gen(0), **F64)

    def loop(prevs):
        x = xT.clone()
        for t, t_prev in zip(ts, prevs):
            x, _ = ddim_step(sched, toy_eps_model(x, torch.full((64,), t)), t, t_prev, x, eta=0.0, clip_denoised=False)
        return x

    ours = ddim_sample(toy_eps_model, sched, xT.shape, steps=steps, spacing=spacing, x_T=xT, eta=0.0,
                       clip_denoised=False, progress=False)
    torch.testing.assert_close(ours, loop(nxt), rtol=1e-12, atol=1e-12)

    s = _ddim_scheduler("squaredcos_cap_v2", spacing, steps)
    assert s.timesteps.tolist() == ts
    x = xT.clone()
    for t in s.timesteps.tolist():
        x = s.step(toy_eps_model(x, torch.full((64,), t)), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(x, loop(buggy), rtol=1e-10, atol=1e-10)
    if mismatches:
        assert (ours - x).abs().max().item() > 1e-3


@pytest.mark.parametrize("spacing,steps", [("trailing", 7), ("trailing", 30), ("linspace", 7), ("linspace", 30)])
def test_x0_oracle_stays_on_the_forward_ray(spacing, steps):
    """A model that predicts x_0 exactly (objective pred_x0): with η = 0, every DDIM state must be
    √ᾱ_{t_i} x_0 + √(1-ᾱ_{t_i}) ε for the one ε fixed by x_T, and the output is x_0. ddim_sample does this;
    diffusers' step lands at the noise level of t - T//steps instead of the next timestep (and when the last entry
    is >= T//steps, e.g. trailing with T=1000, steps=7, its last step ends at t = 0, not at the clean data)."""
    sched = OURS["linear"]
    g = gen(3)
    x0 = torch.rand(16, 2, generator=g, **F64) * 1.6 - 0.8
    xT = torch.randn(16, 2, generator=g, **F64)
    oracle = lambda x, t: x0  # noqa: E731
    ts = ddim_timesteps(T, steps, spacing).tolist()
    ab = sched.alphas_cumprod
    eps = (xT - ab[ts[0]].sqrt() * x0) / (1 - ab[ts[0]]).sqrt()
    xs, _ = ddim_sample(oracle, sched, xT.shape, steps=steps, spacing=spacing, x_T=xT, objective="pred_x0",
                        clip_denoised=False, progress=False, return_all_timesteps=True)
    for i, t in enumerate(ts):
        torch.testing.assert_close(xs[i], q_sample(sched, x0, t, eps), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xs[-1], x0, rtol=1e-10, atol=1e-10)

    s = _ddim_scheduler("linear", spacing, steps, prediction="sample")
    nxt = ts[1:] + [-1]
    i = next(k for k, t in enumerate(ts) if t - T // steps != nxt[k])  # the first step where diffusers goes astray
    before = s.step(x0, ts[i], xs[i], eta=0.0).prev_sample  # from the same (correct) state as ddim_sample
    lands = ts[i] - T // steps
    torch.testing.assert_close(before, x0 if lands < 0 else q_sample(sched, x0, lands, eps), rtol=1e-10, atol=1e-10)
    assert (before - xs[i + 1]).abs().max().item() > 1e-5
    x = xT.clone()
    for t in ts:
        x = s.step(x0, t, x, eta=0.0).prev_sample
    if ts[-1] - T // steps >= 0:  # e.g. trailing, T=1000, steps=7: the last entry 142 steps to 0, not to the data
        assert (x - x0).abs().max().item() > 1e-3
