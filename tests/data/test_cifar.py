"""CIFAR-10 / CIFAR-100 from python batches the test writes in the published layout: pixels,
labels, class names, both splits, the command-line spelling, and every bad file named."""

import os
import pickle

import numpy as np
import pytest

from sgan_fast.data import cifar10, cifar100
from sgan_fast.data.spec import DataSpec, open_data


def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _dump(path, d):
    # as the published files: bytes keys, numpy data, pickled by Python 2 (protocol 2)
    with open(path, "wb") as f:
        pickle.dump({k.encode(): v for k, v in d.items()}, f, protocol=2)


def _rows(images):
    """[N, 32, 32, 3] -> the file's [N, 3072]: all red values row-major, then green, blue."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)


@pytest.fixture
def c10(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    imgs, labels = {}, {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        imgs[name] = _pixels(4, i)
        labels[name] = [(i + j) % 10 for j in range(4)]
        _dump(root / name, dict(data=_rows(imgs[name]), labels=labels[name],
                                batch_label=name.encode()))
    _dump(root / "batches.meta", dict(label_names=[f"c{k}".encode() for k in range(10)]))
    return root, imgs, labels


def test_cifar10_reads_every_training_batch_then_the_test_batch(c10):
    root, imgs, labels = c10
    train, test = cifar10(str(root)), cifar10(str(root), "test")
    order = [f"data_batch_{k}" for k in range(1, 6)]
    np.testing.assert_array_equal(train.images, np.concatenate([imgs[n] for n in order]))
    assert train.labels.tolist() == sum((labels[n] for n in order), [])
    np.testing.assert_array_equal(test.images, imgs["test_batch"])
    assert train.images.shape == (20, 32, 32, 3) and train.num_classes == 10
    assert list(train.class_names) == [f"c{k}" for k in range(10)]
    train2, test2, _ = open_data(DataSpec(data="cifar10", root=str(root)))
    np.testing.assert_array_equal(train2.images, train.images)
    assert len(test2) == 4


def test_cifar100_fine_and_coarse_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    x = _pixels(6, 9)
    fine, coarse = [0, 99, 5, 42, 7, 1], [0, 19, 1, 8, 1, 0]
    for name in ("train", "test"):
        _dump(root / name, dict(data=_rows(x), fine_labels=fine, coarse_labels=coarse))
    _dump(root / "meta", dict(fine_label_names=[f"f{k}".encode() for k in range(100)],
                              coarse_label_names=[f"s{k}".encode() for k in range(20)]))
    ds = cifar100(str(root))
    np.testing.assert_array_equal(ds.images, x)
    assert ds.labels.tolist() == fine and ds.num_classes == 100 and ds.class_names[99] == "f99"
    cs = cifar100(str(root), "test", coarse=True)
    assert cs.labels.tolist() == coarse and cs.num_classes == 20 and cs.class_names[19] == "s19"
    train, test, _ = open_data(DataSpec(data="cifar100-coarse", root=str(root)))
    assert train.num_classes == 20 and len(test) == 6


def test_missing_truncated_and_foreign_batches_are_named(c10, tmp_path):
    root, _, _ = c10
    os.remove(root / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3 not found.*cifar.html"):
        cifar10(str(root))
    data = (root / "test_batch").read_bytes()
    (root / "data_batch_3").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="data_batch_3 is not a readable CIFAR batch"):
        cifar10(str(root))

    class Evil:   # a pickle that would run os.system when loaded
        def __reduce__(self):
            return os.system, ("echo pwned",)
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(ValueError, match=r"refusing to load (posix|os)\.system"):
        cifar10(str(root))
    _dump(root / "data_batch_3", dict(data=np.zeros((4, 100), np.uint8), labels=[0] * 4))
    with pytest.raises(ValueError, match=r"'data' must be uint8 \[N, 3072\]"):
        cifar10(str(root))
    _dump(root / "data_batch_3", dict(data=_rows(_pixels(4, 0)), labels=[0, 1, 2, 10]))
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\)"):
        cifar10(str(root))
    with pytest.raises(ValueError, match="needs --root"):
        open_data(DataSpec(data="cifar100"))
