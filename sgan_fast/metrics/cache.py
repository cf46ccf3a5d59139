"""The real images' features, cached per dataset fingerprint and feature backend: computing
Inception features of 60,000 images takes minutes on a GPU and hours on a CPU, and they are
the same in every evaluation of a run.

    feats, logits = cached_features(backend, dataset, cache_dir="~/.cache/sgan_fast", device="cuda")

The file name is a hash of the images themselves (their bytes and shape), the dataset's
fingerprint (labels, files or source keys) and the backend's identity (its weights file's
hash, value range and preprocessing version). So the same labels with other pixels, another
resolution or other channels, or another network, never share a file. The file repeats the
key, and its row count is checked on load; an unreadable file is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import numpy as np
import torch

from .._io import atomic_savez
from .features import FeatureBackend, extract_features

FORMAT = "sgan_fast.RealFeatures"


def default_cache_dir() -> str:
    return os.environ.get("SGAN_FAST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sgan_fast")


def cached_features(backend: FeatureBackend, dataset, *, cache_dir: Optional[str] = None,
                    device="cpu", batch_size: int = 64, progress: bool = True, world=None) -> tuple:
    """(features [N, D], logits [N, K] or None) of `dataset` (an ArrayDataset or anything with
    .images uint8 [N, H, W, C] and fingerprint()), from the cache when it holds them.

    With several processes (`world`, a sgan_fast.distributed.World; every rank calls this):
    rank 0 looks in the cache; when the features are not there, every rank extracts those of
    its own batches (batch_rows), rank 0 gathers them and stores the file. The features are
    returned on rank 0, (None, None) on the other ranks."""
    from ..distributed import batch_rows, same_outcome
    from ..distributed import World
    from .features import gather_features

    world = world if world is not None else World()
    found = None
    with same_outcome(world):
        if world.is_main:
            path, key_src = _cache_file(backend, dataset, cache_dir)
            found = _load(path, key_src, len(dataset.images))
    if world.broadcast_object(found is not None):
        return found if world.is_main else (None, None)
    rows = batch_rows(world, len(dataset.images), batch_size)
    with same_outcome(world):
        feats, logits = extract_features(backend, dataset.images[rows.start:rows.stop], device=device,
                                         batch_size=batch_size, progress=progress and world.is_main,
                                         what=f"real features ({backend.name})"
                                         + (", rank 0's batches" if world.distributed else ""))
    if world.distributed:
        feats, logits = gather_features(world, feats, logits)
    with same_outcome(world):
        if world.is_main:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            arrays = dict(features=feats.numpy(), meta=np.array(json.dumps(dict(format=FORMAT, key=key_src))))
            if logits is not None:
                arrays["logits"] = logits.numpy()
            atomic_savez(path, **arrays)
    return feats, logits


def _cache_file(backend: FeatureBackend, dataset, cache_dir: Optional[str]) -> tuple:
    """(the cache file's path, its key) for these images, labels and backend."""
    fp = dataset.fingerprint().to_json()
    images = np.ascontiguousarray(dataset.images)
    pixels = hashlib.sha256(memoryview(images).cast("B")).hexdigest()
    key_src = json.dumps(dict(fingerprint=fp, backend=backend.identity, pixels=pixels,
                              shape=list(images.shape)), sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    cache_dir = os.path.expanduser(cache_dir or default_cache_dir())
    return os.path.join(cache_dir, f"real_features_{key}.npz"), key_src


def _load(path: str, key_src: str, n: int) -> Optional[tuple]:
    """The cached (features, logits) when the file holds them for this key, else None."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if (meta.get("format") == FORMAT and meta.get("key") == key_src
                    and z["features"].shape[0] == n):
                logits = torch.from_numpy(z["logits"]) if "logits" in z.files else None
                return torch.from_numpy(z["features"]), logits
    except (OSError, ValueError, KeyError):
        pass   # unreadable: recomputed and replaced
    return None
