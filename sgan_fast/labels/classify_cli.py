"""`sgan-fast classify`: train the classifier on the (imbalanced) training set and write the
soft-label bank, the classifier and the report into one folder.

    sgan-fast classify --data fashion-mnist --imbalance exp --rho 100 --out runs/fmnist_lt
      -> runs/fmnist_lt/bank.npz        every training image's calibrated probabilities
         runs/fmnist_lt/classifier.pt   the folds' models (evaluation's domain features)
         runs/fmnist_lt/report.json, report.md   balanced / per-class accuracy, max probability
         runs/fmnist_lt/subset.npz      the imbalanced subset's manifest (with --imbalance)

Several processes (one per GPU) train the cross-fitting folds in parallel; rank 0 writes
the same files one process writes:

    torchrun --nproc-per-node 4 -m sgan_fast classify --data fashion-mnist --folds 5 --out runs/x
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .._io import atomic_write_text, refuse_overwrite, writable_dir
from ..data.spec import add_data_args, data_spec, open_data
from ..distributed import add_dist_args, current, same_outcome
from .classifier import (BALANCE, ONE_FOLD_SEVERAL_RANKS, ClassifyConfig, agree_on_settings,
                         classify, report_table)

OUTPUTS = ("bank.npz", "classifier.pt", "report.json", "report.md", "subset.npz")


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="train a classifier and write the soft-label bank",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    d = ClassifyConfig()
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None,
                   help="a preset's name or a config file (as `train --config`): its data section "
                        "gives the data flags' defaults")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run")
    m = p.add_argument_group("model")
    m.add_argument("--arch", default=d.arch, help="auto (resnet20 up to 64 px, resnet18 above), "
                   "resnet8/20/32/18/34, torchvision:<name> or timm:<name>")
    m.add_argument("--weights", default=None,
                   help="local weights file to start from (e.g. ImageNet-pretrained; never downloaded)")
    m.add_argument("--input-size", type=int, default=None, help="torchvision/timm models: resize input to this")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=d.epochs, help="0 = predict with --weights as they are")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--balance", default=d.balance, choices=BALANCE,
                   help="imbalance-aware training: logit adjustment or class-balanced batches")
    t.add_argument("--tau", type=float, default=d.tau, help="logit adjustment strength")
    t.add_argument("--no-augment", action="store_true", help="no random translations")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips (digits, text)")
    t.add_argument("--folds", type=int, default=d.folds, help="cross-fitting folds (1 = off)")
    t.add_argument("--no-calibrate", action="store_true", help="keep temperature 1")
    t.add_argument("--calib-fraction", type=float, default=d.calib_fraction,
                   help="--folds 1: share of images held out to fit the temperature")
    t.add_argument("--no-amp", action="store_true", help="float32 on a GPU too")
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--device", default=d.device, help="auto, cpu or cuda[:i]")
    b = p.add_argument_group("bank")
    b.add_argument("--topk", type=int, default=None, help="store each row's top-k (many classes)")
    b.add_argument("--bank-dtype", default=d.bank_dtype, choices=["float32", "float16", "bfloat16"])
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_dist_args(p)


def run(args) -> int:
    """One process, or every rank of a torchrun launch: the folds are spread over the ranks
    (classify's world=), rank 0 alone prints and writes; a failure on any rank fails every
    rank with the same message, so every rank exits with the same code."""
    world = current()
    main = world.is_main
    out = args.out
    with same_outcome(world):
        refuse_overwrite(out, OUTPUTS, args.overwrite)
        cfg = ClassifyConfig(arch=args.arch, weights=args.weights, input_size=args.input_size,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, balance=args.balance, tau=args.tau,
                             augment=not args.no_augment, flip=not args.no_flip, folds=args.folds,
                             calibrate=not args.no_calibrate, calib_fraction=args.calib_fraction,
                             amp=not args.no_amp, seed=args.seed, device=args.device,
                             topk=args.topk, bank_dtype=args.bank_dtype,
                             progress=not args.quiet and main)
        cfg.check()   # before the data is opened: a bad flag should not cost a decode
        if world.distributed and cfg.folds < 2:
            raise ValueError(ONE_FOLD_SEVERAL_RANKS.format(n=world.world_size))
        # The output folder must be writable before hours of training, not after.
        if main:
            writable_dir(out)
    world.check_shared_dir(out)   # rank 0 writes there; on several nodes it must be shared
    agree_on_settings(world, cfg)  # before the data is opened
    with same_outcome(world):
        spec = data_spec(args)
        spec.progress = spec.progress and main
        train, test, subset = open_data(spec)
    if main:
        print(f"sgan-fast classify: {len(train)} training images, {train.num_classes} classes "
              f"(per class {', '.join(str(int(c)) for c in train.class_counts())})"
              + (f"; test split of {len(test)}" if test is not None else "; no test split"))
        if world.distributed:
            print(f"sgan-fast classify: {cfg.folds} folds over {world.world_size} processes ("
                  + ", ".join(f"rank {r}: {_folds_text(world, r, cfg.folds)}"
                              for r in range(world.world_size))
                  + "); progress lines are rank 0's")
    result = classify(train, cfg, test_set=test, world=world)
    with same_outcome(world):     # rank 0 writes; a failure there is every rank's exit code
        if main:
            _write(out, result, cfg, subset)
    return 0


def _folds_text(world, rank: int, folds: int) -> str:
    part = dataclasses.replace(world, rank=rank).shard(folds)
    if not len(part):
        return "none"
    return (f"fold {part.start + 1}" if len(part) == 1
            else f"folds {part.start + 1}-{part.stop}")


def _write(out, result, cfg, subset) -> None:
    path = {f: os.path.join(out, f) for f in OUTPUTS}
    result.bank.save(path["bank.npz"])
    result.save_classifier(path["classifier.pt"], cfg)
    if subset is not None:
        subset.save(path["subset.npz"])
    elif os.path.exists(path["subset.npz"]):
        os.unlink(path["subset.npz"])   # an earlier run's subset does not describe this bank
    atomic_write_text(path["report.json"], json.dumps(result.report, indent=2, allow_nan=False) + "\n")
    table = report_table(result.report)
    atomic_write_text(path["report.md"], table)
    print(table)
    written = [f for f in OUTPUTS if f != "subset.npz" or subset is not None]
    print(f"sgan-fast classify: wrote {', '.join(written)} to {out}")
