"""Synthetic training data from a class-conditional generator: what `sgan-fast synthesize` runs.

    G, meta = load_generator("runs/fmnist/gan")
    real = meta["data"]["fingerprint"]["class_counts"]
    result = synthesize(G, real, SynthConfig(count="majority"), class_names=names)
    result.images, result.labels          # every class topped up to the largest class

Three parts:
1. A balanced export: topup_counts (plan.py) says how many images each class gets.
2. Filtering (optional, scorer= and min_confidence): each image is kept only when the
   classifier gives its intended class at least min_confidence; images are generated until
   the count is met or max_tries x the count were drawn. The rejection rate of every class
   is reported; a class left short is an error unless allow_shortfall.
3. Inter-class images (optional, mix > 0 and confusion=): images generated from the mixed
   class vector l e_i + (1 - l) e_j, l ~ U(mix_lambda), for the class pairs the classifier
   confuses most (plan.similar_pairs), written with that vector as their soft target.
   They are not filtered: their intended class is a mixture.

Latents come from one torch.Generator seeded with `seed`, class by class then pair by pair,
so an export is reproducible on the same device type with the same settings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .._progress import Progress
from ..train.sampling import generate
from .plan import similar_pairs, topup_counts


@dataclasses.dataclass
class SynthConfig:
    """Settings of `synthesize` (the flags of `sgan-fast synthesize` have the same names)."""

    count: Union[str, int] = "majority"   # "majority" or N: top every class up to N images
    total: Optional[int] = None           # instead: this many synthetic images, rarest first
    truncation: Optional[float] = None    # redraw |z| > truncation
    seed: int = 0
    batch_size: int = 256
    min_confidence: Optional[float] = None   # keep images the classifier gives >= this
    max_tries: float = 10.0               # filtering: draw at most this x the count per class
    allow_shortfall: bool = False         # filtering: write a class left short (else an error)
    mix: int = 0                          # inter-class images in all
    mix_pairs: Optional[int] = None       # class pairs for them (default: one per class)
    mix_lambda: tuple = (0.2, 0.8)        # l ~ U(lo, hi) in l e_i + (1 - l) e_j
    progress: bool = True

    def check(self) -> None:
        topup_counts([0], self.count, total=self.total)   # checks count / total (and not both)
        if self.truncation is not None and not 0 < self.truncation < math.inf:
            raise ValueError(f"truncation must be a finite number > 0, got {self.truncation}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must lie in [0, 1], got {self.min_confidence}")
        if not 1 <= self.max_tries < math.inf:
            raise ValueError(f"max_tries must be a finite number >= 1, got {self.max_tries}")
        if isinstance(self.mix, bool) or not isinstance(self.mix, int) or self.mix < 0:
            raise ValueError(f"mix (inter-class images) must be an integer >= 0, got {self.mix!r}")
        if self.mix_pairs is not None and (isinstance(self.mix_pairs, bool) or
                                           not isinstance(self.mix_pairs, int) or self.mix_pairs < 1):
            raise ValueError(f"mix_pairs must be a positive integer, got {self.mix_pairs!r}")
        try:
            lo, hi = (float(v) for v in self.mix_lambda)
        except (TypeError, ValueError):
            raise ValueError(f"mix_lambda must be a pair (lo, hi), got {self.mix_lambda!r}") from None
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"mix_lambda must be a range lo <= hi inside [0, 1], got {self.mix_lambda}")


@dataclasses.dataclass
class SynthResult:
    images: np.ndarray            # uint8 [N, H, W, C], class by class
    labels: np.ndarray            # int64 [N]
    per_class: list               # one dict per class: counts, rejection rate
    mixed_images: np.ndarray      # uint8 [M, H, W, C]
    mixed_targets: np.ndarray     # float32 [M, C]: l e_i + (1 - l) e_j, rows sum to 1
    mixed_pairs: np.ndarray       # int64 [M, 2]: (i, j) of each mixed image
    mixed_lambda: np.ndarray      # float32 [M]: l of each mixed image
    pairs: list                   # dicts: i, j, similarity, images

    @property
    def mixed_labels(self) -> np.ndarray:
        """The dominant class of each inter-class image (i when l >= 0.5)."""
        return np.where(self.mixed_lambda >= 0.5, self.mixed_pairs[:, 0], self.mixed_pairs[:, 1])


class ClassifierScorer:
    """Class probabilities of generated images from a `sgan-fast classify` classifier file: the
    folds' models averaged, each with the calibrated temperature, as the classify report's
    test predictions are made."""

    def __init__(self, path, *, num_classes: int, channels: int, device="cpu", crop: bool = False):
        from ..labels.classifier_file import load_classifier

        self.models, self.meta = load_classifier(path, device=device)
        if int(self.meta["num_classes"]) != num_classes:
            raise ValueError(f"the classifier {path} has {self.meta['num_classes']} classes, the "
                             f"generator {num_classes}")
        if int(self.meta["channels"]) != channels:
            raise ValueError(f"the classifier {path} takes {self.meta['channels']}-channel images, "
                             f"the generator makes {channels}-channel ones")
        self.device = torch.device(device)
        self.path = str(path)
        # crop: the generator learned the classifier's images padded to its size (28 -> 32),
        # so a centre crop gives the classifier what it was trained on; else they are resized
        self.crop = crop

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 [B, num_classes] on the CPU."""
        from ..metrics.features import classifier_input

        res = int(self.meta["resolution"])
        x = images.to(self.device)
        h, w = x.shape[-2:]
        if self.crop and h >= res and w >= res and (h - res) % 2 == 0 and (w - res) % 2 == 0:
            t, l = (h - res) // 2, (w - res) // 2
            x = x[..., t:t + res, l:l + res]
        x = classifier_input(x, res, int(self.meta["channels"]))
        T = float(self.meta.get("temperature", 1.0))
        with torch.autocast(self.device.type, enabled=False):
            p = sum(torch.softmax(m(x).float() / T, 1) for m in self.models) / len(self.models)
        return p.cpu()


def trained_on_padded(meta: dict) -> bool:
    """Whether the checkpoint's generator learned from arrays padded to its size: the train
    command pads arrays (built-in datasets, .npz) and resizes image folders."""
    data = ((meta.get("data") or {}).get("spec") or {}).get("data")
    from ..data.spec import BUILTIN

    return isinstance(data, str) and (data.endswith(".npz") or data in BUILTIN)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def synthesize(G, real_counts: Sequence[int], cfg: Optional[SynthConfig] = None, *,
               class_names: Optional[Sequence[str]] = None,
               scorer: Optional[ClassifierScorer] = None,
               confusion: Optional[np.ndarray] = None) -> SynthResult:
    """The synthetic images of every class (and the inter-class ones); see the module docstring."""
    cfg = cfg or SynthConfig()
    cfg.check()
    C = int(G.config["num_classes"])
    real = np.asarray(real_counts, dtype=np.int64)
    if real.shape != (C,):
        raise ValueError(f"{len(real)} real class counts for a generator of {C} classes")
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    filtering = cfg.min_confidence is not None
    if filtering and scorer is None:
        raise ValueError("min_confidence needs a classifier to score the images (scorer=)")
    if cfg.mix and confusion is None:
        raise ValueError("inter-class images need the classifier's confusion (confusion=) to pick "
                         "the class pairs")
    want = topup_counts(real, cfg.count, total=cfg.total)
    chosen = _choose_pairs(cfg, confusion, C)     # before any image: a bad setting fails now
    gen = torch.Generator().manual_seed(int(cfg.seed))
    draw = lambda labels: generate(G, labels, generator=gen, batch_size=cfg.batch_size,  # noqa: E731
                                   truncation=cfg.truncation)
    bar = Progress("synthesize", int(want.sum()) + cfg.mix, unit=" img", enabled=cfg.progress)
    done = 0
    images, labels, per_class = [], [], []
    for c in range(C):
        need = int(want[c])
        kept, generated, accepted, conf_sum = [], 0, 0, 0.0
        budget = need if not filtering else int(math.ceil(cfg.max_tries * need))
        have = 0
        while have < need and generated < budget:
            b = min(cfg.batch_size, budget - generated)
            if not filtering:
                b = min(b, need - have)
            x = draw(torch.full((b,), c, dtype=torch.int64))
            generated += b
            if filtering:
                p = scorer.probs(x)[:, c]
                conf_sum += float(p.sum())
                x = x[p >= cfg.min_confidence]
                accepted += len(x)
            kept.append(x[:need - have])
            have += len(kept[-1])
            bar.update(done + have)
        done += need
        x = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.uint8)
        if len(x):
            images.append(_nhwc(x))
            labels.append(np.full(len(x), c, dtype=np.int64))
        row = dict(cls=c, name=names[c], real=int(real[c]), requested=need, written=int(len(x)),
                   total=int(real[c] + len(x)))
        if filtering:
            row.update(generated=generated,
                       rejection_rate=(1 - accepted / generated) if generated else None,
                       mean_confidence=conf_sum / generated if generated else None)
            if len(x) < need and not cfg.allow_shortfall:     # stop at the first short class
                raise ValueError(
                    f"class {c} ({names[c]}) could not be filled at min_confidence "
                    f"{cfg.min_confidence}: {len(x)}/{need} after {generated} tries, rejection rate "
                    f"{100 * row['rejection_rate']:.0f}%. Lower min_confidence, raise max_tries "
                    f"(now {cfg.max_tries:g}) or pass allow_shortfall to write short classes")
        per_class.append(row)
    H = W = int(G.config["resolution"])
    ch = int(G.config.get("out_channels", 3))
    empty = np.zeros((0, H, W, ch), dtype=np.uint8)
    mixed, pairs = _inter_class(draw, cfg, chosen, C, empty, lambda n: bar.update(done + n))
    return SynthResult(np.concatenate(images) if images else empty,
                       np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
                       per_class, *mixed, pairs)


def _choose_pairs(cfg: SynthConfig, confusion, C: int) -> list:
    """The class pairs of the inter-class images (empty without mix): the most confused,
    among classes that both have a row in the confusion matrix."""
    if not cfg.mix:
        return []
    M = np.asarray(confusion, dtype=np.float64)
    if M.shape != (C, C):
        raise ValueError(f"the confusion matrix is {M.shape}, the generator has {C} classes")
    rows = np.isfinite(M).all(1)
    usable = int(rows.sum()) * (int(rows.sum()) - 1) // 2
    k = cfg.mix_pairs if cfg.mix_pairs is not None else min(C, usable)
    if k > usable:
        raise ValueError(f"{k} class pairs asked for, but only {usable} pairs of classes have "
                         "probabilities in the bank" + ("" if rows.all() else
                                                        f" (classes {np.flatnonzero(~rows).tolist()} have none)"))
    return similar_pairs(M, k)


def _inter_class(draw, cfg: SynthConfig, chosen: list, C: int, empty: np.ndarray, progress) -> tuple:
    """((images, targets, pairs, lambdas), pair table) of the inter-class images."""
    none = (empty, np.zeros((0, C), np.float32), np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if not cfg.mix:
        return none, []
    per_pair = np.full(len(chosen), cfg.mix // len(chosen), dtype=np.int64)
    per_pair[:cfg.mix % len(chosen)] += 1           # the remainder to the most similar pairs
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0x1A7E]))
    lo, hi = cfg.mix_lambda
    images, targets, ij, lams, table = [], [], [], [], []
    made = 0
    for (i, j, sim), n in zip(chosen, per_pair.tolist()):
        table.append(dict(i=i, j=j, similarity=sim, images=n))
        if n == 0:
            continue
        lam = rng.uniform(lo, hi, n).astype(np.float32)
        t = np.zeros((n, C), dtype=np.float32)
        t[:, i] = lam
        t[:, j] = 1 - lam
        for a in range(0, n, cfg.batch_size):
            x = draw(torch.from_numpy(t[a:a + cfg.batch_size]))
            images.append(_nhwc(x))
            made += len(x)
            progress(made)
        targets.append(t)
        ij.append(np.tile(np.array([[i, j]], dtype=np.int64), (n, 1)))
        lams.append(lam)
    return (np.concatenate(images), np.concatenate(targets), np.concatenate(ij),
            np.concatenate(lams)), table
