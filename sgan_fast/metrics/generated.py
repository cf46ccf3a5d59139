"""Reading a set of generated images with their classes: an image folder (one subfolder per
class, named as the dataset's classes or by class number) or an .npz (uint8 "images",
int "labels")."""

from __future__ import annotations

import os

import numpy as np

from ..data.datasets import ArrayDataset
from ..data.image_folder import ImageFolder


def open_generated(path, *, class_names, channels: int, progress: bool = True) -> ArrayDataset:
    """The generated set as arrays, labels in the dataset's class numbering."""
    C = len(class_names)
    path = os.fspath(path)
    if path.endswith(".npz"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"generated images file {path} not found")
        ds = ArrayDataset.from_npz(path)
        if ds.num_classes > C:
            raise ValueError(f"{path} has labels up to {ds.num_classes - 1}, but the dataset has {C} "
                             "classes: are they from a model of another class count?")
        ds = ArrayDataset(ds.images, ds.labels, num_classes=C, class_names=class_names, name="generated")
    elif os.path.isdir(path):
        folder = ImageFolder(path, channels=channels, progress=progress)
        names = list(folder.class_names)
        by_name = {n: i for i, n in enumerate(class_names)}
        if all(n in by_name for n in names):
            mapping = [by_name[n] for n in names]
        elif all(n.isdigit() and int(n) < C for n in names):
            mapping = [int(n) for n in names]
        else:
            odd = next(n for n in names if n not in by_name and not (n.isdigit() and int(n) < C))
            raise ValueError(f"{path}: class folder {odd!r} is neither one of the dataset's {C} "
                             f"classes ({', '.join(map(repr, class_names[:5]))}"
                             f"{', ...' if C > 5 else ''}) nor a class number below {C}")
        arrays = folder.to_arrays(progress=progress)
        labels = np.asarray(mapping, dtype=np.int64)[arrays.labels]
        ds = ArrayDataset(arrays.images, labels, num_classes=C, class_names=class_names, name="generated")
    else:
        raise FileNotFoundError(f"generated images {path}: neither an image folder nor an .npz file")
    if ds.channels != channels:
        raise ValueError(f"generated images have {ds.channels} channel(s), the dataset {channels}")
    return ds


def generate_images(generate, *, per_class: int, class_names, batch_size: int = 256) -> ArrayDataset:
    """A generated set of `per_class` images of every class from `generate(labels)`, a callable
    mapping int64 class labels [B] to uint8 images [B, C, H, W] (a generator with its
    sampling wrapped; the trainer's checkpoints provide one). Classes are asked for in order."""
    C = len(class_names)
    labels = class_labels(C, per_class)
    images = generate_rows(generate, labels, range(len(labels)), batch_size=batch_size)
    return ArrayDataset(images, labels, num_classes=C, class_names=class_names, name="generated")


def class_labels(num_classes: int, per_class: int) -> np.ndarray:
    """The labels of generate_images's set: per_class times class 0, then class 1, ..."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    return np.repeat(np.arange(num_classes), per_class)


def generate_rows(generate, labels: np.ndarray, rows: range, *, skip=None,
                  batch_size: int = 256):
    """uint8 images [len(rows), H, W, C] (None when rows is empty): the rows `rows` of the set
    that generate(labels chunk) makes chunk by chunk, `batch_size` labels at a time, in order.

    Several processes split a set by rows; its images stay those of one process when the
    randomness of a chunk is where one process has it: a chunk that holds any of `rows` is
    generated whole (the same batch as in one process) and cut to them, and skip(labels
    chunk) is called for every chunk before them, to draw (and drop) their randomness
    without generating them (see train.sampling.skip_latents). Without skip, rows must start at 0."""
    import torch

    if rows.step != 1 or rows.start < 0 or rows.stop > len(labels):
        raise ValueError(f"rows must be a contiguous range inside 0..{len(labels)}, got {rows}")
    if len(rows) == 0:
        return None
    if rows.start > 0 and skip is None:
        raise ValueError("rows that do not start at 0 need skip= (the randomness of the rows before)")
    chunks = []
    for a in range(0, rows.stop, batch_size):
        y = torch.from_numpy(labels[a:a + batch_size])
        if a + len(y) <= rows.start:
            skip(y)
            continue
        x = generate(y)
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[0] != len(y):
            raise ValueError(f"generate(labels) must return uint8 [B={len(y)}, C, H, W], got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        lo, hi = max(rows.start - a, 0), min(rows.stop - a, len(y))
        chunks.append(x[lo:hi].permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(chunks)
