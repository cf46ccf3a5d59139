"""BigGAN (Brock et al. 2019) generator and projection discriminator at 32, 64 and 128 px.

The architectures are BigGAN-PyTorch's (channel tables below, in multiples of `ch`); the
discriminator's head is sgan_fast's SoftLabelProjectionHead, so that real images can be
scored against soft labels (Softlabel-GAN). All spectral norm of a model runs as one grouped
update per call (`fuse_spectral_norm`) unless fused_sn=False.

Models are rebuilt from `model.config` (`Generator(**G.config)`), never deep-copied: the
fused spectral norm installs closures on the layers that a copy would keep pointing at the
original model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import SNLinear, SNMixin, SoftLabelProjectionHead, fuse_spectral_norm
from ..ops import IMPLS
from .layers import DBlock, GBlock, SelfAttention, snconv3x3

RESOLUTIONS = (32, 64, 128)
INITS = ("ortho", "N02", "xavier")

# Channel multipliers of ch. G starts from a 4x4 map and doubles it in every block.
G_ARCH = {
    32: dict(in_mult=(4, 4, 4), out_mult=(4, 4, 4)),
    64: dict(in_mult=(16, 16, 8, 4), out_mult=(16, 8, 4, 2)),
    128: dict(in_mult=(16, 16, 8, 4, 2), out_mult=(16, 8, 4, 2, 1)),
}
# D's input channels are in_channels, then the previous block's output.
D_ARCH = {
    32: dict(out_mult=(4, 4, 4, 4), downsample=(True, True, False, False)),
    64: dict(out_mult=(1, 2, 4, 8, 16), downsample=(True, True, True, True, False)),
    128: dict(out_mult=(1, 2, 4, 8, 16, 16), downsample=(True, True, True, True, True, False)),
}
DEFAULT_Z_DIM = {32: 128, 64: 120, 128: 120}


def init_weights(module: nn.Module, init: str) -> None:
    """BigGAN's initialisations of every Conv2d / Linear / Embedding weight (SN layers
    included); biases are zeroed. Batch-norm parameters keep torch's defaults."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            continue
        with torch.no_grad():
            if init == "ortho":
                nn.init.orthogonal_(m.weight)
            elif init == "N02":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def _check_common(resolution, num_classes, ch, impl, init) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, "
                         f"got {resolution!r}")
    for name, value in (("num_classes", num_classes), ("ch", ch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"impl must be one of auto, {', '.join(IMPLS)}, got {impl!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")


def _attention_index(attention, block_resolutions: list[int], who: str):
    """The index of the first block whose output has resolution `attention` (None: none)."""
    if attention is None:
        return None
    if attention not in block_resolutions:
        have = ", ".join(str(r) for r in sorted(set(block_resolutions)))
        raise ValueError(f"attention={attention!r}: the {who} has no block with that output "
                         f"resolution; choose one of {have} (or None)")
    return block_resolutions.index(attention)


def _set_impl(module: nn.Module, impl: str) -> None:
    for m in module.modules():
        if isinstance(m, SNMixin):
            m.sn_impl = impl


class Generator(nn.Module):
    """BigGAN's generator: a shared class embedding and hierarchical z (one chunk for the
    first linear layer, one per block) condition every block's batch norm.

    forward(z [B, z_dim], y) -> images [B, out_channels, R, R] in [-1, 1]; y is int64 class
    indices [B] or float class vectors [B, C] (one-hot or soft, mixing the class embeddings).
    `check_inputs` (True) validates z and y at the cost of one device sync for the class
    range; switch it off in a compiled training step.
    """

    sn_fusion = None   # the fuse_spectral_norm handle (None with fused_sn=False)

    def __init__(self, resolution: int, num_classes: int, *, ch: int = 64, z_dim=None,
                 shared_dim: int = 128, attention=None, out_channels: int = 3,
                 init: str = "ortho", impl: str = "auto", fused_sn: bool = True,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        _check_common(resolution, num_classes, ch, impl, init)
        arch = G_ARCH[resolution]
        num_blocks = len(arch["in_mult"])
        self.num_slots = num_blocks + 1
        z_dim = DEFAULT_Z_DIM[resolution] if z_dim is None else z_dim
        if not isinstance(z_dim, int) or z_dim < 1 or z_dim % self.num_slots:
            raise ValueError(f"z_dim must be a positive multiple of {self.num_slots} (hierarchical "
                             f"z: one chunk for the input layer and one for each of {num_blocks} "
                             f"blocks at {resolution} px), got {z_dim!r}")
        for name, value in (("shared_dim", shared_dim), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        block_res = [4 * 2 ** (i + 1) for i in range(num_blocks)]
        self.attention_after = _attention_index(attention, block_res, f"{resolution} px generator")
        self.config = dict(resolution=resolution, num_classes=num_classes, ch=ch, z_dim=z_dim,
                           shared_dim=shared_dim, attention=attention, out_channels=out_channels,
                           init=init, impl=impl, fused_sn=fused_sn, bn_eps=bn_eps)
        self.resolution, self.num_classes, self.z_dim = resolution, num_classes, z_dim
        self.z_chunk = z_dim // self.num_slots
        self.check_inputs = True

        ins = [ch * m for m in arch["in_mult"]]
        outs = [ch * m for m in arch["out_mult"]]
        cond_dim = shared_dim + self.z_chunk
        self.shared = nn.Embedding(num_classes, shared_dim)
        self.linear = SNLinear(self.z_chunk, 4 * 4 * ins[0])
        self.blocks = nn.ModuleList(GBlock(i, o, cond_dim, bn_eps) for i, o in zip(ins, outs))
        self.attention = (None if self.attention_after is None
                          else SelfAttention(outs[self.attention_after]))
        self.out_bn = nn.BatchNorm2d(outs[-1], eps=bn_eps)
        self.out_conv = snconv3x3(outs[-1], out_channels)

        init_weights(self, init)
        _set_impl(self, impl)
        self.sn_fusion = fuse_spectral_norm(self, impl=impl) if fused_sn else None

    def class_embedding(self, y: torch.Tensor) -> torch.Tensor:
        """[B, shared_dim]: a class's embedding, or for class vectors the probability-weighted
        mix of the embeddings (one-hot rows give exactly the class's row)."""
        if y.is_floating_point():
            return y.to(self.shared.weight.dtype) @ self.shared.weight
        return self.shared(y)

    def _check(self, z, y) -> None:
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must be [B, z_dim={self.z_dim}], got {got}")
        if not z.is_floating_point():
            raise ValueError(f"z must be floating point, got {z.dtype}")
        B, C = z.shape[0], self.num_classes
        if not isinstance(y, torch.Tensor):
            raise ValueError(f"y must be a tensor: int64 class indices [B={B}] or float class "
                             f"vectors [B={B}, C={C}], got {type(y).__name__}")
        if y.is_floating_point():
            if tuple(y.shape) != (B, C):
                raise ValueError(f"y (class vectors) must be [B={B}, C={C}], got {tuple(y.shape)}")
            return
        if y.dtype == torch.bool or y.is_complex():
            raise ValueError(f"y must be int64 class indices or float class vectors, got {y.dtype}")
        if tuple(y.shape) != (B,):
            raise ValueError(f"y (class indices) must be [B={B}], got {tuple(y.shape)}")
        if B and not torch.compiler.is_compiling():
            lo, hi = (int(v) for v in torch.aminmax(y))
            if lo < 0 or hi >= C:
                bad = lo if lo < 0 else hi
                raise IndexError(f"y: class index {bad} is outside [0, num_classes={C})")

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            self._check(z, y)
        if not y.is_floating_point() and y.dtype != torch.int64:
            y = y.long()
        zs = z.split(self.z_chunk, 1)
        emb = self.class_embedding(y)
        h = self.linear(zs[0]).view(z.shape[0], -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, torch.cat([emb, zs[i + 1]], 1))
            if i == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class DiscriminatorTrunk(nn.Module):
    """phi(x): the residual blocks, a final ReLU and a sum over space -> h [B, F]. Its own
    module so that a training step can run it once on real and fake images together and
    apply the head to each half with its own labels."""

    sn_fusion = None   # the fuse_spectral_norm handle (None with fused_sn=False)

    def __init__(self, blocks: list[DBlock], attention, attention_after) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attention = attention
        self.attention_after = attention_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after:
                h = self.attention(h)
        return F.relu(h).sum(dim=(2, 3))


class Discriminator(nn.Module):
    """BigGAN's projection discriminator with the soft-label head: D(x, labels) =
    psi(h) + sum_c P[c] <e_c, h>, h = trunk(x).

    forward(x [B, in_channels, R, R], labels) -> [B]; labels are anything the head takes:
    int64 classes [B], dense class probabilities [B, C], top-k (indices, values),
    `bank.labels(indices, target)` or `(bank, indices, target)`. `check` turns on the head's
    label checks (device syncs); `check_inputs` (True) checks the image shape.
    """

    def __init__(self, resolution: int, num_classes: int, *, ch: int = 64, attention=None,
                 in_channels: int = 3, init: str = "ortho", impl: str = "auto",
                 fused_sn: bool = True, check: bool = False) -> None:
        super().__init__()
        _check_common(resolution, num_classes, ch, impl, init)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        arch = D_ARCH[resolution]
        outs = [ch * m for m in arch["out_mult"]]
        ins = [in_channels] + outs[:-1]
        block_res, r = [], resolution
        for down in arch["downsample"]:
            r = r // 2 if down else r
            block_res.append(r)
        attention_after = _attention_index(attention, block_res,
                                           f"{resolution} px discriminator")
        self.config = dict(resolution=resolution, num_classes=num_classes, ch=ch,
                           attention=attention, in_channels=in_channels, init=init, impl=impl,
                           fused_sn=fused_sn, check=check)
        self.resolution, self.num_classes, self.in_channels = resolution, num_classes, in_channels
        self.num_features = outs[-1]

        blocks = [DBlock(i, o, preactivation=k > 0, downsample=d)
                  for k, (i, o, d) in enumerate(zip(ins, outs, arch["downsample"]))]
        attn = None if attention_after is None else SelfAttention(outs[attention_after])
        self.trunk = DiscriminatorTrunk(blocks, attn, attention_after)
        self.head = SoftLabelProjectionHead(outs[-1], num_classes, impl=impl, check=check)
        self.check_inputs = True

        init_weights(self, init)
        _set_impl(self, impl)
        if fused_sn:
            self.trunk.sn_fusion = fuse_spectral_norm(self.trunk, impl=impl)

    @property
    def sn_fusion(self):
        """The trunk's fused spectral norm (None with fused_sn=False)."""
        return self.trunk.sn_fusion

    def _check(self, x) -> None:
        want = (self.in_channels, self.resolution, self.resolution)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be images [B, in_channels={want[0]}, {want[1]}, {want[2]}], "
                             f"got {got}")
        if not x.is_floating_point():
            raise ValueError(f"x must be floating point (images in [-1, 1]), got {x.dtype}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h = phi(x) [B, num_features]."""
        if self.check_inputs:
            self._check(x)
        return self.trunk(x)

    def forward(self, x: torch.Tensor, labels) -> torch.Tensor:
        return self.head(self.features(x), labels)
