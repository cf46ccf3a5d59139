"""Datasets published as folders plus lists: Tiny ImageNet, and "relative/path label" list
files (ImageNet-LT, Places-LT). Both open as an ImageFolder built from the list
(ImageFolder.from_list), so decoding, resizing, bad-file handling, the loaders and the
fingerprint (file list + labels) are those of image folders.

    train = tiny_imagenet("data/tiny-imagenet-200")                  # 100,000 images, 200 classes
    val = tiny_imagenet("data/tiny-imagenet-200", "test")            # val/ with its annotations
    lt = image_list("data/imagenet", "data/ImageNet_LT_train.txt")   # paths relative to the root

Tiny ImageNet: classes are the sorted wnids of wnids.txt (or of train/'s folders when it is
absent), named from words.txt when present; "train" is train/<wnid>/images/*, each class's
files sorted; "test" is val/images/* labelled by val/val_annotations.txt ("file<TAB>wnid...").

List files: one "relative/path label" per line (blank lines ignored). Labels may be any
integers: they are mapped to 0..C-1 in increasing order and each class is named by its
original label, so the mapping travels with the dataset (and a bank made from the same list
matches it). A malformed line, a path listed twice, or a listed file that is missing is an
error naming the list, the line and the file (on_bad="skip" leaves missing files out).
"""

from __future__ import annotations

import os
import numpy as np

from .image_folder import IMAGE_EXTENSIONS, ImageFolder

TINY_IMAGENET_HOW = ("unpack tiny-imagenet-200.zip (cs231n.stanford.edu/tiny-imagenet-200.zip); "
                     "--root is the tiny-imagenet-200 folder")


def _read_lines(path, what: str) -> list:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} not found")
    with open(path, encoding="utf-8") as f:
        return [(n + 1, line.rstrip("\n")) for n, line in enumerate(f) if line.strip()]


def tiny_imagenet(root: str, split: str = "train", **kw) -> ImageFolder:
    """Tiny ImageNet's training set or (split="test") its labelled val split; kw go to
    ImageFolder.from_list (resolution, channels, on_bad, progress)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root is None or not os.path.isdir(os.path.join(root, "train")):
        raise FileNotFoundError(f"{root} is not a Tiny ImageNet folder (no train/); {TINY_IMAGENET_HOW}")
    wnids_file = os.path.join(root, "wnids.txt")
    if os.path.isfile(wnids_file):
        wnids = sorted({line.strip() for _, line in _read_lines(wnids_file, "wnids")})
    else:
        wnids = sorted(d for d in os.listdir(os.path.join(root, "train"))
                       if os.path.isdir(os.path.join(root, "train", d)))
    index = {w: c for c, w in enumerate(wnids)}
    words = {}
    words_file = os.path.join(root, "words.txt")
    if os.path.isfile(words_file):
        for _, line in _read_lines(words_file, "words"):
            w, _, name = line.partition("\t")
            words[w] = name.split(",")[0].strip() or w
    names = [words.get(w, w) for w in wnids]
    paths, labels = [], []
    if split == "train":
        for w in wnids:
            d = os.path.join(root, "train", w, "images")
            if not os.path.isdir(d):
                raise FileNotFoundError(f"{d} not found (class {w} of wnids.txt); {TINY_IMAGENET_HOW}")
            for f in sorted(os.listdir(d)):
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    paths.append(f"train/{w}/images/{f}")
                    labels.append(index[w])
        what = f"{root}/train"
    else:
        ann = os.path.join(root, "val", "val_annotations.txt")
        for n, line in _read_lines(ann, "Tiny ImageNet's val annotations"):
            parts = line.split("\t")
            if len(parts) < 2:
                raise ValueError(f"{ann} line {n}: expected 'file<TAB>wnid...', got {line!r}")
            if parts[1] not in index:
                raise ValueError(f"{ann} line {n}: wnid {parts[1]!r} is not one of the "
                                 f"{len(wnids)} classes")
            paths.append(f"val/images/{parts[0]}")
            labels.append(index[parts[1]])
        what = ann
    return ImageFolder.from_list(root, paths, labels, names, what=what, **kw)


def image_list(root: str, list_file: str, *, classes=None, **kw) -> ImageFolder:
    """The images a "relative/path label" list names, relative to `root` (see the module
    docstring); kw go to ImageFolder.from_list. classes: the original labels in class order
    (a test list takes its training list's, `[int(c) for c in train.class_names]`, so that
    both number the classes alike); default: the list's own labels, sorted."""
    if root is None:
        raise ValueError(f"a list dataset needs --root, the folder {list_file}'s paths are "
                         "relative to")
    paths, raw = [], []
    for n, line in _read_lines(list_file, "list file"):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            label = int(parts[1])
        except ValueError:
            raise ValueError(f"{list_file} line {n}: expected 'relative/path label', got "
                             f"{line!r}") from None
        paths.append(parts[0])
        raw.append(label)
    if not paths:
        raise ValueError(f"{list_file} lists no images")
    raw = np.asarray(raw, dtype=np.int64)
    values = np.unique(raw) if classes is None else np.asarray(list(classes), dtype=np.int64)
    labels = np.searchsorted(values, raw) if values.size else np.zeros_like(raw)
    unknown = np.flatnonzero((labels >= len(values)) | (values[np.minimum(labels, len(values) - 1)] != raw))
    if unknown.size:
        raise ValueError(f"{list_file}: {paths[unknown[0]]} has label {raw[unknown[0]]}, which "
                         f"is not one of the training list's {len(values)} classes")
    return ImageFolder.from_list(root, paths, labels, [str(v) for v in values], what=list_file,
                                 **kw)


def inat_json(root: str, json_file: str, *, classes=None, **kw) -> ImageFolder:
    """The images of an iNaturalist (2017-2021) COCO-style json ("images" with "id" and
    "file_name", "annotations" with "image_id" and "category_id", "categories" with "id" and
    "name"), relative to `root`. Classes: the category ids in increasing order, named by the
    categories' names; classes= (the training json's ids, `train.category_ids`) numbers a
    validation json alike. An image without an annotation, two annotations for one image,
    or an annotation of an unknown image or category is an error naming the json."""
    import json

    if root is None:
        raise ValueError(f"an iNaturalist json needs --root, the folder {json_file}'s file "
                         "names are relative to")
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"json file {json_file} not found")
    try:
        with open(json_file, encoding="utf-8") as f:
            meta = json.load(f)
        images = {int(im["id"]): im["file_name"] for im in meta["images"]}
        anns = [(int(a["image_id"]), int(a["category_id"])) for a in meta.get("annotations", [])]
        cats = {int(c["id"]): str(c.get("name", c["id"])) for c in meta.get("categories", [])}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{json_file} is not an iNaturalist json ({type(exc).__name__}: {exc})") from None
    label_of: dict = {}
    for image_id, cat in anns:
        if image_id not in images:
            raise ValueError(f"{json_file}: an annotation names image id {image_id}, which is not "
                             "in its images")
        if image_id in label_of:
            raise ValueError(f"{json_file}: image id {image_id} ({images[image_id]}) has two "
                             "annotations")
        label_of[image_id] = cat
    missing = [i for i in images if i not in label_of]
    if missing:
        raise ValueError(f"{json_file}: image id {missing[0]} ({images[missing[0]]}) has no "
                         f"annotation ({len(missing)} such images; a challenge test json has no "
                         "labels and cannot be a dataset here)")
    if classes is not None:
        ids = [int(c) for c in classes]
    else:   # the categories listed, or (none listed) those annotated
        ids = sorted(cats or set(label_of.values()))
    index = {c: k for k, c in enumerate(ids)}
    order = sorted(images)                                   # image id order: deterministic
    unknown = [i for i in order if label_of[i] not in index]
    if unknown:
        raise ValueError(f"{json_file}: {images[unknown[0]]} has category {label_of[unknown[0]]}, "
                         f"which is not one of the {len(ids)} classes")
    ds = ImageFolder.from_list(root, [images[i] for i in order],
                               [index[label_of[i]] for i in order],
                               [cats.get(c, str(c)) for c in ids], what=json_file, **kw)
    ds.category_ids = list(ids)
    return ds
