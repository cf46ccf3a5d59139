"""Soft labels: the classifier that gives them, the probability bank and the targets."""

from .bank import SoftLabelBank
from .calibration import fit_temperature
from .classifier_file import load_classifier
from .classifier_nets import build_classifier
from .classifier import ClassifyConfig, ClassifyResult, classify, report_table
from .crossfit import stratified_folds
from .fingerprint import BankError, DatasetFingerprint
from .targets import Target, target_ref

__all__ = ["BankError", "ClassifyConfig", "ClassifyResult", "DatasetFingerprint", "SoftLabelBank",
           "Target", "build_classifier", "classify", "fit_temperature", "load_classifier",
           "report_table", "stratified_folds", "target_ref"]
