"""The batch contract is the same for every loader: on a PNG image folder the DataLoader
loader and the GPU-resident loader give pixel-identical batches."""

import itertools

import numpy as np
import pytest
import torch

from sgan_fast.data import BatchSampler, GPUResidentLoader, ImageFolder, TorchLoader

from .test_image_folder import _folder

pytest.importorskip("PIL.Image", reason="Pillow decodes image folders (quickstart installs it)")


def _take(loader, n):
    return [(s, tuple(t.clone() for t in b)) for s, b in itertools.islice(iter(loader), n)]


@pytest.mark.parametrize("output", ["uint8", "float"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_torch_loader_equals_gpu_resident_on_png(tmp_path, output, num_workers):
    root, _ = _folder(tmp_path, per_class=(9, 4, 7), size=(8, 8))
    folder = ImageFolder(root)
    arrays = folder.to_arrays(progress=False)
    a = TorchLoader(folder, BatchSampler(folder.labels, 6, mode="sqrt", seed=2), output=output,
                    flip=False, num_workers=num_workers)
    b = GPUResidentLoader(arrays, BatchSampler(arrays.labels, 6, mode="sqrt", seed=2),
                          device="cpu", output=output, flip=False)
    for (sa, xa), (sb, xb) in zip(_take(a, 8), _take(b, 8)):
        assert sa == sb
        assert xa[0].dtype == xb[0].dtype and xa[0].shape == (6, 3, 8, 8)
        assert all(torch.equal(p, q) for p, q in zip(xa, xb))


def test_torch_loader_flips_and_resume(tmp_path):
    root, _ = _folder(tmp_path, per_class=(5, 5), size=(4, 4))
    ds = ImageFolder(root)

    def make():
        return TorchLoader(ds, BatchSampler(ds.labels, 4, seed=1), output="uint8", flip=True,
                           flip_seed=3)
    run = _take(make(), 9)
    mirrored = 0
    for _, (x, _, idx) in run:
        for b in range(4):
            ref = ds[int(idx[b])][0]
            assert torch.equal(x[b], ref) or torch.equal(x[b], ref.flip(-1))
            mirrored += int(not torch.equal(x[b], ref))
    assert 0 < mirrored < 36
    first = make()
    _take(first, 4)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    for (s, got), (s_ref, ref) in zip(_take(resumed, 5), run[4:]):
        assert s == s_ref and all(torch.equal(p, q) for p, q in zip(got, ref))


def test_worker_errors_reach_the_caller(tmp_path):
    root, _ = _folder(tmp_path, per_class=(4, 4))
    (root / "class_1" / "zz.png").write_bytes(b"\x89PNG broken")
    ds = ImageFolder(root)
    loader = TorchLoader(ds, BatchSampler(ds.labels, 9, seed=0), num_workers=1)
    with pytest.raises(ValueError, match="cannot decode .*class_1/zz.png"):
        _take(loader, 1)


def test_torch_loader_bad_arguments(tmp_path):
    root, _ = _folder(tmp_path)
    ds = ImageFolder(root)
    with pytest.raises(ValueError, match="draws from 3 images but the dataset has 9"):
        TorchLoader(ds, BatchSampler(np.zeros(3, np.int64), 2))
    with pytest.raises(ValueError, match="output must be"):
        TorchLoader(ds, BatchSampler(ds.labels, 2), output="half")


def test_make_loader_picks_by_dataset_and_device(tmp_path):
    from sgan_fast.data import DALILoader, make_loader

    root, _ = _folder(tmp_path)
    folder = ImageFolder(root)
    arrays = folder.to_arrays(progress=False)
    assert isinstance(make_loader(arrays, BatchSampler(arrays.labels, 2), device="cpu"), GPUResidentLoader)
    assert isinstance(make_loader(folder, BatchSampler(folder.labels, 2), device="cpu"), TorchLoader)
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return
    loader = make_loader(folder, BatchSampler(folder.labels, 2), device="cpu", kind="dali",
                         resolution=8)
    assert isinstance(loader, DALILoader)
    with pytest.raises(ValueError, match="unknown loader kind"):
        make_loader(folder, BatchSampler(folder.labels, 2), kind="fast")
