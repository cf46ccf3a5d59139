"""SoftLabelBank: validation, conversions, files, fingerprints, the reference format, memory."""

import os

import numpy as np
import pytest
import torch

from sgan_fast.labels import BankError, DatasetFingerprint, SoftLabelBank
from sgan_fast.labels.targets import truncate_topk_ref

from ._banks import random_bank


def _probs(N=6, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(N, C, generator=g), 1), torch.randint(0, C, (N,), generator=g)


@pytest.mark.parametrize("row", [0, 4])
@pytest.mark.parametrize("bad,match", [
    (float("nan"), "row {row} contains NaN or Inf"), (float("inf"), "row {row} contains NaN or Inf"),
    (-0.2, "row {row} has a negative probability"), (0.9, "row {row} sums to")])
def test_validation_names_the_first_bad_row(row, bad, match):
    P, y = _probs()
    P[row, 1] = bad
    P[5, 1] = bad  # a later bad row must not be the one named
    with pytest.raises(BankError, match=match.format(row=row)):
        SoftLabelBank(P, y)


def test_topk_validation_names_the_row():
    P, y = _probs()
    v, i = P.topk(2, 1)
    v = v / v.sum(1, keepdim=True)
    i[3, 1] = 4
    with pytest.raises(BankError, match=r"row 3 has a class outside \[0, C=4\)"):
        SoftLabelBank.from_topk(i, v, y, 4)
    i[3, 1] = 0
    v[2, 0] = float("nan")
    with pytest.raises(BankError, match="top-k values: row 2 contains NaN"):
        SoftLabelBank.from_topk(i, v, y, 4)


def test_renormalise_only_when_asked():
    P, y = _probs()
    scaled = P * torch.linspace(0.5, 2, 6)[:, None]
    with pytest.raises(BankError, match="renormalize=True"):
        SoftLabelBank(scaled, y)
    bank = SoftLabelBank(scaled, y, renormalize=True)
    assert torch.allclose(bank.table, P, atol=1e-6)
    zero = scaled.clone()
    zero[2] = 0
    with pytest.raises(BankError, match="row 2 sums to 0"):
        SoftLabelBank(zero, y, renormalize=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(labels=torch.tensor([0, 1, 2, 3, 4, 0])), r"image 4 has class 4, outside \[0, C=4\)"),
    (dict(labels=torch.tensor([0, 1, 2])), "6 probability rows but 3 labels"),
    (dict(labels=torch.zeros(6, dtype=torch.long), num_classes=5), "C=4 columns but num_classes=5"),
    (dict(labels=torch.zeros(6)), "labels must be integers"),
])
def test_shape_and_label_errors(kwargs, match):
    P, _ = _probs()
    with pytest.raises(BankError, match=match):
        SoftLabelBank(P, **kwargs)


def test_dense_topk_conversions():
    bank = random_bank(40, 9, seed=1)
    for k in (1, 3, 9):
        tk = bank.to_topk(k)
        assert tk.form == "topk" and tk.k == k and tk.idx.dtype == torch.int32
        expect = truncate_topk_ref(bank.dense_probabilities(), k)
        assert torch.allclose(tk.dense_probabilities(), expect, atol=1e-6)
        back = tk.to_dense()
        assert back.form == "dense" and torch.allclose(back.table.double(), expect, atol=1e-6)
    # a top-k bank to a smaller k equals the dense bank's top-k of that size
    assert torch.allclose(bank.to_topk(5).to_topk(2).dense_probabilities(),
                          bank.to_topk(2).dense_probabilities(), atol=1e-6)


@pytest.mark.parametrize("form", ["dense", "topk"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_file_round_trip(tmp_path, form, dtype):
    bank = random_bank(25, 7, form=form, K=3, dtype=dtype, seed=2)
    bank.settings = {"classifier": "resnet18", "folds": 5}
    path = tmp_path / "bank.npz"
    path.write_bytes(b"an older file that must be replaced whole")
    bank.save(path)
    assert os.listdir(tmp_path) == ["bank.npz"]  # no temporary file left behind
    back = SoftLabelBank.load(path, expect=bank.fingerprint)
    assert back.form == form and back.dtype == dtype and back.kind == "probs"
    assert back.fingerprint == bank.fingerprint and back.settings == bank.settings
    assert torch.equal(back.labels_tensor, bank.labels_tensor)
    if form == "dense":
        assert torch.equal(back.table, bank.table)
    else:
        assert torch.equal(back.idx, bank.idx) and torch.equal(back.val, bank.val)


def test_fingerprint_mismatch_says_what_differs(tmp_path):
    bank = random_bank(30, 5, seed=4)
    path = tmp_path / "bank.npz"
    bank.save(path)
    y = bank.labels_tensor
    subset = DatasetFingerprint.of(y[:-1], 5)
    c = int(y[-1])
    with pytest.raises(BankError, match=rf"N=30 images, the dataset 29.*class {c}: "
                       rf"{int((y == c).sum())} vs {int((y == c).sum()) - 1}"):
        SoftLabelBank.load(path, expect=subset)
    shuffled = DatasetFingerprint.of(y.flip(0), 5)
    with pytest.raises(BankError, match=r"labels \(values or order\) differs"):
        SoftLabelBank.load(path, expect=shuffled)
    with pytest.raises(BankError, match="C=5 classes, the dataset 6"):
        bank.check_dataset(DatasetFingerprint.of(y, 6))
    bank.check_dataset(DatasetFingerprint.of(y.clone(), 5))  # the same dataset passes


def test_not_a_bank_file(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, arr_0=np.zeros((2, 2)))
    with pytest.raises(BankError, match="from_reference_npz"):
        SoftLabelBank.load(path)


def _reference_file(tmp_path, probs, paths):
    path = tmp_path / "ref_softmax.npz"
    np.savez(path, probs, np.array(paths))  # as the reference writes it: arr_0, arr_1
    return path


def test_reference_npz_is_matched_by_relative_path(tmp_path):
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(8, 3, generator=g), 1).numpy()
    names = [f"class{c}/img{i}.png" for i, c in enumerate([0, 1, 2, 0, 1, 2, 0, 1])]
    # the file lists rows in another order, with absolute paths and one extra image
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    file_paths = [f"/data/train/{names[i]}" for i in order] + ["/data/train/class2/extra.png"]
    file_probs = np.concatenate([probs[order], probs[:1]])
    path = _reference_file(tmp_path, file_probs, file_paths)
    dataset_paths = [f"/home/me/ds/{n}" for n in names]
    labels = [0, 1, 2, 0, 1, 2, 0, 1]
    bank = SoftLabelBank.from_reference_npz(path, labels, dataset_paths)
    assert np.allclose(bank.table.numpy(), probs)
    assert bank.fingerprint == DatasetFingerprint.of(labels, 3, names)
    assert bank.fingerprint.hash_of == "paths"
    with pytest.raises(BankError, match=r"1 of the dataset's 9 files have no row, the first being "
                                        r"'class1/missing.jpg'"):
        SoftLabelBank.from_reference_npz(path, labels + [1], dataset_paths + ["x/class1/missing.jpg"])


def test_reference_npz_row_aligned_for_arrays(tmp_path):
    P, y = _probs(N=5, C=3)
    path = _reference_file(tmp_path, P.numpy(), [f"c/{i}" for i in range(5)])
    bank = SoftLabelBank.from_reference_npz(path, y)
    assert torch.equal(bank.table, P) and bank.fingerprint.hash_of == "labels"
    with pytest.raises(BankError, match="5 rows but the dataset has 4 images"):
        SoftLabelBank.from_reference_npz(path, y[:4])


def test_inaturalist_scale_topk_bank_fits_in_60_mb():
    # N = 437,513 images, C = 8,142 classes, K = 16, built without the dense [N, C] table
    N, C, K = 437_513, 8_142, 16
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, C, (N,), generator=g)
    idx = torch.randint(0, C, (N, K), generator=g, dtype=torch.int32)
    idx[:, 0] = labels.int()
    val = torch.rand(N, K, generator=g)
    val /= val.sum(1, keepdim=True)
    bank = SoftLabelBank.from_topk(idx, val, labels, C)
    assert bank.nbytes() < 60e6, bank.nbytes()
    sel = torch.tensor([0, 1, N - 1])
    for target in ("softmax", "mix:0.5"):
        got = bank.lookup(sel, target, out="sparse", impl="cpu")
        exp = bank.lookup(sel, target, out="sparse", impl="ref")
        assert torch.equal(got[0], exp[0]) and torch.allclose(got[1], exp[1])
    assert bank.plan("softmax").nbytes() == bank.nbytes()  # softmax reads the bank itself
