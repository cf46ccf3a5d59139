"""Batch norm over the whole global batch of a multi-process run (BigGAN's cross_replica).

    G = cross_replica_batch_norm(G)     # every nn.BatchNorm2d in G, in place; same state_dict

With one process per rank, plain batch norm normalises each rank's slice of the batch with
that slice's statistics: G then computes something else on 8 ranks than on one. This module
takes the mean and variance over every rank's batch (two all-reduces of per-channel sums,
carrying gradients: torch's functional all_reduce), so that W ranks with batch
B/W compute what one process computes with batch B. torch.nn.SyncBatchNorm does the same on
GPUs only; this runs on any backend (gloo on the CPU included), which is what lets the CPU
tests check it. Statistics are accumulated in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CrossReplicaBatchNorm2d", "cross_replica_batch_norm"]


def _world_size(group) -> int:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 1
    return torch.distributed.get_world_size(group)


class CrossReplicaBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics span every rank of `group` (default: all).
    In eval mode, or in a one-process run, it is exactly nn.BatchNorm2d."""

    def __init__(self, *args, group=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not self.track_running_stats
        if not use_batch or _world_size(self.group) == 1:
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"CrossReplicaBatchNorm2d expects [B, C, H, W], got {tuple(x.shape)}")
        # functional collectives: differentiable (the backward all-reduces the gradients, so
        # each rank's input gets its share of every rank's loss) and traceable by torch.compile
        from torch.distributed._functional_collectives import all_reduce
        group = self.group if self.group is not None else torch.distributed.group.WORLD
        xf = x.float()
        # the sums and this rank's count in one all-reduce (slices may differ in size)
        count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device)
        sums = all_reduce(torch.cat([xf.sum(dim=(0, 2, 3)), count]), "sum", group)
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = all_reduce(centred.square().sum(dim=(0, 2, 3)), "sum", group) / n
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return y.to(x.dtype).contiguous(memory_format=torch.channels_last
                                        if x.is_contiguous(memory_format=torch.channels_last)
                                        and not x.is_contiguous() else torch.contiguous_format)


def cross_replica_batch_norm(module: nn.Module, group=None) -> nn.Module:
    """Replaces every nn.BatchNorm2d inside `module` (or `module` itself) by a
    CrossReplicaBatchNorm2d with the same settings and state (same state_dict keys); returns
    the module."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CrossReplicaBatchNorm2d):
        new = CrossReplicaBatchNorm2d(module.num_features, eps=module.eps, momentum=module.momentum,
                                      affine=module.affine,
                                      track_running_stats=module.track_running_stats, group=group)
        new = new.to(device=next(iter(module.state_dict().values()), torch.empty(0)).device)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, cross_replica_batch_norm(child, group))
    return module
