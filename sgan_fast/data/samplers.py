"""Batch samplers over an (imbalanced) dataset: deterministic and resumable.

    sampler = BatchSampler(labels, batch_size=256, mode="class_balanced", seed=0)
    for step, batch in sampler.iterate(start_step=12_345):   # batch: int64 dataset indices [B]
        ...

Modes (every epoch has steps_per_epoch = max(1, N // B) batches of exactly B indices):
    instance        uniform over images, without replacement within an epoch: each epoch
                    is a fresh permutation (several, concatenated, when N < B)
    class_balanced  each draw picks a class uniformly, then one of its images uniformly
    sqrt            each draw picks a class with probability proportional to sqrt(n_c),
                    then one of its images uniformly
The batches of epoch e depend only on (seed, e): `epoch_indices(e)` recomputes them, so a
run resumed at step s (epoch s // steps_per_epoch, offset s % steps_per_epoch) continues
with exactly the batches it would have seen. Random numbers come from numpy's PCG64 seeded
with SeedSequence([seed, epoch]), the same on every platform.

Several processes (torchrun): `batch_size` is the *global* batch and every rank draws the
same global batches; `BatchSampler(..., rank=r, world_size=W)` only adds `local(...)`, which
cuts rank r's contiguous slice [r*b, (r+1)*b) (b = batch_size / W) out of a global batch (or
of anything laid out like one, such as the flips), so the sequence of global batches does not
depend on the world size and a run may resume with another one.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from ._labels import class_labels

MODES = ("instance", "class_balanced", "sqrt")


class BatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices (see the module docstring). Iterating it yields lists of
    indices from its current step on, so it also serves as a DataLoader batch_sampler."""

    def __init__(self, labels, batch_size: int, *, mode: str = "instance", seed: int = 0,
                 num_classes: Optional[int] = None, rank: int = 0, world_size: int = 1):
        if mode not in MODES:
            raise ValueError(f"unknown sampling mode {mode!r}; choose one of {', '.join(MODES)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} is not divisible by the world "
                             f"size {world_size}: every rank takes an equal slice; choose a "
                             f"batch size that is a multiple of {world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.local_batch_size = batch_size // world_size
        y, C = class_labels(labels, num_classes, allow_empty=False)
        self.labels = y
        self.num_images, self.num_classes = len(y), C
        self.batch_size, self.mode, self.seed = batch_size, mode, int(seed)
        self.steps_per_epoch = max(1, self.num_images // batch_size)
        self.step = 0
        counts = np.bincount(self.labels, minlength=C)
        self._by_class = np.argsort(self.labels, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(counts)])
        present = counts > 0
        if mode == "class_balanced":
            w = present.astype(np.float64)
        else:
            w = np.sqrt(counts.astype(np.float64))
        self._class_p = w / w.sum()

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, int(epoch)]))

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """[steps_per_epoch, B] int64: the batches of epoch `epoch`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        rng = self._rng(epoch)
        n = self.steps_per_epoch * self.batch_size
        if self.mode == "instance":
            perms = [rng.permutation(self.num_images) for _ in range(-(-n // self.num_images))]
            flat = np.concatenate(perms)[:n]
        else:
            cls = rng.choice(self.num_classes, size=n, p=self._class_p)
            sizes = self._starts[cls + 1] - self._starts[cls]
            offset = np.floor(rng.random(n) * sizes).astype(np.int64)
            flat = self._by_class[self._starts[cls] + np.minimum(offset, sizes - 1)]
        return flat.reshape(self.steps_per_epoch, self.batch_size).astype(np.int64)

    def local(self, batches):
        """This rank's slice of the last dimension of global batches (an array or tensor of
        [..., B]): [..., rank*b:(rank+1)*b]; the batches themselves with one process."""
        if self.world_size == 1:
            return batches
        b = self.local_batch_size
        return batches[..., self.rank * b:(self.rank + 1) * b]

    def batch_at(self, step: int) -> np.ndarray:
        """The batch of global step `step` [B]."""
        epoch, offset = divmod(int(step), self.steps_per_epoch)
        return self.epoch_indices(epoch)[offset]

    def iterate(self, start_step: Optional[int] = None) -> Iterator[tuple]:
        """(step, batch [B] int64) from start_step (default: the current step) on, forever;
        self.step follows, so state_dict() taken in between resumes after the last batch."""
        step = self.step if start_step is None else int(start_step)
        if step < 0:
            raise ValueError(f"start_step must be >= 0, got {step}")
        while True:
            epoch, offset = divmod(step, self.steps_per_epoch)
            batches = self.epoch_indices(epoch)
            for batch in batches[offset:]:
                step += 1
                self.step = step
                yield step - 1, batch

    def __iter__(self):
        """One epoch's worth of batches (lists), from the current step."""
        it = self.iterate()
        for _ in range(self.steps_per_epoch):
            yield next(it)[1].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch

    def state_dict(self) -> dict:
        return dict(step=self.step, seed=self.seed, mode=self.mode, batch_size=self.batch_size,
                    num_images=self.num_images)

    def load_state_dict(self, state: dict) -> None:
        """Resumes at state["step"]; the sampler must be built on the same data and settings."""
        for key in ("seed", "mode", "batch_size", "num_images"):
            mine = getattr(self, key)
            if state.get(key) != mine:
                raise ValueError(f"sampler state has {key}={state.get(key)!r} but this sampler has "
                                 f"{key}={mine!r}: it was saved for other data or settings")
        self.step = int(state["step"])
