"""Soft labels: the classifier-probability bank and the targets built from it."""

from .bank import SoftLabelBank
from .fingerprint import BankError, DatasetFingerprint
from .targets import Target, target_ref

__all__ = ["BankError", "DatasetFingerprint", "SoftLabelBank", "Target", "target_ref"]
