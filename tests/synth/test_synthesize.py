"""synthesize() on the tiny checkpoint's generator: the balanced part, filtering by a scorer
stub, and inter-class images; everything checked against what the generator was asked for."""

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from sgan_fast.synth.export import manifest_for, open_export, read_manifest, write_export
from sgan_fast.synth.synthesize import SynthConfig, synthesize, trained_on_padded
from sgan_fast.train.sampling import to_uint8

from ._fixtures import REAL, C, MeanScorer, Recorder, brute_pairs, counts, nhwc

NAMES = ["a", "b", "c"]


def _want(level):
    return [max(level - n, 0) for n in REAL]


def _threshold(G):
    """The median mean pixel of a sample of every class: a rule about half the images pass."""
    from sgan_fast.train.sampling import generate
    x = generate(G, torch.arange(C).repeat_interleave(40), generator=torch.Generator().manual_seed(99))
    return float(x.float().mean((1, 2, 3)).median())


def test_balanced_part_comes_from_the_generator_class_by_class(generator):
    G, _ = generator
    rec = Recorder(G)
    res = synthesize(rec, REAL, SynthConfig(count=30, batch_size=7, seed=4, progress=False))
    assert counts(res.labels) == _want(30)
    assert res.images.dtype == np.uint8 and res.images.shape == (sum(_want(30)), 32, 32, 1)
    # what G made for which class, in call order, is exactly what was returned
    y = torch.cat([c[1] for c in rec.calls])
    assert not y.is_floating_point() and y.tolist() == res.labels.tolist()
    made = np.concatenate([nhwc(to_uint8(c[2])) for c in rec.calls])
    assert np.array_equal(made, res.images)
    assert max(len(c[1]) for c in rec.calls) <= 7
    assert [r["written"] for r in res.per_class] == _want(30)
    assert [r["total"] for r in res.per_class] == [max(30, n) for n in REAL]
    assert len(res.mixed_images) == 0 and res.mixed_targets.shape == (0, C)
    # the same seed again: the same images; another seed: others
    again = synthesize(G, REAL, SynthConfig(count=30, batch_size=7, seed=4, progress=False))
    assert np.array_equal(again.images, res.images)
    other = synthesize(G, REAL, SynthConfig(count=30, batch_size=7, seed=5, progress=False))
    assert other.labels.tolist() == res.labels.tolist() and not np.array_equal(other.images, res.images)


def test_inter_class_images_carry_their_class_vector(generator, tmp_path):
    G, _ = generator
    rec = Recorder(G)
    # row i: the mean probabilities of class i's images
    confusion = np.array([[0.70, 0.10, 0.20],
                          [0.05, 0.80, 0.15],
                          [0.30, 0.10, 0.60]])
    lo, hi = 0.3, 0.9
    cfg = SynthConfig(count="majority", mix=7, mix_pairs=2, mix_lambda=(lo, hi), batch_size=3,
                      seed=1, progress=False)
    res = synthesize(rec, REAL, cfg, class_names=NAMES, confusion=confusion)
    assert counts(res.labels) == _want(max(REAL))
    t, pairs, lam = res.mixed_targets, res.mixed_pairs, res.mixed_lambda
    assert len(res.mixed_images) == len(t) == len(pairs) == len(lam) == 7
    assert res.mixed_images.shape[1:] == (32, 32, 1) and res.mixed_images.dtype == np.uint8
    assert np.allclose(t.sum(1), 1, atol=1e-6) and (t >= 0).all()
    for row, (i, j), l in zip(t, pairs, lam):
        assert i != j and set(np.flatnonzero(row)) == {i, j}
        assert row[i] == pytest.approx(l, abs=1e-6) and row[j] == pytest.approx(1 - l, abs=1e-6)
        assert lo <= l <= hi
    assert np.array_equal(res.mixed_labels, t.argmax(1))     # the dominant class
    # the two most confused pairs, by brute force; 7 images: 4 to the most confused, 3 to the next
    best = brute_pairs(confusion, 2)
    got = [tuple(p) for p in pairs.tolist()]
    assert sorted(set(got)) == sorted((i, j) for i, j, _ in best)
    assert [got.count((i, j)) for i, j, _ in best] == [4, 3]
    assert [(p["i"], p["j"], p["images"]) for p in res.pairs] == [(i, j, n) for (i, j, _), n in zip(best, [4, 3])]
    # G was given exactly the mixed class vectors, and made exactly these images
    soft = [c for c in rec.calls if c[1].is_floating_point()]
    assert np.array_equal(torch.cat([c[1] for c in soft]).numpy(), t)
    assert np.array_equal(np.concatenate([nhwc(to_uint8(c[2])) for c in soft]), res.mixed_images)
    # the same seed gives the same lambdas and images
    again = synthesize(G, REAL, cfg, confusion=confusion)
    assert np.array_equal(again.mixed_lambda, lam) and np.array_equal(again.mixed_images, res.mixed_images)
    other = synthesize(G, REAL, dataclasses.replace(cfg, seed=2), confusion=confusion)
    assert not np.array_equal(other.mixed_lambda, lam)
    # written and read back
    out = str(tmp_path / "x")
    man = manifest_for(res, checkpoint="ckpt", meta=dict(step=1, data={}), cfg=cfg, ema=True, fmt="npz",
                       class_names=NAMES, channels=1, resolution=32, mode="test", classifier=None,
                       bank="bank.npz", device="cpu", padded=True)
    os.makedirs(out)
    write_export(out, res, fmt="npz", class_names=NAMES, manifest=man, progress=False)
    with np.load(os.path.join(out, "mixed.npz")) as z:
        assert np.array_equal(z["targets"], t) and np.array_equal(z["pairs"], pairs)
        assert np.array_equal(z["lambda"], lam) and np.array_equal(z["labels"], t.argmax(1))
        assert np.array_equal(z["images"], res.mixed_images)
    ds, targets, m = open_export(out, mixed=True, progress=False)
    assert np.array_equal(targets, t) and np.array_equal(ds.labels, t.argmax(1)) and ds.num_classes == C
    assert m["mixed"]["images"] == 7 and read_manifest(out)["mixed"]["lambda"] == [lo, hi]


def test_filtering_keeps_only_images_that_pass_and_reports_rejections(generator):
    G, _ = generator
    rec = Recorder(G)
    scorer = MeanScorer(rec, _threshold(G))
    cfg = SynthConfig(count="majority", min_confidence=0.5, batch_size=5, seed=2, progress=False)
    res = synthesize(rec, REAL, cfg, class_names=NAMES, scorer=scorer)
    want = _want(max(REAL))
    assert counts(res.labels) == want                             # exact counts
    assert scorer.passes(torch.from_numpy(res.images).permute(0, 3, 1, 2)).all()   # every image passes
    for c, r in enumerate(res.per_class):
        assert r["requested"] == r["written"] == want[c]
        acc = torch.cat(scorer.accepted[c]) if scorer.accepted[c] else torch.zeros(0, 1, 32, 32, dtype=torch.uint8)
        # the first images of the class that passed, in the order they were drawn
        assert np.array_equal(res.images[res.labels == c], nhwc(acc[:want[c]]))
        assert r["generated"] == scorer.generated[c]
        if scorer.generated[c]:
            rejected = scorer.generated[c] - len(acc)
            assert r["rejection_rate"] == pytest.approx(rejected / scorer.generated[c])
            assert r["mean_confidence"] == pytest.approx(len(acc) / scorer.generated[c])
            assert scorer.generated[c] <= math.ceil(cfg.max_tries * want[c])
        else:
            assert want[c] == 0 and r["rejection_rate"] is None
    assert sum(r["rejection_rate"] or 0 for r in res.per_class) > 0   # the rule did reject some


def test_a_class_that_cannot_be_filled(generator, tmp_path):
    G, _ = generator
    rec = Recorder(G)
    thr = _threshold(G)
    cfg = SynthConfig(count="majority", min_confidence=0.5, max_tries=10.0, batch_size=8, seed=3,
                      progress=False)
    with pytest.raises(ValueError, match=r"class 2 \(c\)"):
        synthesize(rec, REAL, cfg, class_names=NAMES, scorer=MeanScorer(rec, thr, refuse={2}))
    # the first class left short stops the run: nothing is drawn after it
    cfg.max_tries = 1.5
    rec = Recorder(G)
    scorer = MeanScorer(rec, thr, refuse={1, 2})
    with pytest.raises(ValueError, match=r"class 1 \(b\)"):
        synthesize(rec, REAL, cfg, class_names=NAMES, scorer=scorer)
    assert scorer.generated[2] == 0
    cfg.allow_shortfall = True
    cfg.max_tries = 10.0
    rec = Recorder(G)
    scorer = MeanScorer(rec, thr, refuse={2})
    res = synthesize(rec, REAL, cfg, class_names=NAMES, scorer=scorer)
    want = _want(max(REAL))
    assert counts(res.labels) == [want[0], want[1], 0]
    short = res.per_class[2]
    assert short["written"] == 0 and short["requested"] == want[2] and short["rejection_rate"] == 1.0
    assert short["generated"] == scorer.generated[2] == math.ceil(10.0 * want[2])
    out = tmp_path / "short"
    out.mkdir()
    man = manifest_for(res, checkpoint="ckpt", meta=dict(step=1, data={}), cfg=cfg, ema=True,
                       fmt="npz", class_names=NAMES, channels=1, resolution=32, mode="majority",
                       classifier="clf.pt", bank=None, device="cpu", padded=True)
    write_export(str(out), res, fmt="npz", class_names=NAMES, manifest=man, progress=False)
    m = read_manifest(str(out))
    assert [r["written"] for r in m["per_class"]][2] == 0 and m["per_class"][2]["requested"] == want[2]
    assert m["filter"]["allow_shortfall"] is True
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 2 | c |"))
    cells = [s.strip() for s in row.strip("|").split("|")]
    assert cells[2:6] == [str(REAL[2]), str(want[2]), "0", str(REAL[2])]
    assert float(cells[7]) == 100.0
    ds, _, _ = open_export(str(out), progress=False)
    assert counts(ds.labels) == [want[0], want[1], 0]


@pytest.mark.parametrize("kw", [
    dict(count=-1), dict(count=5, total=3), dict(total=-2), dict(truncation=0.0),
    dict(batch_size=0), dict(min_confidence=1.5), dict(max_tries=0.5), dict(mix=-3), dict(mix=True),
    dict(mix_pairs=0), dict(mix_lambda=(0.8, 0.2)), dict(mix_lambda=(-0.1, 0.5)),
])
def test_config_errors(kw):
    with pytest.raises(ValueError):
        SynthConfig(**kw).check()


def test_synthesize_input_errors(generator):
    G, _ = generator
    with pytest.raises(ValueError, match="scorer"):
        synthesize(G, REAL, SynthConfig(min_confidence=0.5, progress=False))
    with pytest.raises(ValueError, match="confusion"):
        synthesize(G, REAL, SynthConfig(mix=2, progress=False))
    with pytest.raises(ValueError, match="2 real class counts"):
        synthesize(G, REAL[:2], SynthConfig(progress=False))
    with pytest.raises(ValueError, match="confusion matrix"):
        synthesize(G, REAL, SynthConfig(mix=2, progress=False), confusion=np.eye(4))
    with pytest.raises(ValueError, match="pairs"):     # 3 classes have only 3 pairs
        synthesize(G, REAL, SynthConfig(mix=2, mix_pairs=4, progress=False), confusion=np.eye(3))


def test_trained_on_padded():
    spec = lambda d: dict(data=dict(spec=dict(data=d)))  # noqa: E731
    assert trained_on_padded(spec("x/train.npz")) and trained_on_padded(spec("mnist-5k"))
    assert not trained_on_padded(spec("data/folder")) and not trained_on_padded({})


@pytest.mark.gpu
def test_synthesize_on_the_gpu_gives_the_cpu_images(generator):
    """Latents come from the CPU generator whatever the device, so a CUDA export draws the
    same z; in float32 its images equal the CPU ones up to the rounding of a few pixels."""
    G, _ = generator
    cfg = SynthConfig(count=30, mix=4, mix_pairs=1, seed=5, progress=False)
    conf = np.array([[.8, .15, .05], [.1, .7, .2], [.05, .3, .65]])
    cpu = synthesize(G, REAL, cfg, confusion=conf)
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False   # float32 arithmetic
    try:
        gpu = synthesize(_on_cuda(G), REAL, cfg, confusion=conf)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    assert np.array_equal(cpu.labels, gpu.labels) and np.array_equal(cpu.mixed_targets, gpu.mixed_targets)
    diff = np.abs(cpu.images.astype(int) - gpu.images.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def _on_cuda(G):
    from sgan_fast.models import Generator
    H = Generator(**G.config)
    H.load_state_dict(G.state_dict())
    return H.cuda().eval()
