"""Long-tailed subsets of a dataset: the imbalance profiles and their manifests.

    subset = make_imbalanced(labels, "exp", rho=100, seed=0)
    subset.indices          # sorted dataset indices of the kept images (int64)
    subset.counts           # images kept per class
    subset.save("fmnist_lt100.npz"); ImbalancedSubset.load("fmnist_lt100.npz", labels=labels)

Profiles (C classes, n_max the head class's count):
    exp        n_c = int(n_max * rho^(-c / (C - 1))) for the c-th class of the order: the
               CIFAR-10-LT convention (Cao et al. 2019; Cui et al. 2019)
    step       the last int(fraction * C) classes of the order keep int(n_max / rho) images,
               the others n_max (Buda et al. 2018)
    reference  exactly raven38/softlabel-gan's get_imbalanced_subset_idx: counts
               int(num_samples * diff(cdf)) over C + 1 evenly spaced points, cdf = lognorm(s=3)
               on [0, 3] for C <= 10, chi2(df=3) on [0, 3] for C <= 100, pareto(b=2) on
               [1, 4] above, permuted across classes with numpy RandomState(15);
               num_samples is the reference's --num_samples (5000 for its CIFAR "0.1"
               runs, 10000 for its "0.2" runs)

The order of the classes is a permutation seeded by `seed` (seed=None: class 0 first). Each
class keeps its first n images in dataset order, as the reference and CIFAR-10-LT do. A class
with fewer images than its count raises, naming it (clip=True takes what there is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Optional

import numpy as np

from .._io import atomic_savez
from ._labels import class_labels

PROFILES = ("exp", "step", "reference")
MANIFEST_FORMAT = "sgan_fast.ImbalancedSubset"


def labels_hash(labels) -> str:
    """SHA-256 of the labels as little-endian int64: identifies the dataset a subset indexes."""
    return hashlib.sha256(class_labels(labels)[0].astype("<i8").tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Profiles: the per-class counts
# ---------------------------------------------------------------------------------------------

def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def reference_cdf(x: np.ndarray, num_classes: int) -> np.ndarray:
    """The reference's cdf at x: lognorm(s=3) for C <= 10, chi2(df=3) for C <= 100, else
    pareto(b=2), in closed form (scipy.stats gives the same; tests compare)."""
    out = np.empty(len(x), dtype=np.float64)
    for i, v in enumerate(np.asarray(x, dtype=np.float64)):
        if num_classes <= 10:      # lognorm(s=3): Phi(ln x / 3)
            out[i] = 0.0 if v <= 0 else _normal_cdf(math.log(v) / 3.0)
        elif num_classes <= 100:   # chi2(df=3): P(3/2, x/2) = erf(sqrt(x/2)) - sqrt(2x/pi) e^(-x/2)
            out[i] = 0.0 if v <= 0 else (math.erf(math.sqrt(v / 2.0))
                                         - math.sqrt(2.0 * v / math.pi) * math.exp(-v / 2.0))
        else:                      # pareto(b=2): 1 - x^-2 for x >= 1
            out[i] = 0.0 if v < 1 else 1.0 - v ** -2.0
    return out


def reference_counts(num_classes: int, num_samples: int = 5000) -> np.ndarray:
    """Per-class counts of the reference profile, class c getting counts[c]."""
    C = num_classes
    lo, hi = (1.0, 4.0) if C > 100 else (0.0, 3.0)
    counts = (num_samples * np.diff(reference_cdf(np.linspace(lo, hi, C + 1), C))).astype(int)
    return counts[np.random.RandomState(15).choice(np.arange(C), C, replace=False)]


def class_order(num_classes: int, seed: Optional[int]) -> np.ndarray:
    """The order in which classes get decreasing counts: seeded permutation, or 0..C-1."""
    if seed is None:
        return np.arange(num_classes)
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x1B])).permutation(num_classes)


def profile_counts(profile: str, num_classes: int, *, n_max: int, rho: float = 100.0,
                   fraction: float = 0.5, num_samples: int = 5000,
                   seed: Optional[int] = 0) -> np.ndarray:
    """Target images per class [C] of a profile (see the module docstring)."""
    C = num_classes
    if profile == "reference":
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
                or num_samples < 1:
            raise ValueError(f"num_samples (the reference profile's budget) must be a positive "
                             f"integer, got {num_samples!r}")
        return reference_counts(C, int(num_samples))
    if profile not in PROFILES:
        raise ValueError(f"unknown imbalance profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if not rho >= 1:
        raise ValueError(f"the imbalance ratio rho must be >= 1, got {rho}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    order = class_order(C, seed)
    counts = np.empty(C, dtype=np.int64)
    if profile == "exp":
        for rank, c in enumerate(order):
            counts[c] = int(n_max * rho ** (-rank / (C - 1))) if C > 1 else n_max
    else:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        n_minor = int(C * fraction)
        for rank, c in enumerate(order):
            counts[c] = int(n_max / rho) if rank >= C - n_minor else n_max
    return counts


# ---------------------------------------------------------------------------------------------
# Subsets and manifests
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ImbalancedSubset:
    """An imbalanced subset of a dataset: sorted indices, per-class counts, and how it was made."""

    indices: np.ndarray            # [M] int64, sorted
    counts: tuple                  # kept images per class
    profile: str
    params: dict                   # rho, fraction, n_max, num_samples, seed, clip
    num_classes: int
    source_num_images: int
    source_labels_sha256: str

    def check_source(self, labels) -> None:
        """Raises ValueError when `labels` are not those of the dataset the subset indexes."""
        y = class_labels(labels)[0]
        if len(y) != self.source_num_images or labels_hash(y) != self.source_labels_sha256:
            raise ValueError(f"this subset was made from a dataset of {self.source_num_images} images "
                             f"with other labels (the given dataset has {len(y)} images"
                             f"{'' if len(y) != self.source_num_images else ' and different labels'})")

    def save(self, path) -> None:
        """Writes the manifest (.npz: indices plus a JSON header), atomically."""
        meta = dict(format=MANIFEST_FORMAT, version=1, counts=list(self.counts), profile=self.profile,
                    params=self.params, num_classes=self.num_classes,
                    source_num_images=self.source_num_images,
                    source_labels_sha256=self.source_labels_sha256)
        atomic_savez(path, indices=self.indices.astype(np.int64), meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path, *, labels=None) -> "ImbalancedSubset":
        """Reads a manifest; with `labels` (the full dataset's), checks it indexes that dataset."""
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise ValueError(f"{path} is not an imbalanced-subset manifest")
            meta = json.loads(str(z["meta"]))
            indices = z["indices"].astype(np.int64)
        if meta.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{path} is not an imbalanced-subset manifest")
        sub = cls(indices, tuple(int(c) for c in meta["counts"]), meta["profile"], meta["params"],
                  int(meta["num_classes"]), int(meta["source_num_images"]),
                  str(meta["source_labels_sha256"]))
        if len(indices) != sum(sub.counts):
            raise ValueError(f"{path}: {len(indices)} indices but the counts sum to {sum(sub.counts)}")
        if labels is not None:
            sub.check_source(labels)
        return sub


def make_imbalanced(labels, profile: str = "exp", *, num_classes: Optional[int] = None,
                    rho: float = 100.0, fraction: float = 0.5, n_max: Optional[int] = None,
                    num_samples: int = 5000, seed: Optional[int] = 0,
                    clip: bool = False) -> ImbalancedSubset:
    """The imbalanced subset of a dataset with class labels `labels` [N].

    n_max defaults to the smallest class's size (so that the head class can be filled);
    num_samples is the reference profile's budget. See the module docstring for the profiles.
    """
    y, C = class_labels(labels, num_classes)
    if C < 1:
        raise ValueError("make_imbalanced needs at least one class")
    available = np.bincount(y, minlength=C)
    if n_max is None:
        n_max = int(available.min())
        if n_max < 1:
            empty = int(np.flatnonzero(available == 0)[0])
            raise ValueError(f"class {empty} has no images; pass n_max explicitly (and clip=True)")
    want = profile_counts(profile, C, n_max=n_max, rho=rho, fraction=fraction,
                          num_samples=num_samples, seed=seed)
    short = np.flatnonzero(want > available)
    if len(short) and not clip:
        c = int(short[0])
        raise ValueError(f"class {c} has {int(available[c])} images but the {profile} profile asks "
                         f"for {int(want[c])} ({len(short)} class(es) short); lower n_max or "
                         "num_samples, or pass clip=True to keep what there is")
    counts = np.minimum(want, available)
    order = np.argsort(y, kind="stable")          # images of each class, in dataset order
    starts = np.concatenate([[0], np.cumsum(available)])
    kept = [order[starts[c]:starts[c] + counts[c]] for c in range(C)]
    indices = np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
    params = dict(rho=rho, fraction=fraction, n_max=n_max, num_samples=num_samples,
                  seed=(15 if profile == "reference" else seed), clip=clip)
    return ImbalancedSubset(indices.astype(np.int64), tuple(int(c) for c in counts), profile, params,
                            C, int(len(y)), labels_hash(y))
