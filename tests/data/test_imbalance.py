"""Imbalance profiles give the counts their definitions give; manifests round-trip."""

import os

import numpy as np
import pytest

from sgan_fast.data import ImbalancedSubset, make_imbalanced, profile_counts, reference_counts
from sgan_fast.data.imbalance import reference_cdf


def _balanced_labels(C, per_class, seed=0):
    y = np.repeat(np.arange(C), per_class)
    return np.random.default_rng(seed).permutation(y)


def test_exp_profile_is_cifar10_lt():
    # CIFAR-10-LT with imbalance ratio 100, as published (Cao et al. 2019), natural class order
    counts = profile_counts("exp", 10, n_max=5000, rho=100, seed=None)
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    # a seed permutes which class gets which count, nothing else
    seeded = profile_counts("exp", 10, n_max=5000, rho=100, seed=3)
    assert sorted(seeded.tolist()) == sorted(counts.tolist()) and seeded.tolist() != counts.tolist()
    assert profile_counts("exp", 10, n_max=5000, rho=100, seed=3).tolist() == seeded.tolist()


def test_step_profile():
    counts = profile_counts("step", 10, n_max=1000, rho=10, fraction=0.3, seed=None)
    assert counts.tolist() == [1000] * 7 + [100] * 3


def test_reference_profile_counts_from_the_definition():
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is the independent oracle here")
    for C, n in ((10, 5000), (1, 100), (7, 3000), (11, 5000), (100, 50000), (101, 50000), (397, 10**6)):
        if C <= 10:
            cdf = scipy_stats.lognorm.cdf(x=np.linspace(0, 3, C + 1), s=3)
        elif C <= 100:
            cdf = scipy_stats.chi2.cdf(x=np.linspace(0, 3, C + 1), df=3)
        else:
            cdf = scipy_stats.pareto.cdf(x=np.linspace(1, 4, C + 1), b=2)
        expect = (n * np.diff(cdf)).astype(int)[np.random.RandomState(15).choice(np.arange(C), C, replace=False)]
        assert reference_counts(C, n).tolist() == expect.tolist(), (C, n)
        assert np.allclose(reference_cdf(np.linspace(0 if C <= 100 else 1, 3 if C <= 100 else 4, C + 1), C),
                           cdf, rtol=1e-12, atol=1e-15)


def test_reference_profile_for_c10_n5000():
    # The counts of the definition for C = 10, num_samples = 5000, computed once with
    # scipy.stats: int(5000 * diff(lognorm(s=3).cdf(linspace(0, 3, 11)))) is
    # [1720, 441, 267, 191, 147, 119, 99, 85, 74, 65] (3,208 images, ratio 26.5), and
    # RandomState(15).choice(arange(10), 10, replace=False) permutes them across classes.
    assert reference_counts(10, 5000).tolist() == [267, 99, 441, 191, 85, 1720, 65, 147, 119, 74]


def test_subset_keeps_the_first_images_of_each_class():
    y = _balanced_labels(5, 40)
    sub = make_imbalanced(y, "exp", rho=10, seed=None)
    assert sub.counts == tuple(profile_counts("exp", 5, n_max=40, rho=10, seed=None).tolist())
    assert np.all(np.diff(sub.indices) > 0) and len(sub.indices) == sum(sub.counts)
    for c in range(5):
        first = np.flatnonzero(y == c)[:sub.counts[c]]
        assert np.array_equal(np.intersect1d(sub.indices, np.flatnonzero(y == c)), first)


def test_reference_subset_matches_the_reference_selection():
    y = _balanced_labels(10, 3000, seed=1)
    sub = make_imbalanced(y, "reference", num_samples=5000)
    counts = reference_counts(10, 5000)
    expect = np.concatenate([np.flatnonzero(y == i)[:s] for i, s in enumerate(counts)])
    assert np.array_equal(sub.indices, np.sort(expect))
    assert sub.params["seed"] == 15


def test_manifest_round_trip(tmp_path):
    y = _balanced_labels(6, 30, seed=2)
    sub = make_imbalanced(y, "step", rho=5, fraction=0.5, seed=7)
    path = tmp_path / "subset.npz"
    sub.save(path)
    assert os.listdir(tmp_path) == ["subset.npz"]
    back = ImbalancedSubset.load(path, labels=y)
    assert np.array_equal(back.indices, sub.indices) and back.counts == sub.counts
    assert back.profile == "step" and back.params == sub.params
    # it reproduces exactly from its own record
    again = make_imbalanced(y, back.profile, rho=back.params["rho"], fraction=back.params["fraction"],
                            n_max=back.params["n_max"], seed=back.params["seed"])
    assert np.array_equal(again.indices, back.indices)
    with pytest.raises(ValueError, match="different labels"):
        ImbalancedSubset.load(path, labels=np.roll(y, 1))
    with pytest.raises(ValueError, match="dataset of 180 images"):
        ImbalancedSubset.load(path, labels=y[:-1])


@pytest.mark.parametrize("kwargs,match", [
    (dict(profile="zipf"), "unknown imbalance profile"),
    (dict(profile="exp", rho=0.5), "rho must be >= 1"),
    (dict(profile="exp", n_max=50), r"class \d has 20 images but the exp profile asks for 50"),
    (dict(profile="step", fraction=2.0), r"fraction must lie in \[0, 1\]"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_imbalanced(_balanced_labels(4, 20), **kwargs)


def test_short_class_and_bad_labels():
    y = np.array([0] * 10 + [1] * 3 + [2] * 10)
    sub = make_imbalanced(y, "exp", n_max=8, rho=2, seed=None, clip=True)
    assert sub.counts == (8, 3, 4)
    with pytest.raises(ValueError, match="class 1 has 3 images"):
        make_imbalanced(y, "exp", n_max=8, rho=2, seed=None)
    with pytest.raises(ValueError, match=r"label of image 2 is 5, outside \[0, C=3\)"):
        make_imbalanced(np.array([0, 1, 5]), num_classes=3)
    with pytest.raises(ValueError, match="class 2 has no images"):
        make_imbalanced(np.array([0, 1, 1]), num_classes=3)


# The reference's CIFAR runs: its "0.1" runs pass --num_samples 5000, its "0.2" runs 10000.
# (classes, images per class, num_samples) -> (images kept, head class, tail class), the table
# of docs/data.md, computed with scipy.stats when written.
CIFAR_REFERENCE = {
    (10, 5000, 5000): (3208, 1720, 65),
    (10, 5000, 10000): (6424, 3440, 131),
    (100, 500, 5000): (2993, 36, 6),
    (100, 500, 10000): (6035, 72, 13),
}


@pytest.mark.parametrize("C,per_class,num_samples", sorted(CIFAR_REFERENCE))
def test_reference_profile_on_cifar_shaped_labels(C, per_class, num_samples):
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is the independent oracle here")
    # CIFAR's training labels: C * per_class = 50,000 of them, classes interleaved as in its batches
    y = _balanced_labels(C, per_class, seed=C + num_samples)
    assert len(y) == 50000
    sub = make_imbalanced(y, "reference", num_samples=num_samples)
    cdf = (scipy_stats.lognorm.cdf(np.linspace(0, 3, C + 1), s=3) if C <= 10
           else scipy_stats.chi2.cdf(np.linspace(0, 3, C + 1), df=3))
    perm = np.random.RandomState(15).choice(np.arange(C), C, replace=False)
    expect = (num_samples * np.diff(cdf)).astype(int)[perm]
    assert sub.counts == tuple(expect.tolist())
    assert max(sub.counts) <= per_class and min(sub.counts) >= 1          # no class short or empty
    total, head, tail = CIFAR_REFERENCE[(C, per_class, num_samples)]
    assert (len(sub.indices), max(sub.counts), min(sub.counts)) == (total, head, tail)
    assert sum(sub.counts) == total <= num_samples
    kept = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate(expect)])
    assert np.array_equal(sub.indices, np.sort(kept))           # each class's first n, in order
    assert sub.params["num_samples"] == num_samples and sub.num_classes == C
