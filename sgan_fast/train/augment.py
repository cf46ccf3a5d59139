"""Differentiable augmentation (DiffAugment; Zhao et al., NeurIPS 2020) for D's inputs.

Real and fake images go through the same random colour, translation and cutout transforms
before the discriminator, and gradients flow back through them to the generator. That keeps
D from memorising a small (or, for minority classes, tiny) training set without leaking the
augmentation into the generated distribution.

The randomness is split from the transform on purpose:

- ``sample_augment`` draws every random number for one batch as explicit tensors, from a
  ``torch.Generator`` the caller owns. Saving and restoring that generator's state makes a
  resumed run draw the same augmentations, bit for bit.
- ``diff_augment`` is a pure function of ``(x, params)``: plain differentiable tensor ops,
  no RNG, no host syncs, no Python loop over the batch, so ``torch.compile`` and CUDA graphs
  can capture it inside the training step.

Images are expected in [-1, 1], NCHW (contiguous or channels_last), any channel count.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor

__all__ = ["POLICIES", "PARAM_KEYS", "parse_policy", "translation_range", "cutout_size",
           "sample_augment", "diff_augment", "DiffAugment"]

#: The transforms, in the order they are always applied (and their parameters drawn).
POLICIES = ("color", "translation", "cutout")

#: Which entries of the params dict each transform owns.
PARAM_KEYS = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}

TRANSLATION_RATIO = 1.0 / 8.0
CUTOUT_RATIO = 1.0 / 2.0


def _round_half_up(v: float) -> int:
    # Python's round() rounds halves to even (round(2.5) == 2); DiffAugment rounds them up.
    return int(math.floor(v + 0.5))


def translation_range(size: int) -> int:
    """Largest shift (in pixels, either direction) for an image side of ``size`` pixels."""
    return _round_half_up(size * TRANSLATION_RATIO)


def cutout_size(size: int) -> int:
    """Side of the cutout patch (before clipping) for an image side of ``size`` pixels."""
    return _round_half_up(size * CUTOUT_RATIO)


def parse_policy(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Parse ``"color,translation,cutout"`` into a tuple of policy names.

    ``""``, ``"none"`` or ``None`` give ``()``. Names are returned in application order
    (``POLICIES`` order), whatever order they were written in, so the tuple says what
    ``diff_augment`` will actually do. Unknown and repeated names are refused, since both
    are almost certainly typos in a config.
    """
    if spec is None:
        return ()
    if isinstance(spec, str):
        stripped = spec.strip()
        if stripped.lower() in ("", "none"):
            return ()
        names = [s.strip() for s in stripped.split(",")]
    else:
        names = [str(s).strip() for s in spec]
    seen: set[str] = set()
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r} in {spec!r}; "
                             f"valid names are {', '.join(POLICIES)} (or 'none')")
        if name in seen:
            raise ValueError(f"DiffAugment policy {name!r} given twice in {spec!r}")
        seen.add(name)
    return tuple(p for p in POLICIES if p in seen)


def sample_augment(policy: str | Iterable[str], batch: int, height: int, width: int, *,
                   generator: torch.Generator | None,
                   device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Draw all random parameters for one batch of ``batch`` images of ``height`` x ``width``.

    Numbers are drawn on the generator's own device (so a CPU generator serves CUDA images)
    and then moved to ``device``. The draw order is fixed (``POLICIES`` order, then the
    order below), so a generator in a given state always yields the same dict.

    Keys (only those of the policies asked for):

    - ``brightness`` [B,1,1,1] float32, U(-0.5, 0.5): added to every pixel.
    - ``saturation`` [B,1,1,1] float32, U(0, 2): scales the deviation from the channel mean.
    - ``contrast``   [B,1,1,1] float32, U(0.5, 1.5): scales the deviation from the image mean.
    - ``translation`` [B,2] int64, (dy, dx), each in [-r, r] with r = ``translation_range``
      of that side; content moves down/right by (dy, dx), like ``torch.roll``.
    - ``cutout`` [B,2] int64, (cy, cx): patch centre; rows
      ``cy - s//2 .. cy - s//2 + s - 1`` with s = ``cutout_size(height)`` (columns alike)
      are zeroed, clipped to the image. cy is drawn from [0, H + 1 - s % 2), which makes
      the clipping symmetric between the two borders for odd and even s.
    """
    names = parse_policy(policy)
    if batch < 0 or height < 1 or width < 1:
        raise ValueError(f"bad batch/height/width: {batch}, {height}, {width}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else gen_device
    kw = dict(generator=generator, device=gen_device)
    out: dict[str, Tensor] = {}
    if "color" in names:
        out["brightness"] = torch.rand(batch, 1, 1, 1, **kw) - 0.5
        out["saturation"] = torch.rand(batch, 1, 1, 1, **kw) * 2.0
        out["contrast"] = torch.rand(batch, 1, 1, 1, **kw) + 0.5
    if "translation" in names:
        ry, rx = translation_range(height), translation_range(width)
        dy = torch.randint(-ry, ry + 1, (batch,), dtype=torch.int64, **kw)
        dx = torch.randint(-rx, rx + 1, (batch,), dtype=torch.int64, **kw)
        out["translation"] = torch.stack([dy, dx], dim=1)
    if "cutout" in names:
        sy, sx = cutout_size(height), cutout_size(width)
        cy = torch.randint(0, height + 1 - sy % 2, (batch,), dtype=torch.int64, **kw)
        cx = torch.randint(0, width + 1 - sx % 2, (batch,), dtype=torch.int64, **kw)
        out["cutout"] = torch.stack([cy, cx], dim=1)
    if device != gen_device:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def _is_channels_last(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _color(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    # Parameters are cast to x's dtype so a bf16 batch stays bf16 (no silent promotion).
    b = params["brightness"].to(x.dtype)
    s = params["saturation"].to(x.dtype)
    c = params["contrast"].to(x.dtype)
    x = x + b
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * s + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * c + m


def _translate(x: Tensor, shift: Tensor) -> Tensor:
    """out[b, :, i, j] = x[b, :, i - dy_b, j - dx_b], zero where that is outside the image.

    One gather over the flattened H*W plane with clamped source indices, then a mask. Each
    output pixel reads exactly one input pixel, so the backward is a scatter whose only
    colliding indices (the clamped ones) carry zero gradient: its values are deterministic.
    """
    B, C, H, W = x.shape
    shift = shift.to(device=x.device, dtype=torch.int64)
    rows = torch.arange(H, device=x.device)
    cols = torch.arange(W, device=x.device)
    src_i = rows[None, :] - shift[:, 0:1]  # [B, H]
    src_j = cols[None, :] - shift[:, 1:2]  # [B, W]
    valid = (((src_i >= 0) & (src_i < H))[:, :, None]
             & ((src_j >= 0) & (src_j < W))[:, None, :])  # [B, H, W]
    src = src_i.clamp(0, H - 1)[:, :, None] * W + src_j.clamp(0, W - 1)[:, None, :]
    src = src.reshape(B, H * W)
    if _is_channels_last(x):
        # NHWC memory: gather whole pixels (all channels) and keep channels_last on output.
        flat = x.permute(0, 2, 3, 1).reshape(B, H * W, C)
        out = flat.gather(1, src[:, :, None].expand(B, H * W, C))
        out = torch.where(valid.reshape(B, H * W, 1), out, out.new_zeros(()))
        return out.reshape(B, H, W, C).permute(0, 3, 1, 2)
    flat = x.reshape(B, C, H * W)
    out = flat.gather(2, src[:, None, :].expand(B, C, H * W))
    out = torch.where(valid.reshape(B, 1, H * W), out, out.new_zeros(()))
    return out.reshape(B, C, H, W)


def _cutout(x: Tensor, centre: Tensor) -> Tensor:
    """Zero a (cutout_size(H) x cutout_size(W)) patch per image, clipped at the borders."""
    _, _, H, W = x.shape
    sy, sx = cutout_size(H), cutout_size(W)
    centre = centre.to(device=x.device, dtype=torch.int64)
    top = centre[:, 0:1] - sy // 2  # [B, 1]
    left = centre[:, 1:2] - sx // 2
    rows = torch.arange(H, device=x.device)[None, :]
    cols = torch.arange(W, device=x.device)[None, :]
    in_rows = (rows >= top) & (rows < top + sy)  # [B, H]
    in_cols = (cols >= left) & (cols < left + sx)  # [B, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # [B, H, W]
    return torch.where(keep[:, None], x, x.new_zeros(()))


def diff_augment(x: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Apply the transforms whose parameters are in ``params`` to ``x`` [B, C, H, W].

    Order: colour (brightness, saturation, contrast), translation, cutout. A pure,
    differentiable function of ``(x, params)``: the same inputs give bit-identical outputs
    and the gradient flows to ``x``. An empty ``params`` returns ``x`` itself.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    known = {k for keys in PARAM_KEYS.values() for k in keys}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown DiffAugment parameter(s) {sorted(unknown)}; "
                         f"expected some of {sorted(known)}")
    B = x.shape[0]
    for k, v in params.items():
        if v.shape[0] != B:
            raise ValueError(f"params[{k!r}] is for batch {v.shape[0]}, x has batch {B}")
    color = [k for k in PARAM_KEYS["color"] if k in params]
    if color and len(color) != 3:
        raise ValueError(f"colour needs brightness, saturation and contrast; got {color}")
    if color:
        x = _color(x, params)
    if "translation" in params:
        x = _translate(x, params["translation"])
    if "cutout" in params:
        x = _cutout(x, params["cutout"])
    return x


class DiffAugment:
    """A policy plus its sampler and transform: ``aug(x, aug.sample(B, H, W, generator=g,
    device=x.device))``. Falsy when the policy is empty, and then ``aug(x, params)`` is
    ``x``, so a trainer can skip sampling altogether with ``if aug:``."""

    def __init__(self, policy: str = "color,translation,cutout"):
        self.policy: tuple[str, ...] = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __repr__(self) -> str:
        return f"DiffAugment({','.join(self.policy) or 'none'!r})"

    def sample(self, batch: int, height: int, width: int, *,
               generator: torch.Generator | None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        return sample_augment(self.policy, batch, height, width,
                              generator=generator, device=device)

    def __call__(self, x: Tensor, params: dict[str, Tensor] | None) -> Tensor:
        if not self.policy:
            return x
        if params is None:
            raise ValueError("DiffAugment with a non-empty policy needs params from sample()")
        expected = {k for p in self.policy for k in PARAM_KEYS[p]}
        if set(params) != expected:
            raise ValueError(f"params have keys {sorted(params)}, policy {self.policy} "
                             f"needs {sorted(expected)}")
        return diff_augment(x, params)
