"""The noise-aware classifier of chapter 09 (ddpm_lib.noisy_classifier) and its use in classifier guidance."""

import pytest
import torch

from ddpm_lib import ClassifierGuidance, NoiseSchedule, ddim_sample, linear_beta_schedule
from ddpm_lib.noisy_classifier import NoisyClassifier, noisy_accuracy, train_noisy_classifier

SCHED = NoiseSchedule(linear_beta_schedule(100))


def _toy_images(n=256, seed=0):
    """Two classes of 4×4 'images' that differ in the sign of their mean: easy at low noise, harder at high."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (2.0 * labels - 1.0)[:, None, None, None] * 0.5 + 0.3 * torch.randn(n, 1, 4, 4, generator=gen)
    return images.clamp(-1, 1), labels


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one CPU thread is faster, and much faster on a shared machine (no spinning threads)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def trained(one_thread):
    """One toy classifier trained for 150 steps, with its initial weights and its result."""
    images, labels = _toy_images()
    torch.manual_seed(0)
    clf = NoisyClassifier(data_dim=16, num_classes=2, hidden_dim=32, time_emb_dim=16)
    init = {k: v.clone() for k, v in clf.state_dict().items()}
    res = train_noisy_classifier(clf, SCHED, images, labels, steps=150, batch_size=64, lr=3e-3, seed=1)
    return init, res


def test_shapes_and_dtype():
    torch.manual_seed(0)
    clf = NoisyClassifier(data_dim=16, num_classes=3, hidden_dim=32, time_emb_dim=8)
    x = torch.randn(5, 1, 4, 4)
    out = clf(x, torch.tensor([0, 1, 2, 50, 99]))
    assert out.shape == (5, 3) and out.dtype == torch.float32
    assert clf(x.reshape(5, 16), torch.tensor([3])).shape == (5, 3)  # flat input, one t for the batch
    assert clf.double()(x.double(), torch.zeros(5, dtype=torch.long)).dtype == torch.float64


def test_bad_input_raises():
    clf = NoisyClassifier(data_dim=16, num_classes=3, hidden_dim=32)
    with pytest.raises(ValueError, match="16 features"):
        clf(torch.randn(2, 1, 3, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer timesteps"):
        clf(torch.randn(2, 16), torch.zeros(2))
    with pytest.raises(ValueError, match="t must be a tensor of shape"):
        clf(torch.randn(2, 16), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        NoisyClassifier(num_classes=1)
    images, labels = _toy_images(8)
    with pytest.raises(ValueError, match="labels must be a tensor of shape"):
        train_noisy_classifier(clf, SCHED, images, labels[:4], steps=1)
    with pytest.raises(TypeError, match="sched must be a NoiseSchedule"):
        train_noisy_classifier(clf, None, images, labels, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_noisy_classifier(clf, SCHED, images, labels, steps=0)
    with pytest.raises(ValueError, match="t must lie in"):
        noisy_accuracy(clf, SCHED, images.reshape(8, 16), labels, 100)


def test_training_lowers_the_loss_and_is_reproducible(trained):
    init, res = trained
    assert res.loss_history.shape == (150,)
    assert not res.classifier.training
    # an untrained 2-class classifier has cross-entropy ≈ log 2 ≈ 0.69; training must at least halve it
    assert 0.55 < res.loss_history[0] < 0.85
    assert res.loss_history[-30:].mean() < 0.5 * res.loss_history[0]
    images, labels = _toy_images()
    clf2 = NoisyClassifier(data_dim=16, num_classes=2, hidden_dim=32, time_emb_dim=16)
    clf2.load_state_dict(init)
    res2 = train_noisy_classifier(clf2, SCHED, images, labels, steps=150, batch_size=64, lr=3e-3, seed=1)
    torch.testing.assert_close(res.loss_history, res2.loss_history)


def test_accuracy_falls_with_noise(trained):
    clf = trained[1].classifier
    test_images, test_labels = _toy_images(400, seed=5)
    gen = torch.Generator().manual_seed(0)
    acc_clean = noisy_accuracy(clf, SCHED, test_images, test_labels, 0, generator=gen)
    acc_noisy = noisy_accuracy(clf, SCHED, test_images, test_labels, 99, generator=gen)
    assert acc_clean > 0.95
    # at t = T-1 (ᾱ ≈ 0.36 for T = 100) the images keep some signal, but accuracy is lower than on clean ones
    assert acc_noisy < acc_clean


def test_guidance_gradient_points_to_the_class(trained):
    """With the trained toy classifier, ∇_x log p(y=1 | x_t) has a positive mean (class 1 has a positive mean)."""
    clf = trained[1].classifier
    guide = ClassifierGuidance(lambda x, t: torch.zeros_like(x), clf, SCHED, scale=1.0)
    x = torch.zeros(8, 1, 4, 4)
    t = torch.full((8,), 50, dtype=torch.long)
    g1 = guide.grad_log_prob(x, t, torch.ones(8, dtype=torch.long))
    g0 = guide.grad_log_prob(x, t, torch.zeros(8, dtype=torch.long))
    assert g1.mean() > 0 and g0.mean() < 0
    # and guided DDIM sampling with a zero ε-model ends on the side of the requested class
    out1 = ddim_sample(guide, SCHED, (8, 1, 4, 4), steps=10, y=torch.ones(8, dtype=torch.long),
                       generator=torch.Generator().manual_seed(0), progress=False)
    out0 = ddim_sample(guide, SCHED, (8, 1, 4, 4), steps=10, y=torch.zeros(8, dtype=torch.long),
                       generator=torch.Generator().manual_seed(0), progress=False)
    assert out1.mean() > out0.mean()
