"""Does synthetic data help a classifier on the long-tailed real set? What
`sgan-fast downstream` runs.

    arms = [Arm("real"), Arm("softlabel", synth, source="runs/synth_soft")]
    runs = run_downstream(real_train, test, arms, DownstreamConfig(seeds=3))
    summary = summarize(runs, arms, real_train.class_counts())

Every arm trains the same classifier (labels/classifier.train_classifier: the classify
command's network and recipe) on the real long-tailed training set plus the arm's synthetic
images (none for "real"), once per seed, and is tested on the balanced real test set.
Seed s gives every arm the same initialisation and batch-order seed, so arms are compared
in pairs.

Compute: with budget="steps" (default) every arm trains for epochs x (real images / batch)
steps, so an arm with 4x the images gets no more optimiser steps than the real arm: what
it gains comes from the data, not from longer training. budget="epochs" trains each arm
for `epochs` passes over its own training set instead.

Inter-class images (Arm.mixed_targets) train with their soft targets l e_i + (1 - l) e_j;
every other image with its one-hot label.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import numpy as np

from ..data.datasets import ArrayDataset, describe_mismatch
from ..labels.classifier import (ClassifyConfig, _balanced, _Images, _per_class_accuracy,
                                 predict_logits, train_classifier)

BUDGETS = ("steps", "epochs")


@dataclasses.dataclass
class Arm:
    """One training set: the real images plus `synthetic` (and `mixed`, with soft targets)."""

    name: str
    synthetic: Optional[ArrayDataset] = None
    mixed: Optional[ArrayDataset] = None
    mixed_targets: Optional[np.ndarray] = None   # float32 [len(mixed), C]
    source: Optional[str] = None                  # where the synthetic images came from


@dataclasses.dataclass
class DownstreamConfig:
    seeds: int = 3
    seed: int = 0                     # seeds used: seed, seed + 1, ...
    budget: str = "steps"             # steps | epochs (see the module docstring)
    classify: ClassifyConfig = dataclasses.field(default_factory=ClassifyConfig)

    def check(self) -> None:
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.classify.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.classify.epochs}")
        self.classify.check()


def check_arms(real: ArrayDataset, test: ArrayDataset, arms: list) -> None:
    """ValueError for arms whose images cannot join the real set (class count, channels,
    resolution), duplicate names, or a test set that does not match."""
    C = real.num_classes
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ, got {names}")
    bad = describe_mismatch(test, real, "the test set", "the training set")
    if bad:
        raise ValueError(bad)
    missing = np.flatnonzero(np.bincount(np.asarray(test.labels, dtype=np.int64), minlength=C) == 0)
    if len(missing):
        raise ValueError(f"the test set has no images of class(es) {missing[:5].tolist()}: balanced "
                         "accuracy needs every class")
    for a in arms:
        for what, ds in (("synthetic", a.synthetic), ("inter-class", a.mixed)):
            bad = ds is not None and describe_mismatch(ds, real, f"arm {a.name!r}: its {what} set",
                                                       "the real set")
            if bad:
                raise ValueError(bad + (" (a generator of another class count?)"
                                        if ds.num_classes != C else " (pad the real set: pad_to)"
                                        if ds.resolution != real.resolution else ""))
        if a.mixed is not None and (a.mixed_targets is None or
                                    np.shape(a.mixed_targets) != (len(a.mixed), C)):
            raise ValueError(f"arm {a.name!r}: inter-class images need targets [{len(a.mixed)}, {C}]")


def pad_to(ds: ArrayDataset, resolution: tuple) -> ArrayDataset:
    """The real images padded to the generator's size (28 -> 32), as training padded them."""
    if ds.resolution == tuple(resolution):
        return ds
    if resolution[0] != resolution[1]:
        raise ValueError(f"cannot pad to a non-square size {resolution}")
    return ds.padded(int(resolution[0]))


def _training_set(real: ArrayDataset, arm: Arm):
    """(uint8 images [N, H, W, C], labels [N], soft targets [N, C] or None)."""
    parts = [real] + [d for d in (arm.synthetic, arm.mixed) if d is not None]
    images = np.concatenate([d.images for d in parts]) if len(parts) > 1 else real.images
    labels = np.concatenate([np.asarray(d.labels, dtype=np.int64) for d in parts])
    if arm.mixed is None:
        return images, labels, None
    C = real.num_classes
    targets = np.zeros((len(labels), C), dtype=np.float32)
    n_hard = len(labels) - len(arm.mixed)
    targets[np.arange(n_hard), labels[:n_hard]] = 1.0
    targets[n_hard:] = arm.mixed_targets
    return images, labels, targets


def run_one(real: ArrayDataset, test: ArrayDataset, arm: Arm, seed: int, cfg: DownstreamConfig,
            *, device) -> dict:
    """One classifier trained on `arm` with `seed`, tested on `test`: a result row."""
    c = cfg.classify
    C = real.num_classes
    images, labels, targets = _training_set(real, arm)
    # epochs of the real set (budget "steps") or of this arm's own set, at BatchSampler's
    # steps_per_epoch = max(1, N // B)
    per_epoch_of = len(real) if cfg.budget == "steps" else len(labels)
    steps = c.epochs * max(1, per_epoch_of // c.batch_size)
    start = time.perf_counter()
    model = train_classifier(_Images(images, device), labels, np.arange(len(labels)), C,
                             real.channels, int(min(real.resolution)), c, seed=seed,
                             desc=f"{arm.name} seed {seed}", targets=targets, steps=steps)
    t_y = np.asarray(test.labels, dtype=np.int64)
    logits = predict_logits(model, _Images(test.images, device), np.arange(len(t_y)),
                            batch_size=c.eval_batch_size)
    pred = logits.argmax(1).numpy()
    acc = _per_class_accuracy(pred, t_y, C)
    return dict(arm=arm.name, seed=int(seed), balanced_accuracy=_balanced(acc),
                accuracy=float((pred == t_y).mean()), train_images=int(len(labels)),
                steps=int(steps),
                seconds=round(time.perf_counter() - start, 1),
                per_class=[None if np.isnan(a) else float(a) for a in acc])


def run_downstream(real: ArrayDataset, test: ArrayDataset, arms: list, cfg: DownstreamConfig, *,
                   device, done: Optional[list] = None,
                   on_result: Optional[Callable[[dict], None]] = None) -> list:
    """Every (seed, arm) run not already in `done` (rows of an earlier, interrupted call), seed
    by seed; each new row is passed to on_result (which saves it) as soon as it is made.
    Returns all rows, `done` first."""
    cfg.check()
    check_arms(real, test, arms)
    rows = list(done or [])
    have = {(r["arm"], int(r["seed"])) for r in rows}
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
        for arm in arms:
            if (arm.name, s) in have:
                continue
            row = run_one(real, test, arm, s, cfg, device=device)
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return rows


def _spread(v: list) -> dict:
    a = np.asarray([x for x in v if x is not None], dtype=np.float64)
    if not len(a):
        return dict(mean=None, std=None, min=None, max=None, n=0)
    return dict(mean=float(a.mean()), std=float(a.std(ddof=1)) if len(a) > 1 else None,
                min=float(a.min()), max=float(a.max()), n=int(len(a)))


def class_thirds(class_counts) -> tuple:
    """(rare, common): the sorted class numbers of the third of the classes with the fewest
    training images and of the third with the most (ties by class number)."""
    order = np.argsort(np.asarray(class_counts), kind="stable")
    third = max(1, len(order) // 3)
    return sorted(order[:third].tolist()), sorted(order[-third:].tolist())


def summarize(rows: list, arm_names: list, class_counts, class_names=None, baseline: str = "real") -> dict:
    """Mean and spread over seeds of every arm: balanced accuracy, accuracy, per-class
    accuracy, the rarest and the most common third of the classes (by training images), and
    each arm's gain over `baseline`, per class, paired by seed."""
    counts = np.asarray(class_counts, dtype=np.int64)
    C = len(counts)
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    rare, common = class_thirds(counts)
    by = {a: sorted((r for r in rows if r["arm"] == a), key=lambda r: r["seed"]) for a in arm_names}
    base = {r["seed"]: r for r in by.get(baseline, [])}

    def group(r, cls):
        v = [r["per_class"][c] for c in cls if r["per_class"][c] is not None]
        return float(np.mean(v)) if v else None

    arms = {}
    for a, rs in by.items():
        per_class = [_spread([r["per_class"][c] for r in rs]) for c in range(C)]
        paired = [r for r in rs if r["seed"] in base]
        gain = [_spread([None if r["per_class"][c] is None or base[r["seed"]]["per_class"][c] is None
                         else r["per_class"][c] - base[r["seed"]]["per_class"][c] for r in paired])
                for c in range(C)]
        arms[a] = dict(
            runs=len(rs), seeds=[r["seed"] for r in rs],
            balanced_accuracy=_spread([r["balanced_accuracy"] for r in rs]),
            accuracy=_spread([r["accuracy"] for r in rs]),
            rare_classes=_spread([group(r, rare) for r in rs]),
            common_classes=_spread([group(r, common) for r in rs]),
            gain_balanced_accuracy=_spread([r["balanced_accuracy"] - base[r["seed"]]["balanced_accuracy"]
                                            for r in paired]) if a != baseline else None,
            per_class=per_class, gain_per_class=gain if a != baseline else None,
            train_images=rs[0]["train_images"] if rs else None, steps=rs[0]["steps"] if rs else None)
    return dict(class_counts=counts.tolist(), class_names=names, rare=rare, common=common,
                baseline=baseline, arms=arms)
