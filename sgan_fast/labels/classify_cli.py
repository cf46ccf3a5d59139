"""`sgan-fast classify`: train the classifier on the (imbalanced) training set and write the
soft-label bank, the classifier and the report into one folder.

    sgan-fast classify --data fashion-mnist --imbalance exp --rho 100 --out runs/fmnist_lt
      -> runs/fmnist_lt/bank.npz        every training image's calibrated probabilities
         runs/fmnist_lt/classifier.pt   the folds' models (evaluation's domain features)
         runs/fmnist_lt/report.json, report.md   balanced / per-class accuracy, max probability
         runs/fmnist_lt/subset.npz      the imbalanced subset's manifest (with --imbalance)
"""

from __future__ import annotations

import argparse
import json
import os

from .._io import atomic_write_text, refuse_overwrite, writable_dir
from ..data.spec import add_data_args, data_spec, open_data
from .classifier import BALANCE, ClassifyConfig, classify, report_table

OUTPUTS = ("bank.npz", "classifier.pt", "report.json", "report.md", "subset.npz")


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="train a classifier and write the soft-label bank",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    d = ClassifyConfig()
    p.add_argument("--out", required=True, help="output folder")
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


def run(args) -> int:
    out = args.out
    refuse_overwrite(out, OUTPUTS, args.overwrite)
    cfg = ClassifyConfig(arch=args.arch, weights=args.weights, input_size=args.input_size,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, balance=args.balance, tau=args.tau,
                         augment=not args.no_augment, flip=not args.no_flip, folds=args.folds,
                         calibrate=not args.no_calibrate, calib_fraction=args.calib_fraction,
                         amp=not args.no_amp, seed=args.seed, device=args.device, topk=args.topk,
                         bank_dtype=args.bank_dtype, progress=not args.quiet)
    cfg.check()   # before the data is opened: a bad flag should not cost a decode
    # The output folder must be writable before hours of training, not after.
    writable_dir(out)
    train, test, subset = open_data(data_spec(args))
    print(f"sgan-fast classify: {len(train)} training images, {train.num_classes} classes "
          f"(per class {', '.join(str(int(c)) for c in train.class_counts())})"
          + (f"; test split of {len(test)}" if test is not None else "; no test split"))
    result = classify(train, cfg, test_set=test)
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
    return 0
