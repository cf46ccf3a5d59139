"""Samplers: deterministic per (seed, epoch), resumable mid-epoch, with the right frequencies."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgan_fast.data import BatchSampler

MODES = ("instance", "class_balanced", "sqrt")


def _long_tail_labels(counts, seed=0):
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("mode", MODES)
@given(N=st.integers(1, 300), B=st.integers(1, 64), seed=st.integers(0, 2**32 - 1),
       start=st.integers(0, 40))
def test_deterministic_and_resumable(mode, N, B, seed, start):
    y = np.random.default_rng(seed).integers(0, 5, N)
    a = BatchSampler(y, B, mode=mode, seed=seed)
    run = [b.copy() for _, b in itertools.islice(a.iterate(), start + 5)]
    assert all(b.shape == (B,) and b.dtype == np.int64 for b in run)
    assert all(((b >= 0) & (b < N)).all() for b in run)
    # a fresh sampler resumed at `start` from a state_dict sees the same batches
    a.step = start
    state = a.state_dict()
    b = BatchSampler(y, B, mode=mode, seed=seed)
    b.load_state_dict(state)
    resumed = [x for _, x in itertools.islice(b.iterate(), 5)]
    assert all(np.array_equal(x, r) for x, r in zip(resumed, run[start:]))
    assert b.step == start + 5
    assert np.array_equal(b.batch_at(start), run[start])


def test_seeds_and_epochs_differ():
    y = _long_tail_labels([50, 20, 5])
    s0, s1 = BatchSampler(y, 8, seed=0), BatchSampler(y, 8, seed=1)
    assert not np.array_equal(s0.epoch_indices(0), s1.epoch_indices(0))
    assert not np.array_equal(s0.epoch_indices(0), s0.epoch_indices(1))


@pytest.mark.parametrize("N,B", [(40, 8), (7, 16)])
def test_instance_epoch_is_a_permutation(N, B):
    y = np.zeros(N, dtype=np.int64)
    s = BatchSampler(y, B, mode="instance", seed=3)
    flat = s.epoch_indices(0).ravel()
    per_image = np.bincount(flat, minlength=N)
    # every image equally often (once per epoch when B divides N; N < B: whole permutations)
    assert per_image.max() - per_image.min() <= 1
    if N % B == 0:
        assert (per_image == 1).all()


@pytest.mark.parametrize("mode,expect", [
    ("class_balanced", lambda n: np.ones_like(n) / len(n)),
    ("sqrt", lambda n: np.sqrt(n) / np.sqrt(n).sum()),
    ("instance", lambda n: n / n.sum()),
])
def test_class_frequencies(mode, expect):
    counts = np.array([800, 200, 50, 10])
    y = _long_tail_labels(counts)
    s = BatchSampler(y, 100, mode=mode, seed=0)
    drawn = np.concatenate([s.epoch_indices(e).ravel() for e in range(20)])  # 21,200 draws
    freq = np.bincount(y[drawn], minlength=4) / len(drawn)
    assert np.allclose(freq, expect(counts.astype(float)), atol=0.015), freq
    # within a class, images are drawn uniformly: every image of the rarest class appears
    assert set(np.flatnonzero(y == 3)) <= set(drawn.tolist())


def test_as_batch_sampler_of_a_dataloader():
    import torch

    y = _long_tail_labels([30, 10])
    s = BatchSampler(y, 4, mode="sqrt", seed=5)
    loader = torch.utils.data.DataLoader(torch.arange(40), batch_sampler=s)
    got = [b.tolist() for b in loader]
    assert len(got) == len(s) == 10
    assert got == BatchSampler(y, 4, mode="sqrt", seed=5).epoch_indices(0).tolist()
    assert s.step == 10  # the next epoch continues where this one stopped


@pytest.mark.parametrize("kwargs,match", [
    (dict(labels=np.array([0.5, 1.0]), batch_size=2), "labels must be integers"),
    (dict(labels=np.array([], dtype=np.int64), batch_size=2), "non-empty"),
    (dict(labels=np.array([0, 3]), batch_size=2, num_classes=3), r"image 1 is 3, outside \[0, C=3\)"),
    (dict(labels=np.array([0, 1]), batch_size=0), "positive integer"),
    (dict(labels=np.array([0, 1]), batch_size=2, mode="balanced"), "unknown sampling mode"),
])
def test_bad_arguments(kwargs, match):
    labels = kwargs.pop("labels")
    with pytest.raises(ValueError, match=match):
        BatchSampler(labels, **kwargs)


def test_state_from_other_settings_is_refused():
    y = _long_tail_labels([10, 10])
    state = BatchSampler(y, 4, mode="instance", seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1 but this sampler has seed=2"):
        BatchSampler(y, 4, mode="instance", seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="mode='instance' but this sampler has mode='sqrt'"):
        BatchSampler(y, 4, mode="sqrt", seed=1).load_state_dict(state)
