"""Data: datasets, imbalanced subsets of them, and the samplers that draw batches."""

from .cifar import cifar10, cifar100
from .dali_loader import DALILoader
from .datasets import ArrayDataset, fashion_mnist, mnist, mnist_5k, read_idx
from .gpu_loader import GPUResidentLoader
from .image_folder import IMAGE_EXTENSIONS, ImageFolder
from .loader import make_loader
from .imbalance import ImbalancedSubset, make_imbalanced, profile_counts, reference_counts
from .samplers import BatchSampler
from .torch_loader import TorchLoader

__all__ = ["cifar10", "cifar100", "ArrayDataset", "BatchSampler", "DALILoader", "GPUResidentLoader", "IMAGE_EXTENSIONS", "ImageFolder", "ImbalancedSubset", "fashion_mnist", "make_imbalanced",
           "TorchLoader", "make_loader", "mnist", "mnist_5k", "profile_counts", "read_idx", "reference_counts"]
