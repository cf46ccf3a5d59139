"""The DALI loader in CPU mode (device_id=None): the same batches as the Pillow loader, exact
on PNG and within decoder tolerance on JPEG; resume; bad files named; install hint."""

import itertools
import sys

import numpy as np
import pytest
import torch

from sgan_fast.data import BatchSampler, DALILoader, ImageFolder, TorchLoader

from .test_image_folder import _folder

pytest.importorskip("nvidia.dali", reason='needs NVIDIA DALI (pip install "sgan-fast[dali]"; .ci/run installs it)')
Image = pytest.importorskip("PIL.Image", reason="Pillow decodes image folders (quickstart installs it)")


def _take(loader, n):
    return [(s, tuple(t.clone() for t in b)) for s, b in itertools.islice(iter(loader), n)]


def _pair(ds, res, **kw):
    dali = DALILoader(ds, BatchSampler(ds.labels, 4, mode="sqrt", seed=1), resolution=res,
                      device="cpu", num_threads=1, **kw)
    pil = TorchLoader(ds, BatchSampler(ds.labels, 4, mode="sqrt", seed=1), **kw)
    return dali, pil


@pytest.mark.parametrize("output", ["uint8", "float"])
def test_png_batches_equal_the_pillow_loader(tmp_path, output):
    root, _ = _folder(tmp_path, per_class=(5, 3, 6), size=(8, 8))
    dali, pil = _pair(ImageFolder(root), 8, output=output, flip=True, flip_seed=4)
    for (sa, a), (sb, b) in zip(_take(dali, 7), _take(pil, 7)):
        assert sa == sb and a[0].dtype == b[0].dtype and a[0].shape == (4, 3, 8, 8)
        assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_jpeg_within_decoder_tolerance(tmp_path):
    g = np.random.default_rng(3)
    for c in range(2):
        d = tmp_path / f"c{c}"
        d.mkdir()
        for i in range(4):
            smooth = np.kron(g.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
            Image.fromarray(smooth).save(d / f"{i}.jpg", quality=90)
    dali, pil = _pair(ImageFolder(tmp_path), 16, output="uint8", flip=False)
    for (_, a), (_, b) in zip(_take(dali, 4), _take(pil, 4)):
        diff = (a[0].int() - b[0].int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 8, (diff.float().mean(), diff.max())
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_resize_and_crop_to_the_resolution(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    Image.new("RGB", (40, 20), (10, 200, 30)).save(d / "wide.png")
    Image.new("RGB", (9, 30), (250, 0, 0)).save(d / "tall.png")
    ds = ImageFolder(tmp_path, resolution=16)
    dali, pil = _pair(ds, 16, output="uint8", flip=False)
    (_, a), = _take(dali, 1)
    (_, b), = _take(pil, 1)
    assert a[0].shape == (4, 3, 16, 16) and torch.equal(a[0], b[0])  # flat colours: exact


def test_resume_and_bad_file(tmp_path):
    root, _ = _folder(tmp_path, per_class=(6, 6), size=(8, 8))
    ds = ImageFolder(root)

    def make():
        return DALILoader(ds, BatchSampler(ds.labels, 4, seed=2), resolution=8, device="cpu",
                          num_threads=1)
    run = _take(make(), 8)
    first = make()
    _take(first, 3)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    for (s, got), (s_ref, ref) in zip(_take(resumed, 5), run[3:]):
        assert s == s_ref and all(torch.equal(p, q) for p, q in zip(got, ref))
    (root / "class_1" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = ImageFolder(root)
    loader = DALILoader(ds, BatchSampler(ds.labels, 13, seed=0), resolution=8, device="cpu",
                        num_threads=1)
    with pytest.raises(ValueError, match="DALI could not decode a file of step 0: cannot decode .*zz.png"):
        _take(loader, 1)


def test_without_dali_says_how_to_install(tmp_path, monkeypatch):
    root, _ = _folder(tmp_path)
    ds = ImageFolder(root)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    monkeypatch.setitem(sys.modules, "nvidia.dali.fn", None)
    with pytest.raises(ImportError, match=r'pip install "sgan-fast\[dali\]"'):
        DALILoader(ds, BatchSampler(ds.labels, 2), resolution=8, device="cpu")
