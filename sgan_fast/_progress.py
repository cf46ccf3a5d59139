"""A one-line progress report on stderr, for the long loops (decoding, training, predicting)."""

from __future__ import annotations

import sys
import time


class Progress:
    """`what: done/total (rate/s) key=value ...`, redrawn at most every half second and once
    more at the end; silent when enabled=False (tests, library use without a terminal)."""

    def __init__(self, what: str, total: int, *, unit: str = "", enabled: bool = True):
        self.what, self.total, self.unit, self.enabled = what, int(total), unit, enabled
        self.last, self.start = 0.0, time.perf_counter()

    def update(self, done: int, **postfix) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.5 and done != self.total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        extra = "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}"
                        for k, v in postfix.items())
        end = "\n" if done == self.total else "\r"
        print(f"{self.what}: {done}/{self.total} ({rate:.0f}{self.unit}/s){extra}", end=end,
              file=sys.stderr, flush=True)
