"""What every step function and loop shares (issue 10): one set of accepted timestep types, no silent NaN, and the
thread-count context manager.

- t may be a Python int, a NumPy int, a 0-d or a one-element integer tensor, and all four give the same result; the
  step functions reject a tensor of several timesteps with a TypeError, and floats and bools are rejected everywhere.
- A model output or sample that stops being finite raises FloatingPointError naming the step t where it happens;
  ``check_finite=False`` runs through.
"""

import numpy as np
import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_invert, ddim_sample, ddim_step, ddim_timesteps, ddpm_step, model_predictions
from ddpm_lib import p_sample, p_sample_loop, q_sample
from ddpm_lib._checks import check_int
from ddpm_lib.runtime import num_threads
from helpers import F64, gen, toy_eps_model

SCHED = NoiseSchedule.cosine(40)
T_INT = 17
T_FORMS = {
    "int": T_INT,
    "numpy int64": np.int64(T_INT),
    "numpy int32": np.int32(T_INT),
    "0-d tensor": torch.tensor(T_INT),
    "one-element tensor": torch.tensor([T_INT]),
}


def _x(seed=0, shape=(3, 2)):
    return torch.randn(shape, generator=gen(seed), **F64)


def _calls(t):
    """Every function that takes one timestep for the batch, called with ``t`` (same inputs, same z); each result as
    a tuple of tensors."""
    x, out, z = _x(0), _x(1), _x(2)
    return {
        "q_sample": (q_sample(SCHED, x, t, out),),
        "model_predictions": model_predictions(toy_eps_model, SCHED, x, t, "pred_v"),
        "p_sample": p_sample(toy_eps_model, SCHED, x, t, variance_noise=z),
        "ddpm_step": ddpm_step(SCHED, out, t, x, variance="fixed_large", variance_noise=z),
        "ddim_step": ddim_step(SCHED, out, t, 3, x, eta=0.5, variance_noise=z),
    }


@pytest.mark.parametrize("form", sorted(T_FORMS))
def test_every_timestep_form_gives_the_same_result(form):
    ref = _calls(T_INT)
    got = _calls(T_FORMS[form])
    for name in ref:
        for a, b in zip(ref[name], got[name]):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name} with t as {form}")
    # a (B,) tensor of equal entries is the same step, in the functions that take one t per example
    tt = torch.full((3,), T_INT)
    torch.testing.assert_close(q_sample(SCHED, _x(0), tt, _x(1)), ref["q_sample"][0], rtol=0, atol=0)
    for a, b in zip(model_predictions(toy_eps_model, SCHED, _x(0), tt, "pred_v"), ref["model_predictions"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_different_timesteps_give_different_results():
    """The comparison above can fail: another t changes every function's output."""
    ref, other = _calls(T_INT), _calls(T_INT + 1)
    for name in ref:
        assert (ref[name][0] - other[name][0]).abs().max() > 1e-6, name


STEP_CALLS = {
    "p_sample": lambda t: p_sample(toy_eps_model, SCHED, _x(), t),
    "ddpm_step": lambda t: ddpm_step(SCHED, _x(1), t, _x()),
    "ddim_step": lambda t: ddim_step(SCHED, _x(1), t, -1, _x()),
    "ddim_step t_prev": lambda t: ddim_step(SCHED, _x(1), 30, t, _x()),
}


@pytest.mark.parametrize("name", sorted(STEP_CALLS))
def test_step_functions_reject_several_timesteps(name):
    with pytest.raises(TypeError, match=r"t(_prev)? must be (one timestep|an int)"):
        STEP_CALLS[name](torch.tensor([3, 4, 5]))


BAD_T = {"float": 3.0, "bool": True, "numpy float": np.float64(3.0), "float tensor": torch.tensor(3.0),
         "bool tensor": torch.tensor(True), "string": "3"}


@pytest.mark.parametrize("bad", sorted(BAD_T))
@pytest.mark.parametrize("name", ["q_sample", "model_predictions", "p_sample", "ddpm_step", "ddim_step"])
def test_floats_and_bools_are_rejected(name, bad):
    fns = {
        "q_sample": lambda t: q_sample(SCHED, _x(), t, _x(1)),
        "model_predictions": lambda t: model_predictions(toy_eps_model, SCHED, _x(), t),
        "p_sample": STEP_CALLS["p_sample"],
        "ddpm_step": STEP_CALLS["ddpm_step"],
        "ddim_step": STEP_CALLS["ddim_step"],
    }
    with pytest.raises(TypeError, match=r"\bt must"):
        fns[name](BAD_T[bad])


# ---------------------------------------------------------------- no silent NaN


def nan_at(t_bad: int, value=float("nan")):
    """A model that returns ``value`` in one entry at step ``t_bad`` and a finite ε̂ elsewhere."""

    def model(x, t):
        out = toy_eps_model(x, t)
        if int(t[0]) == t_bad:
            out = out.clone()
            out[0, 0] = value
        return out

    return model


def _loops(model, t_bad, check_finite=True):
    """The three loops with ``model`` (no clipping, which would turn an infinite x̂_0 into ±1)."""
    kw = dict(progress=False, check_finite=check_finite)
    steps = 8
    assert t_bad in ddim_timesteps(SCHED.T, steps, "leading").tolist()
    return {
        "p_sample_loop": lambda: p_sample_loop(model, SCHED, (3, 2), generator=gen(0), dtype=torch.float64,
                                               clip_denoised=False, **kw),
        "ddim_sample": lambda: ddim_sample(model, SCHED, (3, 2), steps=steps, generator=gen(0), dtype=torch.float64,
                                           clip_denoised=False, **kw),
        "ddim_invert": lambda: ddim_invert(model, SCHED, _x(), steps=steps, **kw),
    }


@pytest.mark.parametrize("loop", ["p_sample_loop", "ddim_sample", "ddim_invert"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_loops_stop_at_the_step_where_the_model_output_is_not_finite(loop, value):
    t_bad = 15  # an entry of the 8-step leading list of T = 40: 35, 30, ..., 0
    with pytest.raises(FloatingPointError, match=rf"model output is not finite at code step t = {t_bad}\b"):
        _loops(nan_at(t_bad, value), t_bad)[loop]()
    out = _loops(nan_at(t_bad, value), t_bad, check_finite=False)[loop]()
    assert not torch.isfinite(out).all()  # it ran through, and the NaN reached the result
    assert torch.isfinite(_loops(toy_eps_model, t_bad)[loop]()).all()


@pytest.mark.parametrize("step", ["ddpm_step", "ddim_step"])
def test_step_functions_check_output_and_sample(step):
    t = 23
    x, out = _x(), _x(1)
    bad_out = out.clone()
    bad_out[1, 1] = float("nan")
    bad_x = x.clone()
    bad_x[2, 0] = float("inf")
    call = {"ddpm_step": lambda o, xx, **kw: ddpm_step(SCHED, o, t, xx, clip_denoised=False, **kw),
            "ddim_step": lambda o, xx, **kw: ddim_step(SCHED, o, t, 10, xx, clip_denoised=False, **kw)}[step]
    with pytest.raises(FloatingPointError, match=rf"the model output is not finite at code step t = {t}\b.*1 NaN"):
        call(bad_out, x)
    with pytest.raises(FloatingPointError, match=rf"the sample is not finite at code step t = {t}\b"):
        call(out, bad_x)
    x_prev, _ = call(bad_out, x, check_finite=False)
    assert torch.isnan(x_prev).any()
    assert torch.isfinite(call(out, x)[0]).all()


# ---------------------------------------------------------------- argument checks and threads


def test_check_int_names_the_argument():
    assert check_int("steps", np.int64(4)) == 4 and type(check_int("steps", np.int64(4))) is int
    for bad in (2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^steps must be an int"):
            check_int("steps", bad)
    with pytest.raises(ValueError, match=r"^width must be an int in 2\.\.inf, got 1$"):
        check_int("width", 1, 2)
    with pytest.raises(ValueError, match=r"^t_prev must be an int in -1\.\.4, got 5$"):
        check_int("t_prev", 5, -1, 4)
    assert check_int("k", -7, None, None) == -7


def test_num_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    with num_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with num_threads(target):
            assert torch.get_num_threads() == target
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with num_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n must be"):
        with num_threads(0):
            pass
    assert torch.get_num_threads() == before
