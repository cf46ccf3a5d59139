"""Cross-fitting folds: every image gets its probabilities from a model that never saw it.

    fold_of = stratified_folds(labels, k=5, seed=0)    # [N] int64 in [0, k)
    train_idx, held_out = fold_split(fold_of, f)       # fold f: train on the rest, predict f

Folds are stratified: each class's images, in a seeded random order, are dealt to the folds
in turn, starting where the previous class stopped, so every fold gets about N / k images and
each class's images are spread over as many folds as it has images.
"""

from __future__ import annotations

import numpy as np


def stratified_folds(labels, k: int, seed: int = 0) -> np.ndarray:
    """[N] int64: the fold of every image (see the module docstring)."""
    y = np.asarray(labels, dtype=np.int64)
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"cross-fitting needs k >= 2 folds, got {k!r}")
    if len(y) < k:
        raise ValueError(f"{len(y)} images cannot be split into {k} folds")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF01D]))
    fold_of = np.empty(len(y), dtype=np.int64)
    start = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        fold_of[members] = (start + np.arange(len(members))) % k
        start = (start + len(members)) % k
    return fold_of


def fold_split(fold_of: np.ndarray, fold: int) -> tuple:
    """(training indices, held-out indices) of fold `fold`, both sorted int64."""
    held = np.flatnonzero(fold_of == fold)
    return np.flatnonzero(fold_of != fold), held


def holdout_split(labels, fraction: float, seed: int = 0) -> tuple:
    """(training indices, held-out indices): a stratified held-out set of about `fraction`
    of the images (at least one per class that has two or more) for calibration when
    cross-fitting is off."""
    if not 0 < fraction < 1:
        raise ValueError(f"the calibration fraction must lie in (0, 1), got {fraction}")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA1]))
    held = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < 2:
            continue
        n = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.append(rng.choice(members, n, replace=False))
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask), held
