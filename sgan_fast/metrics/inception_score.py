"""Inception score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) over `splits` equal
parts of the samples, mean and standard deviation across parts.

    mean, std = inception_score(logits, splits=10)     # logits [N, K] of the scoring network

The samples are shuffled (seeded) before they are split, as torch-fidelity does.
"""

from __future__ import annotations

import torch

from .frechet import as_features


def inception_score(logits, *, splits: int = 10, seed: int = 0) -> tuple:
    """The rows are shuffled (seeded) before splitting: generated sets usually come sorted
    by class, and a split holding one class would score 1."""
    z = as_features(logits, "logits", min_rows=1)
    if not isinstance(splits, int) or not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits must be an integer in [1, N={z.shape[0]}], got {splits!r}")
    z = z[torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))]
    logp = torch.log_softmax(z, 1)
    scores = []
    for part in torch.tensor_split(logp, splits):
        log_py = torch.logsumexp(part, 0) - torch.log(torch.tensor(float(part.shape[0]), dtype=torch.float64))
        kl = (part.exp() * (part - log_py)).sum(1).mean()
        scores.append(float(kl.exp()))
    s = torch.tensor(scores, dtype=torch.float64)
    return float(s.mean()), float(s.std(unbiased=False)) if splits > 1 else 0.0
