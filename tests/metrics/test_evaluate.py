"""The per-class report: splits by class, errors for short classes, mismatched class counts
and NaN features; the real-feature cache; `sgan-fast eval` end to end."""

import json

import numpy as np
import pytest
import torch

from sgan_fast.cli import main
from sgan_fast.metrics import evaluate_features, fid, kid, prdc
from sgan_fast.metrics.cache import cached_features


def _feats(n_per_class, C, D=8, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat_interleave(n_per_class)
    x = torch.randn(len(y), D, generator=g) + y[:, None].float() + shift
    return x, y


def test_per_class_metrics_compare_each_class_with_its_own_real_images():
    real, ry = _feats(30, 3)
    fake, fy = _feats(20, 3, shift=0.2, seed=1)
    logits = torch.randn(60, 5, generator=torch.Generator().manual_seed(2))
    rep = evaluate_features(real, ry, fake, fy, num_classes=3, fake_logits=logits,
                            train_counts=[100, 10, 1], class_names=["a", "b", "c"], kid_subsets=10)
    assert rep["overall"]["fid"] == pytest.approx(fid(real, fake))
    for c, row in enumerate(rep["per_class"]):
        r, f = real[ry == c], fake[fy == c]
        assert row["fid"] == pytest.approx(fid(r, f))
        assert row["kid_mean"] == pytest.approx(kid(r, f, subset_size=1000, num_subsets=10)[0])
        assert row["coverage"] == pytest.approx(prdc(r, f)["coverage"])
        assert (row["train_images"], row["real_images"], row["generated_images"]) == ([100, 10, 1][c], 30, 20)
    assert rep["mean_intra_fid"] == pytest.approx(np.mean([r["fid"] for r in rep["per_class"]]))
    # Shuffling the generated set (with its labels) changes nothing.
    p = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    again = evaluate_features(real, ry, fake[p], fy[p], num_classes=3, fake_logits=logits[p],
                              kid_subsets=10)
    assert [r["fid"] for r in again["per_class"]] == pytest.approx([r["fid"] for r in rep["per_class"]])


def test_bad_input_is_named():
    real, ry = _feats(10, 3)
    fake, fy = _feats(10, 3, seed=1)
    with pytest.raises(ValueError, match=r"class 1 \('1'\) has 1 generated image"):
        keep = (fy != 1) | (torch.arange(30) == 10)
        evaluate_features(real, ry, fake[keep], fy[keep], num_classes=3)
    with pytest.raises(ValueError, match="generated image 20 has class 3, but the dataset has 3 classes"):
        evaluate_features(real, ry, fake, fy + 1, num_classes=3)
    bad = fake.clone()
    bad[7, 0] = float("nan")
    with pytest.raises(ValueError, match="generated features: row 7 contains NaN"):
        evaluate_features(real, ry, bad, fy, num_classes=3)
    with pytest.raises(ValueError, match="different backends"):
        evaluate_features(real, ry, fake[:, :4], fy, num_classes=3)


def test_real_features_are_cached_per_dataset_and_backend(tmp_path):
    from sgan_fast.data import ArrayDataset
    from sgan_fast.metrics.features import FeatureBackend
    calls = []

    def backend(tag):
        def run(x):
            calls.append(tag)
            return x.flatten(1)[:, :4] * (2.0 if tag == "b" else 1.0), None
        return FeatureBackend(tag, f"id-{tag}", 4, False, lambda x: x.float(), run, torch.nn.Identity())
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), np.arange(6) % 2)
    a1, _ = cached_features(backend("a"), ds, cache_dir=tmp_path, progress=False)
    a2, _ = cached_features(backend("a"), ds, cache_dir=tmp_path, progress=False)
    assert calls == ["a"] and torch.equal(a1, a2)                           # second time from the file
    b, _ = cached_features(backend("b"), ds, cache_dir=tmp_path, progress=False)
    assert calls == ["a", "b"] and torch.equal(b, 2 * a1)                   # another backend: recomputed
    other = ds.subset([0, 1, 2, 3])
    cached_features(backend("a"), other, cache_dir=tmp_path, progress=False)
    assert calls == ["a", "b", "a"]                                         # another dataset: recomputed
    brighter = ArrayDataset(ds.images // 2, ds.labels)                     # same labels, other pixels
    cached_features(backend("a"), brighter, cache_dir=tmp_path, progress=False)
    assert calls == ["a", "b", "a", "a"]
    calls.pop()
    for f in tmp_path.iterdir():                                            # a corrupt file: recomputed
        f.write_bytes(b"corrupt")
    again, _ = cached_features(backend("a"), ds, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, a1) and calls[-1] == "a" and len(calls) == 4


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def classifier_file(tmp_path):
    from sgan_fast.labels import build_classifier
    from sgan_fast.labels.classifier_file import save_classifier
    from sgan_fast.labels.fingerprint import DatasetFingerprint
    torch.manual_seed(0)
    net = build_classifier("resnet8", 3, 1, 8).eval()
    path = tmp_path / "classifier.pt"
    save_classifier(path, [net], arch="resnet8", num_classes=3, channels=1, resolution=8,
                    temperature=1.0, class_names=["a", "b", "c"],
                    fingerprint=DatasetFingerprint.of([0, 1, 2], 3))
    return str(path)


def _data(tmp_path, n=30, C=3, seed=0, name="data.npz"):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    x = (rng.integers(0, 60, (n, 8, 8)) + 60 * y[:, None, None]).astype(np.uint8)
    np.savez(tmp_path / name, images=x, labels=y)
    return str(tmp_path / name)


def test_eval_command_writes_report_table_and_plot(tmp_path, classifier_file, capsys):
    data = _data(tmp_path, n=60)
    gen = _data(tmp_path, n=30, seed=1, name="gen.npz")
    out = tmp_path / "eval"
    args = ["eval", "--data", data, "--imbalance", "exp", "--rho", "2", "--generated", gen, "--backend", "classifier", "--classifier", classifier_file,
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--kid-subsets", "5",
            "--quiet"]
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["real"] == {"which": "full", "num_images": 60} and rep["num_generated"] == 30
    train_counts = [r["train_images"] for r in rep["per_class"]]
    assert sorted(train_counts) == [10, 14, 20]                       # the exp profile, rho = 2
    md = (out / "report.md").read_text()
    assert "classifier (resnet8" in md and md.count("\n| ") == 2 + 3   # header, rule, one row per class
    from PIL import Image
    with Image.open(out / "plot.png") as im:
        assert im.size[0] > 600 and im.size[1] > 400
    assert main(args) == 2 and "pass --overwrite" in capsys.readouterr().err


def test_eval_command_errors(tmp_path, classifier_file, capsys):
    data = _data(tmp_path)
    base = ["eval", "--data", data, "--backend", "classifier", "--classifier", classifier_file,
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "five.npz", images=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
             labels=np.arange(30) % 5)
    assert main(base + ["--generated", str(tmp_path / "five.npz"), "--out", str(tmp_path / "o1")]) == 2
    assert "another class count" in capsys.readouterr().err
    (tmp_path / "gen" / "zebra").mkdir(parents=True)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gen" / "zebra" / "0.png")
    assert main(base + ["--generated", str(tmp_path / "gen"), "--out", str(tmp_path / "o2")]) == 2
    assert "class folder 'zebra' is neither" in capsys.readouterr().err
    assert main(["eval", "--data", data, "--backend", "classifier", "--generated", data,
                 "--out", str(tmp_path / "o3")]) == 2
    assert "needs --classifier" in capsys.readouterr().err
    assert main(base + ["--generated", data, "--out", str(tmp_path / "o4"), "--k", "0"]) == 2
    assert "k must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o4").exists()


def test_generated_folder_named_by_class_numbers(tmp_path, classifier_file):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "gen" / str(c)).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "gen" / str(c) / f"{i}.png")
    out = tmp_path / "eval"
    assert main(["eval", "--data", _data(tmp_path), "--generated", str(tmp_path / "gen"), "--backend",
                 "classifier", "--classifier", classifier_file, "--out", str(out), "--kid-subsets", "3",
                 "--no-cache", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert [r["generated_images"] for r in rep["per_class"]] == [8, 8, 8]


def test_generate_images_asks_each_class_and_checks_the_output():
    from sgan_fast.metrics.generated import generate_images
    seen = []

    def generate(y):
        seen.append(y.clone())
        return (y.view(-1, 1, 1, 1) * 40).to(torch.uint8).expand(-1, 1, 4, 4).contiguous()
    ds = generate_images(generate, per_class=5, class_names=["a", "b", "c"], batch_size=4)
    assert ds.class_counts().tolist() == [5, 5, 5] and torch.cat(seen).tolist() == ds.labels.tolist()
    assert (ds.images[:, 0, 0, 0] == 40 * ds.labels).all()
    with pytest.raises(ValueError, match="must return uint8"):
        generate_images(lambda y: torch.zeros(len(y), 1, 4, 4), per_class=2, class_names=["a", "b"])


def test_cas_on_generated_images_that_carry_the_classes():
    """Generated images whose class is a bright quadrant: a classifier trained on them
    recognises real images drawn the same way."""
    from sgan_fast.data import ArrayDataset
    from sgan_fast.labels import ClassifyConfig
    from sgan_fast.metrics.cas import classification_accuracy_score

    def quadrants(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 4
        x = rng.integers(0, 100, (n, 16, 16), dtype=np.uint8)
        for c in range(4):
            x[y == c, (c // 2) * 8:(c // 2) * 8 + 8, (c % 2) * 8:(c % 2) * 8 + 8] += 150
        return ArrayDataset(x, y, num_classes=4)
    cfg = ClassifyConfig(arch="resnet8", epochs=5, batch_size=32, flip=False, folds=1,
                         calibrate=False, progress=False)
    out = classification_accuracy_score(quadrants(400, 0), quadrants(200, 1), cfg)
    assert out["balanced_accuracy"] >= 0.9 and len(out["per_class"]) == 4
    noise = ArrayDataset(np.random.default_rng(2).integers(0, 256, (400, 16, 16), dtype=np.uint8),
                         np.arange(400) % 4, num_classes=4)
    assert classification_accuracy_score(noise, quadrants(200, 1), cfg)["balanced_accuracy"] < 0.6
