"""Drop-in modules built on sgan_fast.ops."""

from .softlabel_proj_head import SoftLabelProjectionHead
from .spectral_norm import SNLinear

__all__ = ["SoftLabelProjectionHead", "SNLinear"]
