"""A prepared dataset: every image of a dataset decoded once, at the model's resolution, into a
memory-mapped uint8 array, so that a large set (ImageNet-LT at 64 or 128 px) opens in
seconds instead of being decoded at every run.

    sgan-fast prepare --data imagenet-lt --root /data/imagenet --list ImageNet_LT_train.txt \\
        --test-list ImageNet_LT_test.txt --resolution 64 --out /data/inlt64
    sgan-fast train --data /data/inlt64 ...          # any command: --data <prepared folder>

The folder holds, per split ("train", and "test" when the source has one):
    <split>.u8      the raw pixels, uint8 [N, H, W, C], C-contiguous (numpy.memmap)
    <split>.npz     labels [N], and the source's file paths when it has them
    prepared.json   per split: N, H, W, C, classes, class names, the source's fingerprint,
                    how many images are written ("done") and whether it is complete
Opened, a split is an ArrayDataset over the memory map (pages are read on demand), with the
source's paths: its fingerprint is the source's, so a bank made on the image folder (or
list) matches the prepared folder. It feeds the GPU-resident loader when it fits in device
memory; make_loader(kind="auto") streams it with the DataLoader loader when it does not.

Preparing writes in chunks; after each chunk the map is flushed and prepared.json records
how far it got (atomically), so an interrupted prepare resumes where it stopped when run
again with the same data; a folder prepared from other data is refused by name. A split
that is not complete is refused when opened.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .._io import atomic_savez, atomic_write_text
from .._progress import Progress
from .datasets import ArrayDataset

FORMAT, VERSION = "sgan_fast.Prepared", 1
MANIFEST = "prepared.json"


class PreparedError(ValueError):
    """A prepared folder that cannot be used as asked (incomplete, other data, not one)."""


def is_prepared(path) -> bool:
    return os.path.isfile(os.path.join(os.fspath(path), MANIFEST))


def _manifest(out: str) -> dict:
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        return dict(format=FORMAT, version=VERSION, splits={})
    with open(path) as f:
        m = json.load(f)
    if m.get("format") != FORMAT:
        raise PreparedError(f"{path} is not an sgan_fast prepared-dataset manifest")
    if m.get("version", 0) > VERSION:
        raise PreparedError(f"{path}: version {m['version']} is newer than this sgan_fast reads")
    return m


def prepared_splits(path) -> list:
    """The splits a prepared folder holds ("train", "test")."""
    return list(_manifest(os.fspath(path))["splits"])


def _write_manifest(out: str, m: dict) -> None:
    atomic_write_text(os.path.join(out, MANIFEST), json.dumps(m, indent=1, sort_keys=True))


def _fingerprint(dataset) -> dict:
    """The dataset's fingerprint as prepared.json holds it (lists, not tuples)."""
    return json.loads(json.dumps(dataset.fingerprint().to_json()))


def _decode_range(args):
    """Worker: decode images [a, b) of `dataset` into the split's memory map."""
    dataset, path, shape, a, b = args
    mm = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    for i in range(a, b):
        mm[i] = dataset[i][0].permute(1, 2, 0).numpy()
    mm.flush()
    return b - a


def prepare(dataset, out: str, split: str = "train", *, workers: int = 0, chunk: int = 1024,
            progress: bool = True, source: Optional[dict] = None) -> dict:
    """Writes `dataset` (any sgan_fast dataset of fixed-size images) as split `split` of the
    prepared folder `out`, resuming an interrupted run; returns the split's manifest entry.
    workers > 0 decodes in that many processes (each writes its own rows of the map)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if chunk < 1 or workers < 0:
        raise ValueError(f"chunk must be >= 1 and workers >= 0, got {chunk}, {workers}")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset has no images to prepare")
    first = dataset[0][0]                                    # uint8 [C, H, W]
    shape = (n, int(first.shape[1]), int(first.shape[2]), int(first.shape[0]))
    os.makedirs(out, exist_ok=True)
    m = _manifest(out)
    fp = _fingerprint(dataset)
    entry = m["splits"].get(split)
    if entry is not None and (entry["fingerprint"] != fp or tuple(entry["shape"]) != shape):
        raise PreparedError(f"{out} holds another {split} split ({entry['shape'][0]} images "
                            f"{entry['shape'][1]}x{entry['shape'][2]}, "
                            f"{'the same' if entry['fingerprint'] == fp else 'other'} data); "
                            "choose another --out, or --overwrite to replace it")
    path = os.path.join(out, f"{split}.u8")
    if entry is None or not os.path.isfile(path) or os.path.getsize(path) != int(np.prod(shape)):
        entry = dict(shape=list(shape), num_classes=int(dataset.num_classes),
                     class_names=[str(c) for c in dataset.class_names], fingerprint=fp,
                     done=0, complete=False, source=source or {})
        np.memmap(path, dtype=np.uint8, mode="w+", shape=shape).flush()   # the file, full size
        arrays = dict(labels=np.asarray(dataset.labels, dtype=np.int64))
        if getattr(dataset, "paths", None) is not None:
            arrays["paths"] = np.asarray(dataset.paths)
        elif getattr(dataset, "keys", None) is not None:   # a subset: which source images
            arrays["keys"] = np.asarray(dataset.keys)
        atomic_savez(os.path.join(out, f"{split}.npz"), **arrays)
        m["splits"][split] = entry
        _write_manifest(out, m)
    if entry["complete"]:
        return entry
    bar = Progress(f"prepare {split}", n, unit=" img", enabled=progress)
    done = int(entry["done"])
    pool = None
    if workers > 0 and not isinstance(dataset, ArrayDataset):   # arrays need no decoding
        import multiprocessing as mp
        pool = mp.get_context("spawn").Pool(workers)
    try:
        while done < n:
            b = min(n, done + chunk)
            if pool is None:
                _decode_range((dataset, path, shape, done, b))
            else:   # the chunk split among the workers, each its own rows
                step = -(-(b - done) // workers)
                parts = [(dataset, path, shape, a, min(b, a + step)) for a in range(done, b, step)]
                pool.map(_decode_range, parts)
            done = b
            entry["done"] = done                 # after the rows are flushed: a resume point
            _write_manifest(out, m)
            bar.update(done)
    finally:
        if pool is not None:
            pool.terminate()
    entry["complete"] = True
    _write_manifest(out, m)
    return entry


def open_prepared(path, split: str = "train") -> ArrayDataset:
    """Split `split` of a prepared folder as an ArrayDataset over its memory map."""
    path = os.fspath(path)
    if not is_prepared(path):
        raise PreparedError(f"{path} is not a prepared dataset (no {MANIFEST})")
    m = _manifest(path)
    entry = m["splits"].get(split)
    if entry is None:
        raise PreparedError(f"{path} has no {split} split (it has {', '.join(m['splits']) or 'none'})")
    if not entry["complete"]:
        raise PreparedError(f"{path}: preparing the {split} split stopped at "
                            f"{entry['done']}/{entry['shape'][0]} images; run the same "
                            "`sgan-fast prepare` command again to finish it")
    shape = tuple(entry["shape"])
    images = np.memmap(os.path.join(path, f"{split}.u8"), dtype=np.uint8, mode="c", shape=shape)
    with np.load(os.path.join(path, f"{split}.npz"), allow_pickle=False) as z:
        labels = z["labels"]
        paths = [str(p) for p in z["paths"]] if "paths" in z.files else None
        keys = [str(k) for k in z["keys"]] if "keys" in z.files else None
    ds = ArrayDataset(images, labels, num_classes=entry["num_classes"],
                      class_names=entry["class_names"],
                      name=f"{os.path.basename(path.rstrip('/'))}-{split}", keys=keys)
    ds.paths = paths
    if _fingerprint(ds) != entry["fingerprint"]:
        raise PreparedError(f"{path}: the {split} split's labels or paths do not match its "
                            "manifest (files from another prepare?)")
    return ds
