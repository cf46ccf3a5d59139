"""Choosing a loader: make_loader(dataset, sampler, device=..., kind="auto").

    kind="auto":  an ArrayDataset -> GPUResidentLoader (the whole dataset on the device), or
                  TorchLoader with a warning when it does not fit there (a prepared folder
                  is then streamed from its memory map); an ImageFolder -> DALILoader on a
                  GPU when DALI is installed, else TorchLoader. kind="gpu_resident" raises
                  MemoryError when the dataset does not fit.
    kind="gpu_resident" | "dali" | "torch": that loader.
Every loader yields (step, (images, labels, indices)) with the same contract.
"""

from __future__ import annotations

import importlib.util

import torch

from .dali_loader import DALILoader
from .datasets import ArrayDataset
from .gpu_loader import GPUResidentLoader
from .image_folder import ImageFolder
from .samplers import BatchSampler
from .torch_loader import TorchLoader

KINDS = ("auto", "gpu_resident", "dali", "torch")


def _dali_installed() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:
        return False


def make_loader(dataset, sampler: BatchSampler, *, device="cuda", kind: str = "auto", **kwargs):
    """The loader of `kind` for `dataset` (see the module docstring). kwargs go to the loader
    (output, dtype, flip, flip_seed, channels_last; num_workers for torch, resolution and
    num_threads for dali)."""
    if kind not in KINDS:
        raise ValueError(f"unknown loader kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "auto":
        if isinstance(dataset, ArrayDataset):
            try:
                return GPUResidentLoader(dataset, sampler, device=device, **kwargs)
            except MemoryError as exc:
                import warnings
                warnings.warn(f"{exc}; streaming it with the DataLoader loader instead",
                              RuntimeWarning, stacklevel=2)
                kind = "torch"
        elif isinstance(dataset, ImageFolder) and torch.device(device).type == "cuda" and _dali_installed():
            kind = "dali"
        else:
            kind = "torch"
    if kind == "gpu_resident":
        return GPUResidentLoader(dataset, sampler, device=device, **kwargs)
    if kind == "dali":
        kwargs.setdefault("resolution", dataset.resolution if isinstance(dataset, ImageFolder) else None)
        if kwargs["resolution"] is None:
            raise ValueError("the DALI loader needs resolution= (or an ImageFolder opened with one)")
        return DALILoader(dataset, sampler, device=device, **kwargs)
    return TorchLoader(dataset, sampler, device=device, **kwargs)
