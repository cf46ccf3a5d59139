"""SoftLabelBank: every training image's class probabilities, on the GPU or the CPU.

A bank holds, for the N images of a training set, either a dense table [N, C] (float32,
float16 or bfloat16; probabilities, or logits) or a top-k table (indices [N, K] int32,
values [N, K]), plus the class label of every image and the fingerprint of the dataset it
was made for. `bank.plan(target)` turns a soft-label target (targets.py) into the table the
lookup kernels read; `bank.lookup(indices, target)` returns a batch's targets in one launch;
`bank.labels(indices, target)` is what a SoftLabelProjectionHead takes to compute its output
without writing the targets to memory.

Files: `bank.save(path)` / `SoftLabelBank.load(path)` (an .npz with the fingerprint and the
settings that produced the bank, written atomically), and `SoftLabelBank.from_reference_npz`
for the reference implementation's files (arr_0 = probabilities [N, C], arr_1 = relative
paths "classdir/filename").
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_savez
from ..ops.bank_lookup import BankLabels, TargetPlan, bank_lookup
from .fingerprint import BankError, DatasetFingerprint, as_labels, rel_path
from .targets import Target, chunk_rows, make_plan, ols_table, probabilities_ref, topk_table

FORMAT_NAME = "sgan_fast.SoftLabelBank"
FORMAT_VERSION = 1
_TABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

def _default_atol(dtype: torch.dtype) -> float:
    return 1e-3 if dtype == torch.float32 else 1e-2


def _first_row(mask: Tensor) -> int:
    return int(mask.nonzero()[0, 0]) if mask.dim() == 1 else int(mask.any(1).nonzero()[0, 0])


def _check_rows(values: Tensor, *, kind: str, renormalize: bool, atol: float, what: str) -> Tensor:
    """Checks finite, non-negative rows summing to 1 (probabilities); returns the rows,
    renormalised when asked. Each failure names the first bad row."""
    step = chunk_rows(values.shape[1])
    out = values
    for a in range(0, values.shape[0], step):
        x = values[a:a + step].double()
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            r = a + _first_row(bad)
            raise BankError(f"{what}: row {r} contains NaN or Inf")
        if kind == "logits":
            continue
        neg = x < 0
        if bool(neg.any()):
            r = a + _first_row(neg)
            raise BankError(f"{what}: row {r} has a negative probability ({float(values[r].min()):.4g})")
        sums = x.sum(1)
        off = (sums - 1).abs() > atol
        if renormalize:
            zero = sums <= 0
            if bool(zero.any()):
                r = a + _first_row(zero)
                raise BankError(f"{what}: row {r} sums to 0 and cannot be renormalised")
            if out is values:
                out = values.clone()
            out[a:a + step] = (x / sums[:, None]).to(values.dtype)
        elif bool(off.any()):
            r = a + _first_row(off)
            raise BankError(f"{what}: row {r} sums to {float(sums[r - a]):.6g}, not 1 within "
                            f"{atol:g}; pass renormalize=True to rescale the rows")
    return out


# ---------------------------------------------------------------------------------------------
# The bank
# ---------------------------------------------------------------------------------------------

class SoftLabelBank:
    """Per-image class probabilities of a training set (see the module docstring).

    Build with `SoftLabelBank(probs, labels)` (dense), `SoftLabelBank.from_topk(indices,
    values, labels, num_classes)`, `SoftLabelBank.load(path)` or
    `SoftLabelBank.from_reference_npz(path, labels, paths)`. Tables are validated on
    construction: finite, non-negative, rows summing to 1 within `atol` (rescaled only with
    renormalize=True), labels in [0, C); logits banks (kind="logits") only need to be finite.
    """

    def __init__(self, probs, labels, *, num_classes: Optional[int] = None, kind: str = "probs",
                 fingerprint: Optional[DatasetFingerprint] = None, settings: Optional[dict] = None,
                 renormalize: bool = False, atol: Optional[float] = None, validate: bool = True,
                 _topk: Optional[tuple] = None):
        if kind not in ("probs", "logits"):
            raise BankError(f"kind must be 'probs' or 'logits', got {kind!r}")
        y = as_labels(labels)
        if _topk is None:
            P = torch.as_tensor(probs)
            if P.dim() != 2:
                raise BankError(f"probabilities must be [N, C], got shape {tuple(P.shape)}")
            if P.dtype == torch.float64:
                P = P.float()
            if P.dtype not in _TABLE_DTYPES:
                raise BankError(f"probabilities have dtype {P.dtype}; expected float32, float16 or bfloat16")
            N, C = P.shape
            if num_classes is not None and num_classes != C:
                raise BankError(f"the table has C={C} columns but num_classes={num_classes}")
            self.form, self.table, self.idx, self.val = "dense", P.contiguous(), None, None
        else:
            idx, val = (torch.as_tensor(t) for t in _topk)
            if kind != "probs":
                raise BankError("a top-k bank stores probabilities; convert logits with "
                                "to_topk on a dense logits bank")
            if idx.dim() != 2 or val.shape != idx.shape or idx.shape[1] < 1:
                raise BankError(f"top-k indices and values must both be [N, K] with K >= 1, got "
                                f"{tuple(idx.shape)} and {tuple(val.shape)}")
            if idx.is_floating_point():
                raise BankError(f"top-k indices must be integers, got {idx.dtype}")
            if val.dtype == torch.float64:
                val = val.float()
            if val.dtype not in _TABLE_DTYPES:
                raise BankError(f"top-k values have dtype {val.dtype}; expected float32, float16 or bfloat16")
            if num_classes is None:
                raise BankError("a top-k bank needs num_classes")
            N, C = idx.shape[0], int(num_classes)
            if validate and idx.numel():
                out = (idx < 0) | (idx >= C)
                if bool(out.any()):
                    r = _first_row(out)
                    raise BankError(f"top-k indices: row {r} has a class outside [0, C={C})")
            self.form, self.table = "topk", None
            self.idx, self.val = idx.to(torch.int32).contiguous(), val.contiguous()
        if y.shape[0] != N:
            raise BankError(f"{N} probability rows but {y.shape[0]} labels")
        if C < 1 or N < 1:
            raise BankError(f"a bank needs at least one image and one class, got N={N}, C={C}")
        if validate:
            if bool(((y < 0) | (y >= C)).any()):
                r = _first_row((y < 0) | (y >= C))
                raise BankError(f"labels: image {r} has class {int(y[r])}, outside [0, C={C})")
            atol = _default_atol(self.dtype_of_values()) if atol is None else atol
            if self.form == "dense":
                self.table = _check_rows(self.table, kind=kind, renormalize=renormalize, atol=atol,
                                         what="probabilities" if kind == "probs" else "logits")
            else:
                self.val = _check_rows(self.val, kind=kind, renormalize=renormalize, atol=atol,
                                       what="top-k values")
        self.kind = kind
        self.num_images, self.num_classes = int(N), int(C)
        self.labels_tensor = y.to(self._device_of_table()).contiguous()
        fp = DatasetFingerprint.of(y, C) if fingerprint is None else fingerprint
        if validate and (fp.num_images != N or fp.num_classes != C):
            raise BankError(f"the fingerprint is for N={fp.num_images}, C={fp.num_classes} but the "
                            f"table is [N={N}, C={C}]")
        self.fingerprint = fp
        self.settings = dict(settings or {})
        self._plans: dict = {}
        self._derived: dict = {}

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_topk(cls, indices, values, labels, num_classes: int, **kwargs) -> "SoftLabelBank":
        """A top-k bank: indices [N, K] (any integer dtype, kept as int32), values [N, K]."""
        return cls(None, labels, num_classes=num_classes, _topk=(indices, values), **kwargs)

    @classmethod
    def from_reference_npz(cls, path, labels, paths: Optional[Sequence[str]] = None, *,
                           num_classes: Optional[int] = None, renormalize: bool = False,
                           dtype: torch.dtype = torch.float32, **kwargs) -> "SoftLabelBank":
        """The reference implementation's file: arr_0 = probabilities [N_file, C], arr_1 =
        relative paths "classdir/filename". With `paths` (an image folder's files, in dataset
        order) rows are matched by path (the last two components; rows of other files are
        ignored); without, rows must align with `labels` one to one (array datasets)."""
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files:
                raise BankError(f"{path}: no arr_0 (probabilities); found {', '.join(z.files)}")
            probs = z["arr_0"]
            keys = z["arr_1"] if "arr_1" in z.files else None
        y = as_labels(labels)
        if probs.ndim != 2:
            raise BankError(f"{path}: arr_0 has shape {probs.shape}; expected [N, C]")
        if paths is not None:
            if keys is None:
                raise BankError(f"{path}: no arr_1 (paths) to match the dataset's files by")
            if len(keys) != probs.shape[0]:
                raise BankError(f"{path}: {probs.shape[0]} rows of probabilities but {len(keys)} paths")
            row_of = {rel_path(k): r for r, k in enumerate(keys.tolist())}
            rows, missing = [], []
            for p in paths:
                r = row_of.get(rel_path(p))
                (missing.append(p) if r is None else rows.append(r))
            if missing:
                raise BankError(f"{path}: {len(missing)} of the dataset's {len(paths)} files have no "
                                f"row, the first being {rel_path(missing[0])!r}")
            probs = probs[np.asarray(rows, dtype=np.int64)]
        elif probs.shape[0] != y.shape[0]:
            raise BankError(f"{path}: {probs.shape[0]} rows but the dataset has {y.shape[0]} images "
                            "(pass the dataset's file paths to match rows by path)")
        C = num_classes if num_classes is not None else probs.shape[1]
        fp = DatasetFingerprint.of(y, C, paths)
        settings = {"source": "reference npz", "file": os.path.basename(str(path))}
        settings.update(kwargs.pop("settings", {}) or {})
        return cls(torch.from_numpy(np.ascontiguousarray(probs)).to(dtype), y, num_classes=C,
                   fingerprint=fp, settings=settings, renormalize=renormalize, **kwargs)

    @classmethod
    def load(cls, path, *, expect: Optional[DatasetFingerprint] = None,
             device=None) -> "SoftLabelBank":
        """A bank written by save(). With `expect` (the dataset's fingerprint) a bank made
        for another dataset raises BankError saying what differs."""
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT_NAME:
                raise BankError(f"{path} is not a {FORMAT_NAME} file (for the reference "
                                "implementation's .npz use SoftLabelBank.from_reference_npz)")
            meta = json.loads(str(z["meta"]))
            if meta.get("version", 0) > FORMAT_VERSION:
                raise BankError(f"{path}: format version {meta['version']} is newer than this "
                                f"sgan_fast reads ({FORMAT_VERSION})")
            arrays = {k: z[k] for k in z.files}
        dtype = getattr(torch, meta["dtype"])

        def tensor(a):
            t = torch.from_numpy(np.ascontiguousarray(a))
            return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t

        fp = DatasetFingerprint.from_json(meta["fingerprint"])
        kw = dict(fingerprint=fp, settings=meta.get("settings", {}), kind=meta["kind"])
        if meta["form"] == "dense":
            bank = cls(tensor(arrays["probs"]), arrays["labels"], num_classes=meta["num_classes"], **kw)
        else:
            bank = cls.from_topk(torch.from_numpy(arrays["topk_idx"]), tensor(arrays["topk_val"]),
                                 arrays["labels"], meta["num_classes"], **kw)
        if expect is not None:
            bank.check_dataset(expect)
        return bank.to(device) if device is not None else bank

    # --- files ----------------------------------------------------------------------------

    def save(self, path) -> None:
        """Writes the bank, its fingerprint and settings to `path` (.npz), atomically: a
        temporary file in the same folder, flushed to disk, then renamed over `path`."""
        path = os.fspath(path)
        meta = dict(version=FORMAT_VERSION, form=self.form, kind=self.kind,
                    num_classes=self.num_classes, dtype=str(self.dtype).replace("torch.", ""),
                    fingerprint=self.fingerprint.to_json(), settings=self.settings)

        def array(t):
            t = t.detach().cpu()
            return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()

        arrays = dict(format=np.array(FORMAT_NAME), meta=np.array(json.dumps(meta)),
                      labels=self.labels_tensor.cpu().numpy())
        if self.form == "dense":
            arrays["probs"] = array(self.table)
        else:
            arrays["topk_idx"] = array(self.idx)
            arrays["topk_val"] = array(self.val)
        atomic_savez(path, **arrays)

    # --- properties -----------------------------------------------------------------------

    def dtype_of_values(self) -> torch.dtype:
        return (self.table if self.form == "dense" else self.val).dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.dtype_of_values()

    def _device_of_table(self) -> torch.device:
        return (self.table if self.form == "dense" else self.val).device

    @property
    def device(self) -> torch.device:
        return self.labels_tensor.device

    @property
    def k(self) -> Optional[int]:
        """K of a top-k bank (None for a dense one)."""
        return None if self.idx is None else int(self.idx.shape[1])

    def nbytes(self) -> int:
        """Bytes held by the table and the labels (plans and derived tables not included)."""
        ts = [self.labels_tensor] + ([self.table] if self.form == "dense" else [self.idx, self.val])
        return sum(t.numel() * t.element_size() for t in ts)

    def __repr__(self) -> str:
        shape = f"[{self.num_images}, {self.num_classes}]" if self.form == "dense" else \
            f"top-{self.k} of [{self.num_images}, {self.num_classes}]"
        return (f"SoftLabelBank({self.kind} {shape}, {str(self.dtype).replace('torch.', '')}, "
                f"{self.device}, {self.nbytes() / 1e6:.1f} MB)")

    # --- conversions ----------------------------------------------------------------------

    def _replace(self, **tables) -> "SoftLabelBank":
        new = object.__new__(SoftLabelBank)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(tables)
        new._plans, new._derived = {}, {}
        return new

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "SoftLabelBank":
        """A copy on `device` and/or with table values in `dtype` (float32/16, bfloat16)."""
        if dtype is not None and dtype not in _TABLE_DTYPES:
            raise BankError(f"bank dtype must be float32, float16 or bfloat16, got {dtype}")
        mv = (lambda t: None if t is None else t.to(device=device))
        cast = (lambda t: None if t is None else t.to(device=device, dtype=dtype or t.dtype))
        return self._replace(table=cast(self.table), idx=mv(self.idx), val=cast(self.val),
                             labels_tensor=mv(self.labels_tensor))

    def to_topk(self, k: int) -> "SoftLabelBank":
        """A top-k bank: each row's k largest probabilities (ties: lower class first),
        renormalised; a logits bank is turned into probabilities first."""
        if not isinstance(k, int) or k < 1:
            raise BankError(f"k must be a positive integer, got {k!r}")
        k = min(k, self.num_classes)
        if self.form == "topk" and k >= self.k:
            return self
        idx, val = topk_table(self._dense_rows, self.num_images, self.num_classes, k, self.dtype,
                              self.device)
        new = self._replace(form="topk", table=None, idx=idx.to(torch.int32).contiguous(),
                            val=val.contiguous(), kind="probs")
        new.settings = dict(self.settings, topk=k)
        return new

    def to_dense(self) -> "SoftLabelBank":
        """The dense [N, C] bank of a top-k bank (zeros outside the stored entries)."""
        if self.form == "dense":
            return self
        P = torch.zeros(self.num_images, self.num_classes, dtype=self.dtype, device=self.device)
        P.scatter_(1, self.idx.long(), self.val)
        return self._replace(form="dense", table=P, idx=None, val=None)

    def _dense_rows(self, a: int, b: int) -> Tensor:
        """Probabilities of images a..b-1 as dense float64 rows [b - a, C]."""
        if self.form == "dense":
            return probabilities_ref(self.table[a:b], self.kind)
        rows = torch.zeros(b - a, self.num_classes, dtype=torch.float64, device=self.device)
        return rows.scatter_(1, self.idx[a:b].long(), self.val[a:b].double())

    def dense_probabilities(self) -> Tensor:
        """[N, C] float64 probabilities (for references and tests; allocates N x C)."""
        return self._dense_rows(0, self.num_images)

    # --- dataset matching -----------------------------------------------------------------

    def check_dataset(self, dataset_fingerprint: DatasetFingerprint) -> None:
        """Raises BankError naming every difference when the bank was made for another dataset."""
        diff = self.fingerprint.differences(dataset_fingerprint)
        if diff:
            raise BankError("this soft-label bank was made for a different dataset: " + "; ".join(diff))

    # --- targets --------------------------------------------------------------------------

    def _probability_tables(self, temperature: float):
        """(P,) or (idx, val): the probabilities at temperature t, in the bank's dtype; the
        stored table itself when nothing changes, else computed once and cached."""
        if self.kind == "probs" and temperature == 1.0:
            return (self.table,) if self.form == "dense" else (self.idx, self.val)
        key = ("probs", temperature)
        if key not in self._derived:
            if self.form == "dense":
                out = torch.empty_like(self.table)
                step = chunk_rows(self.num_classes)
                for a in range(0, self.num_images, step):
                    out[a:a + step] = probabilities_ref(self.table[a:a + step], self.kind,
                                                        temperature).to(self.dtype)
                self._derived[key] = (out,)
            else:
                v = self.val.double().pow(1.0 / temperature)
                self._derived[key] = (self.idx, (v / v.sum(1, keepdim=True)).to(self.dtype))
        return self._derived[key]

    def ols_table(self) -> Tensor:
        """[C, C] float64: the ols vector of every class (targets.ols_table); for a top-k
        bank from its stored entries. Not cached (530 MB at C = 8142): the ols plans that
        are built from it are."""
        return ols_table(self._dense_rows, self.labels_tensor, self.num_classes)

    def plan(self, target: Union[str, Target] = "softmax") -> TargetPlan:
        """The lookup table of `target` (targets.py), built once per target and cached."""
        t = Target.parse(target)
        if t not in self._plans:
            self._plans[t] = make_plan(self, t)
        return self._plans[t]

    def labels(self, indices: Tensor, target: Union[str, Target] = "softmax") -> BankLabels:
        """The labels argument of softlabel_proj / SoftLabelProjectionHead for a batch of
        dataset indices: the targets are read inside the projection kernels."""
        return BankLabels(self.plan(target), indices)

    def lookup(self, indices: Tensor, target: Union[str, Target] = "softmax", *, out: str = "auto",
               impl: str = "auto", check: bool = True):
        """Targets of a batch of dataset indices [B]: dense [B, C] or top-k (idx, val); see
        sgan_fast.ops.bank_lookup."""
        return bank_lookup(self.plan(target), indices, out=out, impl=impl, check=check)
