"""Reading a --device flag: one rule for every command and the trainer."""

from __future__ import annotations

from typing import Optional

import torch


def pick_device(name: Optional[str]) -> torch.device:
    """None or "auto": cuda when present, else cpu; "cpu", "cuda", "cuda:<i>" as given. A device
    that cannot be used here is a ValueError naming it."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no GPU; pass device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:i], got {name!r}")
    return dev
