"""`sgan-fast downstream` on CPU in seconds: real vs real + synthetic vs real + synthetic +
inter-class, over seeds, resumed, and refused for bad input; and its building blocks."""

import json
import os
import shutil

import numpy as np
import pytest

from sgan_fast.data import ArrayDataset
from sgan_fast.synth.downstream import Arm, _training_set, check_arms, pad_to, summarize

from ._fixtures import REAL, TINY_CLS, C, cli, manifest, synth

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def export(checkpoint, classifier, tmp_path_factory):
    """A synthesize folder with the balanced export and 6 inter-class images."""
    out = tmp_path_factory.mktemp("downstream_export") / "synth"
    assert synth(checkpoint, out, "--mix", 6, "--mix-bank", classifier["bank"], "--seed", 2) == 0
    return str(out)


def _downstream(files, out, *extra, data=None):
    return cli(["downstream", "--data", data or files["train"], "--test-data", files["test"],
                "--out", str(out), *TINY_CLS, *map(str, extra)])


def _runs(out):
    with open(os.path.join(out, "runs.json"), encoding="utf-8") as f:
        return json.load(f)


def _strip(rows):
    """The rows without their timings (which differ from run to run)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _check_summary(out, rows, arms, seeds):
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    assert list(summary["arms"]) == arms and summary["class_counts"] == list(REAL)
    base = {r["seed"]: r for r in rows if r["arm"] == "real"}
    for a in arms:
        mine = sorted((r for r in rows if r["arm"] == a), key=lambda r: r["seed"])
        s = summary["arms"][a]
        assert s["runs"] == len(mine) == seeds and s["seeds"] == list(range(seeds))
        for key in ("balanced_accuracy", "accuracy"):
            v = [r[key] for r in mine]
            assert s[key]["mean"] == pytest.approx(np.mean(v), abs=1e-12)
            assert s[key]["std"] == pytest.approx(np.std(v, ddof=1), abs=1e-12)
            assert (s[key]["min"], s[key]["max"]) == pytest.approx((min(v), max(v)))
        for c in range(C):
            assert s["per_class"][c]["mean"] == pytest.approx(np.mean([r["per_class"][c] for r in mine]))
        if a == "real":
            assert s["gain_balanced_accuracy"] is None
        else:
            gain = [r["balanced_accuracy"] - base[r["seed"]]["balanced_accuracy"] for r in mine]
            assert s["gain_balanced_accuracy"]["mean"] == pytest.approx(np.mean(gain), abs=1e-12)
    return summary


def test_downstream_runs_every_arm_resumes_and_grows(files, export, tmp_path, capsys):
    out = str(tmp_path / "ds")
    arms = ["real", "synth", "mixed"]
    args = ["--arm", f"synth={export}", "--arm", f"mixed={export}:mixed", "--seeds", 3]
    assert _downstream(files, out, *args) == 0
    rows = _runs(out)
    assert len(rows) == 9
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((a, s) for a in arms for s in range(3))
    m = manifest(export)
    n_synth = sum(r["written"] for r in m["per_class"])
    assert n_synth == max(REAL) * C - sum(REAL) and m["mixed"]["images"] == 6
    images = dict(real=sum(REAL), synth=sum(REAL) + n_synth, mixed=sum(REAL) + n_synth + 6)
    for r in rows:
        assert r["train_images"] == images[r["arm"]]
        assert r["steps"] == 1 * (sum(REAL) // 16)      # budget "steps": the real arm's, for all
        acc = [a for a in r["per_class"] if a is not None]
        assert len(r["per_class"]) == C and r["balanced_accuracy"] == pytest.approx(np.mean(acc))
        assert all(0 <= a <= 1 for a in acc) and 0 <= r["accuracy"] <= 1
    _check_summary(out, rows, arms, 3)
    report = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    for a in arms:
        assert sum(line.startswith(f"| {a} | 3 | {images[a]} |") for line in report.splitlines()) == 1
    with open(os.path.join(out, "plot.png"), "rb") as f:
        assert f.read(8) == PNG
    with open(os.path.join(out, "runs.csv"), encoding="utf-8") as f:
        assert len(f.read().strip().splitlines()) == 1 + 9
    # the same command again: nothing new runs
    before = open(os.path.join(out, "runs.json"), "rb").read()
    capsys.readouterr()
    assert _downstream(files, out, *args) == 0
    err = capsys.readouterr().err
    assert "continuing: 9 run(s)" in err and "0 run(s) to go" in err
    assert open(os.path.join(out, "runs.json"), "rb").read() == before
    # one more seed: exactly one new run per arm
    args[-1] = 4
    assert _downstream(files, out, *args) == 0
    more = _runs(out)
    assert more[:9] == rows and len(more) == 12
    assert sorted((r["arm"], r["seed"]) for r in more[9:]) == sorted((a, 3) for a in arms)
    _check_summary(out, more, arms, 4)
    # another setting without --overwrite is refused, and nothing is touched
    after = open(os.path.join(out, "runs.json"), "rb").read()
    capsys.readouterr()
    assert _downstream(files, out, *args, "--lr", 0.05) == 2
    err = capsys.readouterr().err
    assert "sgan-fast downstream: error:" in err and "lr" in err and "--overwrite" in err
    assert open(os.path.join(out, "runs.json"), "rb").read() == after
    # a new arm joins the experiment: only its runs are made, the others are kept
    capsys.readouterr()
    assert _downstream(files, out, *args, "--arm", f"again={export}") == 0
    grown = _runs(out)
    assert grown[:12] == more and sorted((r["arm"], r["seed"]) for r in grown[12:]) == [
        ("again", s) for s in range(4)]
    # same data as arm "synth", same seeds: the same results
    assert _strip([r for r in grown if r["arm"] == "again"]) == [
        dict(r, arm="again") for r in _strip([r for r in grown if r["arm"] == "synth"])]
    # an existing arm name pointing to other data is refused
    assert _downstream(files, out, "--arm", f"synth={export}:mixed", "--seeds", 4) == 2
    assert "arm 'synth'" in capsys.readouterr().err
    # --overwrite starts afresh; seed 0 gives the same results as the first time
    assert _downstream(files, out, *args[:-1], 1, "--overwrite") == 0
    fresh = _runs(out)
    assert _strip(fresh) == _strip([r for r in rows if r["seed"] == 0])


def test_downstream_never_writes_over_another_commands_files(files, export, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "report.md").write_text("an eval report")
    capsys.readouterr()
    assert _downstream(files, out, "--arm", f"s={export}", "--seeds", 1) == 2
    err = capsys.readouterr().err
    assert "report.md" in err and "--overwrite" in err
    assert (out / "report.md").read_text() == "an eval report"
    assert not (out / "runs.json").exists() and not (out / "settings.json").exists()


def test_downstream_bad_input(files, export, tmp_path, capsys):
    bad = tmp_path / "bad"
    no_manifest = tmp_path / "no_manifest"
    shutil.copytree(export, no_manifest)
    os.remove(no_manifest / "manifest.json")
    altered = tmp_path / "altered"
    shutil.copytree(export, altered)
    with np.load(altered / "synthetic.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(altered / "synthetic.npz", **{**arrays, "images": arrays["images"][1:],
                                           "labels": arrays["labels"][1:]})
    cases = [
        (["--arm", f"real={export}"], "the name 'real'"),
        (["--arm", export], "--arm must be NAME=DIR"),
        (["--arm", f"={export}"], "--arm must be NAME=DIR"),
        ([], "at least one --arm"),
        (["--arm", f"s={no_manifest}"], "holds no manifest.json"),
        (["--arm", f"s={altered}"], "files were added or removed"),
        (["--arm", f"s={tmp_path / 'nothing'}"], "does not exist"),
        (["--arm", f"s={export}", "--arm", f"s={export}:mixed"], "arm names must differ"),
        (["--arm", f"s={export}", "--seeds", 0], "seeds must be a positive integer"),
    ]
    capsys.readouterr()
    for extra, msg in cases:
        assert _downstream(files, bad, *extra) == 2, extra
        err = capsys.readouterr().err
        assert "sgan-fast downstream: error:" in err and msg in err, (extra, err)
        assert not os.path.exists(bad / "runs.json")
    # synthetic data of a generator trained on other data (42 images, not 48)
    assert _downstream(files, bad, "--arm", f"s={export}", data=files["other"]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and "N=48" in err and "42" in err
    # an export without inter-class images, asked for them
    plain = tmp_path / "plain"
    shutil.copytree(export, plain)
    os.remove(plain / "mixed.npz")
    assert _downstream(files, bad, "--arm", f"s={plain}:mixed") == 2
    assert "no inter-class images" in capsys.readouterr().err
    # a .npz dataset brings no test split
    assert cli(["downstream", "--data", files["train"], "--arm", f"s={export}", "--out", str(bad),
                *TINY_CLS]) == 2
    assert "--test-data" in capsys.readouterr().err


def _ds(n_per_class, res=32, channels=1, seed=0, C=3):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), n_per_class)
    return ArrayDataset(rng.integers(0, 256, (len(y), res, res, channels), dtype=np.uint8), y, num_classes=C)


def test_training_set_and_checks():
    real, synth_, mixed = _ds([4, 2, 1]), _ds([0, 2, 3], seed=1), _ds([1, 1, 0], seed=2)
    t = np.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4]], dtype=np.float32)
    x, y, targets = _training_set(real, Arm("real"))
    assert np.array_equal(x, real.images) and targets is None
    x, y, targets = _training_set(real, Arm("s", synth_))
    assert np.array_equal(x, np.concatenate([real.images, synth_.images])) and targets is None
    assert y.tolist() == real.labels.tolist() + synth_.labels.tolist()
    x, y, targets = _training_set(real, Arm("m", synth_, mixed, t))
    assert len(x) == len(y) == len(targets) == 7 + 5 + 2
    assert np.array_equal(x[-2:], mixed.images)
    assert np.array_equal(targets[:12], np.eye(3, dtype=np.float32)[y[:12]])    # one-hot
    assert np.array_equal(targets[12:], t) and np.allclose(targets.sum(1), 1)
    # the real set padded to the generator's size: centred on black
    small = _ds([2, 1, 1], res=28)
    big = pad_to(small, (32, 32))
    assert big.resolution == (32, 32) and np.array_equal(big.images[:, 2:30, 2:30], small.images)
    border = big.images.copy()
    border[:, 2:30, 2:30] = 0
    assert not border.any() and big.fingerprint() == small.fingerprint()
    assert pad_to(real, (32, 32)) is real
    test = _ds([1, 1, 1], seed=3)
    for arms, msg in [([Arm("a", _ds([1, 1], C=2))], "another class count"),
                      ([Arm("a", _ds([1, 1, 1], channels=3))], "channel"),
                      ([Arm("a", _ds([1, 1, 1], res=28))], "pad"),
                      ([Arm("a", synth_), Arm("a", synth_)], "differ"),
                      ([Arm("a", synth_, mixed, None)], "targets")]:
        with pytest.raises(ValueError, match=msg):
            check_arms(real, test, arms)
    with pytest.raises(ValueError, match="test set has 2 classes"):
        check_arms(real, _ds([1, 1], C=2), [])


def test_summarize_pairs_gains_by_seed():
    counts = [50, 5, 20]                  # rarest third: class 1; most common: class 0
    rows = []
    acc = {("real", 0): [0.9, 0.1, 0.5], ("real", 1): [0.8, 0.3, 0.5],
           ("s", 0): [0.9, 0.4, 0.6], ("s", 1): [0.7, 0.5, 0.5]}
    for (a, s), pc in acc.items():
        rows.append(dict(arm=a, seed=s, balanced_accuracy=float(np.mean(pc)), accuracy=0.5,
                         train_images=1, steps=1, per_class=pc))
    out = summarize(rows, ["real", "s"], counts)
    assert out["rare"] == [1] and out["common"] == [0]
    s = out["arms"]["s"]
    assert s["rare_classes"]["mean"] == pytest.approx((0.4 + 0.5) / 2)
    assert s["common_classes"]["mean"] == pytest.approx((0.9 + 0.7) / 2)
    g = [np.mean(acc[("s", k)]) - np.mean(acc[("real", k)]) for k in (0, 1)]
    assert s["gain_balanced_accuracy"]["mean"] == pytest.approx(np.mean(g))
    assert s["gain_balanced_accuracy"]["std"] == pytest.approx(np.std(g, ddof=1))
    assert s["gain_per_class"][1]["mean"] == pytest.approx(((0.4 - 0.1) + (0.5 - 0.3)) / 2)
    assert out["arms"]["real"]["gain_per_class"] is None
