"""Public functional ops. Each op has a plain-torch reference `<op>_ref` and a
dispatching `<op>(..., impl="auto")`; see sgan_fast/ops/_dispatch.py."""

from ._dispatch import IMPLS, resolve as resolve_impl, why_unavailable
from .bank_lookup import BankLabels, TargetPlan, bank_lookup, bank_lookup_ref
from .softlabel_proj import softlabel_proj, softlabel_proj_ref
from .spectral_norm import (SNVectors, sn_normalize, sn_power_iteration, spectral_norm_grouped,
                            spectral_norm_grouped_ref)

__all__ = ["IMPLS", "resolve_impl", "why_unavailable", "BankLabels", "TargetPlan", "bank_lookup",
           "bank_lookup_ref", "softlabel_proj", "softlabel_proj_ref",
           "SNVectors", "sn_normalize", "sn_power_iteration", "spectral_norm_grouped",
           "spectral_norm_grouped_ref"]
