"""Kernel Inception distance (Binkowski et al. 2018): the unbiased estimate of the squared
MMD with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets.

    mean, std = kid(real_feats, fake_feats, subset_size=1000, num_subsets=100, seed=0)
"""

from __future__ import annotations

import torch

from .frechet import as_features


def mmd2_unbiased(x, y) -> float:
    """The unbiased squared MMD between samples x [m, D] and y [n, D] (m, n >= 2)."""
    D = x.shape[1]
    kxx = (x @ x.T / D + 1) ** 3
    kyy = (y @ y.T / D + 1) ** 3
    kxy = (x @ y.T / D + 1) ** 3
    m, n = x.shape[0], y.shape[0]
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def kid(real, fake, *, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0,
        device="cpu") -> tuple:
    """(mean, std) of the unbiased MMD^2 over `num_subsets` subsets of min(subset_size, N_real,
    N_fake) samples drawn without replacement from each set (computed on `device`)."""
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"the KID subset size must be an integer >= 2, got {subset_size!r}")
    if not isinstance(num_subsets, int) or num_subsets < 1:
        raise ValueError(f"the number of KID subsets must be a positive integer, got {num_subsets!r}")
    x = as_features(real, "real features").to(device)
    y = as_features(fake, "generated features").to(device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features have D={x.shape[1]}, generated D={y.shape[1]}")
    m = min(subset_size, x.shape[0], y.shape[0])
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor([mmd2_unbiased(x[torch.randperm(x.shape[0], generator=g)[:m].to(x.device)],
                                       y[torch.randperm(y.shape[0], generator=g)[:m].to(y.device)])
                         for _ in range(num_subsets)], dtype=torch.float64)
    return float(vals.mean()), float(vals.std(unbiased=True)) if num_subsets > 1 else 0.0
