"""Cross-fitting folds and the calibration hold-out: partitions, stratified, seeded."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from sgan_fast.labels.crossfit import fold_split, holdout_split, stratified_folds


@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=12), k=st.integers(2, 7),
       seed=st.integers(0, 1000))
def test_folds_partition_and_stratify(counts, k, seed):
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    if len(y) < k:
        with pytest.raises(ValueError, match="cannot be split"):
            stratified_folds(y, k, seed)
        return
    fold_of = stratified_folds(y, k, seed)
    assert fold_of.shape == y.shape and fold_of.min() >= 0 and fold_of.max() < k
    sizes = np.bincount(fold_of, minlength=k)
    assert sizes.max() - sizes.min() <= 1                       # folds of equal size
    for c, n in enumerate(counts):
        per_fold = np.bincount(fold_of[y == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1             # each class spread evenly
    held_all = []
    for f in range(k):
        train, held = fold_split(fold_of, f)
        assert not set(train.tolist()) & set(held.tolist())
        assert len(train) + len(held) == len(y)
        held_all.append(held)
    assert np.array_equal(np.sort(np.concatenate(held_all)), np.arange(len(y)))
    assert np.array_equal(stratified_folds(y, k, seed), fold_of)   # seeded


def test_folds_depend_on_the_seed_and_check_k():
    y = np.repeat(np.arange(3), 30)
    assert not np.array_equal(stratified_folds(y, 5, 0), stratified_folds(y, 5, 1))
    with pytest.raises(ValueError, match="k >= 2"):
        stratified_folds(y, 1)


def test_holdout_split_is_stratified():
    y = np.repeat(np.arange(4), [100, 20, 2, 1])
    train, held = holdout_split(y, 0.1, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(y)))
    assert np.bincount(y[held], minlength=4).tolist() == [10, 2, 1, 0]   # a lone image stays in training
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(y, 1.0)
