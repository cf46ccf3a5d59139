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

Several processes (world=, under torchrun): the batches go round the ranks; every rank draws
every batch's latents in that order (cheap next to the generator) and runs the generator on
its own batches only, and rank 0 gathers the images. An image's latents depend on its place
in the one-process order, never on the number of ranks, so the export is the one-process
export (filtering included: the ranks replay the one-process count of accepted images).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .._progress import Progress
from ..distributed import gather_to_main, same_outcome
from ..train.sampling import generate, skip_latents
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


class _Stream:
    """The run's latents, one torch.Generator seeded with cfg.seed, drawn batch by batch in
    the one-process order. make(labels) runs G on a batch; skip(labels) draws the batch's
    latents and drops them: with several processes every rank draws every batch's latents
    (cheap next to G) and generates only its own batches, so each image gets the latents it
    gets in one process whatever the number of ranks."""

    def __init__(self, G, cfg: SynthConfig):
        self.G, self.cfg = G, cfg
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        self.z_dim = int(G.config["z_dim"])

    def make(self, labels: torch.Tensor) -> torch.Tensor:
        return generate(self.G, labels, generator=self.gen, batch_size=self.cfg.batch_size,
                        truncation=self.cfg.truncation)

    def skip(self, labels: torch.Tensor) -> None:
        skip_latents(len(labels), self.z_dim, generator=self.gen, batch_size=self.cfg.batch_size,
                     truncation=self.cfg.truncation)


def _draw_batches(stream: _Stream, batches: list, world, progress) -> Optional[list]:
    """The images (uint8 NHWC, one array per batch, in order) of `batches` (label tensors) on
    rank 0, None on the other ranks. The batches go round the ranks, W at a time: rank r
    makes batch start + r of each round, and rank 0 gathers the round's images (so it never
    holds more than the export and one round's batches)."""
    out = [] if world.is_main else None
    W, made = world.world_size, 0
    for start in range(0, len(batches), W):
        mine = None
        with same_outcome(world):
            for j in range(start, min(start + W, len(batches))):
                if j - start == world.rank:
                    mine = _nhwc(stream.make(batches[j]))
                else:
                    stream.skip(batches[j])
        parts = gather_to_main(world, mine)
        if parts is not None:
            for x in parts:
                if x is not None:
                    out.append(x)
                    made += len(x)
            progress(made)
    return out


def _draw_filtered(stream: _Stream, c: int, need: int, cfg: SynthConfig, scorer, world,
                   progress) -> tuple:
    """Class c filtered by the scorer: (kept images NHWC, one array per batch, on rank 0 (None
    on the others); generated, accepted, the sum of the confidences, images kept), as one
    process draws them: batches until `need` images passed or max_tries x need were drawn.

    With W ranks the batches go round W at a time (rank r scores batch start + r); every rank
    learns how many images of each passed, replays the one-process count, and when one
    process would have stopped inside the round, rewinds the latent stream to that batch (the
    images drawn after it are dropped), so the next class starts where it starts in one
    process."""
    bs = cfg.batch_size
    budget = int(math.ceil(cfg.max_tries * need))
    sizes = [min(bs, budget - a) for a in range(0, budget, bs)]
    W, rank = world.world_size, world.rank
    kept = [] if world.is_main else None
    generated = accepted = have = 0
    conf_sum = 0.0
    k = 0
    while have < need and generated < budget:
        batch_ids = range(k, min(k + W, len(sizes)))
        mine, states = None, []
        with same_outcome(world):
            for j in batch_ids:
                y = torch.full((sizes[j],), c, dtype=torch.int64)
                if j - k == rank:
                    x = stream.make(y)
                    p = scorer.probs(x)[:, c]
                    mine = (float(p.sum()), x[p >= cfg.min_confidence])
                else:
                    stream.skip(y)
                if W > 1:
                    states.append(stream.gen.get_state())
        stats = world.gather_objects(None if mine is None else (mine[0], len(mine[1])))
        takes = []
        for i, j in enumerate(batch_ids):       # the one-process count, batch by batch
            conf, passed = stats[i]
            generated += sizes[j]
            conf_sum += conf
            accepted += passed
            takes.append(min(passed, need - have))
            have += takes[-1]
            if not (have < need and generated < budget):
                break
        if len(takes) < len(batch_ids):          # one process stops inside this round
            stream.gen.set_state(states[len(takes) - 1])
        send = _nhwc(mine[1][:takes[rank]]) if rank < len(takes) else None
        parts = gather_to_main(world, send)
        if parts is not None:
            kept.extend(x for x in parts if x is not None)
            progress(have)
        k = batch_ids.stop
    return kept, generated, accepted, conf_sum, have


def synthesize(G, real_counts: Sequence[int], cfg: Optional[SynthConfig] = None, *,
               class_names: Optional[Sequence[str]] = None,
               scorer: Optional[ClassifierScorer] = None,
               confusion: Optional[np.ndarray] = None, world=None) -> Optional[SynthResult]:
    """The synthetic images of every class (and the inter-class ones); see the module docstring.

    world (a sgan_fast.distributed.World; default one process): with several processes every
    rank calls this with the same arguments, makes its share of the batches, and rank 0
    gathers the images: the SynthResult on rank 0 (what one process returns), None on the
    other ranks. An error from the settings or the filtering is raised on every rank."""
    from ..distributed import World

    world = world if world is not None else World()
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
    mix = _mix_plan(cfg, chosen, C)
    stream = _Stream(G, cfg)
    bar = Progress("synthesize", int(want.sum()) + cfg.mix, unit=" img",
                   enabled=cfg.progress and world.is_main)
    main = world.is_main
    images, labels, per_class = [], [], []
    if not filtering:
        # every batch is known in advance: the classes' then the pairs', in one go round the ranks
        batches = [torch.full((min(cfg.batch_size, int(want[c]) - a),), c, dtype=torch.int64)
                   for c in range(C) for a in range(0, int(want[c]), cfg.batch_size)]
        drawn = _draw_batches(stream, batches + mix["batches"], world, bar.update)
        if main:
            class_part, mixed_part = drawn[:len(batches)], drawn[len(batches):]
            images = [np.concatenate(class_part)] if class_part else []
            labels = [np.repeat(np.arange(C), want)] if class_part else []
        per_class = [dict(cls=c, name=names[c], real=int(real[c]), requested=int(want[c]),
                          written=int(want[c]), total=int(real[c] + want[c])) for c in range(C)]
    else:
        done = 0
        for c in range(C):
            need = int(want[c])
            kept, generated, accepted, conf_sum, have = _draw_filtered(
                stream, c, need, cfg, scorer, world, lambda n: bar.update(done + n))
            done += need
            if main and have:
                images.append(np.concatenate(kept))
                labels.append(np.full(have, c, dtype=np.int64))
            row = dict(cls=c, name=names[c], real=int(real[c]), requested=need, written=int(have),
                       total=int(real[c] + have))
            row.update(generated=generated,
                       rejection_rate=(1 - accepted / generated) if generated else None,
                       mean_confidence=conf_sum / generated if generated else None)
            if have < need and not cfg.allow_shortfall:     # stop at the first short class
                raise ValueError(
                    f"class {c} ({names[c]}) could not be filled at min_confidence "
                    f"{cfg.min_confidence}: {have}/{need} after {generated} tries, rejection rate "
                    f"{100 * row['rejection_rate']:.0f}%. Lower min_confidence, raise max_tries "
                    f"(now {cfg.max_tries:g}) or pass allow_shortfall to write short classes")
            per_class.append(row)
        mixed_part = _draw_batches(stream, mix["batches"], world, lambda n: bar.update(done + n))
    if not main:
        return None
    H = W = int(G.config["resolution"])
    ch = int(G.config.get("out_channels", 3))
    empty = np.zeros((0, H, W, ch), dtype=np.uint8)
    if cfg.mix:
        mixed = (np.concatenate(mixed_part), *mix["arrays"])
    else:
        mixed = (empty, np.zeros((0, C), np.float32), np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    return SynthResult(np.concatenate(images) if images else empty,
                       np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
                       per_class, *mixed, mix["table"])


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


def _mix_plan(cfg: SynthConfig, chosen: list, C: int) -> dict:
    """The inter-class images to make: "batches" (float class vectors [<= batch_size, C], in
    drawing order), "arrays" (targets, pairs, lambdas of every image) and the pair "table"."""
    if not cfg.mix:
        return dict(batches=[], arrays=None, table=[])
    per_pair = np.full(len(chosen), cfg.mix // len(chosen), dtype=np.int64)
    per_pair[:cfg.mix % len(chosen)] += 1           # the remainder to the most similar pairs
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0x1A7E]))
    lo, hi = cfg.mix_lambda
    batches, targets, ij, lams, table = [], [], [], [], []
    for (i, j, sim), n in zip(chosen, per_pair.tolist()):
        table.append(dict(i=i, j=j, similarity=sim, images=n))
        if n == 0:
            continue
        lam = rng.uniform(lo, hi, n).astype(np.float32)
        t = np.zeros((n, C), dtype=np.float32)
        t[:, i] = lam
        t[:, j] = 1 - lam
        batches += [torch.from_numpy(t[a:a + cfg.batch_size]) for a in range(0, n, cfg.batch_size)]
        targets.append(t)
        ij.append(np.tile(np.array([[i, j]], dtype=np.int64), (n, 1)))
        lams.append(lam)
    return dict(batches=batches, table=table,
                arrays=(np.concatenate(targets), np.concatenate(ij), np.concatenate(lams)))
