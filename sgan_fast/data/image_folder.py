"""Image folders: one subfolder per class, decoded with Pillow.

    ds = ImageFolder("data/train", resolution=64)       # root/<class>/<image>
    img, cls, i = ds[0]                                  # uint8 [3, 64, 64], class, index
    ds.paths[i]                                          # "classdir/filename" (the bank matches by it)

Classes are the sorted names of the subfolders; each class's files are sorted by name, so
the file list, and with it every dataset index, is deterministic. Extensions: jpg, jpeg,
png, webp, bmp (any case). Hidden files and folders (".*") are ignored.

Images are converted to RGB (channels=3: grey, palette, RGBA (alpha dropped), CMYK...) or to
grey (channels=1). With `resolution` every image is resized (shorter side, bicubic with
antialiasing) and centre-cropped to resolution x resolution; without it, all images must have
the size of the first one.

Bad input raises a ValueError naming the file: a non-image file in a class folder, an empty
class folder, a file Pillow cannot decode (corrupt, truncated), an image of another size
(without `resolution`). With on_bad="skip" the folder is verified when it is opened (every
file decoded once, with a progress line), bad files are left out, and the count is reported
in `ds.skipped` and a warning; an empty class is then kept as a class with no images.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np

from .._progress import Progress
from .datasets import ArrayDataset, LabelledImages

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("image folders are decoded with Pillow: pip install pillow") from None
    return Image


class ImageFolder(LabelledImages):
    """A class-per-subfolder image dataset (see the module docstring)."""

    def __init__(self, root, *, resolution: Optional[int] = None, channels: int = 3,
                 on_bad: str = "raise", extensions=IMAGE_EXTENSIONS, progress: bool = True):
        root = self._settings(root, resolution, channels, on_bad)
        exts = tuple(e.lower() for e in extensions)
        self.class_names = tuple(sorted(d for d in os.listdir(root)
                                        if not d.startswith(".") and os.path.isdir(os.path.join(root, d))))
        if not self.class_names:
            raise ValueError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
        paths, labels = [], []
        for c, name in enumerate(self.class_names):
            files = sorted(f for f in os.listdir(os.path.join(root, name)) if not f.startswith("."))
            kept = 0
            for f in files:
                rel = f"{name}/{f}"
                if os.path.isdir(os.path.join(root, rel)):
                    self._bad(rel, "is a folder inside a class folder")
                elif not f.lower().endswith(exts):
                    self._bad(rel, f"is not an image file (extensions: {', '.join(exts)})")
                else:
                    paths.append(rel)
                    labels.append(c)
                    kept += 1
            if kept == 0:
                if on_bad == "raise":
                    raise ValueError(f"class folder {name!r} in {root} has no images")
                warnings.warn(f"class folder {name!r} has no images; it stays class {c} with none",
                              RuntimeWarning, stacklevel=2)
        self.paths, self.labels = paths, np.asarray(labels, dtype=np.int64)
        self.num_classes = len(self.class_names)
        self._finish(progress)

    @classmethod
    def from_list(cls, root, paths, labels, class_names, *, resolution: Optional[int] = None,
                  channels: int = 3, on_bad: str = "raise", progress: bool = True,
                  what: str = "the list") -> "ImageFolder":
        """The images `paths` (relative to `root`, in this order) with classes `labels`
        (0..len(class_names)-1): the datasets published as file lists (Tiny ImageNet's
        val split, ImageNet-LT, ...). A path listed twice, a label out of range, or (with
        on_bad="raise") a missing file is a ValueError naming it and `what`."""
        self = cls.__new__(cls)
        root = self._settings(root, resolution, channels, on_bad)
        self.class_names = tuple(str(c) for c in class_names)
        paths = [os.fspath(p).replace(os.sep, "/") for p in paths]
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(paths) != len(labels):
            raise ValueError(f"{what}: {len(paths)} paths but {len(labels)} labels")
        bad = np.flatnonzero((labels < 0) | (labels >= len(self.class_names)))
        if bad.size:
            raise ValueError(f"{what}: {paths[bad[0]]} has label {labels[bad[0]]}, outside "
                             f"[0, {len(self.class_names)})")
        seen: dict = {}
        for i, rel in enumerate(paths):
            if rel in seen:
                raise ValueError(f"{what} lists {rel} twice (entries {seen[rel] + 1} and {i + 1})")
            seen[rel] = i
        keep = []
        for i, rel in enumerate(paths):
            if os.path.isfile(os.path.join(root, rel)):
                keep.append(i)
            else:
                self._bad(rel, f"is listed in {what} but not found")
        self.paths, self.labels = [paths[i] for i in keep], labels[keep]
        self.num_classes = len(self.class_names)
        self._finish(progress)
        return self

    def _settings(self, root, resolution, channels, on_bad) -> str:
        if on_bad not in ("raise", "skip"):
            raise ValueError(f"on_bad must be 'raise' or 'skip', got {on_bad!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if resolution is not None and resolution < 1:
            raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.root, self.resolution, self.channels = root, resolution, channels
        self.on_bad, self.skipped = on_bad, []
        return root

    def _finish(self, progress: bool) -> None:
        # (width, height) every image must have when resolution is None: the first image's,
        # read from its header now so that every DataLoader worker checks against the same
        self._size = (self._header_size(self.paths[0]) if self.paths and self.resolution is None
                      else None)
        if self.on_bad == "skip":
            self._verify(progress)
        if not self.paths:
            raise ValueError(f"{self.root} has no readable images")

    def _header_size(self, rel: str):
        try:
            with _pil().open(os.path.join(self.root, rel)) as im:
                return im.size
        except Exception:
            return None  # decoding it will raise (or skip it) with the reason

    def _bad(self, rel: str, why: str) -> None:
        if self.on_bad == "raise":
            raise ValueError(f"{os.path.join(self.root, rel)} {why} (on_bad='skip' leaves such files out)")
        self.skipped.append((rel, why))

    def _verify(self, progress: bool) -> None:
        keep = []
        bar = Progress(f"checking {self.root}", len(self.paths)) if progress else None
        for i, rel in enumerate(self.paths):
            try:
                self._decode(rel)
                keep.append(i)
            except ValueError as exc:
                self.skipped.append((rel, str(exc)))
            if bar:
                bar.update(i + 1)
        self.paths = [self.paths[i] for i in keep]
        self.labels = self.labels[keep]
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} bad file(s), the first being "
                          f"{self.skipped[0][0]} ({self.skipped[0][1]})", RuntimeWarning, stacklevel=3)

    def _decode(self, rel: str) -> np.ndarray:
        """uint8 [H, W, C] of one file, converted and resized; ValueError naming the file."""
        Image = _pil()
        path = os.path.join(self.root, rel)
        try:
            with Image.open(path) as im:
                im.load()
                im = im.convert("RGB" if self.channels == 3 else "L")
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise ValueError(f"cannot decode {path}: {type(exc).__name__}: {exc}") from None
        if self.resolution is not None:
            im = _resize_center_crop(im, self.resolution)
        elif self._size is None:
            self._size = im.size
        elif im.size != self._size:
            raise ValueError(f"{path} is {im.size[0]}x{im.size[1]} but the first image is "
                             f"{self._size[0]}x{self._size[1]}; pass resolution= to resize them all")
        a = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
        return a[..., None] if a.ndim == 2 else a

    def _image_hwc(self, i: int) -> np.ndarray:
        return self._decode(self.paths[i])

    def to_arrays(self, progress: bool = True) -> ArrayDataset:
        """Every image decoded into an ArrayDataset (for the GPU-resident loader)."""
        if not len(self):
            raise ValueError("no images to decode")
        bar = Progress(f"decoding {self.root}", len(self)) if progress else None
        first = self._decode(self.paths[0])
        out = np.empty((len(self),) + first.shape, dtype=np.uint8)
        out[0] = first
        for i in range(1, len(self)):
            out[i] = self._decode(self.paths[i])
            if bar:
                bar.update(i + 1)
        arrays = ArrayDataset(out, self.labels, num_classes=self.num_classes,
                              class_names=self.class_names, name=os.path.basename(self.root.rstrip("/")))
        arrays.paths = list(self.paths)   # same files, same fingerprint as the folder
        return arrays


def _resize_center_crop(im, size: int):
    Image = _pil()
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))
