"""The presets (configs/): every one loads and resolves; the reference's 24 CIFAR runs carry its
scripts' settings; a config's data section feeds the data flags of train, classify and
prepare, and the command line overrides it."""

import argparse
import os

import numpy as np
import pytest
import yaml

from sgan_fast import cli
from sgan_fast.data.imbalance import reference_counts
from sgan_fast.data.spec import BUILTIN, JSONS, LISTS
from sgan_fast.presets import (PRESET_DIR, apply_config_data, data_settings, list_presets,
                               resolve_config)
from sgan_fast.train.config import TrainConfig, read_yaml_settings

from ..data.test_cifar import _write_cifar10

REFERENCE_STEMS = ("biggan", "cr-biggan", "DiffAugment-biggan", "DiffAugment-cr-biggan")
REFERENCE_RUNS = [f"{stem}-{data}{part}" for stem in REFERENCE_STEMS
                  for data in ("cifar10", "cifar100") for part in ("", "-0.2", "-0.1")]


def _commands():
    """The sgan-fast subparsers, as cli.main builds them."""
    from sgan_fast.data import prepare_cli
    from sgan_fast.labels import classify_cli
    from sgan_fast.metrics import eval_cli
    from sgan_fast.train import train_cli
    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    for m in (prepare_cli, classify_cli, train_cli, eval_cli):
        m.add_parser(sub)
    return sub.choices


def test_every_preset_loads_resolves_and_names_a_known_dataset():
    names = list_presets()
    assert set(REFERENCE_RUNS) <= set(names)
    assert {"imagenet-lt-64", "imagenet-lt-128", "inat2018-64", "inat2019-64"} <= set(names)
    train = _commands()["train"]
    for name in names:
        path = resolve_config(name)
        assert os.path.dirname(path) == PRESET_DIR
        cfg = TrainConfig(**read_yaml_settings(path)).resolved()   # typed and checked
        data = data_settings(path, train)
        assert data["data"] in BUILTIN + LISTS + JSONS, name
        assert data.get("resolution", cfg.resolution) == cfg.resolution, name
        assert cfg.target == "softmax", name      # the soft-label target, each of them


def test_the_reference_runs_carry_the_scripts_settings():
    # What raven38/softlabel-gan's scripts/*.sh pass (and BigGAN-PyTorch's defaults for what
    # they do not), written out here from the scripts: every run --batch_size 50
    # --num_D_steps 4 --G_lr 2e-4 --D_lr 2e-4 --G_init N02 --D_init N02 --G_attn 0 --D_attn 0
    # --ema_start 1000 --mirror_augment --save_every 2000 --test_every 4000 --seed 0
    # --num_inception_images 10000 --which_best FID; --num_epochs 1000 (C10) / 2000 (C100)
    # on full data, 5000 with --num_samples 10000 (-0.2) / 5000 (-0.1); --CR 10 in the cr
    # runs; --DiffAugment translation,cutout, except cutout in the full-data DiffAugment-cr.
    for name in REFERENCE_RUNS:
        s = yaml.safe_load(open(resolve_config(name)))
        data = s.pop("data")
        C = 10 if "cifar10-" in name + "-" else 100
        part = name.rsplit("-", 1)[1] if name.endswith(("-0.1", "-0.2")) else None
        num_samples = {"0.2": 10000, "0.1": 5000, None: None}[part]
        assert data == dict(data=f"cifar{C}", **({} if part is None else
                            dict(imbalance="reference", num_samples=num_samples))), name
        n = 50000 if part is None else int(reference_counts(C, num_samples).sum())
        epochs = 5000 if part else (1000 if C == 10 else 2000)
        augment = ("" if not name.startswith("DiffAugment") else
                   "cutout" if name.startswith("DiffAugment-cr") and part is None else
                   "translation,cutout")
        expect = dict(resolution=32, batch_size=50, d_steps=4, g_lr=2e-4, d_lr=2e-4, init="N02",
                      attention=0, ema_start=1000, ema_decay=0.9999, mirror=True,
                      adam_beta1=0.0, adam_beta2=0.999, adam_eps=1e-8, ch=64, z_dim=128,
                      cr=10.0 if "cr-" in name else 0.0, augment=augment, seed=0,
                      steps=epochs * n // 200, ckpt_every=2000, eval_every=4000,
                      eval_per_class=10000 // C, best_metric="fid", target="softmax",
                      sampler="instance")
        assert s == expect, name
    # the counts behind the steps: CIFAR-10 "0.1" keeps 3,208 images (docs/data.md)
    assert yaml.safe_load(open(resolve_config("biggan-cifar10-0.1")))["steps"] == 5000 * 3208 // 200


def test_a_config_data_section_feeds_the_data_flags_and_flags_win(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("steps: 3\ndata:\n  data: cifar10\n  imbalance: reference\n"
                   "  num-samples: 10000\n  root: /data/c10\n")
    for command in ("train", "classify", "prepare", "eval"):
        commands = _commands()
        argv = [command, "--config", str(cfg), "--out", str(tmp_path / "o")]
        apply_config_data(commands, argv)
        args = commands[command].parse_args(argv[1:])        # no --data needed
        assert (args.data, args.imbalance, args.num_samples, args.root) == (
            "cifar10", "reference", 10000, "/data/c10"), command
        commands = _commands()
        argv += ["--num-samples", "5000", "--root", "/elsewhere"]
        apply_config_data(commands, argv)
        args = commands[command].parse_args(argv[1:])
        assert (args.num_samples, args.root) == (5000, "/elsewhere"), command
    # the training settings of the file are train's: read apart from the data section
    assert read_yaml_settings(cfg) == {"steps": 3}


@pytest.mark.parametrize("text, message", [
    ("data:\n  dataset: cifar10\n", "data: unknown setting 'dataset'"),
    ("data:\n  data: cifar10\n  num_samples: many\n", "num_samples: 'many' is not a valid value"),
    ("data:\n  data: cifar10\n  imbalance: zipf\n", "imbalance must be one of none, exp"),
    ("data: cifar10\n", "`data` must be a mapping of data flags"),
    ("data:\n  data: cifar10\n  download: 1\n", "download must be true or false"),
])
def test_a_bad_data_section_is_named(tmp_path, capsys, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(cfg) in err, err


def test_an_unknown_config_name_lists_the_presets(tmp_path, capsys):
    assert cli.main(["train", "--config", "biggan-cifar11", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--config biggan-cifar11: no such file, and no preset of that name" in err
    assert "cr-biggan-cifar10-0.1" in err and "imagenet-lt-64" in err


def test_a_reference_preset_trains_end_to_end_with_the_data_it_names(tmp_path, capsys):
    # The "0.1" run's data on a CIFAR-10 folder just big enough for the reference profile at
    # 5000 (each class 3 images over its count; test_cifar.py), one step of a tiny model:
    # the preset's data section, its settings and the command line's overrides all arrive.
    counts = reference_counts(10, 5000)
    y = np.random.default_rng(1).permutation(np.repeat(np.arange(10), counts + 3))
    root = tmp_path / "cifar-10-batches-py"
    _write_cifar10(root, y)
    out = tmp_path / "run"
    rc = cli.main(["train", "--config", "DiffAugment-cr-biggan-cifar10-0.1", "--root", str(root),
                   "--target", "onehot", "--ch", "4", "--z-dim", "16", "--shared-dim", "8",
                   "--steps", "1", "--eval-every", "0", "--device", "cpu", "--no-progress",
                   "--no-tensorboard", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"on {int(counts.sum())} images, 10 classes" in err and "batch 50 x 4 D steps" in err
    saved = yaml.safe_load(open(out / "config.yaml"))
    assert (saved["augment"], saved["cr"], saved["init"], saved["adam_eps"], saved["ch"],
            saved["steps"]) == ("translation,cutout", 10.0, "N02", 1e-8, 4, 1)
