"""The synthetic-data folder `sgan-fast synthesize` writes, and reading it back.

    out/manifest.json     what made it: checkpoint, step, seed, truncation, counts per class,
                          filtering and inter-class settings (written last: a folder without
                          it is an unfinished export)
    out/synthetic.npz     uint8 "images" [N, H, W, C], int64 "labels" [N], "class_names"
      or out/synthetic/   one folder per class, named by zero-padded class number
                          (000, 001, ...) so that sorted order is class order; a class
                          that got no images has an empty folder
    out/mixed.npz         inter-class images: "images", "labels" (dominant class), float32
                          "targets" [M, C] (rows sum to 1), "pairs" [M, 2], "lambda" [M]
    out/report.md         the per-class table (and the class pairs)

ArrayDataset.from_npz reads synthetic.npz as it is; ImageFolder reads synthetic/ with
on_bad="skip" (it refuses empty class folders by default); open_export reads either and
checks the counts against the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

import numpy as np

from .._io import atomic_savez, atomic_write_text, check_format

MANIFEST = "manifest.json"
FORMAT_NAME = "sgan_fast.Synthetic"
FORMAT_VERSION = 1
OUTPUTS = (MANIFEST, "synthetic.npz", "synthetic", "mixed.npz", "report.md")


def class_folder(c: int, num_classes: int) -> str:
    """'007': zero-padded so that ImageFolder's sorted order is class order."""
    return f"{c:0{max(3, len(str(num_classes - 1)))}d}"


def _write_folder(path: str, images: np.ndarray, labels: np.ndarray, num_classes: int,
                  progress: bool = True) -> None:
    """Class folders of PNGs, written beside `path` and renamed into place when complete."""
    from PIL import Image

    from .._progress import Progress

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for c in range(num_classes):
        os.makedirs(os.path.join(tmp, class_folder(c, num_classes)))
    bar = Progress(f"writing {path}", len(labels), unit=" img", enabled=progress)
    for i, (img, c) in enumerate(zip(images, labels.tolist())):
        Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(
            os.path.join(tmp, class_folder(c, num_classes), f"{i:07d}.png"))
        bar.update(i + 1)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def write_export(out: str, result, *, fmt: str, class_names, manifest: dict,
                 progress: bool = True) -> list:
    """Writes `result` (a SynthResult) into `out` as the module docstring says; the manifest
    last. Returns the names written."""
    C = len(class_names)
    # everything that can fail on the content is done before a file in `out` is touched
    manifest_text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    report_text = report_table(manifest)
    if os.path.exists(os.path.join(out, MANIFEST)):
        os.remove(os.path.join(out, MANIFEST))       # the folder is unfinished until it is back
    written = []
    if fmt == "npz":
        atomic_savez(os.path.join(out, "synthetic.npz"), images=result.images, labels=result.labels,
                     class_names=np.array(class_names))
        shutil.rmtree(os.path.join(out, "synthetic"), ignore_errors=True)
        written.append("synthetic.npz")
    elif fmt == "folder":
        _write_folder(os.path.join(out, "synthetic"), result.images, result.labels, C, progress)
        if os.path.exists(os.path.join(out, "synthetic.npz")):
            os.remove(os.path.join(out, "synthetic.npz"))
        written.append("synthetic/")
    else:
        raise ValueError(f"format must be npz or folder, got {fmt!r}")
    mixed = os.path.join(out, "mixed.npz")
    if len(result.mixed_images):
        atomic_savez(mixed, images=result.mixed_images, labels=result.mixed_labels,
                     targets=result.mixed_targets, pairs=result.mixed_pairs,
                     **{"lambda": result.mixed_lambda}, class_names=np.array(class_names))
        written.append("mixed.npz")
    elif os.path.exists(mixed):
        os.remove(mixed)      # an earlier export's inter-class images do not belong to this one
    atomic_write_text(os.path.join(out, "report.md"), report_text)
    written.append("report.md")
    atomic_write_text(os.path.join(out, MANIFEST), manifest_text)
    written.append(MANIFEST)
    return written


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"synthetic data folder {folder} does not exist")
    if not os.path.exists(path):
        raise ValueError(f"{folder} holds no {MANIFEST}: it is not a `sgan-fast synthesize` "
                         "output, or that export did not finish")
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    check_format(m, path, FORMAT_NAME, FORMAT_VERSION, "`sgan-fast synthesize`")
    return m


def open_export(folder: str, *, mixed: bool = False, progress: bool = True):
    """(ArrayDataset, soft targets float32 [N, C] or None, manifest) of a synthesize folder:
    its balanced export, or with mixed=True its inter-class images (and their targets)."""
    from ..data.datasets import ArrayDataset
    from ..metrics.generated import open_generated

    m = read_manifest(folder)
    names = list(m["class_names"])
    C = len(names)
    if mixed:
        path = os.path.join(folder, "mixed.npz")
        if not os.path.exists(path):
            raise ValueError(f"{folder} has no inter-class images (mixed.npz); make them with "
                             "`sgan-fast synthesize --mix N --mix-bank bank.npz`")
        with np.load(path, allow_pickle=False) as z:
            t = z["targets"].astype(np.float32)
            ds = ArrayDataset(z["images"], z["labels"], num_classes=C, class_names=names,
                              name=f"{os.path.basename(folder.rstrip('/'))}:mixed")
        if t.shape != (len(ds), C):
            raise ValueError(f"{path}: targets are {t.shape}, expected [{len(ds)}, {C}]")
        recorded = (m.get("mixed") or {}).get("images")
        if recorded != len(ds):
            raise ValueError(f"{path} holds {len(ds)} inter-class images but its manifest says "
                             f"{recorded}: the file was replaced or altered since it was written")
        if not np.isfinite(t).all() or (t < 0).any() or not np.allclose(t.sum(1), 1, atol=1e-5):
            raise ValueError(f"{path}: targets must be finite probability rows summing to 1")
        return ds, t, m
    if m["format_of_images"] == "npz":
        path = os.path.join(folder, "synthetic.npz")
        ds = open_generated(path, class_names=names, channels=int(m["channels"]), progress=progress)
    else:
        path = os.path.join(folder, "synthetic")
        ds = _read_folder(path, names, int(m["channels"]), int(m["resolution"]), progress)
    ds.name = os.path.basename(folder.rstrip("/"))
    if ds.class_counts().tolist() != [r["written"] for r in m["per_class"]]:
        raise ValueError(f"{path} holds {ds.class_counts().tolist()} images per class but its "
                         f"manifest says {[r['written'] for r in m['per_class']]}: files were "
                         "added or removed since it was written")
    return ds, None, m


def _read_folder(path: str, names: list, channels: int, resolution: int, progress: bool):
    """The class folders back as arrays. Every class has a folder, empty for the classes that
    got no images (so that ImageFolder's sorted order is class order); ImageFolder reads
    them with on_bad="skip", and a file that would be skipped shows as a count mismatch."""
    import warnings

    from ..data.datasets import ArrayDataset
    from ..data.image_folder import ImageFolder

    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is missing: the export is incomplete")
    expected = [class_folder(c, len(names)) for c in range(len(names))]
    found = sorted(d for d in os.listdir(path) if not d.startswith("."))
    if found != expected:
        raise ValueError(f"{path} holds the folders {found[:5]}..., expected {expected[:3]}... "
                         f"({len(names)} classes)")
    if not any(os.listdir(os.path.join(path, d)) for d in found):    # an export of 0 images
        return ArrayDataset(np.zeros((0, resolution, resolution, channels), np.uint8),
                            np.zeros(0, np.int64), num_classes=len(names), class_names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # the empty class folders
        folder = ImageFolder(path, channels=channels, on_bad="skip", progress=progress)
    if folder.skipped:
        raise ValueError(f"{path}: {len(folder.skipped)} file(s) cannot be read, the first "
                         f"{folder.skipped[0][0]} ({folder.skipped[0][1]})")
    arrays = folder.to_arrays(progress=progress)
    return ArrayDataset(arrays.images, arrays.labels, num_classes=len(names), class_names=names)


def report_table(m: dict) -> str:
    """The manifest as Markdown: settings, one row per class, the inter-class pairs."""
    filt = m.get("filter")
    lines = [f"# Synthetic data from {m['checkpoint']} (step {m['step']})", "",
             f"{m['synthetic_images']} synthetic images ({m['mode']}), seed {m['seed']}, truncation "
             f"{m['truncation'] if m['truncation'] is not None else 'none'}, "
             f"{'EMA' if m['ema'] else 'raw'} generator."]
    if filt:
        lines.append(f"Filtered: kept images the classifier ({filt['classifier']}) gives their "
                     f"class >= {filt['min_confidence']}.")
    head = "| class | name | real | asked for | synthetic | real + synthetic |"
    rule = "| ---: | --- | ---: | ---: | ---: | ---: |"
    if filt:
        head += " generated | rejected % | mean confidence |"
        rule += " ---: | ---: | ---: |"
    lines += ["", head, rule]
    for r in m["per_class"]:
        row = (f"| {r['cls']} | {r['name']} | {r['real']} | {r['requested']} | {r['written']} | "
               f"{r['total']} |")
        if filt:
            rej, conf = r.get("rejection_rate"), r.get("mean_confidence")
            row += (f" {r['generated']} | {'-' if rej is None else f'{100 * rej:.1f}'} | "
                    f"{'-' if conf is None else f'{conf:.3f}'} |")
        lines.append(row)
    mix = m.get("mixed")
    if mix:
        lines += ["", f"{mix['images']} inter-class images, l ~ U({mix['lambda'][0]}, "
                  f"{mix['lambda'][1]}), class pairs from {mix['pairs_from']}:", "",
                  "| class i | class j | similarity | images |", "| --- | --- | ---: | ---: |"]
        names = m["class_names"]
        for p in mix["pairs"]:
            lines.append(f"| {p['i']} ({names[p['i']]}) | {p['j']} ({names[p['j']]}) | "
                         f"{p['similarity']:.4f} | {p['images']} |")
    return "\n".join(lines) + "\n"


def manifest_for(result, *, checkpoint: str, meta: dict, cfg, ema: bool, fmt: str,
                 class_names, channels: int, resolution: int, mode: str,
                 classifier: Optional[str], bank: Optional[str], device: str,
                 padded: bool) -> dict:
    import torch

    from .. import __version__

    return dict(
        format=FORMAT_NAME, version=FORMAT_VERSION, sgan_fast=__version__,
        torch=torch.__version__, device=str(device),
        checkpoint=os.path.abspath(checkpoint), step=int(meta["step"]),
        data_fingerprint=(meta.get("data") or {}).get("fingerprint"),
        # the generator learned the real images padded to its size (arrays) or resized (folders)
        real_images_padded=bool(padded),
        # what reproduces the images: the latents depend on the seed, the batch size (the
        # draws are made batch by batch), the truncation and the device type
        seed=int(cfg.seed), batch_size=int(cfg.batch_size), truncation=cfg.truncation,
        ema=bool(ema), count=cfg.count, total=cfg.total, format_of_images=fmt,
        num_classes=len(class_names), class_names=[str(n) for n in class_names],
        channels=int(channels), resolution=int(resolution), mode=mode,
        synthetic_images=int(len(result.labels)), per_class=result.per_class,
        filter=None if cfg.min_confidence is None else dict(
            classifier=os.path.abspath(classifier), min_confidence=cfg.min_confidence,
            max_tries=cfg.max_tries, allow_shortfall=cfg.allow_shortfall),
        mixed=None if not cfg.mix else dict(
            images=int(len(result.mixed_labels)), pairs=result.pairs,
            pairs_from=os.path.abspath(bank) if bank else None, **{"lambda": list(cfg.mix_lambda)}))
