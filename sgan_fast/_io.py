"""Writing files without ever leaving a half-written one in place of a good one."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import numpy as np


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only be
    read by setting it, which would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable, *, binary: bool = True) -> None:
    """Calls write(f) on a temporary file in `path`'s folder, flushes it to disk, then renames
    it over `path`: an interrupted write leaves the old file (or none) intact."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_savez(path, **arrays) -> None:
    """np.savez to `path`, atomically (see atomic_write)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_torch_save(path, obj) -> None:
    """torch.save to `path`, atomically (see atomic_write)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text: str) -> None:
    """A text file (reports), written atomically (see atomic_write)."""
    atomic_write(path, lambda f: f.write(text), binary=False)
