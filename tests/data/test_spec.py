"""Opening datasets by name, as every command does: built-ins, folders, .npz, imbalance."""

import numpy as np
import pytest

from sgan_fast.data import ArrayDataset, ImbalancedSubset, make_imbalanced
from sgan_fast.data.spec import DataSpec, open_data


def _npz(tmp_path, N=60, C=3):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (N, 6, 6, 3), dtype=np.uint8), labels=np.arange(N) % C)
    return str(path)


def test_npz_with_imbalance_and_test_split(tmp_path):
    path = _npz(tmp_path)
    train, test, subset = open_data(DataSpec(path, imbalance="exp", rho=4, imbalance_seed=None))
    assert subset.counts == (20, 10, 5) and len(train) == 35 and test is None
    assert train.fingerprint().hash_of == "keys"
    train2, test2, _ = open_data(DataSpec(path, test_data=path))
    assert len(train2) == 60 and isinstance(test2, ArrayDataset) and len(test2) == 60


def test_a_saved_subset_manifest_reopens_the_same_training_set(tmp_path):
    path = _npz(tmp_path)
    full = ArrayDataset.from_npz(path)
    make_imbalanced(full.labels, "step", rho=5, n_max=20, seed=1).save(tmp_path / "s.npz")
    a, _, sub = open_data(DataSpec(path, subset=str(tmp_path / "s.npz")))
    b = full.subset(ImbalancedSubset.load(tmp_path / "s.npz").indices)
    assert a.fingerprint() == b.fingerprint() and isinstance(sub, ImbalancedSubset)
    with pytest.raises(ValueError, match="either an imbalance profile or a subset"):
        open_data(DataSpec(path, imbalance="exp", subset=str(tmp_path / "s.npz")))


def test_image_folder_imbalance_decodes_and_keeps_the_file_names(tmp_path):
    from PIL import Image
    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((5, 5, 3), 40 * i, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    train, test, subset = open_data(DataSpec(str(tmp_path / "f"), imbalance="exp", rho=3,
                                             imbalance_seed=None, progress=False))
    assert subset.counts == (6, 2) and train.paths == [f"a/{i}.png" for i in range(6)] + ["b/0.png", "b/1.png"]
    assert train.fingerprint().hash_of == "paths"


def test_unknown_data_is_named(tmp_path):
    with pytest.raises(ValueError, match="neither a built-in dataset"):
        open_data(DataSpec("cifar-11"))
    with pytest.raises(FileNotFoundError, match="not found"):
        open_data(DataSpec(str(tmp_path / "missing.npz")))
    with pytest.raises(ValueError, match="needs --root"):
        open_data(DataSpec("mnist"))


def _parse(argv):
    import argparse
    from sgan_fast.data.spec import add_data_args
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    return parser.parse_args(argv)


def test_num_samples_is_the_reference_profiles_budget(tmp_path):
    import dataclasses
    from sgan_fast.data.spec import data_spec
    path = _npz(tmp_path, N=600, C=3)             # 200 images per class
    labels = np.arange(600) % 3
    for n in (100, 200):
        spec = data_spec(_parse(["--data", path, "--imbalance", "reference", "--num-samples", str(n)]))
        assert spec.num_samples == n
        train, _, sub = open_data(spec)
        # the definition for C <= 10: int(n * diff(lognorm(s=3).cdf(linspace(0, 3, 4)))) is
        # [50, 9, 5] for n = 100 (scipy.stats), which RandomState(15)'s permutation [2, 1, 0] reverses
        want = {100: (5, 9, 50), 200: (10, 18, 100)}[n]
        assert sub.counts == want and len(train) == sum(want) and sub.params["num_samples"] == n
        first = [np.flatnonzero(labels == c)[:k] for c, k in enumerate(want)]
        assert sub.indices.tolist() == sorted(np.concatenate(first).tolist())
    # not given: the reference's default 5000, too many for 200 images a class
    spec = data_spec(_parse(["--data", path, "--imbalance", "reference"]))
    assert spec.num_samples == 5000 and not spec.download
    with pytest.raises(ValueError, match=r"class 0 has 200 images but the reference profile asks for 257 \(3 class"):
        open_data(spec)
    # a spec recorded before these fields existed (a checkpoint's data.spec) still builds the same
    old = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("num_samples", "download")}
    assert DataSpec(**old) == spec


@pytest.mark.parametrize("argv,match", [
    (["--imbalance", "exp", "--num-samples", "100"], "goes with --imbalance reference, not --imbalance exp"),
    (["--num-samples", "5000"], "not --imbalance none"),      # given, even at the default value
    (["--subset", "s.npz", "--num-samples", "100"], "not --imbalance none"),
])
def test_num_samples_is_refused_without_the_reference_profile(tmp_path, argv, match):
    from sgan_fast.data.spec import data_spec
    with pytest.raises(ValueError, match=match):
        data_spec(_parse(["--data", _npz(tmp_path)] + argv))


def test_num_samples_must_be_a_positive_integer(tmp_path, capsys):
    path = _npz(tmp_path)
    for bad in ("0", "-5", "1.5", "many"):
        with pytest.raises(SystemExit):
            _parse(["--data", path, "--imbalance", "reference", "--num-samples", bad])
        assert "--num-samples: expected a positive integer" in capsys.readouterr().err
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="--num-samples must be a positive integer"):
            open_data(DataSpec(path, imbalance="reference", num_samples=bad))
    with pytest.raises(ValueError, match="goes with --imbalance reference, not --imbalance step"):
        open_data(DataSpec(path, imbalance="step", num_samples=100))
    with pytest.raises(ValueError, match="num_samples .* must be a positive integer, got 0"):
        make_imbalanced(np.arange(60) % 3, "reference", num_samples=0)
