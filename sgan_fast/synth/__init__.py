"""Synthetic training data from a generator (`sgan-fast synthesize`) and the downstream
classification experiment (`sgan-fast downstream`); guide in docs/synthetic.md."""

from .downstream import Arm, DownstreamConfig, run_downstream, summarize
from .export import open_export, read_manifest
from .plan import similar_pairs, soft_confusion, topup_counts
from .synthesize import ClassifierScorer, SynthConfig, SynthResult, synthesize

__all__ = ["Arm", "ClassifierScorer", "DownstreamConfig", "SynthConfig", "SynthResult",
           "open_export", "read_manifest", "run_downstream", "similar_pairs", "soft_confusion",
           "summarize", "synthesize", "topup_counts"]
