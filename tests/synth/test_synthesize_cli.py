"""`sgan-fast synthesize` on the tiny checkpoint: the balanced export in both formats, read
back by the data loaders, inter-class images from a bank, filtering by a classifier, and bad
input."""

import math
import os
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

from sgan_fast.data import ArrayDataset
from sgan_fast.data.image_folder import ImageFolder
from sgan_fast.synth.export import class_folder, manifest_for, open_export, write_export
from sgan_fast.synth.synthesize import ClassifierScorer, SynthConfig, SynthResult

from ._fixtures import REAL, C, brute_confusion, brute_pairs, counts, manifest, rarest_first, synth

MODES = {
    "majority": (["--count", "majority"], [max(REAL) - n for n in REAL]),
    "count": (["--count", "30"], [max(30 - n, 0) for n in REAL]),
    "count-below": (["--count", "12"], [max(12 - n, 0) for n in REAL]),
    "total": (["--total", "21"], rarest_first(REAL, 21)),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_balanced_export_in_both_formats_reads_back(mode, checkpoint, tmp_path):
    flags, want = MODES[mode]
    assert sum(want) > 0
    npz_out, folder_out = tmp_path / "npz", tmp_path / "folder"
    assert synth(checkpoint, npz_out, *flags, "--format", "npz", "--seed", "3") == 0
    assert synth(checkpoint, folder_out, *flags, "--format", "folder", "--seed", "3") == 0
    # the .npz, as the data loaders read it
    arr = ArrayDataset.from_npz(str(npz_out / "synthetic.npz"))
    assert counts(arr.labels) == want
    assert arr.images.dtype == np.uint8 and arr.images.shape == (sum(want), 32, 32, 1)
    with np.load(npz_out / "synthetic.npz") as z:
        assert z["images"].dtype == np.uint8 and z["labels"].dtype == np.int64
        assert z["class_names"].tolist() == [str(c) for c in range(C)]
    # the folder: one folder per class, named by class number, in class order (a class that
    # got no images keeps an empty one: ImageFolder reads that with on_bad="skip")
    folder = _image_folder(folder_out / "synthetic")
    assert list(folder.class_names) == [class_folder(c, C) for c in range(C)] == ["000", "001", "002"]
    assert counts(folder.labels) == want
    assert folder.images.shape == (sum(want), 32, 32, 1) and folder.images.dtype == np.uint8
    # PNG is lossless: the same seed gives the same images in both formats, in the same order
    assert np.array_equal(folder.images, arr.images) and np.array_equal(folder.labels, arr.labels)
    for out, fmt in ((npz_out, "npz"), (folder_out, "folder")):
        ds, targets, m = open_export(str(out), progress=False)
        assert targets is None and ds.num_classes == C and ds.channels == 1 and ds.resolution == (32, 32)
        assert ds.labels.tolist() == arr.labels.tolist() and np.array_equal(ds.images, arr.images)
        assert m["format_of_images"] == fmt and m["synthetic_images"] == sum(want)
        assert [r["requested"] for r in m["per_class"]] == want == [r["written"] for r in m["per_class"]]
        assert [r["total"] for r in m["per_class"]] == [n + w for n, w in zip(REAL, want)]
        assert list(m["data_fingerprint"]["class_counts"]) == list(REAL)
        assert m["seed"] == 3 and m["channels"] == 1 and m["resolution"] == 32 and m["step"] == 1
        assert not os.path.exists(out / "mixed.npz")
        report = (out / "report.md").read_text()
        for c in range(C):
            assert f"| {c} | {c} | {REAL[c]} | {want[c]} | {want[c]} | {REAL[c] + want[c]} |" in report


def _image_folder(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return ImageFolder(str(path), channels=1, on_bad="skip").to_arrays(progress=False)


def test_folder_export_keeps_class_numbers_when_a_class_gets_no_images(checkpoint, tmp_path):
    """--count majority (the default): the largest class, here class 0, gets no images; its
    folder stays (empty), so ImageFolder's class i is still class i."""
    out = tmp_path / "f"
    assert synth(checkpoint, out, "--format", "folder") == 0
    assert sorted(os.listdir(out / "synthetic")) == ["000", "001", "002"]
    assert os.listdir(out / "synthetic" / "000") == []
    folder = _image_folder(out / "synthetic")
    assert folder.num_classes == C and counts(folder.labels) == [max(REAL) - n for n in REAL]
    with pytest.raises(ValueError, match="has no images"):       # documented: the default refuses
        ImageFolder(str(out / "synthetic"), channels=1)


def test_seed_reproduces_images(checkpoint, tmp_path):
    def images(seed, name):
        assert synth(checkpoint, tmp_path / name, "--count", "20", "--seed", seed) == 0
        return ArrayDataset.from_npz(str(tmp_path / name / "synthetic.npz"))
    a, b, c = images(5, "a"), images(5, "b"), images(6, "c")
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.labels, c.labels) and not np.array_equal(a.images, c.images)


def test_mixed_images_from_the_bank(checkpoint, classifier, tmp_path):
    from sgan_fast.labels.bank import SoftLabelBank
    out = tmp_path / "mix"
    assert synth(checkpoint, out, "--mix", 7, "--mix-bank", classifier["bank"], "--mix-pairs", 2,
                 "--mix-lambda", "0.25,0.75", "--seed", 1) == 0
    with np.load(out / "mixed.npz") as z:
        t, pairs, lam, labels, imgs = z["targets"], z["pairs"], z["lambda"], z["labels"], z["images"]
    assert t.dtype == np.float32 and t.shape == (7, C) and imgs.shape == (7, 32, 32, 1)
    assert imgs.dtype == np.uint8
    assert np.allclose(t.sum(1), 1, atol=1e-6)
    for row, (i, j), l in zip(t, pairs, lam):
        assert set(np.flatnonzero(row).tolist()) == {i, j}
        assert (row[i], row[j]) == pytest.approx((l, 1 - l), abs=1e-6)
        assert 0.25 <= l <= 0.75
    assert np.array_equal(labels, t.argmax(1))
    # the pairs are the two most confused ones of the bank's held-out probabilities
    bank = SoftLabelBank.load(classifier["bank"])
    P = bank.dense_probabilities().double().numpy()
    best = brute_pairs(brute_confusion(P, bank.labels_tensor.numpy(), C), 2)
    got = [tuple(p) for p in pairs.tolist()]
    assert [got.count((i, j)) for i, j, _ in best] == [4, 3] and len(got) == 7
    m = manifest(out)
    assert [(p["i"], p["j"], p["images"]) for p in m["mixed"]["pairs"]] == [(i, j, n) for (i, j, _), n in zip(best, [4, 3])]
    assert [p["similarity"] for p in m["mixed"]["pairs"]] == pytest.approx([s for *_, s in best])
    assert m["mixed"]["pairs_from"] == os.path.abspath(classifier["bank"]) and m["mixed"]["images"] == 7
    ds, targets, _ = open_export(str(out), mixed=True, progress=False)
    assert np.array_equal(targets, t) and np.array_equal(ds.images, imgs)
    # a later export without --mix into the same folder removes the stale inter-class images
    assert synth(checkpoint, out, "--overwrite") == 0
    assert not (out / "mixed.npz").exists() and manifest(out)["mixed"] is None
    with pytest.raises(ValueError, match="no inter-class images"):
        open_export(str(out), mixed=True)


def test_filtering_by_the_classifier(checkpoint, classifier, tmp_path):
    out = tmp_path / "filt"
    thr, tries = 0.3, 3
    assert synth(checkpoint, out, "--classifier", classifier["classifier"], "--min-confidence", thr,
                 "--max-tries", tries, "--allow-shortfall", "--count", 20, "--batch-size", 16) == 0
    m = manifest(out)
    want = [max(20 - n, 0) for n in REAL]
    ds, _, _ = open_export(str(out), progress=False)
    assert counts(ds.labels) == [r["written"] for r in m["per_class"]]
    scorer = ClassifierScorer(classifier["classifier"], num_classes=C, channels=1, crop=True)
    if len(ds):
        p = scorer.probs(torch.from_numpy(ds.images).permute(0, 3, 1, 2)).numpy()
        assert (p[np.arange(len(ds)), ds.labels] >= thr - 1e-5).all()     # every image passed
    for c, r in enumerate(m["per_class"]):
        assert r["requested"] == want[c] and r["written"] <= want[c]
        if want[c] == 0:
            assert r["generated"] == 0 and r["rejection_rate"] is None
            continue
        assert 0 <= r["rejection_rate"] <= 1 and r["generated"] <= math.ceil(tries * want[c])
        # written images are accepted ones: at most (1 - rejection) x generated
        assert r["written"] <= round((1 - r["rejection_rate"]) * r["generated"])
        if r["written"] < want[c]:     # short only after the whole budget
            assert r["generated"] == math.ceil(tries * want[c])
    assert m["filter"] == dict(classifier=os.path.abspath(classifier["classifier"]), min_confidence=thr,
                               max_tries=tries, allow_shortfall=True)
    assert "rejected %" in (out / "report.md").read_text()


def test_a_class_left_short(checkpoint, classifier, tmp_path, capsys):
    args = ["--classifier", classifier["classifier"], "--min-confidence", 1.0, "--max-tries", 1]
    out = tmp_path / "short"
    capsys.readouterr()
    assert synth(checkpoint, out, *args) == 2
    err = capsys.readouterr().err
    # classes are drawn in order and the first one left short stops the run
    assert "could not be filled" in err and "class 1 (1)" in err and "class 2 (2)" not in err
    assert not (out / "manifest.json").exists()
    assert synth(checkpoint, out, *args, "--allow-shortfall") == 0
    assert "short of their count" in capsys.readouterr().err
    m = manifest(out)
    want = [max(REAL) - n for n in REAL]
    assert [r["requested"] for r in m["per_class"]] == want
    assert [r["written"] for r in m["per_class"]] == [0, 0, 0]
    assert [r["generated"] for r in m["per_class"]] == want          # max-tries 1: one try each
    report = (out / "report.md").read_text()
    for c in (1, 2):
        assert f"| {c} | {c} | {REAL[c]} | {want[c]} | 0 | {REAL[c]} | {want[c]} | 100.0 |" in report


def _err(capsys):
    return capsys.readouterr().err


def test_bad_input(checkpoint, classifier, classifier2, tmp_path, capsys):
    out = tmp_path / "o"
    capsys.readouterr()
    cases = [
        (["--classifier", classifier2["classifier"], "--min-confidence", 0.5], r"has 2 classes, the generator 3"),
        (["--mix", 3, "--mix-bank", classifier2["bank"]], r"C=2 classes"),
        (["--count", -1], r"--count must be >= 0"),
        (["--count", "lots"], r"--count must be 'majority' or a number"),
        (["--total", 10, "--count", 5], r"not both"),
        (["--total", -4], r"total must be an integer >= 0"),
        (["--mix", -3], r"mix \(inter-class images\) must be an integer >= 0, got -3"),
        (["--classifier", classifier["classifier"]], r"both --classifier and --min-confidence"),
        (["--min-confidence", 0.5], r"both --classifier and --min-confidence"),
        (["--mix", 4], r"--mix needs --mix-bank"),
        (["--mix-bank", classifier["bank"]], r"apply to inter-class images"),
        (["--mix-pairs", 2], r"apply to inter-class images"),
        (["--max-tries", 3], r"apply to filtering"),
        (["--truncation", "inf"], r"finite"),
        (["--seed", -1], r"seed must be an integer >= 0"),
        (["--mix", 4, "--mix-bank", classifier["bank"], "--mix-lambda", "0.9,0.1"], r"mix_lambda"),
        (["--mix", 4, "--mix-bank", classifier["bank"], "--mix-pairs", 4], r"only 3 pairs"),
        (["--min-confidence", 1.5, "--classifier", classifier["classifier"]], r"min_confidence must lie in"),
    ]
    for extra, msg in cases:
        assert synth(checkpoint, out, *extra) == 2, extra
        err = _err(capsys)
        assert "sgan-fast synthesize: error:" in err and re.search(msg, err), (extra, err)
        assert not (out / "manifest.json").exists(), extra
    assert synth(tmp_path / "no_such_run", out) == 2
    assert "sgan-fast synthesize: error:" in _err(capsys)


def test_an_existing_export_needs_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    assert synth(checkpoint, out, "--count", 20) == 0
    before = (out / "synthetic.npz").read_bytes()
    capsys.readouterr()
    assert synth(checkpoint, out, "--count", 25) == 2
    err = _err(capsys)
    assert "already holds" in err and "--overwrite" in err
    assert (out / "synthetic.npz").read_bytes() == before and manifest(out)["per_class"][2]["written"] == 12
    # --overwrite replaces it, also with another format (the old .npz goes)
    assert synth(checkpoint, out, "--count", 25, "--format", "folder", "--overwrite") == 0
    assert not (out / "synthetic.npz").exists() and (out / "synthetic").is_dir()
    ds, _, m = open_export(str(out), progress=False)
    assert counts(ds.labels) == [1, 9, 17] and m["format_of_images"] == "folder"


def _hand_export(out, labels, class_names, fmt):
    """A folder export written by write_export from a hand-made result."""
    labels = np.asarray(labels, dtype=np.int64)
    Cn = len(class_names)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (len(labels), 32, 32, 1), dtype=np.uint8)
    written = counts(labels, Cn)
    per = [dict(cls=c, name=n, real=10, requested=written[c], written=written[c], total=10 + written[c])
           for c, n in enumerate(class_names)]
    res = SynthResult(imgs, labels, per, np.zeros((0, 32, 32, 1), np.uint8), np.zeros((0, Cn), np.float32),
                      np.zeros((0, 2), np.int64), np.zeros(0, np.float32), [])
    man = manifest_for(res, checkpoint="ckpt", meta=dict(step=1, data={}), cfg=SynthConfig(), ema=True,
                       fmt=fmt, class_names=class_names, channels=1, resolution=32, mode="test",
                       classifier=None, bank=None, device="cpu", padded=True)
    os.makedirs(out, exist_ok=True)
    write_export(str(out), res, fmt=fmt, class_names=class_names, manifest=man, progress=False)
    return imgs


def test_folder_export_of_classes_named_by_number_reads_back(tmp_path):
    """Class names that are zero-padded numbers themselves (an image-folder dataset with
    classes 001, 002, 003): the class folders 001 and 002 hold classes 1 and 2, not the
    classes named '001' and '002'."""
    labels = [1, 1, 1, 2, 2]
    imgs = _hand_export(tmp_path / "x", labels, ["001", "002", "003"], "folder")
    ds, _, _ = open_export(str(tmp_path / "x"), progress=False)
    assert ds.labels.tolist() == labels and np.array_equal(ds.images, imgs)


@pytest.mark.parametrize("fmt", ["npz", "folder"])
def test_an_empty_export_reads_back_empty(fmt, checkpoint, tmp_path):
    """--total 0 (or --count below every class) writes no image; the export is still valid."""
    out = tmp_path / fmt
    assert synth(checkpoint, out, "--total", 0, "--format", fmt) == 0
    assert manifest(out)["synthetic_images"] == 0
    ds, _, _ = open_export(str(out), progress=False)
    assert len(ds) == 0 and ds.num_classes == C


def test_open_export_refuses_a_folder_without_manifest(checkpoint, tmp_path):
    out = tmp_path / "o"
    assert synth(checkpoint, out, "--count", 20) == 0
    shutil.copytree(out, tmp_path / "copy")
    os.remove(tmp_path / "copy" / "manifest.json")
    with pytest.raises(ValueError, match="holds no manifest.json"):
        open_export(str(tmp_path / "copy"))
    with pytest.raises(FileNotFoundError):
        open_export(str(tmp_path / "nothing"))


def test_a_failed_overwrite_keeps_the_earlier_export(checkpoint, classifier, tmp_path, capsys):
    """--overwrite replaces an export only once the new one is made: a run that fails while
    generating (here: a class the filter cannot fill) leaves the earlier export readable."""
    out = tmp_path / "keep"
    assert synth(checkpoint, out, "--count", 20, "--seed", 1) == 0
    before, _, m_before = open_export(str(out), progress=False)
    capsys.readouterr()
    assert synth(checkpoint, out, "--overwrite", "--classifier", classifier["classifier"],
                 "--min-confidence", 1.0, "--max-tries", 1) == 2
    assert "could not be filled" in capsys.readouterr().err
    after, _, m_after = open_export(str(out), progress=False)
    assert m_after == m_before and np.array_equal(after.images, before.images)


def test_the_filter_crops_padded_images_back_to_the_classifier_size():
    """A generator trained on 28-px arrays padded to 32 makes 32-px images; the classifier
    was trained at 28: the scorer gives it the centre crop (the exact inverse of the
    padding), and resizes when the generator learned resized images."""
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(len(x), 3)

    def scorer(crop):
        s = ClassifierScorer.__new__(ClassifierScorer)
        s.models, s.meta, s.device, s.crop = [Probe()], dict(resolution=28, channels=1), torch.device("cpu"), crop
        return s

    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    p = scorer(True).probs(x)
    assert torch.allclose(p, torch.full((2, 3), 1 / 3))
    assert torch.equal(seen[-1], x[:, :, 2:30, 2:30].float() / 127.5 - 1)
    scorer(False).probs(x)
    resized = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(28, 28), mode="bicubic",
                                              align_corners=False, antialias=True)
    assert seen[-1].shape == (2, 1, 28, 28) and torch.allclose(seen[-1], resized)
