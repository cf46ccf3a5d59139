"""Spectrally normalised layers with BigGAN-PyTorch's semantics and state_dict layout.

Each layer keeps, per singular value i < num_svs, a buffer `u{i}` [1, out] (the left
power-iteration vector, updated in place in training mode only) and `sv{i}` [1] (the
last singular-value estimate, for logging). One power-iteration step is

    v = normalize(u W)      u = normalize(v W^T)      s = v W^T u^T

with later singular vectors made orthogonal to earlier ones (Gram-Schmidt), and the
layer uses W / s_0. u and v are constants for autograd; the gradient flows through s.
`W_()` returns the normalised weight, as in BigGAN-PyTorch, so that code written for
those layers (and `fuse_spectral_norm`) works with these.

With num_svs = 1 (the default, and what BigGAN uses) the update runs through
sgan_fast.ops.spectral_norm_grouped for this one layer; `sgan_fast.nn.fuse_spectral_norm`
groups all layers of a model into one update per forward. num_svs > 1 runs the plain
per-layer loop below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops._dispatch import outside_autocast
from ..ops.spectral_norm import spectral_norm_grouped


def _gram_schmidt(x: torch.Tensor, ys: list[torch.Tensor]) -> torch.Tensor:
    for y in ys:
        x = x - (y @ x.t()) * y / (y @ y.t())
    return x


class SNMixin:
    """Buffers and power iteration shared by the SN layers (num_svs >= 1, num_itrs >= 1).

    Class attributes that can be set per instance: `sn_impl` (the implementation of the
    grouped op, "auto" by default) and `sn_check` (its data checks, which cost a device
    sync per call; off by default in layers, since a non-finite s still raises)."""

    sn_impl = "auto"
    sn_check = False

    def _init_sn(self, num_svs: int, num_itrs: int, num_outputs: int, eps: float) -> None:
        if num_svs < 1 or num_itrs < 1:
            raise ValueError(f"num_svs and num_itrs must be >= 1, got {num_svs} and {num_itrs}")
        self.num_svs, self.num_itrs, self.eps = num_svs, num_itrs, eps
        for i in range(num_svs):
            self.register_buffer(f"u{i}", torch.randn(1, num_outputs))
            self.register_buffer(f"sv{i}", torch.ones(1))

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.view(self.weight.shape[0], -1)

    @torch.no_grad()
    @outside_autocast
    def power_iteration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-layer loop for any num_svs: runs num_itrs steps (updating u{i} and
        sv{i >= 1} in training mode) and returns the first singular pair (u [out], v [in])
        in float32 (float64 for a float64 weight), with s_0 = u^T W v."""
        acc = torch.float64 if self.weight.dtype == torch.float64 else torch.float32
        W = self.weight_matrix().detach().to(acc)
        us = [getattr(self, f"u{i}") for i in range(self.num_svs)]
        for _ in range(self.num_itrs):
            new_us, new_vs, svs = [], [], []
            for i, u in enumerate(us):
                v = F.normalize(_gram_schmidt(u.to(acc) @ W, new_vs), eps=self.eps)
                new_vs.append(v)
                u_new = F.normalize(_gram_schmidt(v @ W.t(), new_us), eps=self.eps)
                new_us.append(u_new)
                svs.append((v @ W.t() @ u_new.t()).reshape(1))
                if self.training:
                    u.copy_(u_new)
        if self.training:
            for i in range(1, self.num_svs):
                getattr(self, f"sv{i}").copy_(svs[i])
        return new_us[0].reshape(-1), new_vs[0].reshape(-1)

    def W_(self) -> torch.Tensor:
        """W / s_0 with the gradient through s_0; updates u{i} and sv{i} in training mode."""
        if self.num_svs == 1:
            (out,), s = spectral_norm_grouped(
                [self.weight], [self.u0], semantics="biggan", num_iters=self.num_itrs,
                eps=self.eps, training=self.training, impl=self.sn_impl, check=self.sn_check,
                return_scales=True)
            if self.training:
                with torch.no_grad():
                    self.sv0.copy_(s.reshape(1))
            return out
        u, v = self.power_iteration()
        s = u.to(self.weight.dtype) @ self.weight_matrix() @ v.to(self.weight.dtype)
        if self.training:
            with torch.no_grad():
                self.sv0.copy_(s.detach().reshape(1))
        return self.weight / s


class SNLinear(nn.Linear, SNMixin):
    """nn.Linear with BigGAN-PyTorch's spectral norm (state_dict: weight, bias, u0.., sv0..)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = 1e-12) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_sn(num_svs, num_itrs, out_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.W_(), self.bias)


class SNConv2d(nn.Conv2d, SNMixin):
    """nn.Conv2d with BigGAN-PyTorch's spectral norm (its constructor arguments and state_dict)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = 1e-12) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias)
        self._init_sn(num_svs, num_itrs, out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.W_(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class SNEmbedding(nn.Embedding, SNMixin):
    """nn.Embedding with BigGAN-PyTorch's spectral norm; the matrix is [num_embeddings, dim]."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight=None, num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-12) -> None:
        if max_norm is not None:
            raise ValueError("max_norm renormalises the weight in place and fights spectral norm; "
                             "BigGAN never uses it with SNEmbedding")
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, max_norm,
                              norm_type, scale_grad_by_freq, sparse, _weight)
        self._init_sn(num_svs, num_itrs, num_embeddings, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As in BigGAN-PyTorch: padding_idx only zeroes that row at initialisation.
        return F.embedding(x, self.W_())
