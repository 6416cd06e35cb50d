"""Tests of ddpm_lib.models: the time embedding, the MLP and the UNet (shapes, conditioning, errors)."""

import math

import pytest
import torch

from ddpm_lib.models import MLPDenoiser, UNet, sinusoidal_embedding


# tiny models: every test runs on one thread (the fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- time embedding


def test_sinusoidal_embedding_at_zero_is_zeros_then_ones():
    emb = sinusoidal_embedding(torch.tensor([0]), 8)
    assert emb.shape == (1, 8)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb, torch.tensor([[0.0, 0, 0, 0, 1, 1, 1, 1]]))


def test_sinusoidal_embedding_golden_values():
    # half = 3, frequencies 10000^(-i/2) = 1, 1/100, 1/10000.
    t = torch.tensor([1, 50], dtype=torch.float64)
    emb = sinusoidal_embedding(t, 6)
    expected = torch.tensor(
        [[math.sin(a * f) for f in (1, 1e-2, 1e-4)] + [math.cos(a * f) for f in (1, 1e-2, 1e-4)] for a in (1, 50)],
        dtype=torch.float64,
    )
    assert emb.dtype == torch.float64
    torch.testing.assert_close(emb, expected, rtol=0, atol=1e-12)


def test_sinusoidal_embedding_matches_ho_et_al_formula():
    # get_timestep_embedding of Ho et al.: emb = exp(arange(half) * -log(10000)/(half-1)); [sin, cos].
    t = torch.arange(0, 1000, 37)
    dim = 32
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000) / (half - 1)))
    args = t.double()[:, None] * freqs[None]
    expected = torch.cat([args.sin(), args.cos()], 1).float()
    torch.testing.assert_close(sinusoidal_embedding(t, dim), expected)


def test_sinusoidal_embedding_odd_dim_is_padded_with_zero():
    emb = sinusoidal_embedding(torch.tensor([3, 7]), 7)
    assert emb.shape == (2, 7)
    assert torch.all(emb[:, -1] == 0)
    torch.testing.assert_close(emb[:, :6], sinusoidal_embedding(torch.tensor([3, 7]), 6))


def test_sinusoidal_embedding_distinct_timesteps_give_distinct_embeddings():
    emb = sinusoidal_embedding(torch.arange(1000), 32).double()
    dist = torch.cdist(emb, emb)
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 1e-3
    # every row has norm sqrt(half): sin² + cos² = 1 per frequency
    torch.testing.assert_close(emb.norm(dim=1), torch.full((1000,), 4.0, dtype=torch.float64))


@pytest.mark.parametrize("dim", [1, 0, 2.5])
def test_sinusoidal_embedding_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.tensor([1]), dim)


def test_sinusoidal_embedding_bad_t_shape():
    with pytest.raises(ValueError, match="t must have shape"):
        sinusoidal_embedding(torch.zeros(2, 3), 8)


# ----------------------------------------------------------------------------- MLP


def test_mlp_output_shape_2d_and_time_dependence():
    torch.manual_seed(0)
    model = MLPDenoiser(2)
    x = torch.randn(16, 2)
    out = model(x, torch.randint(0, 1000, (16,)))
    assert out.shape == x.shape and out.dtype == x.dtype
    # the output depends on t
    a = model(x, torch.zeros(16, dtype=torch.long))
    b = model(x, torch.full((16,), 500))
    assert (a - b).abs().max() > 1e-4


def test_mlp_accepts_images_and_reshapes_back():
    torch.manual_seed(0)
    model = MLPDenoiser(64, hidden_dim=32, num_layers=2)
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([0, 1, 2, 3, 4])
    out = model(x, t)
    assert out.shape == (5, 1, 8, 8)
    torch.testing.assert_close(out.reshape(5, 64), model(x.reshape(5, 64), t))


def test_mlp_input_fourier_features():
    torch.manual_seed(0)
    plain = MLPDenoiser(2, input_emb_dim=0)
    assert plain.inp.in_features == 2
    torch.manual_seed(0)
    ff = MLPDenoiser(2, input_emb_dim=8, input_emb_scale=10.0)
    assert ff.inp.in_features == 2 * (1 + 8)
    # the first layer sees [x, features of x_0, features of x_1]: check it against a hand-built input
    x = torch.randn(3, 2)
    t = torch.tensor([0, 5, 9])
    feats = torch.cat([x, sinusoidal_embedding(10.0 * x[:, 0], 8), sinusoidal_embedding(10.0 * x[:, 1], 8)], 1)
    seen = {}
    ff.inp.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0]))  # returns None
    ff(x, t)
    torch.testing.assert_close(seen["inp"], feats)
    for bad in (1, -2, 2.0):
        with pytest.raises(ValueError, match="input_emb_dim"):
            MLPDenoiser(2, input_emb_dim=bad)
    with pytest.raises(ValueError, match="input_emb_scale"):
        MLPDenoiser(2, input_emb_scale=0.0)


def test_mlp_scalar_t_is_broadcast():
    torch.manual_seed(0)
    model = MLPDenoiser(2)
    x = torch.randn(4, 2)
    torch.testing.assert_close(model(x, 7), model(x, torch.full((4,), 7)))


def test_mlp_bad_shapes():
    model = MLPDenoiser(2)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="data_dim"):
        MLPDenoiser(0)


def test_mlp_class_conditioning_and_null_label():
    torch.manual_seed(0)
    model = MLPDenoiser(2, num_classes=3)
    assert model.null_label == 3
    assert model.class_emb.embedding.num_embeddings == 4
    x = torch.randn(6, 2)
    t = torch.full((6,), 10)
    null = model(x, t, torch.full((6,), 3))
    torch.testing.assert_close(model(x, t), null)  # y=None is the null label
    assert (model(x, t, torch.zeros(6, dtype=torch.long)) - null).abs().max() > 1e-5
    assert MLPDenoiser(2).null_label is None


def test_unconditional_model_rejects_labels():
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser(2)(torch.randn(2, 2), torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(base_channels=8)(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- UNet


@pytest.mark.parametrize(
    "in_channels, size, mults",
    [(1, 8, (1, 2)), (1, 8, (1, 2, 2)), (1, 28, (1, 2, 2)), (1, 28, (1, 2, 2, 2)), (3, 32, (1, 2, 2)), (1, 7, (1, 2))],
)
def test_unet_output_shape(in_channels, size, mults):
    torch.manual_seed(0)
    model = UNet(in_channels=in_channels, base_channels=8, channel_mults=mults, attention=True)
    x = torch.randn(2, in_channels, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unet_backward_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet(base_channels=8, num_classes=10, attention=True, num_res_blocks=2)
    x = torch.randn(4, 1, 8, 8)
    out = model(x, torch.randint(0, 1000, (4,)), torch.tensor([0, 3, 9, 10]))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_unet_class_conditioning_null_label_and_errors():
    torch.manual_seed(0)
    model = UNet(base_channels=8, num_classes=10)
    assert model.null_label == 10
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([5, 5, 5])
    null = model(x, t, torch.tensor([10, 10, 10]))
    torch.testing.assert_close(model(x, t), null)
    torch.testing.assert_close(model(x, t, torch.tensor(10)), null)  # scalar y broadcasts
    assert (model(x, t, torch.tensor([1, 2, 3])) - null).abs().max() > 1e-6
    for bad in (torch.tensor([0, 11, 2]), torch.tensor([-1, 0, 0])):
        with pytest.raises(ValueError, match=r"0\.\.9, or 10"):
            model(x, t, bad)
    with pytest.raises(TypeError, match="y must hold integer"):
        model(x, t, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="y must have shape"):
        model(x, t, torch.tensor([0, 1]))


def test_unet_bad_input():
    model = UNet(base_channels=8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\)"):
        model(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"x must have shape"):
        model(torch.randn(2, 64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(channel_mults=())
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.5)


def test_unet_is_translation_sensitive_to_time_not_batch_order():
    # Each example is processed independently (GroupNorm, not BatchNorm): permuting the batch permutes the output.
    torch.manual_seed(0)
    model = UNet(base_channels=8, attention=True).eval()
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([1, 200, 400, 999])
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(model(x, t)[perm], model(x[perm], t[perm]))
