"""Generator and discriminator architectures (BigGAN at 32, 64 and 128 px)."""

from .biggan import RESOLUTIONS, Discriminator, Generator, init_weights

__all__ = ["Generator", "Discriminator", "init_weights", "RESOLUTIONS"]
