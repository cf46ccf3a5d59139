"""KID (unbiased), IS and precision / recall / density / coverage on cases worked out by hand
and against naive loops."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sgan_fast.metrics import inception_score, kid, prdc
from sgan_fast.metrics.kid import mmd2_unbiased


def _k(a, b):
    return (float(np.dot(a, b)) / len(a) + 1) ** 3


def test_mmd2_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    X, Y = x.numpy(), y.numpy()
    xx = sum(_k(X[i], X[j]) for i, j in itertools.permutations(range(5), 2)) / (5 * 4)
    yy = sum(_k(Y[i], Y[j]) for i, j in itertools.permutations(range(4), 2)) / (4 * 3)
    xy = sum(_k(X[i], Y[j]) for i in range(5) for j in range(4)) / (5 * 4)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_unbiased_on_two_samples_of_one_distribution():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3000, 16, generator=g), torch.randn(3000, 16, generator=g)
    mean, std = kid(a, b, subset_size=200, num_subsets=400, seed=0)
    # Unbiased: the mean over subsets is 0 within its standard error (not the positive bias
    # of the biased estimator, which is about 2 k(x, x) / m).
    assert abs(mean) < 4 * std / math.sqrt(400)
    far = kid(a, b + 0.5, subset_size=200, num_subsets=50)[0]
    assert far > 20 * std / math.sqrt(400)


def test_inception_score_by_hand():
    # Confident and spread evenly over K classes: IS = K. Uniform predictions: IS = 1.
    for K in (2, 5):
        logits = torch.full((10 * K, K), -30.0)
        logits[torch.arange(10 * K), torch.arange(10 * K) % K] = 30.0
        assert inception_score(logits, splits=1)[0] == pytest.approx(K, rel=1e-6)
    assert inception_score(torch.zeros(20, 7), splits=4) == pytest.approx((1.0, 0.0))
    # Two images, p1 = (1, 0), p2 = (1/2, 1/2): p(y) = (3/4, 1/4);
    # KL1 = log(4/3), KL2 = 1/2 log(2/3) + 1/2 log(2); IS = exp((KL1 + KL2) / 2).
    logits = torch.tensor([[0.0, -60.0], [0.0, 0.0]])
    kl = (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2
    assert inception_score(logits, splits=1)[0] == pytest.approx(math.exp(kl), rel=1e-9)
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.zeros(3, 2), splits=4)


def test_inception_score_does_not_depend_on_the_order_of_the_samples():
    """Generated sets come sorted by class: unshuffled splits would each hold one class."""
    K = 10
    logits = torch.full((100 * K, K), -30.0)
    logits[torch.arange(100 * K), torch.arange(100 * K) // 100] = 30.0      # sorted by class
    sorted_is = inception_score(logits, splits=10)[0]
    shuffled = logits[torch.randperm(100 * K, generator=torch.Generator().manual_seed(5))]
    assert sorted_is == pytest.approx(inception_score(shuffled, splits=10)[0], rel=0.05)
    assert sorted_is > 9


def test_prdc_by_hand():
    """k = 1 on a line. Real {0, 1, 3}: radii 1, 1, 2. Generated {0.5, 10, 20}: radii 9.5, 9.5, 10.
    precision: only 0.5 lies in a real ball -> 1/3. density: 0.5 lies in B(0,1) and B(1,1),
    the others in none -> 2 / (1 * 3). recall: every real point lies in B(0.5, 9.5) -> 1.
    coverage: B(0,1) and B(1,1) hold 0.5, B(3,2) holds nothing (0.5 is 2.5 away) -> 2/3."""
    real = torch.tensor([[0.0], [1.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0], [20.0]])
    out = prdc(real, fake, k=1)
    assert out == pytest.approx(dict(precision=1 / 3, recall=1.0, density=2 / 3, coverage=2 / 3))
    same = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    out = prdc(same, same, k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    # On the boundary is outside: real {0, 1}, k = 1, radii 1; generated {2, 3} (radii 1).
    edge = prdc(torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]]), k=1)
    assert edge == dict(precision=0.0, recall=0.0, density=0.0, coverage=0.0)


def _naive_prdc(x, y, k):
    d_xx = np.linalg.norm(x[:, None] - x[None], axis=2)
    d_yy = np.linalg.norm(y[:, None] - y[None], axis=2)
    d_yx = np.linalg.norm(y[:, None] - x[None], axis=2)
    r = np.sort(d_xx, 1)[:, k]
    s = np.sort(d_yy, 1)[:, k]
    # Strict: a point on a ball's boundary is outside (Naeem et al.'s code).
    precision = np.mean([any(d_yx[j, i] < r[i] for i in range(len(x))) for j in range(len(y))])
    recall = np.mean([any(d_yx[j, i] < s[j] for j in range(len(y))) for i in range(len(x))])
    density = sum(d_yx[j, i] < r[i] for j in range(len(y)) for i in range(len(x))) / (k * len(y))
    coverage = np.mean([d_yx[:, i].min() < r[i] for i in range(len(x))])
    return dict(precision=precision, recall=recall, density=density, coverage=coverage)


@given(n=st.integers(6, 40), m=st.integers(6, 40), d=st.integers(1, 5), k=st.integers(1, 5),
       block=st.sampled_from([3, 7, 1024]), seed=st.integers(0, 2**31 - 1))
def test_prdc_matches_naive_loops(n, m, d, k, block, seed):
    """Also across several distance blocks (the block size is patched down)."""
    import importlib
    from unittest import mock
    module = importlib.import_module("sgan_fast.metrics.prdc")   # the attribute is the function
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + rng.normal()
    with mock.patch.object(module, "_BLOCK", block):
        assert prdc(torch.from_numpy(x), torch.from_numpy(y), k=k) == pytest.approx(_naive_prdc(x, y, k))


def test_prdc_needs_more_samples_than_k():
    with pytest.raises(ValueError, match="generated features: 5 sample.*at least 6"):
        prdc(torch.randn(10, 2), torch.randn(5, 2), k=5)
