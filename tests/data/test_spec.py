"""Opening datasets by name, as every command does: built-ins, folders, .npz, imbalance."""

import numpy as np
import pytest

from sgan_fast.data import ArrayDataset, ImbalancedSubset, make_imbalanced
from sgan_fast.data.spec import DataSpec, open_data


def _npz(tmp_path, N=60, C=3):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (N, 6, 6, 3), dtype=np.uint8), labels=np.arange(N) % C)
    return str(path)


def test_npz_with_imbalance_and_test_split(tmp_path):
    path = _npz(tmp_path)
    train, test, subset = open_data(DataSpec(path, imbalance="exp", rho=4, imbalance_seed=None))
    assert subset.counts == (20, 10, 5) and len(train) == 35 and test is None
    assert train.fingerprint().hash_of == "keys"
    train2, test2, _ = open_data(DataSpec(path, test_data=path))
    assert len(train2) == 60 and isinstance(test2, ArrayDataset) and len(test2) == 60


def test_a_saved_subset_manifest_reopens_the_same_training_set(tmp_path):
    path = _npz(tmp_path)
    full = ArrayDataset.from_npz(path)
    make_imbalanced(full.labels, "step", rho=5, n_max=20, seed=1).save(tmp_path / "s.npz")
    a, _, sub = open_data(DataSpec(path, subset=str(tmp_path / "s.npz")))
    b = full.subset(ImbalancedSubset.load(tmp_path / "s.npz").indices)
    assert a.fingerprint() == b.fingerprint() and isinstance(sub, ImbalancedSubset)
    with pytest.raises(ValueError, match="either an imbalance profile or a subset"):
        open_data(DataSpec(path, imbalance="exp", subset=str(tmp_path / "s.npz")))


def test_image_folder_imbalance_decodes_and_keeps_the_file_names(tmp_path):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    train, test, subset = open_data(DataSpec(str(tmp_path / "f"), imbalance="exp", rho=3,
                                             imbalance_seed=None, progress=False))
    assert subset.counts == (6, 2) and train.paths == [f"a/{i}.png" for i in range(6)] + ["b/0.png", "b/1.png"]
    assert train.fingerprint().hash_of == "paths"


def test_unknown_data_is_named(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in dataset"):
        open_data(DataSpec("cifar-11"))
    with pytest.raises(FileNotFoundError, match="not found"):
        open_data(DataSpec(str(tmp_path / "missing.npz")))
    with pytest.raises(ValueError, match="needs --root"):
        open_data(DataSpec("mnist"))
