"""What every loader shares: argument checks, seeded flip flags, the output conversion and
resumable state."""

from __future__ import annotations

import numpy as np
import torch

OUTPUTS = ("float", "uint8")


def step_flips(flip_seed: int, step: int, batch_size: int) -> np.ndarray:
    """bool [B]: which images of step `step` are mirrored, from (flip_seed, step) alone."""
    rng = np.random.default_rng(np.random.SeedSequence([int(flip_seed), int(step), 0xF1]))
    return rng.random(batch_size) < 0.5


class LoaderBase:
    """The settings every loader has (sampler, device, output, dtype, flip, flip_seed,
    channels_last, step = batches handed out), checked once, and what follows from them."""

    def _setup(self, num_images: int, sampler, *, device, output: str, dtype: torch.dtype,
               flip: bool, flip_seed: int, channels_last: bool, what: str = "dataset") -> None:
        if sampler.num_images != num_images:
            raise ValueError(f"the sampler draws from {sampler.num_images} images but the {what} "
                             f"has {num_images}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        if output == "float" and not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating for output='float', got {dtype}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but there is no GPU (torch.cuda.is_available() is "
                               "False); pass device='cpu'")
        self.sampler, self.output, self.dtype = sampler, output, dtype
        self.flip, self.flip_seed, self.channels_last = flip, int(flip_seed), channels_last
        self.step = sampler.step

    def _images_out(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW on the device -> the output: float in [-1, 1] (x / 127.5 - 1) in dtype,
        or uint8; channels_last when asked."""
        if self.output == "float":
            x = x.to(self.dtype).div_(127.5).sub_(1.0)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def state_dict(self) -> dict:
        return dict(sampler=dict(self.sampler.state_dict(), step=self.step), flip=self.flip,
                    flip_seed=self.flip_seed)

    def load_state_dict(self, state: dict) -> None:
        if state.get("flip") != self.flip or state.get("flip_seed") != self.flip_seed:
            raise ValueError("loader state was saved with other flip settings "
                             f"(flip={state.get('flip')}, flip_seed={state.get('flip_seed')})")
        self.sampler.load_state_dict(state["sampler"])
        self.step = self.sampler.step
