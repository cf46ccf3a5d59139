"""plan.py: how many images each class gets, and which class pairs get inter-class images."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgan_fast.synth.plan import similar_pairs, soft_confusion, topup_counts

from ._fixtures import brute_confusion, brute_pairs, rarest_first

real_counts = st.lists(st.integers(0, 300), min_size=1, max_size=8)


@given(real_counts, st.integers(0, 400))
def test_total_is_water_filling(n, T):
    add = topup_counts(n, total=T)
    assert add.dtype == np.int64 and add.shape == (len(n),)
    assert int(add.sum()) == T and (add >= 0).all()
    f = np.asarray(n) + add
    got = add > 0
    # the fewest images any class has afterwards is the highest level L that T images can
    # raise every class to: sum(max(L - n_c, 0)) <= T
    level = min(n)
    while sum(max(level + 1 - c, 0) for c in n) <= T:
        level += 1
    assert f.min() == level
    if got.any():
        # as balanced as possible: every class that received images ends at L or L + 1
        assert f[got].max() - f.min() <= 1
        assert set(f[got].tolist()) <= {level, level + 1}
    # exactly the image-by-image rarest-first fill (remainder to the rarest, ties by class)
    assert add.tolist() == rarest_first(n, T)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6), st.integers(0, 10**6))
def test_total_large_counts(n, T):
    add = topup_counts(np.asarray(n, dtype=np.int64), total=np.int64(T))
    f = np.asarray(n) + add
    assert int(add.sum()) == T and (add >= 0).all()
    lo, hi = min(n), max(n) + T                # the highest L with sum(max(L - n_c, 0)) <= T
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if sum(max(mid - c, 0) for c in n) <= T else (lo, mid - 1)
    assert f.min() == lo
    assert set(f[add > 0].tolist()) <= {lo, lo + 1}


@given(real_counts, st.integers(0, 400))
def test_count_n_and_majority(n, N):
    a = np.asarray(n)
    add = topup_counts(n, N)
    assert (add >= 0).all()
    assert ((a + add) >= N).all()                       # everyone reaches N ...
    assert ((a + add)[add > 0] == N).all()              # ... and no one is pushed past it
    assert (add[a >= N] == 0).all()
    maj = topup_counts(n, "majority")
    assert ((a + maj) == max(n)).all()
    assert np.array_equal(maj, topup_counts(n))         # the default
    assert np.array_equal(maj, topup_counts(n, max(n)))


def test_docstring_example_by_hand():
    # [60, 6000, 464], 1000 images: raise 60 to 464 (404), then the two rarest share 596
    assert topup_counts([60, 6000, 464], total=1000).tolist() == [404 + 298, 0, 298]
    # a remainder: 5 images over two classes at 10 -> 3 to the first by class number
    assert topup_counts([10, 10, 50], total=5).tolist() == [3, 2, 0]
    # 2 -> 4 takes 2; the 3 left raise both to 5 and the odd one goes to the rarer (class 1)
    assert topup_counts([4, 2, 9], total=5).tolist() == [1, 2 + 1 + 1, 0]


@pytest.mark.parametrize("args, kwargs", [
    (([3, -1], "majority"), {}),
    (([3, 1], -2), {}),
    (([3, 1], True), {}),
    (([3, 1], 2.0), {}),
    (([3, 1], "most"), {}),
    (([3, 1], None), {}),
    (([3, 1], 5), dict(total=4)),
    (([3, 1],), dict(total=-1)),
    (([3, 1],), dict(total=True)),
    (([3, 1],), dict(total=2.5)),
    (([],), {}),
    (([[1, 2]],), {}),
    (([1.0, 2.0],), {}),
])
def test_topup_errors(args, kwargs):
    with pytest.raises(ValueError):
        topup_counts(*args, **kwargs)


@given(st.integers(2, 5), st.integers(1, 30), st.randoms(use_true_random=False))
def test_soft_confusion_and_pairs_against_brute_force(C, N, rnd):
    rng = np.random.default_rng(rnd.randrange(2**32))
    P = rng.dirichlet(np.ones(C), size=N)
    y = rng.integers(0, C, N)
    M = soft_confusion(P, y, C)
    ref = brute_confusion(P, y, C)
    assert M.shape == (C, C)
    assert np.array_equal(np.isnan(M), np.isnan(ref))           # absent classes: NaN rows
    assert np.allclose(M[~np.isnan(M)], ref[~np.isnan(ref)], atol=1e-12)
    present = int((~np.isnan(ref).any(1)).sum())
    usable = present * (present - 1) // 2           # pairs of classes that both have images
    for k in range(1, usable + 1):
        got = similar_pairs(M, k)
        want = brute_pairs(ref, k)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
        assert np.allclose([s for *_, s in got], [s for *_, s in want], atol=1e-12)
        assert all(i < j for i, j, _ in got)
    if usable < C * (C - 1) // 2:
        with pytest.raises(ValueError, match="finite confusion"):
            similar_pairs(M, usable + 1)


def test_similar_pairs_ties_by_class_number_and_errors():
    M = np.full((4, 4), 0.1)
    np.fill_diagonal(M, 0.7)
    assert [(i, j) for i, j, _ in similar_pairs(M, 6)] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    M[3, 1] = 0.5                                   # (1, 3): (0.1 + 0.5) / 2 = 0.3
    top = similar_pairs(M, 1)
    assert top[0][:2] == (1, 3) and top[0][2] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        similar_pairs(np.zeros((2, 3)), 1)
    for bad in (0, -1, 7, 1.5):
        with pytest.raises(ValueError):
            similar_pairs(M, bad)
    with pytest.raises(ValueError):
        soft_confusion(np.ones((3, 2)) / 2, [0, 1, 1], 3)        # C mismatch
    with pytest.raises(ValueError):
        soft_confusion(np.ones((3, 3)) / 3, [0, 1], 3)           # N mismatch
