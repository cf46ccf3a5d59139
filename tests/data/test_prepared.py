"""sgan-fast prepare: a dataset decoded once into a memory-mapped folder, opened with the
source's fingerprint; an interrupted prepare resumes; other data in the folder is refused."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from sgan_fast.cli import main
from sgan_fast.data import ImageFolder
from sgan_fast.data import prepared as prep
from sgan_fast.data.spec import DataSpec, open_data
from sgan_fast.labels import SoftLabelBank


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    g = np.random.default_rng(0)
    for c, n in (("cat", 5), ("dog", 3), ("emu", 2)):
        os.makedirs(root / c)
        for i in range(n):
            size = (12 + i, 10)                        # sizes differ: resolution resizes
            Image.fromarray(g.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_prepared_folder_holds_the_decoded_images_and_the_folders_fingerprint(folder, tmp_path):
    src = ImageFolder(folder, resolution=8)
    out = str(tmp_path / "prep")
    entry = prep.prepare(src, out, chunk=3, progress=False)
    assert entry["complete"] and entry["shape"] == [10, 8, 8, 3]
    ds = prep.open_prepared(out)
    np.testing.assert_array_equal(np.asarray(ds.images), src.to_arrays(progress=False).images)
    assert ds.labels.tolist() == src.labels.tolist() and ds.class_names == src.class_names
    assert ds.fingerprint() == src.fingerprint()
    # a bank made on the folder matches the prepared folder
    P = torch.softmax(torch.randn(10, 3), 1)
    bank = SoftLabelBank(P, torch.from_numpy(src.labels), fingerprint=src.fingerprint())
    bank.check_dataset(ds.fingerprint())
    assert isinstance(ds.images, np.ndarray) and not ds.images.flags.owndata   # mapped, not copied


def test_an_interrupted_prepare_resumes_and_other_data_is_refused(folder, tmp_path, monkeypatch):
    src = ImageFolder(folder, resolution=8)
    out = str(tmp_path / "prep")
    real = prep._decode_range
    calls = []

    def dying(args):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(args)
    monkeypatch.setattr(prep, "_decode_range", dying)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(src, out, chunk=4, progress=False)
    with pytest.raises(prep.PreparedError, match=r"stopped at 4/10 images; run the same"):
        prep.open_prepared(out)
    calls.clear()
    monkeypatch.setattr(prep, "_decode_range", lambda a: calls.append(a[3]) or real(a))
    prep.prepare(src, out, chunk=4, progress=False)
    assert calls == [4, 8]                              # the first chunk was not redone
    np.testing.assert_array_equal(np.asarray(prep.open_prepared(out).images),
                                  src.to_arrays(progress=False).images)
    other = ImageFolder(folder, resolution=6)
    with pytest.raises(prep.PreparedError, match="holds another train split"):
        prep.prepare(other, out, progress=False)


def test_prepare_command_with_workers_and_the_test_split(folder, tmp_path, capsys):
    out = str(tmp_path / "prep")
    argv = ["prepare", "--data", str(folder), "--test-data", str(folder), "--resolution", "8",
            "--out", out, "--workers", "2", "--chunk", "4", "--quiet"]
    assert main(argv) == 0
    assert "train: 10 images 8x8x3, 3 classes" in capsys.readouterr().out
    train, test, _ = open_data(DataSpec(data=out))
    src = ImageFolder(folder, resolution=8).to_arrays(progress=False)
    np.testing.assert_array_equal(np.asarray(train.images), src.images)
    assert test is not None and len(test) == 10
    assert main(argv) == 0                               # complete: nothing to redo
    assert main(["prepare", "--data", str(folder), "--out", out]) == 2
    assert "--resolution is needed" in capsys.readouterr().err
