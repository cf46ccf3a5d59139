"""Drop-in modules built on sgan_fast.ops."""

from .fuse_spectral_norm import FusedSpectralNorm, fuse_spectral_norm
from .softlabel_proj_head import SoftLabelProjectionHead
from .spectral_norm import SNConv2d, SNEmbedding, SNLinear, SNMixin

__all__ = ["FusedSpectralNorm", "fuse_spectral_norm", "SoftLabelProjectionHead", "SNConv2d",
           "SNEmbedding", "SNLinear", "SNMixin"]
