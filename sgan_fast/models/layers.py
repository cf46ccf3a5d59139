"""Building blocks of the BigGAN generator and discriminator (BigGAN-PyTorch's design).

Every weight layer is one of sgan_fast's spectrally normalised layers, so that
`fuse_spectral_norm` can group all of a model's power iterations into one update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import SNConv2d, SNLinear


def snconv3x3(in_channels: int, out_channels: int) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 3, padding=1)


def snconv1x1(in_channels: int, out_channels: int, bias: bool = True) -> SNConv2d:
    return SNConv2d(in_channels, out_channels, 1, padding=0, bias=bias)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias come from the conditioning vector (class embedding plus
    a z chunk), so that one generator serves every class. The gain is 1 + linear(cond): a
    zero-initialised conditioning leaves plain batch norm."""

    def __init__(self, num_features: int, cond_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, affine=False)
        self.gain = SNLinear(cond_dim, num_features, bias=False)
        self.bias = SNLinear(cond_dim, num_features, bias=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = (1 + self.gain(cond)).view(cond.shape[0], -1, 1, 1)
        bias = self.bias(cond).view(cond.shape[0], -1, 1, 1)
        return self.bn(x) * gain + bias


class GBlock(nn.Module):
    """Residual up-block: CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3, skip = up then conv1x1."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, cond_dim, bn_eps)
        self.conv1 = snconv3x3(in_channels, out_channels)
        self.bn2 = ConditionalBatchNorm2d(out_channels, cond_dim, bn_eps)
        self.conv2 = snconv3x3(out_channels, out_channels)
        self.conv_sc = snconv1x1(in_channels, out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = upsample2x(F.relu(self.bn1(x, cond)))
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.conv_sc(upsample2x(x))


class DBlock(nn.Module):
    """Residual down-block. The first block of D sees the image itself, so it is not
    pre-activated (a ReLU on pixels in [-1, 1] would throw half of them away). The skip's
    1x1 conv and 2x average pool commute in exact arithmetic; the order (pool first in the
    first block, conv first in the others) is BigGAN-PyTorch's, kept so that its trained
    weights give the same rounding."""

    def __init__(self, in_channels: int, out_channels: int, preactivation: bool = True,
                 downsample: bool = True) -> None:
        super().__init__()
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = snconv3x3(in_channels, out_channels)
        self.conv2 = snconv3x3(out_channels, out_channels)
        self.learnable_sc = in_channels != out_channels or downsample
        self.conv_sc = snconv1x1(in_channels, out_channels) if self.learnable_sc else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable_sc:
            return x
        if self.preactivation:
            x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return self.conv_sc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self.shortcut(x)

    def extra_repr(self) -> str:
        return f"preactivation={self.preactivation}, downsample={self.downsample}"


class SelfAttention(nn.Module):
    """SAGAN self-attention: long-range structure that 3x3 convolutions reach only slowly.
    Keys and values are max-pooled 2x (a quarter of the attention cost); gamma starts at 0 so
    the block begins as the identity and the model learns how much to use it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs at least 8 channels (it projects to "
                             f"channels // 8), got {channels}; use a larger ch")
        self.channels = channels
        self.theta = snconv1x1(channels, channels // 8, bias=False)
        self.phi = snconv1x1(channels, channels // 8, bias=False)
        self.g = snconv1x1(channels, channels // 2, bias=False)
        self.o = snconv1x1(channels // 2, channels, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        theta = self.theta(x).view(B, C // 8, H * W)
        phi = F.max_pool2d(self.phi(x), 2).view(B, C // 8, H * W // 4)
        g = F.max_pool2d(self.g(x), 2).view(B, C // 2, H * W // 4)
        beta = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), -1)  # [B, HW, HW/4]
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(B, C // 2, H, W))
        return x + self.gamma * o
