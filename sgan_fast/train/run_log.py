"""A run's logs: log.csv (always), eval.csv (periodic evaluations) and TensorBoard (when the
tensorboard package is installed). Rows are appended and flushed as they come, so a killed
run keeps its log; a resumed run first drops rows past the checkpoint it resumes from."""

from __future__ import annotations

import csv
import io
import os
from typing import Optional

from .._io import atomic_write_text


class RunLog:
    def __init__(self, out: str, *, tensorboard: bool = True):
        os.makedirs(out, exist_ok=True)
        self.out = out
        self.path, self.eval_path = os.path.join(out, "log.csv"), os.path.join(out, "eval.csv")
        self._checked: set = set()   # files whose header matched this run's columns
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(out, "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.tb = None   # optional: CSV is always written

    def _append(self, path: str, row: dict) -> None:
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if not new and path not in self._checked:   # an existing file's columns, read once
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if header != list(row):
                raise ValueError(f"{path} has columns {header}, this run writes {list(row)}: "
                                 "it belongs to another kind of run; use another --out")
        self._checked.add(path)
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            f.flush()

    def row(self, row: dict) -> None:
        row = dict(step=row["step"], **{k: v for k, v in row.items() if k != "step"})
        self._append(self.path, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def eval_row(self, res: dict) -> None:
        row = dict(step=res["step"], fid=float(res["fid"]), intra_fid=float(res["intra_fid"]))
        self._append(self.eval_path, row)
        if self.tb is not None:
            self.tb.add_scalar("eval/fid", row["fid"], row["step"])
            self.tb.add_scalar("eval/intra_fid", row["intra_fid"], row["step"])

    def truncate_after(self, step: int) -> None:
        """Drops rows logged after `step` (a run killed after logging, before checkpointing)."""
        for path in (self.path, self.eval_path):
            if not os.path.exists(path):
                continue
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
            if len(kept) != len(rows):
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(kept)
                atomic_write_text(path, buf.getvalue())

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def latest(self) -> Optional[dict]:
        if not os.path.exists(self.path):
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return rows[-1] if rows else None
