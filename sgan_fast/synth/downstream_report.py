"""The downstream experiment's table (Markdown) and plot (per-class accuracy gain against
training images per class)."""

from __future__ import annotations

import numpy as np

from .._io import atomic_write


def _pm(s: dict, scale: float = 100.0) -> str:
    if s is None or s["mean"] is None:
        return "-"
    if s["std"] is None:
        return f"{scale * s['mean']:.1f}"
    return f"{scale * s['mean']:.1f} ± {scale * s['std']:.1f}"


def _signed(s: dict) -> str:
    if s is None or s["mean"] is None:
        return "-"
    txt = f"{100 * s['mean']:+.1f}"
    return txt if s["std"] is None else f"{txt} ± {100 * s['std']:.1f}"


def report_markdown(summary: dict, settings: dict) -> str:
    arms = summary["arms"]
    names, counts = summary["class_names"], summary["class_counts"]
    rare = ", ".join(names[c] for c in summary["rare"])
    common = ", ".join(names[c] for c in summary["common"])
    runs = {a: s["runs"] for a, s in arms.items()}
    budget = (f"every arm gets the optimiser steps of {settings['epochs']} epochs of the real set"
              if settings["budget"] == "steps" else f"{settings['epochs']} epochs of each arm's own set")
    lines = ["# Downstream classification: real vs real + synthetic", "",
             f"Classifier {settings['arch']} ({budget}), balance {settings['balance']}, tested on "
             f"{settings['test_images']} real test images. Mean ± standard deviation over seeds, in "
             "%; seed s starts every arm alike, so gains are paired by seed. The spread is the "
             "classifier's (initialisation and batch order): every seed of an arm uses the same "
             "synthetic images.", ""]
    few = [a for a, n in runs.items() if n < 3]
    if few:
        lines += [f"Fewer than 3 seeds for {', '.join(few)}: the spread is not meaningful.", ""]
    lines += ["| arm | seeds | train images | balanced acc | accuracy | rare third | common third "
              "| gain in balanced acc |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for a, s in arms.items():
        lines.append(f"| {a} | {s['runs']} | {s['train_images']} | {_pm(s['balanced_accuracy'])} | "
                     f"{_pm(s['accuracy'])} | {_pm(s['rare_classes'])} | {_pm(s['common_classes'])} | "
                     f"{_signed(s['gain_balanced_accuracy']) if s['gain_balanced_accuracy'] else 'baseline'} |")
    lines += ["", f"Rare third: {rare}. Common third: {common}.", "",
              "Per-class test accuracy, %:", "",
              "| class | name | real train images | " + " | ".join(arms) + " |",
              "| ---: | --- | ---: | " + " | ".join("---:" for _ in arms) + " |"]
    for c in np.argsort(counts, kind="stable").tolist():
        lines.append(f"| {c} | {names[c]} | {counts[c]} | "
                     + " | ".join(_pm(s["per_class"][c]) for s in arms.values()) + " |")
    return "\n".join(lines) + "\n"


def plot_gain(summary: dict, path, title: str = "Per-class accuracy gain over the real arm") -> None:
    """Per-class accuracy gain (mean ± std over seeds) against the class's real training
    images, one series per arm other than the baseline."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the downstream plot needs matplotlib: pip install matplotlib") from None
    counts = np.asarray(summary["class_counts"], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    arms = [(a, s) for a, s in summary["arms"].items() if s["gain_per_class"] is not None]
    # a small horizontal offset per arm keeps error bars of one class apart
    offsets = np.linspace(-0.04, 0.04, max(len(arms), 1))
    for k, (a, s) in enumerate(arms):
        mean = np.array([np.nan if g["mean"] is None else 100 * g["mean"] for g in s["gain_per_class"]])
        std = np.array([0.0 if g["std"] is None else 100 * g["std"] for g in s["gain_per_class"]])
        ax.errorbar(counts * 10 ** offsets[k], mean, yerr=std, fmt="o", capsize=3, label=a)
    ax.axhline(0, color="0.5", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("real training images of the class")
    ax.set_ylabel(f"test accuracy gain over {summary['baseline']} (points)")
    ax.set_title(title)
    if arms:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
