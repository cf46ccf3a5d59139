"""`sgan-fast downstream`: train the same classifier on the long-tailed real set alone and
with each synthetic set added, over several seeds, and test each on the balanced real test set.

    sgan-fast downstream --data fashion-mnist --imbalance exp --rho 100 \\
        --arm onehot=runs/synth_onehot --arm softlabel=runs/synth_soft \\
        --arm softlabel+mixed=runs/synth_soft:mixed --seeds 3 --out runs/downstream
      -> report.md      mean ± std over seeds per arm: balanced accuracy, accuracy, rarest and
                        most common third of the classes, gain over the real arm; per class
         plot.png       per-class accuracy gain against real training images per class
         summary.json, runs.json, runs.csv   every number, one row per (arm, seed)

--arm NAME=DIR adds DIR's balanced synthetic export (`sgan-fast synthesize`) to the real
images; NAME=DIR:mixed adds its inter-class images too, trained with their soft targets.
The real arm always runs: it is the baseline. Each finished run is saved at once; the same
command again continues where an interrupted one stopped (--seeds may grow).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import warnings

from .._device import pick_device
from .._io import atomic_write_text, refuse_overwrite, writable_dir
from ..data.spec import add_data_args, data_spec, open_data
from ..labels.classifier import BALANCE, ClassifyConfig, as_arrays, check_classes
from ..labels.classifier_nets import auto_arch
from .downstream import BUDGETS, Arm, DownstreamConfig, pad_to, run_downstream, summarize
from .downstream_report import plot_gain, report_markdown
from .export import MANIFEST, open_export

OUTPUTS = ("settings.json", "runs.json", "runs.csv", "summary.json", "report.md", "plot.png")


def add_parser(sub) -> None:
    p = sub.add_parser("downstream", help="classifier accuracy on the real test set when trained "
                       "on real vs real + synthetic data, over seeds", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    d = ClassifyConfig()
    p.add_argument("--arm", action="append", default=[], metavar="NAME=DIR[:mixed]",
                   help="a synthetic set to add to the real images (repeat for more arms)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="start afresh, discarding earlier runs in --out")
    g = p.add_argument_group("experiment")
    g.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    g.add_argument("--seed", type=int, default=0, help="first seed")
    g.add_argument("--budget", default="steps", choices=BUDGETS,
                   help="steps (default): every arm gets the real arm's number of steps; "
                        "epochs: --epochs passes over each arm's own training set")
    t = p.add_argument_group("classifier (as `sgan-fast classify`)")
    t.add_argument("--arch", default=d.arch)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--balance", default=d.balance, choices=BALANCE)
    t.add_argument("--tau", type=float, default=d.tau)
    t.add_argument("--no-augment", action="store_true", help="no random translations")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips (digits, text)")
    t.add_argument("--no-amp", action="store_true", help="float32 on a GPU too")
    t.add_argument("--device", default=d.device, help="auto, cpu or cuda[:i]")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def parse_arm(text: str) -> tuple:
    """'name=dir' or 'name=dir:mixed' -> (name, dir, with_mixed)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--arm must be NAME=DIR or NAME=DIR:mixed, got {text!r}")
    if name == "real":
        raise ValueError("--arm: the name 'real' is the baseline arm's (it always runs); pick another")
    mixed = rest.endswith(":mixed")
    return name, rest[:-len(":mixed")] if mixed else rest, mixed


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _load_arms(specs: list, train, progress: bool) -> tuple:
    """(arms, their source records, their manifests), every synthetic set checked against `train`."""
    from ..labels.fingerprint import DatasetFingerprint

    arms, sources, manifests = [Arm("real")], {"real": None}, {}
    fp = train.fingerprint()
    for text in specs:
        name, folder, with_mixed = parse_arm(text)
        synth, _, manifest = open_export(folder, progress=progress)
        saved = manifest.get("data_fingerprint")
        if saved:
            diff = DatasetFingerprint.from_json(saved).differences(fp, mine=f"the generator of {folder}")
            if diff:
                raise ValueError(f"arm {name!r}: {folder} was generated by a model trained on other "
                                 "data than --data gives: " + "; ".join(diff))
        else:
            warnings.warn(f"{folder}'s manifest records no training-set fingerprint; it cannot be "
                          "checked against --data", RuntimeWarning)
        mixed = targets = None
        if with_mixed:
            mixed, targets, _ = open_export(folder, mixed=True, progress=progress)
        arms.append(Arm(name, synth, mixed, targets, source=folder))
        sources[name] = dict(folder=os.path.abspath(folder), mixed=with_mixed,
                             manifest=_digest(os.path.join(folder, MANIFEST)))
        manifests[name] = manifest
    return arms, sources, manifests


def _csv(rows: list, C: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arm", "seed", "balanced_accuracy", "accuracy", "train_images", "steps", "seconds"]
               + [f"acc_{c}" for c in range(C)])
    for r in rows:
        w.writerow([r["arm"], r["seed"], r["balanced_accuracy"], r["accuracy"], r["train_images"],
                    r["steps"], r["seconds"]] + ["" if a is None else a for a in r["per_class"]])
    return buf.getvalue()


def run(args) -> int:
    cfg = DownstreamConfig(seeds=args.seeds, seed=args.seed, budget=args.budget, classify=ClassifyConfig(
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, balance=args.balance, tau=args.tau,
        augment=not args.no_augment, flip=not args.no_flip, amp=not args.no_amp, folds=1,
        device=args.device, progress=not args.quiet))
    cfg.check()
    for a in args.arm:
        parse_arm(a)
    if not args.arm:
        raise ValueError("give at least one --arm NAME=DIR (a `sgan-fast synthesize` folder) to "
                         "compare with the real arm")
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder")
    writable_dir(out)
    device = pick_device(cfg.classify.device)
    train, test, _ = open_data(data_spec(args))
    if test is None:
        raise ValueError("downstream tests on a real test split: give --test-data (built-in "
                         "datasets bring theirs)")
    check_classes(train)
    train, test = as_arrays(train, not args.quiet), as_arrays(test, not args.quiet)
    arms, sources, manifests = _load_arms(args.arm, train, not args.quiet)
    size = next((a.synthetic.resolution for a in arms if a.synthetic is not None), train.resolution)
    if tuple(size) != tuple(train.resolution):
        resized = [n for n, m in manifests.items() if not m.get("real_images_padded", True)]
        if resized:
            raise ValueError(f"arm {resized[0]!r}: its generator learned the real images resized to "
                             f"{size}, not padded; open the real set at that size (--resolution "
                             f"{size[0]}) so that real and synthetic images match")
        train, test = pad_to(train, size), pad_to(test, size)
    c = cfg.classify
    arch = c.arch if c.arch != "auto" else auto_arch(int(min(train.resolution)))   # what runs
    settings = dict(data=vars(data_spec(args)), arms=sources, seed=cfg.seed, budget=cfg.budget,
                    arch=arch, epochs=c.epochs, batch_size=c.batch_size, lr=c.lr,
                    weight_decay=c.weight_decay, balance=c.balance, tau=c.tau, augment=c.augment,
                    flip=c.flip, amp=c.amp, device_type=device.type,
                    test_images=int(len(test)), train_fingerprint=train.fingerprint().to_json())
    settings["data"].pop("progress", None)
    settings = json.loads(json.dumps(settings))    # as it reads back from settings.json (lists, not tuples)
    done = []
    paths = {n: os.path.join(out, n) for n in OUTPUTS}
    if os.path.exists(paths["settings.json"]) and not args.overwrite:
        with open(paths["settings.json"], encoding="utf-8") as f:
            before = json.load(f)
        changed = sorted(k for k in set(before) | set(settings)
                         if k != "arms" and before.get(k) != settings.get(k))
        # arms may be added (and left out); an arm of the same name must be the same data
        changed += [f"arm {n!r}" for n in sorted(set(before.get("arms", {})) & set(sources))
                    if before["arms"][n] != sources[n]]
        if changed:
            raise ValueError(f"{out} holds runs made with other settings ({', '.join(changed)} "
                             "differ); pass --overwrite to discard them, or choose another --out")
        settings["arms"] = dict(before.get("arms", {}), **sources)
        if os.path.exists(paths["runs.json"]):
            with open(paths["runs.json"], encoding="utf-8") as f:
                done = json.load(f)
            print(f"sgan-fast downstream: continuing: {len(done)} run(s) already in {out}",
                  file=sys.stderr)
    else:
        # never replace another command's report.md / plot.png, or runs without their settings
        refuse_overwrite(out, OUTPUTS, args.overwrite)
        for n in OUTPUTS:
            if os.path.exists(paths[n]):
                os.remove(paths[n])
    atomic_write_text(paths["settings.json"], json.dumps(settings, indent=2) + "\n")
    C = train.num_classes
    rows = list(done)

    def save(row):
        rows.append(row)
        atomic_write_text(paths["runs.json"], json.dumps(rows, indent=1) + "\n")
        atomic_write_text(paths["runs.csv"], _csv(rows, C))
        print(f"sgan-fast downstream: {row['arm']} seed {row['seed']}: balanced accuracy "
              f"{100 * row['balanced_accuracy']:.2f}% ({row['seconds']:.0f} s)", file=sys.stderr)

    names = [a.name for a in arms]
    wanted = {(a, s) for a in names for s in range(cfg.seed, cfg.seed + cfg.seeds)}
    print(f"sgan-fast downstream: {len(arms)} arms x {cfg.seeds} seeds on {device}; real set "
          f"{len(train)} images {train.resolution}, test {len(test)}; "
          f"{len(wanted - {(r['arm'], int(r['seed'])) for r in done})} run(s) to go", file=sys.stderr)
    rows_all = run_downstream(train, test, arms, cfg, device=device, done=done, on_result=save)
    keep = [r for r in rows_all if (r["arm"], int(r["seed"])) in wanted]
    atomic_write_text(paths["runs.csv"], _csv(rows, C))     # also when no run was left to do
    summary = summarize(keep, names, train.class_counts(), train.class_names)
    atomic_write_text(paths["summary.json"], json.dumps(dict(settings=settings, **summary),
                                                        indent=1, allow_nan=False) + "\n")
    table = report_markdown(summary, settings)
    atomic_write_text(paths["report.md"], table)
    plot_gain(summary, paths["plot.png"])
    print(table)
    print(f"sgan-fast downstream: wrote report.md, plot.png, summary.json, runs.json, runs.csv to {out}")
    return 0
