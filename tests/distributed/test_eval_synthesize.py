"""`sgan-fast synthesize` and `sgan-fast eval` on 2 gloo ranks write what one process writes,
and bad input fails on every rank with one message.

The one-process runs happen in the test process with one thread, as each rank has
(tests/distributed/ranks.py), so both sides do the same arithmetic on the same batches."""

import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
import torch

from ..synth._fixtures import TINY, cli
from ..train._runs import tiny_dataset
from .ranks import RankError, run_ranks

C = 3


def _npz(ds, path):
    np.savez(path, images=ds.images, labels=ds.labels)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1-step checkpoint on tiny_dataset() (3 classes, 1 x 32 x 32), a random resnet8
    classifier of those classes (feature backend and filter), a bank (class pairs), and
    dataset files: the training set, a test split, a "generated" set."""
    from sgan_fast.labels import build_classifier
    from sgan_fast.labels.bank import SoftLabelBank
    from sgan_fast.labels.classifier_file import save_classifier
    from sgan_fast.labels.fingerprint import DatasetFingerprint
    from sgan_fast.train.sampling import load_generator

    d = tmp_path_factory.mktemp("dist_eval_synth")
    f = dict(train=_npz(tiny_dataset(), d / "train.npz"), test=_npz(tiny_dataset(n=30, seed=7), d / "test.npz"),
             gen=_npz(tiny_dataset(n=30, seed=5), d / "gen.npz"), ckpt=str(d / "gan"))
    assert cli(["train", "--data", f["train"], "--target", "onehot", "--out", f["ckpt"], *TINY,
                "--steps", "1"]) == 0
    _, meta = load_generator(f["ckpt"])
    fp = DatasetFingerprint.from_json(meta["data"]["fingerprint"])
    torch.manual_seed(0)
    net = build_classifier("resnet8", C, 1, 8).eval()
    f["clf"] = str(d / "classifier.pt")
    save_classifier(f["clf"], [net], arch="resnet8", num_classes=C, channels=1, resolution=8,
                    temperature=1.0, class_names=[str(c) for c in range(C)], fingerprint=fp)
    y = torch.from_numpy(tiny_dataset().labels)
    logits = torch.randn(len(y), C, generator=torch.Generator().manual_seed(1))
    logits[torch.arange(len(y)), y] += 2.0
    f["bank"] = str(d / "bank.npz")
    SoftLabelBank(torch.softmax(logits, 1), y, fingerprint=fp).save(f["bank"])
    return f


def _commands(world, runs):
    """Each argv of runs[rank] through `sgan-fast` on this rank: [(exit status, stderr)]."""
    out = []   # main() keeps the process group run_ranks made, for the next command
    for argv in runs[world.rank]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            out.append((cli(argv), err.getvalue()))
    return out


def _one_process(argvs):
    """The commands in this process, with one thread as a rank has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [cli(argv) for argv in argvs]
    finally:
        torch.set_num_threads(threads)


def _on_two_ranks(tmp_path, argvs):
    outs = run_ranks(_commands, 2, tmp_path, [argvs, argvs])
    assert not any(isinstance(o, RankError) for o in outs), outs
    return outs


def _synth_args(f, out, *extra):
    return ["synthesize", "--checkpoint", f["ckpt"], "--out", str(out), "--device", "cpu", "--quiet",
            *map(str, extra)]


BS, TRIES = 4, 3     # the filtered export's batch size and --max-tries


def test_synthesize_on_two_ranks_writes_the_one_process_export(files, tmp_path):
    # small batches, so that the batches go round the ranks several times; truncation, so that
    # latents are redrawn; filtering by the classifier at a level that rejects some images, so
    # that the ranks must replay where one process stops drawing a class
    exports = {
        "npz": ["--count", 30, "--batch-size", 5, "--seed", 3, "--truncation", 1.2,
                "--mix", 7, "--mix-bank", files["bank"], "--mix-pairs", 2],
        "folder": ["--format", "folder", "--count", 30, "--batch-size", BS, "--seed", 4,
                   "--classifier", files["clf"], "--min-confidence", 0.34, "--max-tries", TRIES,
                   "--allow-shortfall"],
    }
    one = {k: tmp_path / "one" / k for k in exports}
    two = {k: tmp_path / "two" / k for k in exports}
    assert _one_process([_synth_args(files, one[k], *v) for k, v in exports.items()]) == [0, 0]
    outs = _on_two_ranks(tmp_path, [_synth_args(files, two[k], *v) for k, v in exports.items()])
    assert [[rc for rc, _ in o] for o in outs] == [[0, 0], [0, 0]]
    for k in exports:
        # the same files; the text ones byte for byte (the manifest records no world size)
        assert sorted(os.listdir(two[k])) == sorted(os.listdir(one[k]))
        for name in ("manifest.json", "report.md"):
            assert (two[k] / name).read_bytes() == (one[k] / name).read_bytes(), (k, name)
    # .npz files hold the same arrays (the zip entries carry a time stamp)
    for name in ("synthetic.npz", "mixed.npz"):
        with np.load(one["npz"] / name) as a, np.load(two["npz"] / name) as b:
            assert a.files == b.files
            for key in a.files:
                assert np.array_equal(a[key], b[key]), (name, key)
    # the filtered export: the same PNG files, pixel for pixel (PNG is lossless)
    m = json.loads((one["folder"] / "manifest.json").read_text())
    rejected = [r["rejection_rate"] for r in m["per_class"] if r["rejection_rate"] is not None]
    assert any(0 < r < 1 for r in rejected), "the filter level must reject some images, not all"
    # and the ranks must have rewound the latent stream: a class (with another class after it)
    # whose last batch, in one process, is the first of a round of 2 batches (one per rank)
    drawn = [(math.ceil(r["generated"] / BS), math.ceil(math.ceil(TRIES * r["requested"]) / BS))
             for r in m["per_class"] if r["requested"]]
    assert any(n % 2 == 1 and n < budget for n, budget in drawn[:-1]), drawn
    from PIL import Image
    for c in sorted(os.listdir(one["folder"] / "synthetic")):
        names = sorted(os.listdir(one["folder"] / "synthetic" / c))
        assert sorted(os.listdir(two["folder"] / "synthetic" / c)) == names
        for n in names:
            with Image.open(one["folder"] / "synthetic" / c / n) as a, \
                    Image.open(two["folder"] / "synthetic" / c / n) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), (c, n)


def _eval_args(f, out, cache, *extra):
    return ["eval", "--data", f["train"], "--real", "train", "--backend", "classifier",
            "--classifier", f["clf"], "--out", str(out), "--cache-dir", str(cache), "--device", "cpu",
            "--k", "2", "--kid-subsets", "3", "--batch-size", "260", "--quiet", *map(str, extra)]


def _numbers(x, path=""):
    """{path: number} of every number in a report."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _numbers(val, f"{path}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _numbers(val, f"{path}/{i}").items()}
    return {path: x} if isinstance(x, (int, float)) and not isinstance(x, bool) else {}


def test_eval_on_two_ranks_reports_the_one_process_numbers(files, tmp_path):
    # --batch-size 260: 300 generated images in 2 batches (rank 0 takes images 0..259, rank 1
    # 260..299), 48 real ones in 1 (rank 0; rank 1 has none). From a checkpoint, which
    # generates in chunks of 256 from one latent stream: rank 1 draws chunk 0's latents without
    # generating it, and generates chunk 1. With CAS, 18 generated images (all on rank 0,
    # rank 1 has none) gathered on rank 0 for the CAS classifier. From a file, with the real
    # features cached by the first run (rank 0 reads the cache).
    runs = {"ckpt": ["--checkpoint", files["ckpt"], "--per-class", 100, "--seed", 2, "--truncation", 1.5],
            "cas": ["--checkpoint", files["ckpt"], "--per-class", 6, "--seed", 3, "--cas",
                    "--cas-epochs", 1, "--test-data", files["test"]],
            "file": ["--generated", files["gen"]],
            # --no-cache and batches of 16: the 48 real images in 3 batches (rank 0 extracts
            # rows 0..31, rank 1 rows 32..47), the 30 generated in 2 (0..15 and 16..29)
            "nocache": ["--generated", files["gen"], "--no-cache", "--batch-size", 16]}
    argv = lambda side: [_eval_args(files, tmp_path / side / k, tmp_path / side / "cache", *v)  # noqa: E731
                         for k, v in runs.items()]
    assert _one_process(argv("one")) == [0, 0, 0, 0]
    outs = _on_two_ranks(tmp_path, argv("two"))
    assert [[rc for rc, _ in o] for o in outs] == [[0, 0, 0, 0], [0, 0, 0, 0]]
    # Tolerance: none. Each rank extracts whole batches of the one-process run (the same rows,
    # the same shapes, one thread), so every feature is bit for bit the one-process feature;
    # rank 0 gets them in one-process order and computes the metrics as one process does.
    # The real-feature cache files that the two first runs wrote show it directly.
    caches = [sorted((tmp_path / side / "cache").iterdir()) for side in ("one", "two")]
    assert len(caches[0]) == len(caches[1]) == 1 and caches[0][0].name == caches[1][0].name
    with np.load(caches[0][0]) as a, np.load(caches[1][0]) as b:
        assert np.array_equal(a["features"], b["features"]) and np.array_equal(a["logits"], b["logits"])
    for k in runs:
        one = json.loads((tmp_path / "one" / k / "report.json").read_text())
        two = json.loads((tmp_path / "two" / k / "report.json").read_text())
        assert one["num_generated"] == dict(ckpt=300, cas=18, file=30, nocache=30)[k] and ("cas" in one) == (k == "cas")
        assert _numbers(two) == _numbers(one) and two == one, k
        assert sorted(os.listdir(tmp_path / "two" / k)) == ["plot.png", "report.json", "report.md"]
        assert (tmp_path / "two" / k / "report.md").read_text() == (tmp_path / "one" / k / "report.md").read_text()


def test_bad_input_fails_on_every_rank_with_one_message(files, tmp_path):
    """An export already there (both ranks see it), and files only rank 1 lacks (its argv
    names another file): every rank exits with status 2 and the same message, none hangs,
    nothing is written."""
    done = tmp_path / "done"
    done.mkdir()
    (done / "manifest.json").write_text("{}")
    missing = str(tmp_path / "missing")
    synth_ok = _synth_args(files, tmp_path / "s", "--count", 30)
    eval_ok = _eval_args(files, tmp_path / "e", tmp_path / "cache", "--generated", files["gen"])
    rank0 = [_synth_args(files, done), synth_ok, eval_ok]
    rank1 = [_synth_args(files, done),
             [missing if a == files["ckpt"] else a for a in synth_ok],
             [missing + ".npz" if a == files["gen"] else a for a in eval_ok]]
    outs = run_ranks(_commands, 2, tmp_path, [rank0, rank1])
    assert not any(isinstance(o, RankError) for o in outs), outs
    expect = ["rank 0: " + str(done) + " already holds manifest.json", "rank 1: ", "rank 1: generated images file"]
    for i, want in enumerate(expect):
        (rc0, err0), (rc1, err1) = outs[0][i], outs[1][i]
        assert rc0 == rc1 == 2, (i, err0, err1)
        msg0, msg1 = (e.strip().split("error: ", 1)[-1] for e in (err0, err1))
        assert msg0 == msg1 and msg0.startswith(want), (i, msg0, msg1)
    assert missing in outs[0][1][1]
    assert (done / "manifest.json").read_text() == "{}"
    for out in (tmp_path / "s", tmp_path / "e"):
        assert not out.exists() or not [n for n in os.listdir(out) if not n.startswith(".")]
