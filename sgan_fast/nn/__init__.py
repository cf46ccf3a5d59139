"""Drop-in modules built on sgan_fast.ops."""

from .cross_replica_bn import CrossReplicaBatchNorm2d, cross_replica_batch_norm
from .fuse_spectral_norm import FusedSpectralNorm, fuse_spectral_norm
from .softlabel_proj_head import SoftLabelProjectionHead
from .spectral_norm import SNConv2d, SNEmbedding, SNLinear, SNMixin

__all__ = ["CrossReplicaBatchNorm2d", "cross_replica_batch_norm", "FusedSpectralNorm", "fuse_spectral_norm", "SoftLabelProjectionHead", "SNConv2d",
           "SNEmbedding", "SNLinear", "SNMixin"]
