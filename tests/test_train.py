"""Tests of ddpm_lib.train: the training loop (and that a UNet really learns the digits), the learning-rate schedule,
mixed precision, the callback, EMA, label dropout, the loss per timestep band and checkpoints."""

import math

import pytest
import torch
from torch import nn

from ddpm_lib.data import load_digits, make_gaussian_mixture
from ddpm_lib.losses import p_losses
from ddpm_lib.models import MLPDenoiser, UNet
from ddpm_lib.recipes import make_schedule
from ddpm_lib.schedules import NoiseSchedule
from ddpm_lib.train import (
    EMA,
    TrainResult,
    drop_labels,
    load_checkpoint,
    loss_by_timestep_band,
    lr_factor,
    save_checkpoint,
    train,
)
from helpers import gen


# tiny models: every test runs on one thread (the fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.linear(1000)


@pytest.fixture(scope="module")
def data():
    return make_gaussian_mixture("8gaussians").sample(4096, gen(0))


def _small_mlp(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MLPDenoiser(2, hidden_dim=64, num_layers=2, **kwargs)


def _eval_loss(model, sched, n=4096, seed=123):
    """L_simple on a fixed draw of (x_0, t, ε) from the 8-Gaussians mixture."""
    g = gen(seed)
    x0 = make_gaussian_mixture("8gaussians").sample(n, g)
    t = torch.randint(0, sched.T, (n,), generator=g)
    noise = torch.randn(n, 2, generator=g)
    with torch.no_grad():
        return p_losses(model, sched, x0, t, noise).item()


# ----------------------------------------------------------------------------- the loop


def test_training_reduces_the_loss_on_a_2d_mixture(sched, data):
    model = _small_mlp()
    before = _eval_loss(model, sched)
    result = train(model, sched, data, steps=300, batch_size=128, lr=2e-3, progress=False)
    assert isinstance(result, TrainResult)
    after_ema = _eval_loss(result.ema_model, sched)
    after = _eval_loss(result.model, sched)
    # an untrained network is near 1 (or worse); after 300 steps both copies are far below it
    assert before > 0.9
    assert after < 0.6 and after_ema < 0.6, (before, after, after_ema)
    assert result.loss_history[-50:].mean() < 0.7 * result.loss_history[:50].mean()


def test_result_histories_shapes_and_consistency(sched, data):
    result = train(_small_mlp(), sched, data, steps=20, batch_size=16, progress=False)
    assert result.loss_history.shape == (20,)
    assert result.t_history.shape == (20, 16) and result.t_history.dtype == torch.long
    assert result.t_history.min() >= 0 and result.t_history.max() <= sched.T - 1
    assert result.example_losses.shape == (20, 16)
    torch.testing.assert_close(result.example_losses.mean(1), result.loss_history)
    assert torch.isfinite(result.loss_history).all()
    assert result.ema_model is result.ema.model
    no_ema = train(_small_mlp(), sched, data, steps=2, batch_size=4, ema_decay=None, progress=False)
    assert no_ema.ema is None and no_ema.ema_model is no_ema.model


def test_same_seed_same_loss_history_and_weights(sched, data):
    a = train(_small_mlp(0), sched, data, steps=30, batch_size=32, seed=7, progress=False)
    b = train(_small_mlp(0), sched, data, steps=30, batch_size=32, seed=7, progress=False)
    assert torch.equal(a.loss_history, b.loss_history)
    assert torch.equal(a.t_history, b.t_history)
    for p, q in zip(a.ema_model.parameters(), b.ema_model.parameters()):
        assert torch.equal(p, q)
    c = train(_small_mlp(0), sched, data, steps=30, batch_size=32, seed=8, progress=False)
    assert not torch.equal(a.loss_history, c.loss_history)


def test_training_is_reproducible_with_dropout_and_leaves_global_rng_alone(sched):
    images = torch.rand(64, 1, 8, 8, generator=gen(0)) * 2 - 1

    def run():
        torch.manual_seed(0)
        model = UNet(base_channels=8, dropout=0.3)
        return train(model, sched, images, steps=3, batch_size=8, seed=1, progress=False).loss_history

    first = run()
    torch.manual_seed(999)  # a different global state: the dropout masks still come from seed=1
    assert torch.equal(first, run())
    # the loop forks the global RNG: the caller's stream continues as if it had not run
    model = UNet(base_channels=8)
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    train(model, sched, images, steps=1, batch_size=4, progress=False)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v"])
def test_other_objectives_and_weightings_run(sched, data, objective):
    result = train(_small_mlp(), sched, data, steps=5, batch_size=8, objective=objective,
                   loss_weighting="min_snr", progress=False)
    assert torch.isfinite(result.loss_history).all()


def test_gradients_are_clipped_to_grad_clip(sched, data, monkeypatch):
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        norm = original(parameters, max_norm, *args, **kwargs)
        after = math.sqrt(sum(float(p.grad.square().sum()) for p in parameters))
        calls.append((max_norm, float(norm), after))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    train(_small_mlp(), sched, data * 100, steps=3, batch_size=8, grad_clip=0.5, progress=False)
    assert [c[0] for c in calls] == [0.5, 0.5, 0.5]
    for _, before, after in calls:
        assert after <= 0.5 + 1e-5 and (before <= 0.5 or abs(after - 0.5) < 1e-4)
    assert any(before > 0.5 for _, before, _ in calls)  # data scaled by 100: the raw gradients are large
    calls.clear()
    train(_small_mlp(), sched, data, steps=2, batch_size=8, grad_clip=None, progress=False)
    assert calls == []


def test_train_bad_input(sched, data):
    model = _small_mlp()
    with pytest.raises(ValueError, match="steps"):
        train(model, sched, data, steps=0, progress=False)
    with pytest.raises(ValueError, match="objective"):
        train(model, sched, data, steps=1, objective="pred_eps", progress=False)
    with pytest.raises(ValueError, match="p_uncond > 0 needs labels"):
        train(model, sched, data, steps=1, p_uncond=0.1, progress=False)
    with pytest.raises(ValueError, match="null label"):
        train(model, sched, data, steps=1, labels=torch.zeros(len(data), dtype=torch.long), p_uncond=0.1,
              progress=False)
    with pytest.raises(ValueError, match="labels must be a tensor of shape"):
        train(model, sched, data, steps=1, labels=torch.zeros(3, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="p_uncond"):
        drop_labels(torch.zeros(3, dtype=torch.long), 1.5, 10)
    with pytest.raises(TypeError, match="nn.Module"):
        train(lambda x, t: x, sched, data, steps=1, progress=False)


def test_unet_learns_the_digits():
    """The book's UNet really learns: 200 steps (batches of 32, lr 3e-3) on the train split of the 8×8 digits lower the
    ε-loss on the held-out test split (fixed t and ε) from that of the untrained network (measured 1.21) to 0.12 (this
    machine, one thread, about 8 s); asserted: below 0.25 and below 0.3× the untrained loss. A network that predicts
    ε = 0 scores 1."""
    sched = make_schedule(100)
    train_x, _ = load_digits("train")
    test_x, _ = load_digits("test")
    g = gen(0)
    t = torch.randint(0, sched.T, (test_x.shape[0],), generator=g)
    noise = torch.randn(test_x.shape, generator=g)

    def held_out_loss(model):
        model.eval()
        with torch.no_grad():
            return p_losses(model, sched, test_x, t, noise=noise).item()

    torch.manual_seed(0)
    model = UNet(base_channels=16, channel_mults=(1, 2))
    before = held_out_loss(model)
    result = train(model, sched, train_x, steps=200, batch_size=32, lr=3e-3, ema_decay=None, seed=0, progress=False)
    after = held_out_loss(result.model)
    assert before > 0.9, before
    assert after < 0.25 and after < 0.3 * before, (before, after)


# ----------------------------------------------------------------------------- learning rate, precision, callback


def test_lr_factor_values():
    """Linear warm-up (step + 1)/warmup, then 1 (constant) or a half cosine from 1 to 0 over the remaining steps:
    1 at its start, 1/2 at its midpoint, (1 + cos(π/4))/2 a quarter of the way."""
    assert [lr_factor(s, 100, "constant", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 100, "cosine") == 1.0
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5, abs=1e-15)
    assert lr_factor(25, 100, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2, rel=1e-14)
    assert lr_factor(9, 100, "cosine", 10) == 1.0  # the end of the warm-up
    assert lr_factor(10, 100, "cosine", 10) == 1.0 and lr_factor(55, 100, "cosine", 10) == pytest.approx(0.5)
    decay = [lr_factor(s, 100, "cosine", 10) for s in range(10, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and 0 < decay[-1] < 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, 10, "linear")


def test_train_applies_the_schedule(sched, data, monkeypatch):
    """The optimizer's learning rate at every step is lr × lr_factor (over lr_schedule_steps when given)."""
    seen = []
    original = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    train(_small_mlp(), sched, data, steps=8, batch_size=8, lr=1e-3, lr_schedule="cosine", warmup_steps=2,
          progress=False)
    expected = [0.5e-3, 1e-3] + [1e-3 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    assert seen == pytest.approx(expected, rel=1e-12)
    seen.clear()
    train(_small_mlp(), sched, data, steps=4, batch_size=8, lr=1e-3, lr_schedule="cosine", lr_schedule_steps=8,
          progress=False)
    assert seen == pytest.approx([1e-3 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(4)], rel=1e-12)
    seen.clear()
    train(_small_mlp(), sched, data, steps=3, batch_size=8, lr=1e-3, progress=False)
    assert seen == [1e-3] * 3  # the default is a constant rate


def test_mixed_precision_runs_close_to_float32(sched, data):
    """bf16 autocast: finite losses, the first one (same weights, same batch) within 2 % of float32's (measured
    4e-4), and not bit-identical (autocast really ran)."""
    bf16 = train(_small_mlp(), sched, data, steps=10, batch_size=64, mixed_precision=True, progress=False)
    f32 = train(_small_mlp(), sched, data, steps=10, batch_size=64, progress=False)
    assert torch.isfinite(bf16.loss_history).all()
    assert abs(bf16.loss_history[0] - f32.loss_history[0]) <= 0.02 * f32.loss_history[0]
    assert not torch.equal(bf16.loss_history, f32.loss_history)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())


def test_callback_every_k_steps(sched, data):
    """callback(step, model, ema) after steps k, 2k, ...: the model is the one being trained and the EMA has had
    exactly `step` updates at that moment."""
    calls = []
    model = _small_mlp()
    result = train(model, sched, data, steps=10, batch_size=8, progress=False, callback_every=3,
                   callback=lambda step, m, ema: calls.append((step, m, ema, ema.num_updates)))
    assert [c[0] for c in calls] == [3, 6, 9]
    assert all(c[1] is model and c[2] is result.ema and c[3] == c[0] for c in calls)
    calls.clear()
    train(_small_mlp(), sched, data, steps=4, batch_size=8, progress=False, callback=lambda *a: calls.append(a))
    assert calls == []  # callback_every = 0: never called
    with pytest.raises(TypeError, match="callback"):
        train(_small_mlp(), sched, data, steps=1, progress=False, callback=3, callback_every=1)


# ----------------------------------------------------------------------------- loss per timestep band


def test_loss_by_timestep_band_matches_a_direct_average():
    g = gen(0)
    t = torch.randint(0, 100, (30, 8), generator=g)
    losses = torch.rand(30, 8, generator=g)
    res = TrainResult(model=torch.nn.Linear(1, 1), ema=None, loss_history=losses.mean(1), t_history=t,
                      example_losses=losses)
    edges, band = loss_by_timestep_band(res, 100, num_bands=4)
    assert edges.tolist() == [0, 25, 50, 75, 100]
    for j in range(4):
        mask = (t >= edges[j]) & (t < edges[j + 1])
        assert math.isclose(band[j].item(), losses[mask].double().mean().item(), rel_tol=1e-12)
    _, last = loss_by_timestep_band(res, 100, num_bands=4, last=10)
    mask = (t[-10:] < 25)
    assert math.isclose(last[0].item(), losses[-10:][mask].double().mean().item(), rel_tol=1e-12)


# ----------------------------------------------------------------------------- label dropout


def test_drop_labels_rate_and_extremes():
    y = torch.arange(100_000) % 10
    g = gen(0)
    out = drop_labels(y, 0.2, 10, generator=g)
    dropped = out == 10
    n = y.numel()
    assert abs(dropped.double().mean().item() - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    assert torch.equal(out[~dropped], y[~dropped])  # kept labels are unchanged
    assert torch.equal(drop_labels(y, 0.0, 10), y)
    assert torch.all(drop_labels(y, 1.0, 10) == 10)


class _RecordingModel(nn.Module):
    """A class-conditional MLP that records the labels it is called with."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = MLPDenoiser(2, hidden_dim=16, num_layers=1, num_classes=3, input_emb_dim=0)
        self.null_label = self.net.null_label
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(y.clone())
        return self.net(x, t, y)


def test_train_drops_labels_at_rate_p_uncond(sched, data):
    labels = torch.arange(len(data)) % 3
    model = _RecordingModel()
    train(model, sched, data, steps=100, batch_size=64, labels=labels, p_uncond=0.25, ema_decay=None,
          progress=False)
    seen = torch.cat(model.seen)
    n = seen.numel()
    frac = (seen == 3).double().mean().item()
    assert abs(frac - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    # without dropout the labels are the data's own: never the null label, all classes present
    model = _RecordingModel()
    train(model, sched, data, steps=5, batch_size=64, labels=labels, ema_decay=None, progress=False)
    seen = torch.cat(model.seen)
    assert set(seen.tolist()) == {0, 1, 2}


# ----------------------------------------------------------------------------- EMA


def test_ema_update_formula_without_warmup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9, warmup=False)
    old = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    model(torch.randn(8, 3))  # changes the BatchNorm running statistics and num_batches_tracked
    ema.update(model)
    new = model.state_dict()
    for k, v in ema.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * old[k] + 0.1 * new[k])
        else:
            assert torch.equal(v, new[k])  # integer buffers are copied
    assert ema.num_updates == 1
    # the averaged copy is frozen and separate from the model
    assert all(not p.requires_grad for p in ema.model.parameters())
    assert not ema.model.training


def test_ema_warmup_matches_diffusers_ema_model():
    EMAModel = pytest.importorskip("diffusers.training_utils").EMAModel

    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    ours = EMA(model, decay=0.6, warmup=True)
    ref = EMAModel(model.parameters(), decay=0.6)
    decays = []
    for _ in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        decays.append(ours.current_decay())
        ours.update(model)
        ref.step(model.parameters())
    # d_n = min(decay, (1 + s)/(10 + s)) with s = n - 1, and d_1 = 0: the cap 0.6 is reached at s = 13.5
    assert decays[0] == 0.0 and decays[1] == pytest.approx(2 / 11) and decays[12] == pytest.approx(13 / 22)
    assert decays[13:] == [0.6] * 17
    for a, b in zip(ours.model.parameters(), ref.shadow_params):
        torch.testing.assert_close(a, b)


def test_ema_copy_to_and_bad_decay():
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.5, warmup=False)
    target = nn.Linear(2, 2)
    ema.copy_to(target)
    for a, b in zip(target.parameters(), model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.5)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path, sched, data):
    result = train(_small_mlp(1, num_classes=4), sched, data, steps=5, batch_size=8,
                   labels=torch.arange(len(data)) % 4, p_uncond=0.1, progress=False)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, result.model, result.ema, steps=5, objective="pred_noise",
                    loss_history=result.loss_history, config={"hidden_dim": 64, "mults": [1, 2]})
    # the file is readable with weights_only=True (no pickled code)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "ema", "meta"}
    fresh = _small_mlp(2, num_classes=4)
    fresh_ema = EMA(_small_mlp(3, num_classes=4))
    meta = load_checkpoint(path, fresh, fresh_ema)
    for a, b in zip(fresh.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(fresh_ema.model.state_dict().values(), result.ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_ema.num_updates == 5 and fresh_ema.decay == result.ema.decay
    assert meta["steps"] == 5 and meta["config"] == {"hidden_dim": 64, "mults": [1, 2]}
    assert torch.equal(meta["loss_history"], result.loss_history)


def test_checkpoint_errors(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="meta"):
        save_checkpoint(tmp_path / "a.pt", model, note=object())
    save_checkpoint(tmp_path / "b.pt", model)
    with pytest.raises(ValueError, match="no EMA"):
        load_checkpoint(tmp_path / "b.pt", nn.Linear(2, 2), EMA(model))
    torch.save({"weights": 1}, tmp_path / "c.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "c.pt", model)
