"""The portable loader: torch DataLoader workers decode (Pillow for image folders), the batch
is moved to the device, flipped and converted there. Same contract as GPUResidentLoader:

    loader = TorchLoader(dataset, sampler, device="cuda", num_workers=4)
    for step, (images, labels, indices) in loader:   # [B, C, H, W] float in [-1, 1] (or uint8)
        ...

The batches are the sampler's (batch_at(step)), so they depend only on (seed, step); the
loader counts the batches it has handed out, and its state_dict resumes after the last one
(workers may have decoded a few more ahead; those are simply decoded again). A worker's
error (a corrupt file, say) is raised in the main process with its message.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ._loader_base import LoaderBase, step_flips
from .samplers import BatchSampler

class _Batches:
    """The sampler's batches from a step on, forever, as lists (a DataLoader batch_sampler)."""

    def __init__(self, sampler: BatchSampler, start: int):
        self.sampler, self.start = sampler, start

    def __iter__(self):
        it = self.sampler.iterate(self.start)
        while True:
            yield self.sampler.local(next(it)[1]).tolist()   # this rank's slice


def _collate(items):
    images = torch.stack([it[0] for it in items])
    labels = torch.tensor([it[1] for it in items], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in items], dtype=torch.int64)
    return images, labels, indices


class TorchLoader(LoaderBase):
    """Batches (images, labels, indices) of any dataset whose items are (uint8 [C, H, W],
    class, index) - ImageFolder, ArrayDataset - drawn by a BatchSampler, on `device`."""

    def __init__(self, dataset, sampler: BatchSampler, *, device="cpu", output: str = "float",
                 dtype: torch.dtype = torch.float32, flip: bool = True, flip_seed: int = 0,
                 num_workers: int = 0, channels_last: bool = False):
        self._setup(len(dataset), sampler, device=device, output=output, dtype=dtype, flip=flip,
                    flip_seed=flip_seed, channels_last=channels_last)
        self.dataset, self.num_workers = dataset, num_workers

    def _finish(self, step: int, images, labels, indices):
        x = images.to(self.device, non_blocking=True)
        if self.flip:
            flips = torch.from_numpy(self.sampler.local(
                step_flips(self.flip_seed, step, self.sampler.batch_size)))
            x = torch.where(flips.to(self.device).view(-1, 1, 1, 1), x.flip(-1), x)
        return (self._images_out(x), labels.to(self.device, non_blocking=True),
                indices.to(self.device, non_blocking=True))

    def __iter__(self) -> Iterator[tuple]:
        start = self.step
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_Batches(self.sampler, start), collate_fn=_collate,
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        for step, (images, labels, indices) in enumerate(loader, start):
            self.step = step + 1
            self.sampler.step = step + 1
            yield step, self._finish(step, images, labels, indices)
