"""CIFAR-10 and CIFAR-100 from the python batches of www.cs.toronto.edu/~kriz/cifar.html.

    train = cifar10("data/cifar-10-batches-py")                    # 50,000 32x32 RGB, 10 classes
    test = cifar100("data/cifar-100-python", "test", coarse=True)   # the 20 superclasses

The files are pickles. Unpickling can run code, so they are read with an unpickler that
builds only plain containers, bytes, strings, numbers and numpy arrays and refuses anything
else, naming it. A missing, truncated or foreign batch file is named in the error.

    cifar-10-batches-py/   data_batch_1 .. data_batch_5 (train), test_batch, batches.meta
    cifar-100-python/      train, test, meta
Each batch holds b"data" (uint8 [N, 3072]: 1024 red, then green, then blue values, row-major
32x32) and b"labels" (CIFAR-10) or b"fine_labels" and b"coarse_labels" (CIFAR-100).

    download_cifar("cifar10", "data/cifar-10-batches-py")   # opt-in: torchvision, a network
fetches the archive with torchvision when the batch files are not in that folder, and puts
them there (the folder the readers take, whatever its name).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from typing import Optional

import numpy as np

from .datasets import ArrayDataset

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
HOW_TO_GET = ("download the python version from www.cs.toronto.edu/~kriz/cifar.html and "
              "unpack it, or pass --download (needs torchvision); --root is the folder that holds "
              "the batch files")
KRIZ_URL = "https://www.cs.toronto.edu/~kriz/"
# --data name -> (torchvision class, folder the archive unpacks to, archive, files that must be there)
CIFAR_ARCHIVES = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                CIFAR10_FILES["train"] + CIFAR10_FILES["test"]),
    "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz",
                 CIFAR100_FILES["train"] + CIFAR100_FILES["test"]),
}
CIFAR_ARCHIVES["cifar100-coarse"] = CIFAR_ARCHIVES["cifar100"]

# What a CIFAR batch needs to rebuild: numpy arrays (numpy 1.x and 2.x module names).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds "
                                     "only arrays, lists, bytes and strings")


def read_batch(path) -> dict:
    """One CIFAR python batch (a dict with bytes keys), read without running its code."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; {HOW_TO_GET}")
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR batch (truncated or another file?): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR batch (it holds a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _images(batch: dict, path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                         f"{tuple(data.shape)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)      # [N, 32, 32, 3]


def _labels(batch: dict, key: str, n: int, num_classes: int, path) -> np.ndarray:
    if key not in batch:
        raise ValueError(f"{path} has no {key!r} (keys: {', '.join(sorted(map(str, batch)))})")
    y = np.asarray(batch[key], dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"{path}: {n} images but {y.shape} {key}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{path}: {key} outside [0, {num_classes})")
    return y


def _names(path, key: str, num_classes: int) -> Optional[list]:
    """The class names of the meta file, or None when it is absent (names are optional)."""
    if not os.path.isfile(path):
        return None
    names = read_batch(path).get(key)
    if names is None or len(names) != num_classes:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def cifar10(root: str, split: str = "train") -> ArrayDataset:
    """CIFAR-10 (32x32 RGB, 10 classes): the five training batches or the test batch."""
    _check_split(split)
    if root is None:
        raise ValueError(f"--data cifar10 needs --root (cifar-10-batches-py); {HOW_TO_GET}")
    xs, ys = [], []
    for name in CIFAR10_FILES[split]:
        path = os.path.join(root, name)
        batch = read_batch(path)
        x = _images(batch, path)
        xs.append(x)
        ys.append(_labels(batch, "labels", len(x), 10, path))
    names = _names(os.path.join(root, "batches.meta"), "label_names", 10)
    return ArrayDataset(np.concatenate(xs), np.concatenate(ys), num_classes=10,
                        class_names=names, name=f"cifar10-{split}")


def cifar100(root: str, split: str = "train", *, coarse: bool = False) -> ArrayDataset:
    """CIFAR-100 (32x32 RGB): the 100 fine classes, or with coarse=True the 20 superclasses."""
    _check_split(split)
    if root is None:
        raise ValueError(f"--data cifar100 needs --root (cifar-100-python); {HOW_TO_GET}")
    path = os.path.join(root, CIFAR100_FILES[split][0])
    batch = read_batch(path)
    x = _images(batch, path)
    key, C = ("coarse_labels", 20) if coarse else ("fine_labels", 100)
    y = _labels(batch, key, len(x), C, path)
    names = _names(os.path.join(root, "meta"),
                   "coarse_label_names" if coarse else "fine_label_names", C)
    return ArrayDataset(x, y, num_classes=C, class_names=names,
                        name=f"cifar100{'-coarse' if coarse else ''}-{split}")


def download_cifar(data: str, root: str) -> bool:
    """Puts the batch files of `data` (cifar10, cifar100, cifar100-coarse) into the folder
    `root`, fetched with torchvision when any is missing; False when they were all there (then
    nothing is fetched). torchvision unpacks into a temporary folder inside `root`, and the
    files of the archive's folder are moved up into `root`, the folder the readers take."""
    if data not in CIFAR_ARCHIVES:
        raise ValueError(f"download_cifar fetches {', '.join(CIFAR_ARCHIVES)}, not {data!r}")
    cls_name, folder, archive, needed = CIFAR_ARCHIVES[data]
    if all(os.path.isfile(os.path.join(root, f)) for f in needed):
        return False
    by_hand = (f"or download {archive} from {KRIZ_URL} by hand, unpack it and pass its {folder} "
               "folder as --root")
    try:
        import torchvision
    except ImportError:
        raise ImportError(f"--download of {data} needs torchvision: pip install torchvision, "
                          f"{by_hand}") from None
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".download-", dir=root)
    try:
        try:
            getattr(torchvision.datasets, cls_name)(staging, train=True, download=True)
        except Exception as exc:   # no network, a refused connection, a corrupt archive, ...
            raise FileNotFoundError(
                f"the {data} files are not in {root}, and downloading {archive} with "
                f"torchvision.datasets.{cls_name} failed ({type(exc).__name__}: {exc}); check "
                f"the network, {by_hand}") from exc
        src = os.path.join(staging, folder)
        missing = [f for f in needed if not os.path.isfile(os.path.join(src, f))]
        if missing:
            raise FileNotFoundError(f"torchvision.datasets.{cls_name} left no {', '.join(missing)} "
                                    f"in {src}; {by_hand}")
        for name in os.listdir(src):
            os.replace(os.path.join(src, name), os.path.join(root, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
