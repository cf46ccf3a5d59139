"""Evaluation during training: FID and intra-class FID of the EMA generator on a fixed set
of latents, against real features computed once (and cached on disk)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..metrics.cache import cached_features
from ..metrics.features import FeatureBackend, extract_features
from ..metrics.frechet import fid
from .sampling import class_grid


class FIDEvaluator:
    """evaluator(G, step) -> {"fid", "intra_fid", "per_class_fid"}: per_class images of every
    class from the same seeded latents at every call, so scores over training are comparable."""

    def __init__(self, backend: FeatureBackend, real, *, per_class: int = 50, seed: int = 0,
                 device="cpu", cache_dir: Optional[str] = None, progress: bool = False):
        if per_class < 2:
            raise ValueError(f"per-class FID needs at least 2 generated images per class, got {per_class}")
        counts = np.bincount(real.labels, minlength=real.num_classes)
        if counts.min() < 2:
            c = int(counts.argmin())
            raise ValueError(f"class {c} has {int(counts[c])} real image(s); per-class FID needs 2")
        self.backend, self.per_class, self.seed, self.device = backend, per_class, seed, device
        self.num_classes = int(real.num_classes)
        feats, _ = cached_features(backend, real, cache_dir=cache_dir, device=device, progress=progress)
        self.real, self.real_labels = feats, torch.from_numpy(np.asarray(real.labels))

    def __call__(self, G, step: int) -> dict:
        images = class_grid(G, self.num_classes, self.per_class, seed=self.seed)
        labels = torch.arange(self.num_classes).repeat_interleave(self.per_class)
        feats, _ = extract_features(self.backend, images, device=self.device)
        per_class = [fid(self.real[self.real_labels == c], feats[labels == c])
                     for c in range(self.num_classes)]
        return dict(fid=fid(self.real, feats), intra_fid=float(np.mean(per_class)),
                    per_class_fid=per_class)
