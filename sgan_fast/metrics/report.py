"""The evaluation report: report.md (one table, a row per class with its training-image
count) and plot.png (per-class FID, precision, recall and coverage against the number of
training images, log scale, so the rare classes stand out at a glance)."""

from __future__ import annotations

import math
from typing import Optional

from .._io import atomic_write


def _num(v, fmt: str = "{:.3f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def report_markdown(report: dict, title: str = "Evaluation") -> str:
    o = report["overall"]
    lines = [f"# {title}", "",
             f"Features: **{report['backend']}**. {report['num_real']} real and "
             f"{report['num_generated']} generated images, {report['num_classes']} classes.", "",
             f"- overall: FID {_num(o['fid'], '{:.2f}')}, KID {_num(o['kid_mean'] * 1e3, '{:.2f}')} "
             f"± {_num(o['kid_std'] * 1e3, '{:.2f}')} (x1e-3), IS "
             + (f"{_num(o['is_mean'], '{:.2f}')} ± {_num(o['is_std'], '{:.2f}')}" if o["is_mean"] is not None
                else "- (this backend has no logits)")
             + f", precision {_num(o['precision'])}, recall {_num(o['recall'])}, density "
             f"{_num(o['density'])}, coverage {_num(o['coverage'])}",
             f"- mean intra-class FID: {_num(report['mean_intra_fid'], '{:.2f}')}"]
    if report.get("cas"):
        lines.append(f"- CAS (classifier trained on generated images, tested on real test images): "
                     f"balanced accuracy {_num(report['cas']['balanced_accuracy'] * 100, '{:.1f}')}%")
    lines += ["", "| class | name | train images | real | generated | FID | KID x1e3 | IS | precision "
              "| recall | density | coverage |" + (" CAS acc |" if report.get("cas") else ""),
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
              + (" ---: |" if report.get("cas") else "")]
    for i, r in enumerate(report["per_class"]):
        row = (f"| {r['cls']} | {r['name']} | {_num(r['train_images'], '{}')} | {r['real_images']} | "
               f"{r['generated_images']} | {_num(r['fid'], '{:.2f}')} | {_num(r['kid_mean'] * 1e3, '{:.2f}')} | "
               f"{_num(r['is_mean'], '{:.2f}')} | {_num(r['precision'])} | {_num(r['recall'])} | "
               f"{_num(r['density'])} | {_num(r['coverage'])} |")
        if report.get("cas"):
            row += f" {_num(report['cas']['per_class'][i], '{:.3f}')} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def plot_per_class(report: dict, path, title: Optional[str] = None) -> None:
    """plot.png: four panels (FID, precision, recall, coverage) against training images per
    class on a log axis, each point labelled with its class."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        raise ImportError("the per-class plot needs matplotlib: pip install matplotlib") from None
    rows = report["per_class"]
    x = [r["train_images"] if r["train_images"] is not None else r["real_images"] for r in rows]
    xlabel = "training images in the class" if rows[0]["train_images"] is not None else "real images in the class"
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    for ax, key, label in zip(axes.flat, ("fid", "precision", "recall", "coverage"),
                              ("intra-class FID (lower is better)", "precision", "recall", "coverage")):
        ys = [r[key] for r in rows]
        ax.scatter(x, ys, s=28, color="tab:blue" if key != "fid" else "tab:red")
        for r, xi, yi in zip(rows, x, ys):
            ax.annotate(str(r["name"])[:12], (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if min(x) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if key != "fid":
            ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"Per-class quality vs class size ({report['backend']})", fontsize=11)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
