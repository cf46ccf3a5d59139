"""The fingerprint of a training set, recorded in a soft-label bank so that a bank is never
used with a dataset it was not made for."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


class BankError(ValueError):
    """A soft-label bank that is malformed or does not belong to the dataset."""


@dataclasses.dataclass(frozen=True)
class DatasetFingerprint:
    """What identifies a training set: N, C, per-class counts, and a hash of its ordered file
    list (image folders), of its source keys (subsets of an array dataset: which source images,
    in order) or of its labels (whole array datasets)."""

    num_images: int
    num_classes: int
    class_counts: tuple
    content_hash: str
    hash_of: str  # "paths" | "keys" | "labels"

    @classmethod
    def of(cls, labels, num_classes: int, paths: Optional[Sequence[str]] = None,
           keys: Optional[Sequence[str]] = None) -> "DatasetFingerprint":
        y = as_labels(labels)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise BankError(f"labels must lie in [0, {num_classes}); found {int(y.min())}..{int(y.max())}")
        counts = tuple(int(c) for c in torch.bincount(y.cpu(), minlength=num_classes).tolist())
        h = hashlib.sha256()
        if paths is not None or keys is not None:
            kind = "paths" if paths is not None else "keys"
            names = [rel_path(p) for p in paths] if paths is not None else [str(k) for k in keys]
            if len(names) != y.numel():
                raise BankError(f"{len(names)} {kind} for {y.numel()} labels")
            for name in names:
                h.update(name.encode("utf-8") + b"\n")
        else:
            h.update(y.cpu().numpy().astype("<i8").tobytes())
            kind = "labels"
        return cls(int(y.numel()), int(num_classes), counts, h.hexdigest(), kind)

    def differences(self, other: "DatasetFingerprint", mine: str = "the bank") -> list:
        """Sentences saying how `other` (the dataset) differs from this fingerprint, which
        `mine` names (the bank's, a checkpoint's, ...)."""
        out = []
        if self.num_images != other.num_images:
            out.append(f"{mine} has N={self.num_images} images, the dataset {other.num_images}")
        if self.num_classes != other.num_classes:
            out.append(f"{mine} has C={self.num_classes} classes, the dataset {other.num_classes}")
        if self.class_counts != other.class_counts and self.num_classes == other.num_classes:
            diff = [c for c, (a, b) in enumerate(zip(self.class_counts, other.class_counts)) if a != b]
            shown = ", ".join(f"class {c}: {self.class_counts[c]} vs {other.class_counts[c]}"
                              for c in diff[:5])
            out.append(f"per-class counts differ in {len(diff)} class(es) ({shown}"
                       f"{', ...' if len(diff) > 5 else ''})")
        if self.content_hash != other.content_hash:
            if self.hash_of != other.hash_of:
                out.append(f"{mine} was fingerprinted by its {self.hash_of}, the dataset by its "
                           f"{other.hash_of}")
            else:
                what = {"paths": "file list (names or order)",
                        "keys": "set of source images (which ones, or their order)"}.get(
                            self.hash_of, "labels (values or order)")
                out.append(f"the {what} differs")
        return out

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DatasetFingerprint":
        return cls(int(d["num_images"]), int(d["num_classes"]), tuple(int(c) for c in d["class_counts"]),
                   str(d["content_hash"]), str(d["hash_of"]))


def rel_path(p) -> str:
    """'classdir/filename': the last two components, as the reference matches them."""
    if isinstance(p, bytes):
        p = p.decode("utf-8")
    parts = os.fspath(p).replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def as_labels(labels) -> Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if y.dim() != 1:
        raise BankError(f"labels must be one class per image [N], got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise BankError(f"labels must be integers, got {y.dtype}")
    return y.long()
