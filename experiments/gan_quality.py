"""Generator quality side by side, from `sgan-fast eval` folders: overall FID, mean intra-class
FID, and the mean per-class FID / precision / recall / coverage of the rarest and the most
common third of the classes (by training images).

    python experiments/gan_quality.py runs/x/eval_onehot runs/x/eval_softmax \\
        --names "one-hot BigGAN" "Softlabel-GAN" > gan_quality.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from sgan_fast.synth.downstream import class_thirds


def _mean(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else float("nan")


def table(reports: list, names: list) -> str:
    per = reports[0]["per_class"]
    counts = np.array([r["train_images"] for r in per])
    order = np.argsort(counts, kind="stable")
    rare, common = (set(g) for g in class_thirds(counts))
    cls_names = [r["name"] for r in per]
    lines = [f"Features: {reports[0]['backend']}. Rare third: "
             f"{', '.join(cls_names[c] for c in sorted(rare))}; common third: "
             f"{', '.join(cls_names[c] for c in sorted(common))}.", "",
             "| generator | FID | mean intra-class FID | rare: FID | rare: precision | rare: recall "
             "| rare: coverage | common: FID | common: precision | common: recall | common: coverage |",
             "| --- |" + " ---: |" * 10]
    for name, rep in zip(names, reports):
        rows = rep["per_class"]
        if [r["train_images"] for r in rows] != counts.tolist():
            raise SystemExit(f"{name}: its report is for another training set than {names[0]}'s")
        cells = [rep["overall"]["fid"], rep["mean_intra_fid"]]
        for group in (rare, common):
            g = [r for r in rows if r["cls"] in group]
            cells += [_mean(g, "fid"), _mean(g, "precision"), _mean(g, "recall"), _mean(g, "coverage")]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
    lines += ["", "Per-class FID:", "",
              "| class | name | training images | " + " | ".join(names) + " |",
              "| ---: | --- | ---: |" + " ---: |" * len(names)]
    for c in order.tolist():
        lines.append(f"| {c} | {cls_names[c]} | {counts[c]} | "
                     + " | ".join(f"{rep['per_class'][c]['fid']:.3f}" for rep in reports) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("evals", nargs="+", help="`sgan-fast eval` output folders")
    p.add_argument("--names", nargs="+", default=None, help="one name per folder")
    a = p.parse_args(argv)
    names = a.names or [os.path.basename(e.rstrip("/")) for e in a.evals]
    if len(names) != len(a.evals):
        raise SystemExit(f"{len(names)} names for {len(a.evals)} eval folders")
    reports = []
    for e in a.evals:
        with open(os.path.join(e, "report.json"), encoding="utf-8") as f:
            reports.append(json.load(f))
    sys.stdout.write(table(reports, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
