"""Soft-label targets: what the discriminator sees as the class vector of a real image.

For image i with class y_i and classifier probabilities p_i (a bank row):

    onehot          e_{y_i}
    softmax(t)      p_i^(1/t) renormalised; softmax(z_i / t) when the bank stores logits z_i
                    (t = 1: the probabilities as they are)
    smooth(a)       (1 - a) e_{y_i} + a / C
    ols             the mean of p_j over the training images j of class y_i that the classifier
                    classifies correctly (argmax p_j = y_j, first maximum on ties); a class with
                    none falls back to its one-hot vector, with a warning
    mix(l)          l p_i + (1 - l) e_{y_i}
    ...+topk(k)     any of them truncated to its k largest entries (ties: lower class first)
                    and renormalised

Written as strings: "onehot", "softmax", "softmax:0.5", "smooth:0.1", "ols", "mix:0.7",
"mix:0.7+topk:8". `target_ref` is the plain-torch specification; `make_plan` turns a target
into the table the lookup kernels read, precomputing what is fixed for the whole training run
and leaving to the kernels what costs nothing there (see docs/soft_labels.md):

    onehot, smooth, mix, softmax(t=1)   applied inside the lookup (no new table)
    softmax(t != 1), logits             precomputed: one table the size of the bank
    ols                                 precomputed: one row per class, looked up by class
    +topk(k)                            precomputed: a [N, k] (or per-class [C, k]) table

Differences from the reference implementation (raven38/softlabel-gan, datasets.py):
its smooth is a / C everywhere and 1 - a at the class, which sums to 1 - a / C; ours is
normalised. Its ols divides by zero for a class the classifier never gets right (NaN
targets); ours falls back to one-hot and warns.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional, Union

import torch
from torch import Tensor

from ..ops.bank_lookup import TargetPlan

KINDS = ("onehot", "softmax", "smooth", "ols", "mix")
_DEFAULT_PARAM = {"softmax": 1.0, "smooth": 0.1, "mix": 0.5}


@dataclasses.dataclass(frozen=True)
class Target:
    """A soft-label target: kind, its parameter (t, a or l) and an optional top-k."""

    kind: str = "softmax"
    param: Optional[float] = None
    topk: Optional[int] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown target {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.param is None and self.kind in _DEFAULT_PARAM:
            object.__setattr__(self, "param", _DEFAULT_PARAM[self.kind])
        if self.kind in ("onehot", "ols") and self.param is not None:
            raise ValueError(f"target {self.kind!r} takes no parameter, got {self.param}")
        p = self.param
        if self.kind == "softmax" and not (p > 0 and math.isfinite(p)):
            raise ValueError(f"softmax temperature must be a positive number, got {p}")
        if self.kind in ("smooth", "mix") and not (0.0 <= p <= 1.0):
            raise ValueError(f"{self.kind} parameter must lie in [0, 1], got {p}")
        if self.topk is not None and (not isinstance(self.topk, int) or self.topk < 1):
            raise ValueError(f"topk must be a positive integer, got {self.topk!r}")

    @classmethod
    def parse(cls, spec: Union[str, "Target"]) -> "Target":
        """'kind[:param][+topk:k]', e.g. 'softmax:0.5', 'smooth:0.1', 'mix:0.7+topk:8'."""
        if isinstance(spec, Target):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"a target is a string like 'softmax' or 'mix:0.7+topk:8', or a Target; "
                            f"got {type(spec).__name__}")
        kind, param, topk = None, None, None
        for part in spec.replace(" ", "").split("+"):
            name, _, arg = part.partition(":")
            if name == "topk":
                if not arg.isdigit():
                    raise ValueError(f"in target {spec!r}: topk needs a count, e.g. 'topk:8'")
                topk = int(arg)
            elif kind is None:
                kind = name
                if arg:
                    try:
                        param = float(arg)
                    except ValueError:
                        raise ValueError(f"in target {spec!r}: {arg!r} is not a number") from None
            else:
                raise ValueError(f"target {spec!r} names two kinds ({kind!r} and {name!r})")
        return cls(kind or "softmax", param, topk)

    def __str__(self) -> str:
        s = self.kind if self.param is None else f"{self.kind}:{self.param:g}"
        return s if self.topk is None else f"{s}+topk:{self.topk}"


# ---------------------------------------------------------------------------------------------
# The specification
# ---------------------------------------------------------------------------------------------

def probabilities_ref(table: Tensor, kind: str, temperature: float = 1.0) -> Tensor:
    """Class probabilities from a dense bank table (float64): p^(1/t) renormalised, or
    softmax(z / t) for logits."""
    x = table.double()
    if kind == "logits":
        return torch.softmax(x / temperature, dim=1)
    if temperature == 1.0:
        return x
    q = x.pow(1.0 / temperature)
    return q / q.sum(1, keepdim=True)


def ols_table(rows, labels: Tensor, num_classes: int, *, warn: bool = True) -> Tensor:
    """[C, C] float64: row c is the mean of the probability rows of the images of class c whose
    argmax is c (first maximum on ties); e_c for a class with none, with a warning naming the
    classes. rows(a, b) -> probabilities of images a..b-1 [b - a, C] (float64), read in chunks;
    a tensor [N, C] works too."""
    C, N = num_classes, int(labels.shape[0])
    if isinstance(rows, Tensor):
        table = rows
        rows = lambda a, b: table[a:b].double()  # noqa: E731
    sums = torch.zeros(C, C, dtype=torch.float64, device=labels.device)
    counts = torch.zeros(C, dtype=torch.float64, device=labels.device)
    step = chunk_rows(C)
    for a in range(0, N, step):
        p, y = rows(a, min(N, a + step)), labels[a:a + step]
        ok = p.argmax(1) == y
        sums.index_add_(0, y[ok], p[ok])
        counts += torch.bincount(y[ok], minlength=C).double()
    out = sums / counts.clamp(min=1)[:, None]
    empty = counts == 0
    if bool(empty.any()):
        out[empty] = torch.eye(C, dtype=torch.float64, device=labels.device)[empty]
        if warn:
            bad = empty.nonzero()[:, 0].tolist()
            shown = ", ".join(str(c) for c in bad[:10]) + (" ..." if len(bad) > 10 else "")
            warnings.warn(f"ols target: the classifier gets no training image of {len(bad)} "
                          f"class(es) right ({shown}); those classes use their one-hot vector",
                          RuntimeWarning, stacklevel=3)
    return out


def truncate_topk_ref(q: Tensor, k: int) -> Tensor:
    """Keeps each row's k largest entries (ties: lower class first) and renormalises."""
    if k >= q.shape[1]:
        return q
    order = torch.sort(q, dim=1, descending=True, stable=True).indices[:, :k]
    out = torch.zeros_like(q).scatter_(1, order, q.gather(1, order))
    return out / out.sum(1, keepdim=True)


def target_ref(table: Tensor, labels: Tensor, target: Union[str, Target], *, kind: str = "probs",
               ols_topk: Optional[int] = None) -> Tensor:
    """The specification: targets [N, C] (float64) of every image, from a dense bank table
    [N, C] (probabilities or logits) and the class labels [N]. `ols_topk`: a top-k bank keeps
    its ols vectors to their K largest entries (see make_plan)."""
    t = Target.parse(target)
    N, C = table.shape
    onehot = torch.nn.functional.one_hot(labels, C).double()
    if t.kind == "onehot":
        q = onehot
    elif t.kind == "softmax":
        q = probabilities_ref(table, kind, t.param)
    elif t.kind == "smooth":
        q = (1.0 - t.param) * onehot + t.param / C
    elif t.kind == "mix":
        q = t.param * probabilities_ref(table, kind) + (1.0 - t.param) * onehot
    else:
        ols = ols_table(probabilities_ref(table, kind), labels, C, warn=False)
        if ols_topk is not None:
            ols = truncate_topk_ref(ols, ols_topk)
        q = ols[labels]
    return q if t.topk is None else truncate_topk_ref(q, t.topk)


# ---------------------------------------------------------------------------------------------
# Plans: targets as the tables the lookup kernels read
# ---------------------------------------------------------------------------------------------

def chunk_rows(C: int) -> int:
    """Rows per chunk of a precomputation over [n, C] float64 tables: about 64 MB."""
    return max(1, (1 << 23) // max(C, 1))


def topk_table(rows_q, n_rows: int, num_classes: int, k: int, dtype: torch.dtype, device):
    """(idx [n, k] int32, val [n, k] in dtype): the top-k truncation (ties: lower class first,
    renormalised) of the rows rows_q(a, b) -> [b - a, C] float64, computed in chunks."""
    idx = torch.empty(n_rows, k, dtype=torch.int32, device=device)
    val = torch.empty(n_rows, k, dtype=dtype, device=device)
    step = chunk_rows(num_classes)
    for a in range(0, n_rows, step):
        b = min(n_rows, a + step)
        q = rows_q(a, b)
        order = torch.sort(q, dim=1, descending=True, stable=True).indices[:, :k]
        v = q.gather(1, order)
        idx[a:b] = order.int()
        val[a:b] = (v / v.sum(1, keepdim=True)).to(dtype)
    return idx, val


def make_plan(bank, target: Union[str, Target]) -> TargetPlan:
    """The TargetPlan of `target` on a SoftLabelBank (use bank.plan(target): it caches)."""
    t = Target.parse(target)
    C = bank.num_classes
    base = dict(classes=bank.labels_tensor, num_classes=C, description=str(t))

    if t.topk is not None and t.kind != "onehot" and t.topk < C:
        return _truncated_plan(bank, t, base)
    if t.kind == "onehot":
        return TargetPlan("topk", 1, beta=1.0, alpha=0.0, **base)
    if t.kind == "smooth":
        return TargetPlan("dense", 1, alpha=0.0, beta=1.0 - t.param, gamma=t.param, **base)
    if t.kind == "ols":
        return _ols_plan(bank, base)
    # softmax / mix: the probabilities, as stored or precomputed
    temperature = t.param if t.kind == "softmax" else 1.0
    probs = bank._probability_tables(temperature)
    alpha, beta = (1.0, 0.0) if t.kind == "softmax" else (t.param, 1.0 - t.param)
    if bank.form == "dense":
        return TargetPlan("dense", 1, alpha=alpha, beta=beta, table=probs[0], **base)
    return TargetPlan("topk", 1, alpha=alpha, beta=beta, idx=probs[0], val=probs[1], **base)


def _ols_plan(bank, base) -> TargetPlan:
    """Per-class table, looked up by class: [C, C] for a dense bank, top-k [C, K] for a top-k
    bank (the class means truncated to the bank's K and renormalised)."""
    C = bank.num_classes
    table = bank.ols_table()  # [C, C] float64
    if bank.form == "dense":
        return TargetPlan("dense", 2, table=table.to(bank.dtype), **base)
    idx, val = topk_table(lambda a, b: table[a:b], C, C, min(bank.k, C), bank.dtype, bank.device)
    return TargetPlan("topk", 2, idx=idx, val=val, **base)


def _truncated_plan(bank, t: Target, base) -> TargetPlan:
    """target+topk:k, precomputed from float64 rows of the untruncated target (no rounding
    before the sort, as in target_ref). Targets that depend on the class only (smooth, ols)
    get a per-class table [C, k]; the others a per-image table [N, k]."""
    C, k, dtype, dev = bank.num_classes, t.topk, bank.dtype, bank.device
    inner = dataclasses.replace(t, topk=None)
    if t.kind == "ols":
        table = bank.ols_table()
        if bank.form == "topk":
            table = truncate_topk_ref(table, bank.k)
        idx, val = topk_table(lambda a, b: table[a:b], C, C, k, dtype, dev)
        return TargetPlan("topk", 2, idx=idx, val=val, **base)
    if t.kind == "smooth":
        rows = lambda a, b: target_ref(torch.zeros(b - a, C, dtype=torch.float64, device=dev),  # noqa: E731
                                       torch.arange(a, b, device=dev), inner)
        idx, val = topk_table(rows, C, C, k, dtype, dev)
        return TargetPlan("topk", 2, idx=idx, val=val, **base)
    labels = bank.labels_tensor
    rows = lambda a, b: target_ref(bank._dense_rows(a, b), labels[a:b], inner)  # noqa: E731
    idx, val = topk_table(rows, bank.num_images, C, k, dtype, dev)
    return TargetPlan("topk", 1, idx=idx, val=val, **base)
