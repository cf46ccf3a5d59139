"""Precision, recall, density and coverage (Naeem et al. 2020) with k nearest neighbours.

    out = prdc(real_feats, fake_feats, k=5)   # {"precision", "recall", "density", "coverage"}

With r_i the distance from real sample i to its k-th nearest other real sample, and s_j the
same for generated sample j among the generated:
    precision = share of generated samples inside some real ball  B(x_i, r_i)
    recall    = share of real samples inside some generated ball   B(y_j, s_j)
    density   = (1 / (k M)) sum_j #{i : y_j in B(x_i, r_i)}
    coverage  = share of real samples whose ball holds a generated sample
Distances are Euclidean, computed in float64 in row blocks.
"""

from __future__ import annotations

import torch

from .frechet import as_features

_BLOCK = 2048


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for a in range(0, x.shape[0], _BLOCK):
        d = torch.cdist(x[a:a + _BLOCK], x)
        out[a:a + _BLOCK] = d.kthvalue(k + 1, dim=1).values   # the 1st is the row itself (0)
    return out


def prdc(real, fake, *, k: int = 5) -> dict:
    x = as_features(real, "real features", min_rows=k + 1)
    y = as_features(fake, "generated features", min_rows=k + 1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features have D={x.shape[1]}, generated D={y.shape[1]}")
    r = _kth_neighbour_radius(x, k)
    s = _kth_neighbour_radius(y, k)
    inside_real = torch.zeros(y.shape[0], dtype=torch.float64)   # per fake: real balls containing it
    covered = torch.zeros(x.shape[0], dtype=torch.bool)
    recalled = torch.zeros(x.shape[0], dtype=torch.bool)
    for a in range(0, y.shape[0], _BLOCK):
        d = torch.cdist(y[a:a + _BLOCK], x)                       # [b, N]
        within = d <= r[None, :]
        inside_real[a:a + _BLOCK] = within.sum(1).double()
        covered |= within.any(0)
        recalled |= (d <= s[a:a + _BLOCK, None]).any(0)
    return dict(precision=float((inside_real > 0).double().mean()),
                recall=float(recalled.double().mean()),
                density=float(inside_real.sum() / (k * y.shape[0])),
                coverage=float(covered.double().mean()))
