"""Helpers shared by the synth tests: the CLI with its exit status, a recording generator
wrapper, a scorer stub, and brute-force references for plan.py."""

import itertools
import json
import os

import numpy as np
import torch

from sgan_fast.cli import main

# as tests/train/test_cli.py: a BigGAN-32 small enough to train a step on the CPU in seconds
TINY = ["--ch", "4", "--batch-size", "8", "--d-steps", "1", "--z-dim", "16", "--shared-dim", "8",
        "--log-every", "1", "--device", "cpu", "--no-progress", "--no-tensorboard"]
# the downstream classifier, tiny
TINY_CLS = ["--arch", "resnet8", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet"]

REAL = (24, 16, 8)       # tiny_dataset()'s class counts: the checkpoint's training set
C = len(REAL)


def cli(argv) -> int:
    """main(argv)'s exit status, also for argparse's errors (which exit with status 2)."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return exc.code


def synth(checkpoint, out, *extra) -> int:
    return cli(["synthesize", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu",
                "--quiet", *map(str, extra)])


def manifest(folder) -> dict:
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def counts(labels, C=C) -> list:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=C).tolist()


class Recorder(torch.nn.Module):
    """Wraps a generator and keeps every (z, y, output) it is called with."""

    def __init__(self, G):
        super().__init__()
        self.G = G
        self.config = G.config
        self.calls = []

    def forward(self, z, y):
        out = self.G(z, y)
        self.calls.append((z.detach().clone(), y.detach().clone(), out.detach().clone()))
        return out


class MeanScorer:
    """A scorer stub: every class gets probability 1 for an image whose mean pixel is above
    `threshold`, 0 otherwise; the classes in `refuse` always get 0. It reads which class each
    scored image was generated for from the Recorder, and tallies per class what it saw."""

    def __init__(self, recorder, threshold, num_classes=C, refuse=()):
        self.rec, self.threshold, self.C, self.refuse = recorder, float(threshold), num_classes, set(refuse)
        self.seen = 0
        self.generated = [0] * num_classes
        self.accepted = [[] for _ in range(num_classes)]   # accepted images, in order, per class

    def passes(self, x):
        return x.float().mean((1, 2, 3)) > self.threshold

    def probs(self, x):
        assert x.dtype == torch.uint8 and x.dim() == 4
        new = self.rec.calls[self.seen:]
        self.seen = len(self.rec.calls)
        y = torch.cat([c[1] for c in new])
        assert not y.is_floating_point() and len(y) == len(x)
        cls = int(y[0])
        assert (y == cls).all(), "a scored batch mixes classes"
        ok = self.passes(x)
        if cls in self.refuse:
            ok[:] = False
        self.generated[cls] += len(x)
        self.accepted[cls].append(x[ok])
        p = ok.float()[:, None].repeat(1, self.C)
        for c in self.refuse:
            p[:, c] = 0.0
        return p


def rarest_first(n, total):
    """`total` images given one at a time to the class with the fewest images (then the
    fewest real ones, then the lowest class number): the water-fill, image by image."""
    f = list(n)
    add = [0] * len(n)
    for _ in range(total):
        c = min(range(len(n)), key=lambda k: (f[k], n[k], k))
        f[c] += 1
        add[c] += 1
    return add


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def brute_confusion(P, y, C):
    M = np.full((C, C), np.nan)
    for c in range(C):
        rows = [P[n] for n in range(len(y)) if y[n] == c]
        if rows:
            for k in range(C):
                M[c, k] = sum(r[k] for r in rows) / len(rows)
    return M


def brute_pairs(M, k):
    """The unordered pairs by symmetric confusion, most first, ties by (i, j); a pair with a
    class that has no row (NaN) is never chosen."""
    C = len(M)
    scored = []
    for i, j in itertools.combinations(range(C), 2):
        s = (M[i][j] + M[j][i]) / 2
        if not np.isnan(s):
            scored.append((s, i, j))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(i, j, s) for s, i, j in scored[:k]]
