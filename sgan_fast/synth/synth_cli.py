"""`sgan-fast synthesize`: a synthetic training set from a generator checkpoint.

    sgan-fast synthesize --checkpoint runs/fmnist/gan --out runs/fmnist/synth
      -> every class topped up to the largest class's count (the checkpoint records the
         training set's class counts), as synthetic.npz, with manifest.json and report.md
    sgan-fast synthesize ... --count 1000            # every class up to 1,000 images
    sgan-fast synthesize ... --total 20000           # 20,000 images, rarest classes first
    sgan-fast synthesize ... --format folder         # synthetic/000/..., one folder per class
    sgan-fast synthesize ... --classifier runs/fmnist/classify/classifier.pt --min-confidence 0.5
                                                     # keep images the classifier recognises
    sgan-fast synthesize ... --mix 5000 --mix-bank runs/fmnist/classify/bank.npz
                                                     # + 5,000 inter-class images (mixed.npz)

Several processes: torchrun --nproc-per-node N -m sgan_fast synthesize ... splits the
generator's batches over the ranks; rank 0 gathers the images and writes the same export
as one process (the latents of an image do not depend on the number of ranks).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .._device import pick_device
from .._io import refuse_overwrite, writable_dir
from ..distributed import same_outcome
from ..distributed import add_dist_args
from .export import OUTPUTS, manifest_for, write_export
from .plan import soft_confusion, topup_counts
from .synthesize import ClassifierScorer, SynthConfig, synthesize, trained_on_padded


def _count(text: str):
    if text == "majority":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--count must be 'majority' or a number of images, "
                                         f"got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"--count must be >= 0, got {n}")
    return n


def _range(text: str) -> tuple:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mix-lambda must be 'lo,hi', got {text!r}") from None
    return lo, hi


def add_parser(sub) -> None:
    p = sub.add_parser("synthesize", help="write a class-balanced synthetic training set (and "
                       "inter-class images) from a generator checkpoint", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = SynthConfig()
    p.add_argument("--checkpoint", required=True, help="a `sgan-fast train` run folder or checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--format", default="npz", choices=["npz", "folder"],
                   help="synthetic.npz (default) or synthetic/<class>/*.png")
    g = p.add_argument_group("how many")
    g.add_argument("--count", type=_count, default="majority",
                   help="top every class up to this many images (real + synthetic); 'majority' "
                        "(default): the largest class's count")
    g.add_argument("--total", type=int, default=None,
                   help="instead: this many synthetic images in all, to the rarest classes first")
    s = p.add_argument_group("sampling")
    s.add_argument("--truncation", type=float, default=None, help="redraw latents with |z| > t")
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--no-ema", action="store_true", help="the raw generator, not its EMA")
    s.add_argument("--batch-size", type=int, default=d.batch_size)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    f = p.add_argument_group("filtering by classifier confidence")
    f.add_argument("--classifier", default=None, help="a `sgan-fast classify` classifier.pt")
    f.add_argument("--min-confidence", type=float, default=None,
                   help="keep an image only if the classifier gives its class at least this")
    f.add_argument("--max-tries", type=float, default=d.max_tries,
                   help="draw at most this many times a class's count (default 10)")
    f.add_argument("--allow-shortfall", action="store_true",
                   help="write classes that could not be filled (default: stop with an error)")
    m = p.add_argument_group("inter-class images")
    m.add_argument("--mix", type=int, default=0, help="this many images from l e_i + (1 - l) e_j")
    m.add_argument("--mix-bank", default=None,
                   help="the soft-label bank of the training set (`sgan-fast classify`'s "
                        "bank.npz): its held-out probabilities say which classes are alike")
    m.add_argument("--mix-pairs", type=int, default=None,
                   help="how many of the most alike class pairs (default: one per class)")
    m.add_argument("--mix-lambda", type=_range, default=d.mix_lambda,
                   help="l is drawn uniformly from lo,hi (default 0.2,0.8)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_dist_args(p)


def _bank_confusion(path: str, meta: dict, C: int) -> np.ndarray:
    from ..labels.bank import SoftLabelBank
    from ..labels.fingerprint import DatasetFingerprint

    fp = (meta.get("data") or {}).get("fingerprint")
    bank = SoftLabelBank.load(path, expect=DatasetFingerprint.from_json(fp) if fp else None)
    if bank.num_classes != C:
        raise ValueError(f"the bank {path} has {bank.num_classes} classes, the generator {C}")
    return soft_confusion(bank.dense_probabilities().numpy(), bank.labels_tensor.cpu().numpy(), C)


def _check_memory(n: int, res: int, channels: int) -> None:
    """The export is held in memory until it is written: refuse one that cannot fit, before
    any image is generated, rather than be killed near the end."""
    need = 2 * n * res * res * channels      # the per-class arrays, then their concatenation
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return
    if need > 0.8 * avail:
        raise ValueError(f"{n} images of {res}x{res}x{channels} need about {need / 2**30:.1f} GiB of "
                         f"memory while they are written, and {avail / 2**30:.1f} GiB is available: "
                         "run on a machine with more memory, or ask for fewer images (--count N)")


def run(args) -> int:
    from ..distributed import current
    from ..train.sampling import load_generator

    world = current()
    main = world.is_main
    with same_outcome(world):
        cfg = SynthConfig(count=args.count, total=args.total, truncation=args.truncation,
                          seed=args.seed, batch_size=args.batch_size, min_confidence=args.min_confidence,
                          max_tries=args.max_tries, allow_shortfall=args.allow_shortfall, mix=args.mix,
                          mix_pairs=args.mix_pairs, mix_lambda=args.mix_lambda,
                          progress=not args.quiet and main)
        cfg.check()
        if (args.min_confidence is None) != (args.classifier is None):
            raise ValueError("filtering needs both --classifier and --min-confidence")
        if args.min_confidence is None and (args.max_tries != SynthConfig.max_tries or args.allow_shortfall):
            raise ValueError("--max-tries and --allow-shortfall apply to filtering: give --classifier "
                             "and --min-confidence too")
        if args.mix and not args.mix_bank:
            raise ValueError("--mix needs --mix-bank (the training set's bank.npz) to pick class pairs")
        if not args.mix and (args.mix_bank or args.mix_pairs is not None
                             or tuple(args.mix_lambda) != SynthConfig.mix_lambda):
            raise ValueError("--mix-bank, --mix-pairs and --mix-lambda apply to inter-class images: "
                             "give --mix N (how many) too")
        out = args.out
        refuse_overwrite(out, OUTPUTS, args.overwrite)
        if main:
            writable_dir(out)
    world.check_shared_dir(out)       # rank 0 writes the export there (several processes)
    with same_outcome(world):
        device = pick_device(args.device)
        G, meta = load_generator(args.checkpoint, ema=not args.no_ema, device=device)
        C = int(G.config["num_classes"])
        data = meta.get("data") or {}
        fp = data.get("fingerprint")
        if not fp:
            raise ValueError(f"{args.checkpoint} records no training-set class counts: is it a "
                             "`sgan-fast train` checkpoint?")
        real = [int(c) for c in fp["class_counts"]]
        if len(real) != C:
            raise ValueError(f"{args.checkpoint}: {len(real)} class counts for a {C}-class generator")
        names = list(data.get("class_names") or [str(c) for c in range(C)])
        channels = int(G.config.get("out_channels", 3))
        if main:       # rank 0 holds the export; the other ranks a round of batches
            _check_memory(int(topup_counts(real, cfg.count, total=cfg.total).sum()) + cfg.mix,
                          int(G.config["resolution"]), channels)
        padded = trained_on_padded(meta)
        scorer = (ClassifierScorer(args.classifier, num_classes=C, channels=channels, device=device,
                                   crop=padded) if args.classifier else None)
        confusion = _bank_confusion(args.mix_bank, meta, C) if args.mix else None
    if scorer is not None and scorer.meta.get("fingerprint") != fp and main:
        print(f"sgan-fast synthesize: note: the classifier {args.classifier} was trained on other "
              "data than the generator; it filters as it is", file=sys.stderr)
    mode = (f"{args.total} in all, rarest classes first" if args.total is not None
            else f"every class topped up to {'the largest class' if args.count == 'majority' else args.count}")
    if main:
        print(f"sgan-fast synthesize: {C} classes (real per class {', '.join(map(str, real))}), "
              f"{mode}, from step {meta['step']} on {device}"
              + (f", {world.world_size} processes" if world.distributed else ""), file=sys.stderr)
    result = synthesize(G, real, cfg, class_names=names, scorer=scorer, confusion=confusion,
                        world=world)
    # rank 0 writes the export; the other ranks wait for its outcome (and share it)
    with same_outcome(world):
        if main:
            _write(args, out, result, meta, cfg, names, channels, G, mode, device, padded)
    return 0


def _write(args, out, result, meta, cfg, names, channels, G, mode, device, padded) -> None:
    manifest = manifest_for(result, checkpoint=args.checkpoint, meta=meta, cfg=cfg,
                            ema=not args.no_ema, fmt=args.format, class_names=names,
                            channels=channels, resolution=int(G.config["resolution"]), mode=mode,
                            classifier=args.classifier, bank=args.mix_bank, device=device.type,
                            padded=padded)
    written = write_export(out, result, fmt=args.format, class_names=names, manifest=manifest,
                           progress=not args.quiet)
    short = [r for r in result.per_class if r["written"] < r["requested"]]
    if short:
        print(f"sgan-fast synthesize: warning: {len(short)} class(es) are short of their count "
              "(--allow-shortfall); see report.md", file=sys.stderr)
    print(f"sgan-fast synthesize: {len(result.labels)} images"
          + (f" + {len(result.mixed_labels)} inter-class" if len(result.mixed_labels) else "")
          + f" -> {', '.join(os.path.join(out, w) for w in written)}")
