"""The batched soft-label lookup: each batch element's training target, read from a table.

A `TargetPlan` is a soft-label target made ready for the kernels (built by
`sgan_fast.labels`, which also documents the transforms). Each batch element b with
dataset index i = indices[b] and class y = classes[i] gets

    q[b, c] = alpha * table[row(b), c] + beta * [c == y] + gamma / C

where row(b) = i (a per-image table, mode 1) or y (a per-class table, mode 2), and the
table is dense [R, C] or top-k (idx [R, K], val [R, K]: table[r, idx[r, k]] = val[r, k]),
or absent (alpha = 0). csrc/label_source.h is the same contract for the kernels.

    bank_lookup(plan, indices, out="auto")  -> dense q [B, C] or top-k (idx, val)

runs in one launch (impl "ref" | "cpu" | "cuda" | "triton" | "auto"). `BankLabels(plan,
indices)` passed as the labels of `softlabel_proj` reads the same table inside the
projection kernels instead, so q is never written to memory.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor

from .. import _ext
from . import _dispatch

@dataclasses.dataclass(eq=False)
class TargetPlan:
    """A target ready for lookup (see the module docstring). `classes` [N] int64 is every
    dataset image's class; `table` or (`idx`, `val`) the rows; mode 1 per image, 2 per class.

    Tables are kept in the dtype they were made in; `tables(dtype)` returns (and caches)
    copies in another dtype for the fused projection, which computes in the features' dtype.
    """

    form: str                     # "dense" | "topk"
    mode: int                     # 1: rows by dataset index, 2: rows by class
    classes: Tensor               # [N] int64
    num_classes: int
    alpha: float = 1.0
    beta: float = 0.0
    gamma: float = 0.0
    table: Optional[Tensor] = None   # dense [R, C]
    idx: Optional[Tensor] = None     # top-k [R, K] int32 or int64
    val: Optional[Tensor] = None     # top-k [R, K]
    description: str = ""
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.form not in ("dense", "topk") or self.mode not in (1, 2):
            raise ValueError(f"TargetPlan: form must be dense or topk and mode 1 or 2, got "
                             f"{self.form!r}, {self.mode!r}")
        if self.form == "topk" and self.gamma != 0.0:
            raise ValueError("TargetPlan: a top-k plan cannot have a uniform term (gamma)")
        if self.table is None and self.idx is None:
            self.alpha = 0.0

    @property
    def num_rows(self) -> int:
        return int(self.classes.shape[0])

    @property
    def device(self) -> torch.device:
        return self.classes.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the table (float32 when there is none)."""
        t = self.table if self.form == "dense" else self.val
        return t.dtype if t is not None else torch.float32

    @property
    def k(self) -> int:
        """Entries per row of a sparse lookup: K of the table, plus one for the label."""
        K = 0 if self.idx is None else int(self.idx.shape[1])
        return K + (1 if self.beta != 0.0 else 0)

    def to(self, device) -> "TargetPlan":
        move = (lambda t: None if t is None else t.to(device))
        return dataclasses.replace(self, classes=move(self.classes), table=move(self.table),
                                   idx=move(self.idx), val=move(self.val), _cache={})

    def tables(self, dtype: torch.dtype):
        """(P,) for a dense plan, (idx, val) for a top-k plan, floating parts in `dtype`;
        empty placeholders where there is no table. Cached per dtype."""
        hit = self._cache.get(dtype)
        if hit is not None:
            return hit
        dev, C = self.device, self.num_classes
        if self.form == "dense":
            P = self.table if self.table is not None else torch.empty(0, C, device=dev)
            res = (P.to(dtype).contiguous(),)
        else:
            idx = self.idx if self.idx is not None else torch.empty(0, 0, dtype=torch.int64, device=dev)
            val = self.val if self.val is not None else torch.empty(0, 0, device=dev)
            res = (idx.contiguous(), val.to(dtype).contiguous())
        self._cache[dtype] = res
        return res

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.classes, self.table, self.idx, self.val)
                   if t is not None)


@dataclasses.dataclass(eq=False)
class BankLabels:
    """Labels of a projection head read from a plan by dataset indices [B] (int64)."""

    plan: TargetPlan
    indices: Tensor


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------

def bank_lookup_ref(plan: TargetPlan, indices: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """The specification: dense q [B, C] in `dtype` (default float32; float64 for a float64
    plan), computed in that dtype from the plan's rows."""
    dtype = dtype or (torch.float64 if plan.dtype == torch.float64 else torch.float32)
    C = plan.num_classes
    y = plan.classes[indices]
    rows = indices if plan.mode == 1 else y
    q = torch.zeros(indices.shape[0], C, dtype=dtype, device=indices.device)
    if plan.form == "dense" and plan.table is not None:
        q += plan.alpha * plan.table[rows].to(dtype)
    if plan.form == "topk" and plan.idx is not None and plan.idx.shape[1] > 0:
        q.scatter_add_(1, plan.idx[rows].long(), plan.alpha * plan.val[rows].to(dtype))
    q[torch.arange(q.shape[0], device=q.device), y] += plan.beta
    return q + plan.gamma / C


# ---------------------------------------------------------------------------------------------
# Validation, custom ops, dispatch
# ---------------------------------------------------------------------------------------------

_dispatch.register(_dispatch.OpSpec(
    name="bank_lookup",
    triton_module="bank_lookup",
    triton_dtypes=(torch.float16, torch.bfloat16, torch.float32),
    # Not yet measured on a GPU (benchmarks/bench_bank.py); the C++ path has the least host work.
    auto_order={"cuda": ("cuda", "triton"), "cpu": ("cpu",)},
))


def check_indices(plan: TargetPlan, indices, *, check: bool = True) -> Tensor:
    """indices as [B] int64 on the plan's device; out-of-range values raise IndexError when
    `check` (one device sync); the kernels clamp them either way."""
    if not isinstance(indices, Tensor):
        raise TypeError(f"indices must be a tensor of dataset indices, got {type(indices).__name__}")
    if indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"indices have dtype {indices.dtype}; expected int64 dataset indices")
    if indices.dim() != 1 or indices.shape[0] < 1:
        raise ValueError(f"indices have shape {tuple(indices.shape)}; expected [B] with B >= 1")
    if indices.device != plan.device:
        raise ValueError(f"indices are on {indices.device} but the soft-label bank is on "
                         f"{plan.device}; move one of them (bank.to(device))")
    if indices.dtype != torch.int64:
        indices = indices.long()
    if not indices.is_contiguous():
        indices = indices.contiguous()
    if check and not torch.compiler.is_compiling():
        N = plan.num_rows
        bad = (indices < 0) | (indices >= N)
        if bool(bad.any()):
            b = int(bad.nonzero()[0, 0])
            raise IndexError(f"dataset index indices[{b}] = {int(indices[b])} is outside the "
                             f"soft-label bank's [0, N={N})")
    return indices


def _src_args(plan: TargetPlan):
    return plan.classes.contiguous(), plan.mode, float(plan.alpha), float(plan.beta), float(plan.gamma)


def _dense_fake(P, idx, val, sel, cls, mode, alpha, beta, gamma, num_classes, topk_source):
    dtype = val.dtype if topk_source else P.dtype
    return sel.new_empty(sel.shape[0], num_classes, dtype=dtype)


def _sparse_fake(idx, val, sel, cls, mode, alpha, beta, num_classes):
    k = idx.shape[1] + (1 if beta != 0.0 else 0)
    return sel.new_empty(sel.shape[0], k), sel.new_empty(sel.shape[0], k, dtype=val.dtype)


def _triton():
    mod, why = _ext.load_triton_kernels("bank_lookup")
    if mod is None:
        raise RuntimeError(why)
    return mod


@torch.library.custom_op("sgan_fast::bank_lookup_dense_triton", mutates_args=())
def _dense_triton(P: Tensor, idx: Tensor, val: Tensor, sel: Tensor, cls: Tensor, mode: int,
                  alpha: float, beta: float, gamma: float, num_classes: int,
                  topk_source: bool) -> Tensor:
    with _dispatch.on_device(sel):
        return _triton().lookup_dense(P, idx, val, sel, cls, mode, alpha, beta, gamma, num_classes,
                                      topk_source)


@torch.library.custom_op("sgan_fast::bank_lookup_sparse_triton", mutates_args=())
def _sparse_triton(idx: Tensor, val: Tensor, sel: Tensor, cls: Tensor, mode: int, alpha: float,
                   beta: float, num_classes: int) -> tuple[Tensor, Tensor]:
    with _dispatch.on_device(sel):
        return tuple(_triton().lookup_sparse(idx, val, sel, cls, mode, alpha, beta, num_classes))


_dense_triton.register_fake(_dense_fake)
_sparse_triton.register_fake(_sparse_fake)
if _ext.C is not None:
    torch.library.register_fake("sgan_fast::bank_lookup_dense")(_dense_fake)
    torch.library.register_fake("sgan_fast::bank_lookup_sparse")(_sparse_fake)


@_dispatch.outside_autocast
def bank_lookup(plan: TargetPlan, indices: Tensor, *, out: str = "auto", impl: str = "auto",
                check: bool = True):
    """Training targets of a batch, in one launch.

    Args:
        plan: a TargetPlan (from `SoftLabelBank.plan(target)`).
        indices: dataset indices [B] (int64; int32 is widened).
        out: "dense" -> q [B, C]; "sparse" -> (idx [B, k] int64, val [B, k]) with k = the
            plan's K plus one for the label entry (its weight is merged into an existing entry
            of the same class, leaving that extra entry at weight 0); "auto": sparse for top-k
            plans, dense otherwise. A plan with a uniform term (gamma) has no sparse form.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton".
        check: raise IndexError for an index outside [0, N) (synchronises with the GPU).

    Output values have the table's dtype (float32 when the plan has no table).
    """
    if not isinstance(plan, TargetPlan):
        raise TypeError(f"plan must be a TargetPlan (SoftLabelBank.plan(target)), got "
                        f"{type(plan).__name__}")
    if out not in ("auto", "dense", "sparse"):
        raise ValueError(f"out must be 'auto', 'dense' or 'sparse', got {out!r}")
    if out == "auto":
        out = "sparse" if plan.form == "topk" else "dense"
    if out == "sparse" and plan.form != "topk":
        raise ValueError(f"a sparse lookup needs a top-k plan; {plan.description or 'this plan'} "
                         "is dense (convert the bank with bank.to_topk(K), or ask for out='dense')")
    sel = check_indices(plan, indices, check=check)
    dtype = plan.dtype
    chosen = _dispatch.resolve("bank_lookup", impl, sel.device, dtype)
    if chosen == "ref":
        q = bank_lookup_ref(plan, sel)
        if out == "dense":
            return q.to(dtype)
        return bank_lookup_sparse_ref(plan, sel)
    cls, mode, alpha, beta, gamma = _src_args(plan)
    tabs = plan.tables(dtype)
    ns = torch.ops.sgan_fast
    if out == "dense":
        if plan.form == "dense":
            (idx, val), P, topk = _placeholders(plan, dtype, "topk"), tabs[0], False
        else:
            P, (idx, val), topk = _placeholders(plan, dtype, "dense")[0], tabs, True
        op = ns.bank_lookup_dense_triton if chosen == "triton" else ns.bank_lookup_dense
        return op(P, idx, val, sel, cls, mode, alpha, beta, gamma, plan.num_classes, topk)
    idx, val = tabs
    op = ns.bank_lookup_sparse_triton if chosen == "triton" else ns.bank_lookup_sparse
    return op(idx, val, sel, cls, mode, alpha, beta, plan.num_classes)


def _placeholders(plan: TargetPlan, dtype: torch.dtype, form: str):
    """Empty tensors standing for the table form a plan does not have (never read by the
    kernels), cached on the plan: made once, not on every call."""
    key = ("placeholder", form, dtype)
    hit = plan._cache.get(key)
    if hit is None:
        dev = plan.device
        if form == "dense":
            hit = (torch.empty(0, plan.num_classes, dtype=dtype, device=dev),)
        else:
            hit = (torch.empty(0, 0, dtype=torch.int64, device=dev),
                   torch.empty(0, 0, dtype=dtype, device=dev))
        plan._cache[key] = hit
    return hit


def bank_lookup_sparse_ref(plan: TargetPlan, sel: Tensor):
    """The sparse form of the specification (top-k plans): the plan's K entries of each row (times alpha),
    the label's weight added to the first entry of its class or else put in the extra column."""
    y = plan.classes[sel]
    rows = sel if plan.mode == 1 else y
    B, dtype = sel.shape[0], plan.dtype
    if plan.idx is not None and plan.idx.shape[1] > 0:
        idx = plan.idx[rows].long()
        val = plan.alpha * plan.val[rows].to(torch.float32)
    else:
        idx = torch.zeros(B, 0, dtype=torch.int64, device=sel.device)
        val = torch.zeros(B, 0, dtype=torch.float32, device=sel.device)
    if plan.beta == 0.0:
        return idx, val.to(dtype)
    hit = idx == y[:, None]
    first = hit & (hit.cumsum(1) == 1)
    val = val + plan.beta * first
    extra = torch.where(hit.any(1), 0.0, plan.beta).to(torch.float32)
    return torch.cat([idx, y[:, None]], 1), torch.cat([val, extra[:, None]], 1).to(dtype)
