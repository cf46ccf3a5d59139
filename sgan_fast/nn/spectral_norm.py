"""Spectral normalisation with BigGAN-PyTorch's semantics and state_dict layout.

Each layer keeps, per singular value i < num_svs, a buffer `u{i}` [1, out] (the left
power-iteration vector, updated in place in training mode only) and `sv{i}` [1] (the
last singular-value estimate, for logging). One power-iteration step is

    v = normalize(u W)      u = normalize(v W^T)      s = v W^T u^T

with later singular vectors made orthogonal to earlier ones (Gram-Schmidt), and the
layer uses W / s_0. u and v are constants for autograd; the gradient flows through s.

This is the plain per-layer implementation; the grouped, fused update for a whole
model is sgan_fast.ops.spectral_norm (a later addition).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gram_schmidt(x: torch.Tensor, ys: list[torch.Tensor]) -> torch.Tensor:
    for y in ys:
        x = x - (y @ x.t()) * y / (y @ y.t())
    return x


class SNMixin:
    """Buffers and power iteration shared by the SN layers (num_svs >= 1, num_itrs >= 1)."""

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
    def power_iteration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs num_itrs steps (updating u{i} and sv{i >= 1} in training mode) and returns the
        first singular pair (u [out], v [in]) in float32 (float64 for a float64 weight),
        with s_0 = u^T W v."""
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

    def sn_weight(self) -> torch.Tensor:
        """W / s_0 with the gradient through s_0; updates u{i} and sv{i} in training mode."""
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
        return F.linear(x, self.sn_weight(), self.bias)
