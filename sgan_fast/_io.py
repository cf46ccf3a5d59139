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


_TMP_PREFIX, _TMP_SUFFIX = ".{}.", ".tmp"   # atomic_write's temporary file beside its target


def remove_partial_writes(path) -> None:
    """Removes the temporary files atomic_write left beside `path` when its process was killed
    mid-write (never `path` itself)."""
    path = os.fspath(path)
    folder, prefix = os.path.dirname(os.path.abspath(path)), _TMP_PREFIX.format(os.path.basename(path))
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith(prefix) and f.endswith(_TMP_SUFFIX):
                os.remove(os.path.join(folder, f))


def atomic_write(path, write: Callable, *, binary: bool = True) -> None:
    """Calls write(f) on a temporary file in `path`'s folder, flushes it to disk, then renames
    it over `path`: an interrupted write leaves the old file (or none) intact."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX.format(os.path.basename(path)),
                               suffix=_TMP_SUFFIX, dir=os.path.dirname(os.path.abspath(path)))
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


def refuse_overwrite(out, names, overwrite: bool) -> None:
    """ValueError when the folder `out` already holds any of `names` and overwrite is off:
    a command never replaces an earlier run's results silently."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder")
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if existing and not overwrite:
        raise ValueError(f"{out} already holds {', '.join(existing)} from an earlier run; pass "
                         "--overwrite to replace them, or choose another --out")


def writable_dir(out) -> None:
    """Creates `out` if needed; ValueError when it cannot be written (checked before long work)."""
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ValueError(f"cannot write to {out}")


def check_format(obj, path, name: str, version: int, what: str) -> None:
    """ValueError unless `obj` (a file's parsed contents) is a dict of format `name` at a
    version this sgan_fast reads; `what` says which command writes such files."""
    if not isinstance(obj, dict) or obj.get("format") != name:
        raise ValueError(f"{path} is not a {name} file (written by {what})")
    if obj.get("version", 0) > version:
        raise ValueError(f"{path}: format version {obj['version']} is newer than this sgan_fast "
                         f"reads ({version})")
