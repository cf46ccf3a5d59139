"""FID: zero for a set with itself, the closed form for Gaussians, scipy's sqrtm, order."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sgan_fast.metrics import feature_stats, fid, frechet_distance


def _scipy_fid(a, b):
    """The straightforward implementation: scipy.linalg.sqrtm of S1 S2, real part."""
    from scipy import linalg
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@given(n=st.integers(40, 120), m=st.integers(40, 120), d=st.integers(1, 24), shift=st.floats(0, 3),
       seed=st.integers(0, 2**31 - 1))
def test_equals_scipy_sqrtm(n, m, d, shift, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.5 + shift
    ours, ref = fid(a, b), _scipy_fid(a, b)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("n,d", [(50, 128), (20, 64)])
def test_fewer_samples_than_dimensions_equals_scipy_too(n, d):
    """The usual case of per-class FID on 2048-d features: singular covariances."""
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n + 7, d, generator=g, dtype=torch.float64) * 1.2 + 0.1
    assert fid(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_a_set_with_itself_is_zero_and_order_does_not_matter():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 64, generator=g)
    b = torch.randn(300, 64, generator=g) + 0.3
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    perm_a, perm_b = torch.randperm(500, generator=g), torch.randperm(300, generator=g)
    assert fid(a[perm_a], b[perm_b]) == pytest.approx(fid(a, b), rel=1e-10)
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-9)


def test_two_gaussians_closed_form():
    """Diagonal covariances commute: d = |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expect = float((mu1 - mu2).square().sum() + (v1.sqrt() - v2.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(expect, rel=1e-12)
    # A rotated pair (non-diagonal, same spectra, same rotation) keeps the distance.
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    s1, s2 = q @ torch.diag(v1).double() @ q.T, q @ torch.diag(v2).double() @ q.T
    assert frechet_distance(q @ mu1.double(), s1, q @ mu2.double(), s2) == pytest.approx(expect, rel=1e-9)
    # Sampled Gaussians approach it.
    g = torch.Generator().manual_seed(2)
    a = mu1 + v1.sqrt() * torch.randn(200000, 3, generator=g)
    b = mu2 + v2.sqrt() * torch.randn(200000, 3, generator=g)
    assert fid(a, b) == pytest.approx(expect, rel=0.02)


def test_stats_are_float64_mean_and_unbiased_covariance():
    a = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    mu, s = feature_stats(a)
    assert mu.dtype == torch.float64
    np.testing.assert_allclose(s.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-12)


def test_bad_features_are_named():
    a = torch.randn(10, 4)
    a[3, 2] = float("nan")
    with pytest.raises(ValueError, match="first feature set: row 3 contains NaN"):
        fid(a, torch.randn(10, 4))
    with pytest.raises(ValueError, match="second feature set: 1 sample"):
        fid(torch.randn(10, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="different dimensions"):
        fid(torch.randn(10, 4), torch.randn(10, 5))
