"""Reading a --device flag: one rule for every command and the trainer (under torchrun,
auto and cuda mean this rank's GPU, cuda:LOCAL_RANK)."""

from __future__ import annotations

from typing import Optional

import torch


def pick_device(name: Optional[str]) -> torch.device:
    """None or "auto": cuda when present, else cpu; "cpu", "cuda", "cuda:<i>" as given. A device
    that cannot be used here is a ValueError naming it."""
    from .distributed import current
    world = current()
    if name in (None, "auto"):
        if world.distributed and world.device is not None:
            return world.device      # under torchrun: this rank's device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no GPU; pass device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {name!r}")
    if world.distributed and world.device is not None and dev.type == "cuda":
        return world.device          # under torchrun a rank uses GPU LOCAL_RANK (a resumed
                                     # run's cuda:0 included); init refused an explicit cuda:i
    return dev
