"""`sgan-fast classify` on 2 gloo ranks: the folds are spread over the ranks, rank 0 alone
writes, and what it writes is bit for bit what one process writes; a bad input fails on
every rank with the same message and exit code, never one rank raising while the other
waits.

The two ranks run every case below in one launch (a spawn costs seconds): a case that left
the ranks out of step would hang the next one, which run_ranks turns into a failure.
"""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch

from sgan_fast.cli import main

from .ranks import RankError, run_ranks

# 3 folds on 2 ranks: rank 0 trains folds 1-2, rank 1 fold 3 (so rank 0's report averages a
# model it rebuilt from rank 1's weights over the test split).
COMMON = ["classify", "--arch", "resnet8", "--epochs", "1", "--batch-size", "16", "--quiet"]


def _dataset(path, n, seed):
    """3 classes of 8x8 grey images: a bright stripe in the class's third of the image."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 100, (n, 8, 8), dtype=np.uint8)
    for c in range(3):
        x[y == c, :, 3 * c:3 * c + 2] += 150
    np.savez(path, images=x, labels=y)
    return str(path)


def _cases(tmp):
    """[(name, [argv of rank 0, argv of rank 1])]."""
    data = ["--data", _dataset(tmp / "train.npz", 90, 0), "--test-data", _dataset(tmp / "test.npz", 30, 1)]
    ok = COMMON + data + ["--imbalance", "exp", "--rho", "3", "--folds", "3"]
    dist, fresh = ok + ["--out", str(tmp / "dist")], COMMON + data + ["--folds", "2"]
    missing = [a if a != data[1] else str(tmp / "missing.npz") for a in fresh]
    return [
        ("run", [dist, dist]),
        ("again without --overwrite", [dist, dist]),
        ("one fold", [fresh + ["--folds", "1", "--out", str(tmp / "f1")]] * 2),
        ("bad flag", [fresh + ["--batch-size", "1", "--out", str(tmp / "bs")]] * 2),
        ("data missing on rank 1 only", [fresh + ["--out", str(tmp / "m")],
                                         missing + ["--out", str(tmp / "m")]]),
        ("ranks launched with other seeds", [fresh + ["--out", str(tmp / "s")],
                                             fresh + ["--seed", "7", "--out", str(tmp / "s")]]),
    ], ok


def _on_rank(world, cases):
    """Every case through the command's entry point on this rank: (exit code, stderr, stdout,
    the files this rank wrote) per case."""
    import sgan_fast._io as sio
    written = []
    real_write = sio.atomic_write

    def recording_write(path, *a, **k):
        written.append(os.path.basename(os.fspath(path)))
        return real_write(path, *a, **k)
    sio.atomic_write = recording_write   # main() keeps the process group it did not make
    out = []
    try:
        for _, argv in cases:
            err, std = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
                rc = main(argv[world.rank])
            out.append((rc, err.getvalue(), std.getvalue(), sorted(written)))
            written.clear()
    finally:
        sio.atomic_write = real_write
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classify_ranks")
    cases, ok = _cases(tmp)
    ranks = run_ranks(_on_rank, 2, tmp, cases, timeout=180)
    for r in ranks:
        assert not isinstance(r, RankError), r
    # One process, with the one thread per process each rank has (run_ranks, like torchrun,
    # runs each rank on one thread): CPU kernels sum in another order on more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(ok + ["--out", str(tmp / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp, [name for name, _ in cases], ranks


def _case(runs, name):
    _, names, ranks = runs
    return [r[names.index(name)] for r in ranks]


def test_two_ranks_write_bit_for_bit_what_one_process_writes(runs):
    tmp = runs[0]
    r0, r1 = _case(runs, "run")
    assert r0[0] == r1[0] == 0, (r0[1], r1[1])
    files = ["bank.npz", "classifier.pt", "report.json", "report.md", "subset.npz"]
    assert sorted(os.listdir(tmp / "dist")) == sorted(os.listdir(tmp / "one")) == files
    # rank 0 alone writes and prints; it says how the folds were split
    assert r1[3] == [] and r1[2] == "" and sorted(r0[3]) == files
    assert "3 folds over 2 processes (rank 0: folds 1-2, rank 1: fold 3)" in r0[2]
    # Exact equality (no tolerance): each fold's training is seeded by the seed and the fold
    # alone, and runs on one thread on either side, so every number is the same bits.
    with np.load(tmp / "dist" / "bank.npz") as a, np.load(tmp / "one" / "bank.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    meta = json.loads(str(np.load(tmp / "dist" / "bank.npz")["meta"]))
    assert meta["settings"]["folds"] == 3 and meta["settings"]["cross_fitted"]
    a = torch.load(tmp / "dist" / "classifier.pt", weights_only=True)
    b = torch.load(tmp / "one" / "classifier.pt", weights_only=True)
    assert len(a["state_dicts"]) == 3 and a.keys() == b.keys()
    for sa, sb in zip(a["state_dicts"], b["state_dicts"]):
        for k in sb:
            assert torch.equal(sa[k], sb[k]), k
    assert {k: v for k, v in a.items() if k != "state_dicts"} == \
        {k: v for k, v in b.items() if k != "state_dicts"}
    for f in ("report.json", "report.md", "subset.npz"):
        assert (tmp / "dist" / f).read_bytes() == (tmp / "one" / f).read_bytes(), f
    assert json.loads((tmp / "dist" / "report.json").read_text())["test"]["models_averaged"] == 3


def _same_failure(runs, name, match):
    """Both ranks exit with 2 and print the same error line (but for the rank tag)."""
    r0, r1 = _case(runs, name)
    assert r0[0] == r1[0] == 2, (r0, r1)
    lines = [r[1].strip().splitlines()[-1].replace(f" [rank {i}]", "") for i, r in enumerate((r0, r1))]
    assert lines[0] == lines[1], lines
    assert lines[0].startswith("sgan-fast classify: error: ") and match in lines[0], lines[0]
    assert r0[3] == r1[3] == []          # nothing written
    return lines[0]


def test_existing_output_without_overwrite_fails_on_both_ranks(runs):
    _same_failure(runs, "again without --overwrite", "pass --overwrite")


def test_one_fold_is_refused_on_both_ranks_before_any_work(runs):
    line = _same_failure(runs, "one fold", "nothing to split over the 2 processes")
    assert not (runs[0] / "f1").exists()     # refused before the output folder is made


def test_a_bad_flag_fails_on_both_ranks(runs):
    _same_failure(runs, "bad flag", "batch_size must be an integer >= 2")


def test_a_problem_on_one_rank_fails_both_with_its_message(runs):
    line = _same_failure(runs, "data missing on rank 1 only", "rank 1: dataset file")
    assert "missing.npz not found" in line


def test_ranks_with_other_settings_are_refused(runs):
    _same_failure(runs, "ranks launched with other seeds",
                  "the ranks disagree on the classify settings: rank(s) [1] differ from rank 0 "
                  "(first: seed: rank 0 has 0, the other 7)")
