"""Writing files without ever leaving a half-written one in place of a good one."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def atomic_savez(path, **arrays) -> None:
    """np.savez to `path` through a temporary file in the same folder, flushed to disk, then
    renamed over `path`: an interrupted write leaves the old file (or none) intact."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
