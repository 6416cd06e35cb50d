"""Tests of ddpm_lib.classifiers: the fixed digits classifier (a measuring instrument: deterministic, accurate, and
handed out as a fresh module each time), the generic training loop, and the measures taken with it."""

import pytest
import torch

from ddpm_lib import classifiers as C
from helpers import gen

# small networks: one thread is much faster on a shared machine
pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def classifier_and_accuracy():
    return C.get_digits_classifier()


def test_classifier_training_is_deterministic(digits):
    train_x, train_y, _, _ = digits
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    c1 = C.train_digits_classifier(train_x, train_y, seed=3, steps=25)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    torch.manual_seed(456)  # and the result does not depend on it
    c2 = C.train_digits_classifier(train_x, train_y, seed=3, steps=25)
    c3 = C.train_digits_classifier(train_x, train_y, seed=4, steps=25)
    s1, s2, s3 = c1.state_dict(), c2.state_dict(), c3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_classifier_accuracy_and_shapes(digits, classifier_and_accuracy):
    _, _, test_x, test_y = digits
    clf, acc = classifier_and_accuracy
    assert acc >= 0.95
    assert C.classifier_accuracy(test_x, test_y, clf) == acc
    assert clf.features(test_x).shape == (len(test_x), 64)
    assert clf(test_x).shape == (len(test_x), 10)
    torch.testing.assert_close(clf(test_x.reshape(-1, 64)), clf(test_x))
    assert not any(p.requires_grad for p in clf.parameters()) and not clf.training


def test_cached_classifier_is_a_fresh_module_each_time(digits):
    """The weights are trained once per process, but every call builds a new module: changing one returned classifier
    changes no later one."""
    _, _, test_x, _ = digits
    first, acc = C.get_digits_classifier()
    logits = first(test_x[:20]).clone()
    with torch.no_grad():
        for p in first.parameters():
            p.zero_()
    assert first(test_x[:20]).abs().max() == 0  # the change took effect on that copy
    second, acc2 = C.get_digits_classifier()
    assert second is not first and acc2 == acc
    torch.testing.assert_close(second(test_x[:20]), logits, rtol=0, atol=0)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(first.parameters(), second.parameters()))


def test_class_histogram_and_confidence(digits, classifier_and_accuracy):
    _, _, test_x, test_y = digits
    clf, acc = classifier_and_accuracy
    hist = C.class_histogram(test_x, clf)
    assert hist.shape == (10,) and hist.dtype == torch.long
    assert int(hist.sum()) == len(test_x)
    assert torch.equal(hist, torch.bincount(clf(test_x).argmax(1), minlength=10))
    # the test split is stratified (35-37 per class); a >= 95 % classifier cannot move many
    assert int((hist - torch.bincount(test_y, minlength=10)).abs().sum()) <= 2 * round((1 - acc) * len(test_x))
    conf_test = C.mean_confidence(test_x, clf)
    noise = torch.rand(200, 1, 8, 8, generator=gen(50)) * 2 - 1
    assert 0.8 < conf_test <= 1.0
    assert C.mean_confidence(noise, clf) < conf_test
    assert C.classifier_accuracy(test_x, (test_y + 1) % 10, clf) <= 1 - acc + 1e-12


def test_classifier_fid_floor_and_noise(digits, classifier_and_accuracy):
    train_x, _, test_x, test_y = digits
    clf, _ = classifier_and_accuracy
    floor = C.classifier_fid(train_x, test_x, clf)
    noise = torch.rand(360, 1, 8, 8, generator=gen(51)) * 2 - 1
    assert C.classifier_fid(test_x, test_x, clf) == pytest.approx(0.0, abs=1e-6)
    assert floor > 0
    assert C.classifier_fid(noise, test_x, clf) > 20 * floor
    # a sampler that drops half the classes is visibly worse than the floor
    half = test_x[test_y < 5]
    assert C.classifier_fid(half, test_x, clf) > 5 * floor


def test_train_classifier_is_generic_and_deterministic():
    """The same loop trains the Fashion-MNIST CNN: the same seed and initial weights give the same weights, and the
    model comes back on the CPU in eval mode with frozen parameters."""
    images = torch.rand(16, 1, 28, 28, generator=gen(0)) * 2 - 1
    labels = torch.arange(16) % 10

    def run(seed):
        torch.manual_seed(0)
        model = C.FashionClassifier(width=8)
        return C.train_classifier(model, images, labels, seed=seed, steps=3, batch_size=8)

    a, b, c = run(1), run(1), run(2)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert a.features(images).shape == (16, 32) and a(images).shape == (16, 10)
    assert C.class_histogram(images, a).sum() == 16


def test_bad_input_raises_clear_errors(digits):
    train_x, train_y, test_x, _ = digits
    with pytest.raises(ValueError, match="images"):
        C.train_digits_classifier(torch.randn(5, 1, 7, 7), train_y[:5])
    with pytest.raises(ValueError, match="labels"):
        C.train_digits_classifier(train_x[:5], train_y[:5] + 10)
    with pytest.raises(ValueError, match="labels"):
        C.train_digits_classifier(train_x[:5], train_y[:4])
    with pytest.raises(TypeError, match="labels"):
        C.train_digits_classifier(train_x[:5], train_y[:5].float())
    with pytest.raises(TypeError, match="seed"):
        C.get_digits_classifier(seed=0.5)
    clf = C.DigitsClassifier()
    with pytest.raises(ValueError, match="samples"):
        C.class_histogram(torch.randn(4, 3, 8, 8), clf)
    with pytest.raises(ValueError, match="samples is empty"):
        C.mean_confidence(torch.zeros(0, 1, 8, 8), clf)
    with pytest.raises(TypeError, match="classifier"):
        C.classifier_fid(train_x[:10], test_x[:10], torch.nn.Linear(64, 10))
    with pytest.raises(ValueError, match="intended_labels"):
        C.classifier_accuracy(test_x[:10], torch.arange(9), clf)
