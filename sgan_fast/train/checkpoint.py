"""Training checkpoints: the whole state of a run in one file, written atomically.

A checkpoint is a dict of tensors and plain values (no pickled classes), so it is read
with torch.load(weights_only=True) and no code in the file runs:

    format, version, step, config (the resolved TrainConfig), data (how the dataset was
    opened, its fingerprint, class names, channels, the bank's digest), model_config (G's
    and D's constructor arguments), G, D, G_ema (state_dicts: weights,
    BN statistics, spectral-norm vectors), opt_G, opt_D, ema, lecam, rng (the trainer's
    generators and torch's global CPU/CUDA states), loader (the sampler's position),
    best (the best evaluation so far)

It is written to a temporary file in the same folder, flushed to disk and renamed over the
old one, so a run killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .._io import atomic_torch_save

FORMAT = "sgan_fast.TrainState"
VERSION = 1
LATEST, BEST = "latest.pt", "best.pt"


class CheckpointError(ValueError):
    """A file that is not a readable sgan_fast training checkpoint, or one for other data."""


def save_checkpoint(path, state: dict) -> None:
    atomic_torch_save(path, dict(state, format=FORMAT, version=VERSION))


def load_checkpoint(path, *, map_location="cpu") -> dict:
    """The checkpoint dict at `path` (a file, or a run folder: its checkpoints/latest.pt)."""
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, pickled code
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an sgan_fast training checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than "
                              f"this sgan_fast reads ({VERSION})")
    return state


def find_checkpoint(path) -> str:
    """A checkpoint file from a file path or a run folder (its checkpoints/latest.pt)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for cand in (os.path.join(path, "checkpoints", LATEST), os.path.join(path, LATEST)):
            if os.path.isfile(cand):
                return cand
        raise FileNotFoundError(f"{path} holds no checkpoint (looked for checkpoints/{LATEST})")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    return path


def latest_checkpoint(out) -> Optional[str]:
    """The run folder's latest checkpoint, or None when it has none yet."""
    p = os.path.join(os.fspath(out), "checkpoints", LATEST)
    return p if os.path.isfile(p) else None
