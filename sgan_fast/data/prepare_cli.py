"""`sgan-fast prepare`: decode a dataset once into a prepared folder (sgan_fast.data.prepared).

    sgan-fast prepare --data imagenet-lt --root /data/imagenet --list ImageNet_LT_train.txt \\
        --test-list ImageNet_LT_test.txt --resolution 64 --out /data/inlt64 --workers 8
    sgan-fast classify --data /data/inlt64 ...     # then every command reads --data <folder>

The training split (after --imbalance / --subset, as the other commands would see it) and
the test split when the data has one. Run again after an interruption to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil

from .prepared import MANIFEST, is_prepared, prepare
from .spec import add_data_args, data_spec, open_data


def add_parser(sub) -> None:
    p = sub.add_parser("prepare", help="decode a dataset once into a memory-mapped folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--out", required=True, help="the prepared folder")
    p.add_argument("--config", default=None,
                   help="a preset's name or a config file (as `train --config`): its data section "
                        "gives the data flags' defaults")
    p.add_argument("--workers", type=int, default=0,
                   help="decoding processes for image folders and lists (default 0: this one)")
    p.add_argument("--chunk", type=int, default=1024,
                   help="images per chunk; progress is recorded after each (the resume point)")
    p.add_argument("--overwrite", action="store_true",
                   help="remove an earlier prepared folder at --out first")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    if args.resolution is None:
        raise ValueError("--resolution is needed: the images are stored at the model's "
                         "resolution (image folders and lists are resized to it)")
    out = args.out
    if os.path.exists(out) and not is_prepared(out) and os.listdir(out):
        raise ValueError(f"{out} exists and is not a prepared folder (no {MANIFEST}); choose "
                         "an empty or new folder")
    if args.overwrite and is_prepared(out):
        shutil.rmtree(out)
    spec = data_spec(args)
    train, test, _ = open_data(spec)
    source = dataclasses.asdict(spec)
    for split, ds in (("train", train), ("test", test)):
        if ds is None:
            continue
        if tuple(ds[0][0].shape[1:]) != (args.resolution, args.resolution):
            ds = ds.padded(args.resolution) if hasattr(ds, "padded") else ds
        entry = prepare(ds, out, split, workers=args.workers, chunk=args.chunk,
                        progress=not args.quiet, source=source)
        n, h, w, c = entry["shape"]
        print(f"sgan-fast prepare: {split}: {n} images {h}x{w}x{c}, {entry['num_classes']} "
              f"classes -> {out}")
    return 0
