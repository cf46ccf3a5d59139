"""Metrics for generated images: FID, intra-class FID, KID, IS, precision / recall / density /
coverage, each overall and per class, on Inception or domain-classifier features."""

from .evaluate import evaluate_features
from .features import classifier_backend, extract_features, inception_backend, inception_input
from .frechet import feature_stats, fid, frechet_distance
from .inception_score import inception_score
from .kid import kid
from .prdc import prdc

__all__ = ["classifier_backend", "evaluate_features", "extract_features", "feature_stats", "fid",
           "frechet_distance", "inception_backend", "inception_input", "inception_score", "kid",
           "prdc"]
