"""sgan_fast: Softlabel-GAN (label augmentation for class-conditional GANs on
imbalanced data) with fused GPU kernels."""

__version__ = "0.1.0"

from ._info import info  # noqa: E402

__all__ = ["info", "__version__"]
