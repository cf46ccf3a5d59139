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


def _write_cifar10(root, labels, seed=0, n_test=4):
    """A cifar-10-batches-py folder: `labels` split over the five training batches in order."""
    os.makedirs(root, exist_ok=True)
    images = _pixels(len(labels), seed)
    for k, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        _dump(os.path.join(root, f"data_batch_{k + 1}"),
              dict(data=_rows(images[part]), labels=[int(v) for v in np.asarray(labels)[part]]))
    _dump(os.path.join(root, "test_batch"),
          dict(data=_rows(_pixels(n_test, seed + 1)), labels=list(range(n_test))))
    _dump(os.path.join(root, "batches.meta"), dict(label_names=[f"c{k}".encode() for k in range(10)]))
    return images


def _write_cifar100(root, n=6):
    os.makedirs(root, exist_ok=True)
    for name in ("train", "test"):
        _dump(os.path.join(root, name), dict(data=_rows(_pixels(n, 3)), fine_labels=list(range(n)),
                                             coarse_labels=[k % 20 for k in range(n)]))
    _dump(os.path.join(root, "meta"), dict(fine_label_names=[f"f{k}".encode() for k in range(100)],
                                           coarse_label_names=[f"s{k}".encode() for k in range(20)]))


def _parse(argv):
    import argparse
    from sgan_fast.data.spec import add_data_args, data_spec
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    return data_spec(parser.parse_args(argv))


def test_reference_profile_end_to_end_on_a_cifar10_folder(tmp_path):
    # --data cifar10 --imbalance reference --num-samples 5000 (the reference's "0.1" run):
    # class c gets 3 images more than the profile keeps, shuffled over the five batches (3,238
    # images instead of 50,000, so that the test is fast and every class is just big enough)
    counts = [267, 99, 441, 191, 85, 1720, 65, 147, 119, 74]   # scipy.stats, test_imbalance.py
    y = np.random.default_rng(5).permutation(np.repeat(np.arange(10), np.array(counts) + 3))
    images = _write_cifar10(tmp_path / "cifar-10-batches-py", y)
    root = str(tmp_path / "cifar-10-batches-py")
    train, test, sub = open_data(_parse(["--data", "cifar10", "--root", root, "--imbalance",
                                         "reference", "--num-samples", "5000"]))
    assert sub.counts == tuple(counts) and len(train) == 3208 and len(test) == 4
    kept = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate(counts)]))
    assert np.array_equal(sub.indices, kept)               # each class's first n across the batches
    np.testing.assert_array_equal(train.images, images[kept])
    assert train.labels.tolist() == y[kept].tolist()
    # the budget reaches the profile: the "0.2" run's 10000 doubles every count (535 for class 0)
    with pytest.raises(ValueError, match=r"class 0 has 270 images but the reference profile asks "
                       r"for 535 \(10 class\(es\) short\)"):
        open_data(_parse(["--data", "cifar10", "--root", root, "--imbalance", "reference",
                          "--num-samples", "10000"]))


class _FakeCIFAR:
    """Stands in for torchvision.datasets.CIFAR10 / CIFAR100: writes small batches where
    torchvision would unpack the archive (no network), and records its calls."""
    calls = []
    fail = None

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((self.folder, root, train, download))
        if type(self).fail is not None:
            raise type(self).fail
        assert download
        with open(os.path.join(root, self.archive), "wb") as f:
            f.write(b"archive")
        self.write(os.path.join(root, self.folder))


class _FakeCIFAR10(_FakeCIFAR):
    folder, archive = "cifar-10-batches-py", "cifar-10-python.tar.gz"

    @staticmethod
    def write(folder):
        _write_cifar10(folder, np.arange(20) % 10)


class _FakeCIFAR100(_FakeCIFAR):
    folder, archive = "cifar-100-python", "cifar-100-python.tar.gz"
    write = staticmethod(_write_cifar100)


@pytest.fixture
def fake_torchvision(monkeypatch):
    import sys
    import types
    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(CIFAR10=_FakeCIFAR10, CIFAR100=_FakeCIFAR100)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setattr(_FakeCIFAR, "calls", [])
    monkeypatch.setattr(_FakeCIFAR, "fail", None)
    return _FakeCIFAR


def test_download_fetches_into_root_then_the_reader_opens_it(tmp_path, fake_torchvision):
    root = tmp_path / "data" / "c10"          # any name: --root is the folder of the batch files
    train, test, _ = open_data(_parse(["--data", "cifar10", "--root", str(root), "--download"]))
    assert len(train) == 20 and len(test) == 4 and train.class_names[9] == "c9"
    assert len(fake_torchvision.calls) == 1 and fake_torchvision.calls[0][2:] == (True, True)
    assert sorted(os.listdir(root)) == sorted(["batches.meta", "test_batch"] +
                                              [f"data_batch_{k}" for k in range(1, 6)])
    # the files are there now: no second download
    open_data(DataSpec(data="cifar10", root=str(root), download=True))
    assert len(fake_torchvision.calls) == 1
    # CIFAR-100, coarse labels, into a folder that does not exist yet
    root100 = tmp_path / "cifar-100-python"
    train, test, _ = open_data(DataSpec(data="cifar100-coarse", root=str(root100), download=True))
    assert train.num_classes == 20 and len(test) == 6 and fake_torchvision.calls[-1][0] == "cifar-100-python"
    assert sorted(os.listdir(root100)) == ["meta", "test", "train"]


def test_download_is_not_attempted_when_the_files_are_there(c10, fake_torchvision):
    root, _, _ = c10
    fake_torchvision.fail = AssertionError("no download expected")
    train, _, _ = open_data(DataSpec(data="cifar10", root=str(root), download=True))
    assert len(train) == 20 and fake_torchvision.calls == []


def test_download_through_sgan_fast_prepare(tmp_path, fake_torchvision):
    from sgan_fast.cli import main
    out = str(tmp_path / "prepared")
    assert main(["prepare", "--data", "cifar10", "--root", str(tmp_path / "c10"), "--download",
                 "--resolution", "32", "--out", out, "--quiet"]) == 0
    train, test, _ = open_data(DataSpec(data=out))
    assert len(train) == 20 and len(test) == 4 and len(fake_torchvision.calls) == 1


def test_download_errors_name_the_manual_route(tmp_path, monkeypatch, fake_torchvision):
    import sys
    from urllib.error import URLError
    fake_torchvision.fail = URLError(OSError(-3, "Temporary failure in name resolution"))
    root = tmp_path / "c100"
    with pytest.raises(FileNotFoundError, match=r"downloading cifar-100-python.tar.gz with "
                       r"torchvision.datasets.CIFAR100 failed \(URLError: .*name resolution.*"
                       r"cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/"):
        open_data(DataSpec(data="cifar100", root=str(root), download=True))
    assert os.listdir(root) == []                    # the temporary folder is gone
    monkeypatch.setitem(sys.modules, "torchvision", None)     # torchvision not installed
    with pytest.raises(ImportError, match=r"needs torchvision: pip install torchvision, or download "
                       r"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/ by hand"):
        open_data(DataSpec(data="cifar10", root=str(tmp_path / "c10"), download=True))
    with pytest.raises(ValueError, match="--download fetches cifar10, cifar100, cifar100-coarse "
                       "only, not --data mnist"):
        open_data(DataSpec(data="mnist", root=str(tmp_path), download=True))
    with pytest.raises(ValueError, match="--download needs --root"):
        open_data(DataSpec(data="cifar10", download=True))
