"""The DALI loader for image folders (optional extra: pip install "sgan-fast[dali]").

    loader = DALILoader(ImageFolder("data/train"), sampler, resolution=64, device="cuda")
    for step, (images, labels, indices) in loader:   # same contract as the other loaders
        ...

File bytes, classes, dataset indices and flip flags go into the pipeline through
external_source in the sampler's order (batch_at(step)); the pipeline decodes ("mixed", on the
GPU, for device="cuda"; CPU operators with device_id=None for device="cpu", which is how CI
tests it), resizes the shorter side to the resolution (cubic, antialiased), centre-crops,
flips and lays the batch out as NCHW uint8; the float conversion happens in torch. Flip flags
come from (flip_seed, step) as in TorchLoader, so a resumed run sees the same batches.

A file DALI cannot decode raises a ValueError naming it (the loader re-reads the failed
batch's files with Pillow to find which one). Without DALI installed, building the loader
says how to install it.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from ._loader_base import LoaderBase, step_flips
from .image_folder import ImageFolder
from .samplers import BatchSampler

INSTALL_HINT = ('the DALI loader needs NVIDIA DALI: pip install "sgan-fast[dali]" (the package '
                'nvidia-dali-cuda130; nvidia-dali-cuda120 for CUDA 12), or use TorchLoader')


def _dali():
    try:
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
        from nvidia.dali.plugin.pytorch import DALIGenericIterator
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return fn, types, pipeline_def, DALIGenericIterator


class DALILoader(LoaderBase):
    """Batches (images, labels, indices) of an ImageFolder through an NVIDIA DALI pipeline."""

    def __init__(self, folder: ImageFolder, sampler: BatchSampler, *, resolution: int,
                 device="cuda", output: str = "float", dtype: torch.dtype = torch.float32,
                 flip: bool = True, flip_seed: int = 0, num_threads: int = 4,
                 channels_last: bool = False):
        fn, types, pipeline_def, self._Iterator = _dali()
        if not isinstance(folder, ImageFolder):
            raise TypeError(f"the DALI loader reads image folders, got {type(folder).__name__} "
                            "(arrays: use GPUResidentLoader)")
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution!r}")
        self._setup(len(folder), sampler, device=device, output=output, dtype=dtype, flip=flip,
                    flip_seed=flip_seed, channels_last=channels_last, what="folder")
        self.folder, self.resolution = folder, resolution
        self._num_threads = num_threads
        self._fn, self._types, self._pipeline_def = fn, types, pipeline_def

    # --- the pipeline ------------------------------------------------------------------------

    def _read(self, rel: str) -> np.ndarray:
        return np.fromfile(os.path.join(self.folder.root, rel), dtype=np.uint8)

    def _source(self, start: int):
        def batch(info):
            step = start + int(getattr(info, "iteration", info))  # BatchInfo or iteration
            idx = self.sampler.local(self.sampler.batch_at(step))   # this rank's slice
            files = [self._read(self.folder.paths[i]) for i in idx]
            labels = [np.array([self.folder.labels[i]], dtype=np.int64) for i in idx]
            indices = [np.array([i], dtype=np.int64) for i in idx]
            step_flip = self.sampler.local(step_flips(self.flip_seed, step, self.sampler.batch_size))
            flips = [np.array(f if self.flip else False, dtype=np.int32) for f in step_flip]
            return files, labels, indices, flips
        return batch

    def _build(self, start: int):
        fn, types = self._fn, self._types
        gpu = self.device.type == "cuda"
        res, channels = self.resolution, self.folder.channels

        @self._pipeline_def(batch_size=self.sampler.local_batch_size, num_threads=self._num_threads,
                            device_id=(self.device.index or 0) if gpu else None,
                            prefetch_queue_depth=2)
        def pipe():
            data, labels, indices, flips = fn.external_source(
                source=self._source(start), num_outputs=4, batch=True,
                dtype=[types.UINT8, types.INT64, types.INT64, types.INT32])
            img = fn.decoders.image(data, device="mixed" if gpu else "cpu",
                                    output_type=types.RGB if channels == 3 else types.GRAY)
            img = fn.resize(img, resize_shorter=res, interp_type=types.INTERP_CUBIC, antialias=True)
            img = fn.crop(img, crop=(res, res), out_of_bounds_policy="trim_to_shape")
            img = fn.flip(img, horizontal=flips)
            img = fn.transpose(img, perm=[2, 0, 1])
            return img, labels.gpu() if gpu else labels, indices.gpu() if gpu else indices

        p = pipe()
        p.build()
        return self._Iterator([p], ["images", "labels", "indices"], auto_reset=False)

    # --- iteration ---------------------------------------------------------------------------

    def _finish(self, batch):
        return (self._images_out(batch["images"].to(self.device)),
                batch["labels"].view(-1).to(self.device),
                batch["indices"].view(-1).to(self.device))

    def _name_bad_file(self, step: int, exc: Exception):
        # the pipeline runs ahead (prefetch depth 2): the bad file is in one of three batches
        for s in range(step, step + 3):
            for i in self.sampler.local(self.sampler.batch_at(s)):
                try:
                    self.folder._decode(self.folder.paths[i])
                except ValueError as bad:
                    return ValueError(f"DALI could not decode a file of step {s}: {bad}")
        return RuntimeError(f"the DALI pipeline failed at step {step}: {exc}")

    def __iter__(self) -> Iterator[tuple]:
        start = self.step
        it = None
        step = start
        while True:
            try:
                if it is None:
                    it = self._build(start)  # the iterator runs the first batches at once
                batch = next(it)[0]
            except StopIteration:
                return
            except Exception as exc:  # DALI reports decode errors without the file's name
                raise self._name_bad_file(step, exc) from exc
            self.step = self.sampler.step = step + 1
            yield step, self._finish(batch)
            step += 1
