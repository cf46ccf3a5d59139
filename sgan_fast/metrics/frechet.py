"""Fréchet distance between Gaussians fitted to two feature sets (FID when the features are
Inception pool features), in float64.

    mu, sigma = feature_stats(feats)                # feats [N, D]
    d = frechet_distance(mu1, sigma1, mu2, sigma2)

d = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the square root is
computed as the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), a
symmetric positive semi-definite matrix with the same eigenvalues as S1 S2: two symmetric
eigendecompositions, no complex arithmetic, and no dependence on how ill-conditioned the
product is (scipy.linalg.sqrtm of S1 S2 gives the same value; the tests compare).
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_features(feats, what: str = "features", min_rows: int = 2) -> Tensor:
    """float64 [N, D] with N >= min_rows and finite values, or a ValueError naming `what`."""
    x = torch.as_tensor(feats)
    if x.dim() != 2:
        raise ValueError(f"{what} must be [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{what}: {x.shape[0]} sample(s), at least {min_rows} are needed")
    x = x.detach().to(torch.float64)
    bad = ~torch.isfinite(x).all(1)
    if bool(bad.any()):
        raise ValueError(f"{what}: row {int(bad.nonzero()[0, 0])} contains NaN or Inf")
    return x


def feature_stats(feats, what: str = "features") -> tuple:
    """(mean [D], covariance [D, D]) in float64; covariance with the N - 1 denominator."""
    x = as_features(feats, what)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrt_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"statistics of different dimensions: mean {tuple(mu1.shape)} / "
                         f"{tuple(mu2.shape)}, covariance {tuple(s1.shape)} / {tuple(s2.shape)}")
    r = _sqrt_psd(s1)
    eig = torch.linalg.eigvalsh((r @ s2 @ r + (r @ s2 @ r).T) / 2).clamp_min(0)
    d = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum()
    return max(float(d), 0.0)


def fid(feats_a, feats_b) -> float:
    """The Fréchet distance between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*feature_stats(feats_a, "first feature set"),
                            *feature_stats(feats_b, "second feature set"))
