"""All metrics, overall and per class, from features: what `sgan-fast eval` reports.

    report = evaluate_features(real_feats, real_labels, fake_feats, fake_labels, num_classes=10,
                               fake_logits=logits, train_counts=counts, class_names=names)

Per class c, the generated images of class c are compared with the real images of class c:
that is intra-class FID for FID, and the same split for KID, precision / recall / density /
coverage and IS (one split per class). The overall numbers compare all generated images with
all real images. Every class needs at least max(2, k + 1) real and generated images (FID needs
a covariance, PRDC a k-th neighbour); a class with fewer raises, naming it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .frechet import as_features, fid
from .inception_score import inception_score
from .kid import kid
from .prdc import prdc


def _labels(y, n: int, C: int, what: str) -> np.ndarray:
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{what} labels must be [N={n}], got shape {y.shape}")
    if len(y) and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what} labels must be integers, got {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= C):
        bad = int(np.flatnonzero((y < 0) | (y >= C))[0])
        raise ValueError(f"{what} image {bad} has class {int(y[bad])}, but the dataset has "
                         f"{C} classes (0..{C - 1}): are they from a model of another class count?")
    return y


def metric_set(real, fake, fake_logits, *, k: int, kid_subset_size: int, kid_subsets: int,
               is_splits: int, seed: int, device="cpu") -> dict:
    """FID, KID, IS (when logits are given) and PRDC of one real/generated pair of sets."""
    out = dict(fid=fid(real, fake))
    out["kid_mean"], out["kid_std"] = kid(real, fake, subset_size=kid_subset_size,
                                          num_subsets=kid_subsets, seed=seed, device=device)
    if fake_logits is not None:
        out["is_mean"], out["is_std"] = inception_score(fake_logits, splits=min(is_splits, len(fake_logits)),
                                                        seed=seed)
    else:
        out["is_mean"] = out["is_std"] = None
    out.update(prdc(real, fake, k=k, device=device))
    return out


def check_settings(*, k: int, kid_subset_size: int, kid_subsets: int, is_splits: int) -> None:
    """ValueError for settings that would make a metric undefined (before any work is done)."""
    for name, value, low in (("k", k, 1), ("kid_subset_size", kid_subset_size, 2),
                             ("kid_subsets", kid_subsets, 1), ("is_splits", is_splits, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_counts(ry: np.ndarray, fy: np.ndarray, C: int, k: int, names) -> tuple:
    need = max(2, k + 1)
    rc, fc = np.bincount(ry, minlength=C), np.bincount(fy, minlength=C)
    for what, counts in (("real", rc), ("generated", fc)):
        short = np.flatnonzero(counts < need)
        if len(short):
            c = int(short[0])
            raise ValueError(f"class {c} ({names[c]!r}) has {int(counts[c])} {what} image(s); "
                             f"per-class metrics need at least {need} (2 for FID's covariance, "
                             f"k + 1 = {k + 1} for precision/recall with k = {k}); "
                             f"{len(short)} class(es) are short")
    return rc, fc


def check_class_counts(real_labels, fake_labels, *, num_classes: int, k: int = 5,
                       class_names: Optional[Sequence[str]] = None) -> None:
    """The ValueError evaluate_features raises for labels out of range or a class with too
    few real or generated images, from the labels alone (before any feature is computed)."""
    C = int(num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    ry = _labels(real_labels, len(real_labels), C, "real")
    fy = _labels(fake_labels, len(fake_labels), C, "generated")
    _check_counts(ry, fy, C, k, names)


def evaluate_features(real, real_labels, fake, fake_labels, *, num_classes: int,
                      fake_logits=None, train_counts: Optional[Sequence[int]] = None,
                      class_names: Optional[Sequence[str]] = None, k: int = 5,
                      kid_subset_size: int = 1000, kid_subsets: int = 100, is_splits: int = 10,
                      seed: int = 0, backend: str = "", device="cpu") -> dict:
    """The report dict: overall metrics, and one entry per class (module docstring). KID and
    PRDC run on `device` (their N x M distance and kernel matrices are the costly part)."""
    check_settings(k=k, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, is_splits=is_splits)
    C = int(num_classes)
    x = as_features(real, "real features")
    y = as_features(fake, "generated features")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real features are {x.shape[1]}-d, generated {y.shape[1]}-d: "
                         "they come from different backends")
    ry = _labels(real_labels, x.shape[0], C, "real")
    fy = _labels(fake_labels, y.shape[0], C, "generated")
    z = None
    if fake_logits is not None:
        z = as_features(fake_logits, "generated logits", min_rows=1)
        if z.shape[0] != y.shape[0]:
            raise ValueError(f"{z.shape[0]} logits for {y.shape[0]} generated images")
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    if len(names) != C:
        raise ValueError(f"{len(names)} class names for {C} classes")
    if train_counts is not None and len(train_counts) != C:
        raise ValueError(f"training counts for {len(train_counts)} classes, but {C} classes")
    rc, fc = _check_counts(ry, fy, C, k, names)
    kw = dict(k=k, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
              is_splits=is_splits, seed=seed, device=device)
    overall = metric_set(x, y, z, **kw)
    per_class = []
    for c in range(C):
        rm, fm = torch.from_numpy(ry == c), torch.from_numpy(fy == c)
        m = metric_set(x[rm], y[fm], None if z is None else z[fm], **dict(kw, is_splits=1))
        per_class.append(dict(cls=c, name=names[c],
                              train_images=None if train_counts is None else int(train_counts[c]),
                              real_images=int(rc[c]), generated_images=int(fc[c]), **m))
    return dict(backend=backend, num_classes=C, num_real=int(x.shape[0]), num_generated=int(y.shape[0]),
                overall=overall, mean_intra_fid=float(np.mean([p["fid"] for p in per_class])),
                per_class=per_class,
                settings=dict(k=k, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets,
                              is_splits=is_splits, is_per_class_splits=1, seed=seed))
