"""Training: losses, augmentation, EMA, checkpoints, the trainer loop."""

from .augment import DiffAugment, diff_augment, parse_policy, sample_augment
from .checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from .config import RESOLUTION_DEFAULTS, TrainConfig
from .ema import GeneratorEMA
from .losses import LeCam, hinge_d, hinge_g
from .sampling import class_grid, generate, latents, load_generator, save_grid
from .trainer import NonFiniteLossError, Trainer, TrainResult

__all__ = ["CheckpointError", "DiffAugment", "GeneratorEMA", "LeCam", "NonFiniteLossError",
           "RESOLUTION_DEFAULTS", "TrainConfig", "TrainResult", "Trainer", "class_grid",
           "diff_augment", "find_checkpoint", "generate", "hinge_d", "hinge_g", "latents",
           "load_generator", "load_checkpoint", "parse_policy", "sample_augment", "save_grid"]
