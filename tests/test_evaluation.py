"""Tests of ddpm_lib.evaluation: sample quality beside its data floor, the off-mode fraction, the within-class
distance and the result tables (chapters 05-10 and the benchmarks)."""

import csv
import math

import pytest
import torch

from ddpm_lib import evaluation as E
from ddpm_lib.classifiers import classifier_fid, get_digits_classifier
from ddpm_lib.data import MIXTURE, GaussianMixture, make_gaussian_mixture
from helpers import gen

# small tensors: one thread is much faster on a shared machine
pytestmark = pytest.mark.usefixtures("one_thread_module")


# ---------------------------------------------------------------- 2-D data


def test_toy_quality_of_data_itself_is_near_the_floor():
    mix = make_gaussian_mixture(MIXTURE)
    x = mix.sample(4000, generator=gen(11))
    q = E.toy_quality(x, chunk=1000)
    assert q["chunks"] == 4 and q["chunk"] == 1000
    # fresh data is its own perfect model: the ratio to the floor is 1 up to the spread of the floor
    assert 0.6 < q["ratio"] < 1.5
    # a shifted copy is far above the floor
    assert E.toy_quality(x + 0.5, chunk=1000)["ratio"] > 3
    with pytest.raises(ValueError, match="chunk"):
        E.toy_quality(torch.zeros(10, 2), chunk=20)


def test_off_mode_fraction_hand_built_and_gaussian_tail():
    """radius × the widest std from every mean: a hand-built case, and for one 2-D Gaussian component the exact
    tail P(|z| > r) = exp(-r²/2) of a χ² with 2 degrees of freedom (5 standard errors over N draws)."""
    mix = GaussianMixture([[0.0, 0.0], [10.0, 0.0]], [0.5, 0.25])
    pts = torch.tensor([[0.0, 1.9], [10.0, -1.9], [5.0, 0.0], [0.0, 2.1], [12.5, 0.0]])
    assert E.off_mode_fraction(pts, mix) == pytest.approx(3 / 5)  # threshold 4 × 0.5 = 2
    assert E.off_mode_fraction(pts, mix, radius=4.5) == pytest.approx(2 / 5)  # threshold 2.25
    one = GaussianMixture([[1.0, -2.0]], 0.7)
    N, r = 200_000, 2.0
    frac = E.off_mode_fraction(one.sample(N, generator=gen(0), dtype=torch.float64), one, radius=r)
    p = math.exp(-r * r / 2)
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / N), (frac, p)
    with pytest.raises(TypeError, match="GaussianMixture"):
        E.off_mode_fraction(pts, "8gaussians")
    with pytest.raises(ValueError, match="radius"):
        E.off_mode_fraction(pts, mix, radius=0.0)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        E.off_mode_fraction(torch.zeros(3, 3), mix)


# ---------------------------------------------------------------- digits


def test_digits_quality_of_the_test_split_and_of_noise(digits):
    xtr, _, xte, _ = digits
    q = E.digits_quality(xte, floor_repeats=1)
    assert q["n"] == 360 and q["classes_covered"] == 10 and sum(q["histogram"]) == 360
    assert q["memorized"] <= 0.05  # held-out digits are not copies of training digits
    q_copy = E.digits_quality(xtr[:360], floor_repeats=1)
    assert q_copy["memorized"] == 1.0  # training images are flagged as copies of themselves
    noise = torch.rand(360, 1, 8, 8, generator=gen(0)) * 2 - 1
    assert E.digits_quality(noise, floor_repeats=1)["ratio"] > 10


def test_digits_quality_with_all_training_images(digits):
    """N >= 1437: the floor uses all 1437 training images once, so it is classifier_fid(train, test), and the
    training images themselves score exactly the floor (ratio 1); more samples than that keep the same floor."""
    xtr, _, xte, _ = digits
    classifier, _ = get_digits_classifier()
    floor = classifier_fid(xtr, xte, classifier)
    q = E.digits_quality(xtr.reshape(-1, 64))
    assert q["n"] == 1437 and q["floor"] == pytest.approx(floor, rel=1e-12)
    assert q["fd"] == pytest.approx(floor, rel=1e-12) and q["ratio"] == pytest.approx(1.0, rel=1e-12)
    assert q["memorized"] == 1.0 and q["classes_covered"] == 10
    more = E.digits_floor(2000, repeats=5, seed=3)
    assert more.values == (pytest.approx(floor, rel=1e-12),) and more.std == 0.0


def test_digits_floor_draws_and_its_bias(digits):
    """n < 1437: ``repeats`` draws without replacement, reproducible from the seed. The Fréchet distance of n images
    is biased upwards by about tr(Σ)/n, so 150 images sit well above the all-images floor."""
    a = E.digits_floor(150, repeats=3, seed=0)
    assert len(a.values) == 3 and a.mean == pytest.approx(sum(a.values) / 3, rel=1e-12) and a.std > 0
    assert E.digits_floor(150, repeats=3, seed=0) == a
    assert E.digits_floor(150, repeats=3, seed=1).values != a.values
    assert min(a.values) > 1.5 * E.digits_floor(1437).mean
    with pytest.raises(ValueError, match="repeats"):
        E.digits_floor(150, repeats=0)
    with pytest.raises(ValueError, match="samples must be a tensor of 8x8 digits"):
        E.digits_quality(torch.zeros(5, 1, 7, 7))


# ---------------------------------------------------------------- diversity


def test_within_class_distance_hand_built():
    """Class 0: two points 5 apart; class 1: three points with distances 1, 1, √2; class 2: one sample, skipped.
    The mean over pairs of different samples, then over the classes that have a pair."""
    samples = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [7.0, 7.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    expected = (5.0 + (2 + math.sqrt(2)) / 3) / 2
    assert E.within_class_distance(samples, labels) == pytest.approx(expected, rel=1e-12)
    # images are flattened; the order of the samples does not matter
    perm = torch.tensor([5, 3, 0, 4, 2, 1])
    assert E.within_class_distance(samples[perm].reshape(6, 1, 1, 2), labels[perm]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least two samples"):
        E.within_class_distance(samples[:3:2], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must have shape"):
        E.within_class_distance(samples, labels[:5])
    with pytest.raises(TypeError, match="tensors"):
        E.within_class_distance(samples.tolist(), labels)


# ---------------------------------------------------------------- tables


def test_markdown_table_and_write_results_round_trip(tmp_path):
    header = ["sampler", "steps", "ratio"]
    rows = [["DDPM", 1000, 1.02], ["DDIM eta=0", 50, 1.31]]
    md = E.markdown_table(header, rows)
    assert md.splitlines() == ["| sampler | steps | ratio |", "|---|---:|---:|", "| DDPM | 1000 | 1.02 |",
                               "| DDIM eta=0 | 50 | 1.31 |"]
    E.write_results(tmp_path / "new_dir", "table", md, header, rows)
    assert (tmp_path / "new_dir" / "table.md").read_text(encoding="utf-8") == md
    with open(tmp_path / "new_dir" / "table.csv", newline="", encoding="utf-8") as f:
        back = list(csv.reader(f))
    assert back == [header] + [[str(c) for c in row] for row in rows]
