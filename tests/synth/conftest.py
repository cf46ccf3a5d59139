"""One tiny checkpoint (3 classes, 1-channel 32x32, trained on 24/16/8 images for one step)
and tiny classifiers, made once per test session and shared by every synth test."""

import os

import numpy as np
import pytest

from ..train._runs import tiny_dataset
from ._fixtures import REAL, TINY, cli


def _save(ds, path):
    np.savez(path, images=ds.images, labels=ds.labels)
    return str(path)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Dataset files: the GAN's training set, a test split, and a training set of other counts."""
    d = tmp_path_factory.mktemp("synth_data")
    train = tiny_dataset()
    assert np.bincount(train.labels).tolist() == list(REAL)
    return dict(train=_save(train, d / "train.npz"),
                test=_save(tiny_dataset(n=30, seed=7), d / "test.npz"),
                other=_save(tiny_dataset(n=42, seed=1), d / "other.npz"),
                two=_save(tiny_dataset(C=2, seed=2), d / "two.npz"))


@pytest.fixture(scope="session")
def checkpoint(files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth_ckpt") / "gan")
    assert cli(["train", "--data", files["train"], "--target", "onehot", "--out", out, *TINY,
                "--steps", "1"]) == 0
    return out


def _classify(data, out):
    assert cli(["classify", "--data", data, "--arch", "resnet8", "--epochs", "1", "--folds", "2",
                "--batch-size", "8", "--device", "cpu", "--quiet", "--out", out]) == 0
    return dict(bank=os.path.join(out, "bank.npz"), classifier=os.path.join(out, "classifier.pt"))


@pytest.fixture(scope="session")
def classifier(files, tmp_path_factory):
    """bank.npz and classifier.pt of the checkpoint's training set (3 classes)."""
    return _classify(files["train"], str(tmp_path_factory.mktemp("synth_cls3") / "cls"))


@pytest.fixture(scope="session")
def classifier2(files, tmp_path_factory):
    """bank.npz and classifier.pt of a 2-class dataset."""
    return _classify(files["two"], str(tmp_path_factory.mktemp("synth_cls2") / "cls"))


@pytest.fixture(scope="session")
def generator(checkpoint):
    from sgan_fast.train.sampling import load_generator
    G, meta = load_generator(checkpoint, device="cpu")
    return G, meta
