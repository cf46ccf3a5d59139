"""Data: imbalanced subsets of datasets and the samplers that draw batches from them."""

from .imbalance import ImbalancedSubset, make_imbalanced, profile_counts, reference_counts
from .samplers import BatchSampler

__all__ = ["BatchSampler", "ImbalancedSubset", "make_imbalanced", "profile_counts",
           "reference_counts"]
