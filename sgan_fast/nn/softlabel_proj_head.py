"""The soft-label projection head of a projection discriminator, as a module."""

from __future__ import annotations

import torch
from torch import nn

from ..labels.bank import SoftLabelBank
from .. import _ext
from ..ops import _dispatch
from ..ops.softlabel_proj import _public_op_args, softlabel_proj
from .spectral_norm import SNLinear


# The whole head (power iteration of both SN layers, their buffers, the projection) as one C++
# op with its autograd (csrc/softlabel_proj_autograd.cpp).
_PROJ_SN = torch.ops.sgan_fast.softlabel_proj_sn.default if _ext.C is not None else None
_C_IMPLS = ("cpu", "cuda")


class SoftLabelProjectionHead(nn.Module):
    """out[b] = linear(h_b) + sum_c P[b, c] <embed_c, h_b>, both spectrally normalised.

    Parameters and buffers are named as in BigGAN-PyTorch's discriminator head:
    `linear` = SNLinear(F, 1) and `embed` = SNLinear(C, F, bias=False), each with
    `u0`/`sv0` buffers, so a BigGAN-PyTorch D's `linear.*` and `embed.*` load into it.
    The embedding is stored as BigGAN stores it, [F, C]; the op sees E = embed.weight^T.

    forward(h [B, F], labels) -> [B], labels being dense probabilities [B, C], top-k
    (indices [B, K] int64, values [B, K]), hard classes [B] int64, or a soft-label bank's
    targets: (bank, dataset indices [B], target) or bank.labels(indices, target), which the
    kernels read from the bank's table without writing the [B, C] targets anywhere. In
    training mode the power-iteration vectors and the singular-value buffers are updated, as
    in BigGAN.
    """

    # fuse_spectral_norm leaves linear and embed alone: the fused op normalises them itself.
    _sn_self_managed = True

    def __init__(self, num_features: int, num_classes: int, *, num_svs: int = 1,
                 num_itrs: int = 1, eps: float = 1e-12, impl: str = "auto",
                 check: bool = True) -> None:
        super().__init__()
        if num_features < 1 or num_classes < 1:
            raise ValueError(f"num_features and num_classes must be >= 1, got {num_features} "
                             f"and {num_classes}")
        self.num_features, self.num_classes = num_features, num_classes
        self.impl, self.check = impl, check
        self.linear = SNLinear(num_features, 1, num_svs=num_svs, num_itrs=num_itrs, eps=eps)
        self.embed = SNLinear(num_classes, num_features, bias=False, num_svs=num_svs,
                              num_itrs=num_itrs, eps=eps)

    def forward(self, h: torch.Tensor, labels) -> torch.Tensor:
        if isinstance(labels, tuple) and len(labels) == 3 and isinstance(labels[0], SoftLabelBank):
            bank, indices, target = labels
            labels = bank.labels(indices, target)
        if _PROJ_SN is not None and self._fused(h):
            call = _public_op_args(h, labels, self.num_classes, self.check)
            if call is not None:
                # Both layers' power iteration, the update of u0 and sv0, and the projection
                # with autograd: one C++ call (csrc/softlabel_proj_autograd.cpp). The tensors
                # are read from the modules' dicts: nn.Module.__getattr__ costs more.
                lab, val, sel, cls, form, mode, alpha, beta, gamma = call
                modules = self._modules
                embed, linear = modules["embed"], modules["linear"]
                ep, eb = embed._parameters, embed._buffers
                lp, lb = linear._parameters, linear._buffers
                return _PROJ_SN(h, lab, val, ep["weight"], eb["u0"], eb["sv0"], lp["weight"],
                                lp["bias"], lb["u0"], lb["sv0"], sel, cls, form, mode, alpha,
                                beta, gamma, embed.num_itrs, embed.eps, self.training,
                                self.check)
        # embed.weight is [F, C]: its left vector has F entries, its right vector C, so
        # E = weight^T [C, F] has u_E = right vector and v_E = left vector.
        u_embed, v_embed = self.embed.power_iteration()
        u_lin, v_lin = self.linear.power_iteration()
        out, s = softlabel_proj(
            h, labels, self.embed.weight.t(), self.linear.weight.reshape(-1), self.linear.bias,
            v_embed, u_embed, u_lin, v_lin, impl=self.impl, check=self.check, return_scales=True)
        if self.training:
            with torch.no_grad():
                self.embed.sv0.copy_(s[0:1])
                self.linear.sv0.copy_(s[1:2])
        return out

    def _fused(self, h) -> bool:
        """Whether the head can be the one C++ call: eager (a compiled model traces the
        per-layer loop and the projection's backend ops), one singular value and the same
        settings in both layers, and the C++ kernels chosen for h (the power iteration then
        runs in the same extension)."""
        if self.impl == "ref" or not isinstance(h, torch.Tensor) or torch.compiler.is_compiling():
            return False
        modules = self._modules
        e, l = modules["embed"], modules["linear"]
        return (e.num_svs == 1 == l.num_svs and e.num_itrs == l.num_itrs and e.eps == l.eps
                and e._parameters["weight"].dtype == l._parameters["weight"].dtype
                and _dispatch.resolve("softlabel_proj", self.impl, h.device, h.dtype) in _C_IMPLS)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_classes={self.num_classes}, impl={self.impl!r}"
