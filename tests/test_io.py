"""Atomic file writes: the old file survives a failed write; the new one gets normal permissions."""

import os
import stat

import numpy as np
import pytest

from sgan_fast._io import atomic_savez, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    class Boom(Exception):
        pass

    def write(f):
        f.write("half")
        raise Boom
    from sgan_fast._io import atomic_write
    with pytest.raises(Boom):
        atomic_write(path, write, binary=False)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_savez(tmp_path / "b.npz", x=np.arange(3))
        atomic_write_text(tmp_path / "c.md", "x")
    finally:
        os.umask(old)
    for name in ("b.npz", "c.md"):   # 0644 as open() would make them, not mkstemp's 0600
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644
