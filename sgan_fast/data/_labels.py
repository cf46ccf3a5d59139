"""Checking class labels once, the same way everywhere in sgan_fast.data."""

from __future__ import annotations

from typing import Optional

import numpy as np


def class_labels(labels, num_classes: Optional[int] = None, *, allow_empty: bool = True):
    """(labels as int64 numpy [N], C): integers, one per image, in [0, C); C defaults to
    max + 1. Raises ValueError naming the first image whose label is out of range."""
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one class per image [N], got shape {y.shape}")
    if len(y) == 0 and not allow_empty:
        raise ValueError("labels must be a non-empty [N] array")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    C = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if len(y) else 0)
    if len(y) and (y.min() < 0 or y.max() >= C):
        bad = int(np.flatnonzero((y < 0) | (y >= C))[0])
        raise ValueError(f"label of image {bad} is {int(y[bad])}, outside [0, C={C})")
    return y, C
