"""The GPU-resident loader: the whole uint8 dataset on the training device.

    loader = GPUResidentLoader(dataset, sampler, device="cuda")
    for step, (images, labels, indices) in loader:          # one batch per step, forever
        ...  # images [B, C, H, W] float in [-1, 1] (or uint8), labels and indices int64

At the start of each epoch the sampler's batches for that epoch and the random flips are
moved to (or drawn on) the device in one go; every step after that is a gather, an optional
horizontal flip and a conversion, all on the device, with no host-to-device copy and no
host-side index work. The batches depend only on (sampler seed, epoch) and the flips on
(flip seed, epoch, device type: CPU and CUDA generators differ), so a run resumed at step s
gets exactly the batches it would have had.
This is the default loader for datasets that fit in device memory (N H W C bytes).
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from ._loader_base import LoaderBase
from .datasets import ArrayDataset
from .samplers import BatchSampler

class GPUResidentLoader(LoaderBase):
    """Batches (images, labels, indices) of an ArrayDataset, drawn by a BatchSampler, on `device`.

    output: "float" -> images in [-1, 1] of `dtype` (x / 127.5 - 1); "uint8" -> the pixels.
    flip: mirror each image horizontally with probability 1/2 (seeded by flip_seed, epoch).
    channels_last: images in torch.channels_last memory format (same NCHW shape).
    """

    def __init__(self, dataset: ArrayDataset, sampler: BatchSampler, *, device="cuda",
                 output: str = "float", dtype: torch.dtype = torch.float32, flip: bool = True,
                 flip_seed: int = 0, channels_last: bool = False):
        if not isinstance(dataset, ArrayDataset):
            raise TypeError(f"the GPU-resident loader takes an ArrayDataset, got {type(dataset).__name__} "
                            "(image folders: use the DALI or the DataLoader loader)")
        self._setup(len(dataset), sampler, device=device, output=output, dtype=dtype, flip=flip,
                    flip_seed=flip_seed, channels_last=channels_last)
        need = dataset.images.nbytes
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > 0.8 * free:
                raise MemoryError(f"the dataset takes {need / 2**30:.1f} GiB but only "
                                  f"{free / 2**30:.1f} GiB of device memory is free; use a "
                                  "streaming loader (DALI or the DataLoader fallback)")
        self.dataset = dataset
        self.images = torch.from_numpy(dataset.images).to(self.device)   # [N, H, W, C] uint8
        self.labels = torch.from_numpy(dataset.labels).to(self.device)   # [N] int64
        self._epoch: Optional[int] = None
        self._batches = self._flips = None

    @property
    def batch_size(self) -> int:
        """The batch this loader hands out: this rank's slice of the global batch."""
        return self.sampler.local_batch_size

    def _load_epoch(self, epoch: int) -> None:
        batches = torch.from_numpy(self.sampler.epoch_indices(epoch))
        self._batches = self.sampler.local(batches).to(self.device)
        if self.flip:   # drawn for the global batches, then sliced: the same on every world size
            g = torch.Generator(device=self.device)
            g.manual_seed(self.flip_seed * 1_000_003 + epoch)
            flips = torch.rand(batches.shape, generator=g, device=self.device) < 0.5
            self._flips = self.sampler.local(flips)
        self._epoch = epoch

    def batch(self, step: int):
        """(images, labels, indices) of global step `step`."""
        epoch, offset = divmod(int(step), self.sampler.steps_per_epoch)
        if epoch != self._epoch:
            self._load_epoch(epoch)
        idx = self._batches[offset]
        x = self.images.index_select(0, idx).permute(0, 3, 1, 2)          # [B, C, H, W] view
        if self.flip:
            x = torch.where(self._flips[offset].view(-1, 1, 1, 1), x.flip(-1), x)
        return self._images_out(x), self.labels.index_select(0, idx), idx

    def __iter__(self) -> Iterator[tuple]:
        """(step, (images, labels, indices)) from the loader's step on, forever; state_dict()
        resumes after the last batch handed out."""
        step = self.step
        while True:
            batch = self.batch(step)
            step += 1
            self.step = self.sampler.step = step
            yield step - 1, batch
