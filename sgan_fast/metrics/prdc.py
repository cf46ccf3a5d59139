"""Precision, recall, density and coverage (Naeem et al. 2020) with k nearest neighbours.

    out = prdc(real_feats, fake_feats, k=5)   # {"precision", "recall", "density", "coverage"}

With r_i the distance from real sample i to its k-th nearest other real sample, and s_j the
same for generated sample j among the generated:
    precision = share of generated samples inside some real ball  B(x_i, r_i)
    recall    = share of real samples inside some generated ball   B(y_j, s_j)
    density   = (1 / (k M)) sum_j #{i : y_j in B(x_i, r_i)}
    coverage  = share of real samples whose ball holds a generated sample
Points on a ball's boundary are outside, as in the authors' code (strict <). Distances are
Euclidean, computed in float64 in row blocks on `device` (a GPU when there is one: three
N x M x D passes: about 3e13 operations for N = M = 50,000 and D = 2048).
"""

from __future__ import annotations

import torch

from .frechet import as_features

_BLOCK = 1024   # rows per distance block: 1024 x 60,000 float64 is 0.5 GB


def _distances(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)] from the squared norms, computed once per set."""
    return (a_sq[:, None] + b_sq[None, :] - 2 * a @ b.T).clamp_min_(0).sqrt_()


def _kth_neighbour_radius(x: torch.Tensor, x_sq: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[0], _BLOCK):
        d = _distances(x[a:a + _BLOCK], x_sq[a:a + _BLOCK], x, x_sq)
        # Each row's distance to itself is 0 up to rounding: set it to exactly 0 so that it
        # is the first of the k + 1 smallest.
        idx = torch.arange(a, a + d.shape[0], device=x.device)
        d[torch.arange(d.shape[0], device=x.device), idx] = 0
        out[a:a + _BLOCK] = d.kthvalue(k + 1, dim=1).values
    return out


def prdc(real, fake, *, k: int = 5, device="cpu") -> dict:
    x = as_features(real, "real features", min_rows=k + 1).to(device)
    y = as_features(fake, "generated features", min_rows=k + 1).to(device)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features have D={x.shape[1]}, generated D={y.shape[1]}")
    x_sq, y_sq = x.square().sum(1), y.square().sum(1)
    r = _kth_neighbour_radius(x, x_sq, k)
    s = _kth_neighbour_radius(y, y_sq, k)
    inside_real = torch.zeros(y.shape[0], dtype=torch.float64, device=x.device)  # per fake: real balls holding it
    covered = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    recalled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for a in range(0, y.shape[0], _BLOCK):
        d = _distances(y[a:a + _BLOCK], y_sq[a:a + _BLOCK], x, x_sq)        # [b, N]
        within = d < r[None, :]
        inside_real[a:a + _BLOCK] = within.sum(1).double()
        covered |= within.any(0)
        recalled |= (d < s[a:a + _BLOCK, None]).any(0)
    return dict(precision=float((inside_real > 0).double().mean()),
                recall=float(recalled.double().mean()),
                density=float(inside_real.sum() / (k * y.shape[0])),
                coverage=float(covered.double().mean()))
