"""`sgan-fast train` and `sgan-fast sample`.

    sgan-fast train --data fashion-mnist --imbalance exp --rho 100 \\
        --bank runs/fmnist/classify/bank.npz --resolution 32 --steps 20000 --out runs/fmnist/gan
    sgan-fast train ... --out runs/fmnist/gan --resume          # continue the latest checkpoint
    sgan-fast sample --checkpoint runs/fmnist/gan --per-class 100 --out runs/fmnist/samples.npz

Settings come from TrainConfig's defaults (per resolution), then --config (a YAML file of
TrainConfig fields), then the flags. A run folder holds config.yaml, log.csv, eval.csv,
checkpoints/latest.pt (and best.pt with --eval-every), samples/*.png and, with the
tensorboard package installed, tensorboard/.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from .. import distributed
from .._device import pick_device
from .._io import atomic_savez, writable_dir
from ..data.spec import add_data_args, data_spec, open_data
from .checkpoint import LATEST, latest_checkpoint, load_checkpoint
from .config import TrainConfig, field_type, read_yaml_settings
from ..presets import resolve_config

_HELP = {
    "resolution": "32, 64 or 128",
    "ch": "channel width (default per resolution: 64, 64, 96)",
    "attention": "self-attention at this resolution (0: none; default: none, 32, 64)",
    "steps": "generator steps to train to (each after --d-steps D steps)",
    "target": "real images' class vectors: onehot (plain BigGAN), softmax[:t], smooth[:a], ols, "
              "mix[:l], each with an optional +topk:k",
    "augment": "DiffAugment policy: any of color,translation,cutout ('' for none)",
    "mirror": "random horizontal flips of real images",
    "reference": "every op impl=ref, eager, float32 (the baseline of benchmarks and tests)",
    "precision": "auto (bf16 autocast on a GPU), bf16 or fp32",
    "compile": "torch.compile G and D (see --compile-scope): auto (on a GPU), on or off",
    "compile_mode": "torch.compile mode; reduce-overhead adds CUDA graphs",
    "compile_scope": "what --compile covers: trunk (G and D's trunk; augmentation and D's "
                     "head eager) or whole (one graph per model call, spectral-norm updates "
                     "inside: G, and D's augmentation, trunk and soft-label head)",
    "max_minutes": "stop, with a checkpoint, after this many minutes (0: no limit)",
    "device": "auto (cuda when present), cpu, cuda or cuda:<i>",
    "eval_every": "FID and intra-class FID every N steps (0: never); keeps best.pt",
    "lecam": "LeCam regularisation weight (0: off)",
    "cr": "consistency regularisation weight, the reference's --CR: lambda * mean((D(x) - "
          "D(DiffAugment(x)))^2) over real images (0: off)",
    "cross_replica": "under torchrun: G's batch norm over every rank's batch (BigGAN's "
                     "cross_replica)",
    "d_accumulate": "each D update in this many equal micro-batches of --batch-size, gradients "
                    "summed (less memory; the same update up to rounding)",
    "g_accumulate": "each G update in this many equal micro-batches of --batch-size; G's batch "
                    "norm then normalises each micro-batch by its own statistics",
    "sampler": "instance, class_balanced or sqrt",
    "deterministic": "torch.use_deterministic_algorithms (bit-for-bit repeatable on the CPU)",
}


def add_config_args(p) -> None:
    """One flag per TrainConfig field (--g-lr, --no-mirror, ...), default None = not given."""
    g = p.add_argument_group("training settings (TrainConfig; defaults per resolution)")
    taken = set(p._option_string_actions)   # --resolution, --seed: shared with the data flags
    for f in dataclasses.fields(TrainConfig):
        if "--" + f.name.replace("_", "-") in taken:
            continue
        flag = "--" + f.name.replace("_", "-")
        base = field_type(f.name)
        default = f.default
        help_ = _HELP.get(f.name, "")
        help_ = f"{help_} (default: {default})" if help_ else f"default: {default}"
        if base is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_)
        else:
            g.add_argument(flag, dest=f.name, type=base, default=None, help=help_)


def config_from_args(args, base: TrainConfig | None = None) -> TrainConfig:
    """base (a checkpoint's config) or the defaults, then the settings the --config file
    gives, then the flags given."""
    cfg = base if base is not None else TrainConfig()
    if args.config:
        cfg = dataclasses.replace(cfg, **read_yaml_settings(resolve_config(args.config)))
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if given.get("max_minutes") == 0:
        given["max_minutes"] = None          # --max-minutes 0: no time limit
    if given.get("device") == "auto":
        given["device"] = None
    if "device" in given and base is not None and given["device"] is None:
        given.pop("device")                  # auto on resume: the checkpoint's device
    return dataclasses.replace(cfg, **given)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train Softlabel-GAN (or the one-hot BigGAN baseline)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--bank", default=None,
                   help="soft-label bank of the training set (`sgan-fast classify`'s bank.npz); "
                        "needed unless --target onehot")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default=None,
                   help="a preset's name (configs/, docs/reproduce.md) or a YAML file of settings, "
                        "with an optional data: section of data flags; flags override it")
    p.add_argument("--resume", action="store_true", help="continue from --out's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh: remove the earlier run's checkpoints, logs, samples "
                        "and config.yaml from --out first (other files stay)")
    e = p.add_argument_group("periodic evaluation")
    e.add_argument("--eval-backend", default="auto", choices=["auto", "classifier", "inception"],
                   help="features for --eval-every: auto = the classifier when --classifier is given")
    e.add_argument("--classifier", default=None, help="classifier.pt from `sgan-fast classify`")
    e.add_argument("--inception", default=None, help="Inception weights file (see `sgan-fast eval`)")
    add_config_args(p)
    distributed.add_dist_args(p)
    p._option_string_actions["--resolution"].help = ("the model's resolution: 32, 64 or 128 (image "
                                                     "folders are resized to it, smaller arrays padded)")

    s = sub.add_parser("sample", help="images from a trained generator: N per class, or a grid")
    s.add_argument("--checkpoint", required=True, help="a checkpoint file or a run folder")
    s.add_argument("--out", required=True,
                   help="an .npz (uint8 images, labels), a folder (one subfolder per class "
                        "number), or a .png grid")
    s.add_argument("--per-class", type=int, default=16, help="images per class (default 16)")
    s.add_argument("--classes", default=None, help="comma-separated class numbers (default: all)")
    s.add_argument("--truncation", type=float, default=None, help="redraw |z| > t (BigGAN's trick)")
    s.add_argument("--no-ema", action="store_true", help="the trained weights, not the EMA")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    s.add_argument("--overwrite", action="store_true")


def _training_data(args, resolution: int):
    args.resolution = resolution   # image folders are resized to the model's resolution
    train, _, _ = open_data(data_spec(args))
    from ..data.datasets import ArrayDataset
    if isinstance(train, ArrayDataset) and tuple(train.resolution) != (resolution, resolution):
        train = train.padded(resolution)
        print(f"sgan-fast train: images padded to {resolution}x{resolution}", file=sys.stderr)
    return train


def evaluator_for(args, train, cfg: TrainConfig, device):
    from ..metrics.features import classifier_backend, inception_backend
    from .periodic_eval import FIDEvaluator
    which = args.eval_backend
    if which == "auto":
        which = "classifier" if args.classifier else "inception"
    if which == "classifier" and not args.classifier:
        raise ValueError("--eval-backend classifier needs --classifier runs/<name>/classifier.pt")
    backend = (classifier_backend(args.classifier) if which == "classifier"
               else inception_backend(args.inception))
    return FIDEvaluator(backend, train, per_class=cfg.eval_per_class, seed=cfg.seed, device=device,
                        progress=cfg.progress)


def run_train(args) -> int:
    """One process, or one rank of a torchrun launch (every rank runs this; rank 0 writes)."""
    world = distributed.current()
    with distributed.same_outcome(world):   # a failure on any rank stops all, before any work
        setup = _train_setup(args, world)
    return _train(args, world, *setup)


def _elastic_restart(args, world) -> bool:
    """torchrun restarted the workers (--max-restarts) of a run that has a checkpoint: resume
    it, whatever --resume/--overwrite said (an --overwrite now would delete the progress).
    Checkpoints record torchrun's run id (TORCHELASTIC_RUN_ID, one per launch: a uuid with
    --standalone, --rdzv-id otherwise); when the launch has one, only a checkpoint of this
    launch is resumed, so a first attempt that died before its first checkpoint does not
    make its restart continue an older run from the folder."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    ckpt = latest_checkpoint(args.out)
    if restarts == 0 or ckpt is None:
        return False
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id not in (None, "", "none") and load_checkpoint(ckpt).get("launch_id") != run_id:
        return False              # an older run's checkpoint: the command line decides
    if world.is_main:
        print(f"sgan-fast train: restart {restarts} of an elastic launch: resuming from "
              f"{latest_checkpoint(args.out)}", file=sys.stderr)
    args.resume, args.overwrite = True, False
    return True


def _train_setup(args, world):
    from ..labels.bank import SoftLabelBank

    out = args.out
    writable_dir(out)
    _elastic_restart(args, world)
    existing = latest_checkpoint(out)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: pick one")
    if args.resume:
        if existing is None:
            raise FileNotFoundError(f"--resume: {out} holds no checkpoint (checkpoints/{LATEST})")
        state = load_checkpoint(existing)
        cfg = config_from_args(args, base=TrainConfig.from_dict(state["config"], what=existing))
    else:
        cfg = config_from_args(args)
    cfg = cfg.resolved()
    if not args.resume:
        found = [n for n in RUN_OUTPUTS if os.path.exists(os.path.join(out, n))]
        if found and not args.overwrite:
            raise ValueError(f"{out} already holds a run ({', '.join(found)}); pass --resume to "
                             "continue it, --overwrite to replace it, or choose another --out")
    train = _training_data(args, cfg.resolution)
    bank = None
    if args.bank:
        bank = SoftLabelBank.load(args.bank, expect=train.fingerprint())
    elif cfg.target.split(":")[0].split("+")[0] != "onehot":
        raise ValueError(f"--target {cfg.target} needs --bank (the bank.npz `sgan-fast classify` "
                         "writes for this training set), or --target onehot for plain BigGAN")
    device = pick_device(cfg.device)     # a device that cannot be used: refused before any work
    # rank 0 evaluates; its failure to set up is every rank's (check_all in run_train)
    evaluator = (evaluator_for(args, train, cfg, device) if cfg.eval_every and world.is_main
                 else None)
    data_info = dict(spec=dataclasses.asdict(data_spec(args)), bank=args.bank)
    kw = dict(bank=bank, out=out, evaluator=evaluator, data_info=data_info)
    return cfg, train, existing, kw


def _train(args, world, cfg, train, existing, kw) -> int:
    from .trainer import Trainer

    out = args.out
    trainer = (Trainer.resume(cfg, train, existing, **kw) if args.resume
               else Trainer(cfg, train, **kw))     # builds the models; writes nothing yet
    world.check_shared_dir(out)   # before --overwrite deletes anything
    with distributed.same_outcome(world):   # rank 0 clears; its failure is every rank's
        if args.overwrite and not args.resume and world.is_main:
            clear_run(out)        # only now: the data, the bank, the settings and the models checked out
    c = trainer.cfg
    ranks = (f" on {world.world_size} ranks ({world.backend}, {c.batch_size // world.world_size} "
             "per rank)" if world.distributed else "")
    if world.is_main:
        print(f"sgan-fast train: BigGAN-{c.resolution} ch={c.ch} on {len(train)} images, "
              f"{train.num_classes} classes, target {c.target}, batch {c.batch_size} x {c.d_steps} D "
              f"steps, {trainer.device}{' (reference)' if c.reference else ''}{ranks}, from step "
              f"{trainer.step} to {c.steps}", file=sys.stderr)
    result = trainer.fit()
    if not world.is_main:
        return 128 + int(result.signal or 15) if result.status == "interrupted" else 0
    print(f"sgan-fast train: {result.status} at step {result.step} ({result.seconds:.0f} s, "
          f"{result.images_per_second:.0f} real img/s); checkpoint {result.checkpoint}")
    if result.best:
        print(f"sgan-fast train: best {c.best_metric} {result.best[c.best_metric]:.2f} at step "
              f"{result.best['step']} (checkpoints/best.pt)")
    if result.status == "interrupted":
        print("sgan-fast train: resume with the same command and --resume", file=sys.stderr)
        return 128 + int(result.signal or 15)     # 143 for SIGTERM, 130 for SIGINT
    return 0


RUN_OUTPUTS = ("checkpoints", "log.csv", "eval.csv", "samples", "tensorboard", "config.yaml")


def clear_run(out: str) -> None:
    """Removes an earlier run's outputs from `out` (--overwrite), so that two runs never mix in
    one log or one best.pt; other files in the folder are left alone."""
    import shutil
    for n in RUN_OUTPUTS:
        p = os.path.join(out, n)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def run_sample(args) -> int:
    import torch

    from .sampling import generate, load_generator, save_grid

    if args.per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {args.per_class}")
    out = args.out
    if os.path.exists(out) and not args.overwrite and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"{out} already exists; pass --overwrite or choose another --out")
    G, meta = load_generator(args.checkpoint, ema=not args.no_ema, device=pick_device(args.device))
    C = int(meta["data"]["num_classes"])
    names = list(meta["data"].get("class_names") or [str(c) for c in range(C)])
    try:
        classes = list(range(C)) if args.classes is None else [int(c) for c in args.classes.split(",")]
    except ValueError:
        raise ValueError(f"--classes must be comma-separated class numbers, got {args.classes!r}") from None
    bad = [c for c in classes if not 0 <= c < C]
    if bad:
        raise ValueError(f"--classes: {bad[0]} is outside [0, {C}) (the checkpoint's model has "
                         f"{C} classes)")
    labels = torch.tensor(classes).repeat_interleave(args.per_class)
    g = torch.Generator().manual_seed(args.seed)
    images = generate(G, labels, generator=g, truncation=args.truncation)
    if out.endswith(".png"):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_grid(images, out, args.per_class)
    elif out.endswith(".npz"):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        atomic_savez(out, images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy(),
                     class_names=np.array(names), step=np.array(meta["step"]),
                     truncation=np.array(np.nan if args.truncation is None else args.truncation),
                     seed=np.array(args.seed))
    else:
        import shutil

        from PIL import Image
        if os.path.isdir(out):   # --overwrite: an earlier sample's class folders go first, so
            for d in os.listdir(out):   # that two samples never mix (other files stay)
                if d.isdigit() and os.path.isdir(os.path.join(out, d)):
                    shutil.rmtree(os.path.join(out, d))
        os.makedirs(out, exist_ok=True)
        x = images.permute(0, 2, 3, 1).numpy()
        for i, (img, c) in enumerate(zip(x, labels.tolist())):
            d = os.path.join(out, str(c))
            os.makedirs(d, exist_ok=True)
            Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(
                os.path.join(d, f"{i:06d}.png"))
    print(f"sgan-fast sample: {len(labels)} images ({args.per_class} per class, "
          f"{len(classes)} classes) from step {meta['step']} -> {out}")
    return 0
