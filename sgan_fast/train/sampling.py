"""Drawing images from a generator: latents (optionally truncated), uint8 conversion, grids,
and the generator of a checkpoint."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def latents(n: int, z_dim: int, *, generator: Optional[torch.Generator] = None, device="cpu",
            truncation: Optional[float] = None) -> torch.Tensor:
    """z ~ N(0, I) [n, z_dim]; with `truncation` t > 0 every entry with |z| > t is redrawn
    until it is inside (BigGAN's truncation trick; lower t trades variety for fidelity)."""
    if truncation is not None and truncation <= 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    gdev = generator.device if generator is not None else torch.device(device)
    z = torch.randn(n, z_dim, generator=generator, device=gdev)
    if truncation is not None:
        for _ in range(1000):
            out = z.abs() > truncation
            if not out.any():
                break
            z = torch.where(out, torch.randn(n, z_dim, generator=generator, device=gdev), z)
    return z.to(device)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 [0, 255], as the loaders map pixels (x/127.5 - 1)."""
    return ((x.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def generate(G, labels, *, generator: Optional[torch.Generator] = None, batch_size: int = 256,
             truncation: Optional[float] = None, device=None) -> torch.Tensor:
    """uint8 images [N, C, H, W] on the CPU for int64 class labels [N] (or class vectors
    [N, C]), in batches, with G in eval mode (restored afterwards)."""
    device = torch.device(device) if device is not None else next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        out = []
        for a in range(0, len(labels), batch_size):
            y = labels[a:a + batch_size].to(device)
            z = latents(len(y), G.config["z_dim"], generator=generator, device=device,
                        truncation=truncation)
            out.append(to_uint8(G(z, y)).cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.uint8)
    finally:
        G.train(was_training)


def skip_latents(n: int, z_dim: int, *, generator, batch_size: int = 256, truncation=None) -> None:
    """Advances `generator` exactly as generate(G, labels of length n, generator=generator,
    batch_size=batch_size, truncation=truncation) does, without running G: with several
    processes, the latents of the images another rank makes are drawn and dropped, so that
    this rank's images get the latents they get in one process."""
    for a in range(0, int(n), batch_size):
        latents(min(batch_size, int(n) - a), z_dim, generator=generator, truncation=truncation)


def grid_image(images: torch.Tensor, nrow: int, *, pad: int = 2) -> np.ndarray:
    """uint8 [N, C, H, W] -> one uint8 [rows*(H+pad)+pad, nrow*(W+pad)+pad, C] image, row-major
    (the trainer's grids: one row per class), on a white background."""
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    x = images.permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
    return canvas


def save_grid(images: torch.Tensor, path, nrow: int) -> None:
    """A PNG of the grid (grey for one channel), written atomically."""
    from PIL import Image

    from .._io import atomic_write

    g = grid_image(images, nrow)
    img = Image.fromarray(g[..., 0] if g.shape[2] == 1 else g)
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def class_grid(G, num_classes: int, per_class: int, *, seed: int = 0, device=None,
               truncation: Optional[float] = None) -> torch.Tensor:
    """uint8 [C * per_class, ...]: per_class images of every class, class by class, from a
    fixed seed (the same latents at every call, so grids over training are comparable)."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return generate(G, labels, generator=torch.Generator().manual_seed(int(seed)),
                    truncation=truncation, device=device)


def load_generator(path, *, ema: bool = True, device="cpu", impl: str = "auto"):
    """(G in eval mode, checkpoint metadata) from a training checkpoint or run folder: the EMA
    weights by default. Only tensors and plain values are read (weights_only)."""
    from ..models import Generator
    from .checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    cfg = dict(state["model_config"]["G"], impl=impl)
    G = Generator(**cfg)
    key = "G_ema" if ema else "G"
    missing, unexpected = G.load_state_dict(state[key], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: the {key} weights do not fit the generator they were saved "
                              f"with (missing {missing[:3]}, unexpected {unexpected[:3]})")
    G.to(device).eval()
    meta = dict(step=state["step"], data=state["data"], config=state["config"])
    return G, meta
