"""Tiny ImageNet and "relative/path label" list datasets (ImageNet-LT, Places-LT), on trees and
lists the tests write: classes, order, pixels, the test split's numbering, and every bad
list named."""

import os

import numpy as np
import pytest
from PIL import Image

from sgan_fast.data.image_lists import image_list, tiny_imagenet
from sgan_fast.data.spec import DataSpec, open_data


def _png(path, value, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def tiny(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]                       # wnids.txt is not sorted
    (root / "train").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby\nn03\tlion\n")
    for k, w in enumerate(wnids):
        for j in (1, 0):                                 # written out of order
            _png(root / "train" / w / "images" / f"{w}_{j}.JPEG", 10 * k + j)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")   # not an image: ignored
    ann = []
    for i, w in enumerate(["n03", "n01", "n01"]):
        _png(root / "val" / "images" / f"val_{i}.JPEG", 100 + i)
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return root


def test_tiny_imagenet_train_and_val(tiny):
    train = tiny_imagenet(str(tiny))
    assert train.class_names == ("goldfish", "tabby", "lion")     # sorted wnids, named
    assert train.paths == [f"train/{w}/images/{w}_{j}.JPEG" for w in ("n01", "n02", "n03")
                           for j in (0, 1)]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    img, c, i = train[2]
    assert c == 1 and int(img[0, 0, 0]) == 0           # n02 is written as k=0: value 0 + j 0
    val = tiny_imagenet(str(tiny), "test")
    assert val.labels.tolist() == [2, 0, 0] and val.paths[0] == "val/images/val_0.JPEG"
    t2, v2, _ = open_data(DataSpec(data="tiny-imagenet", root=str(tiny), resolution=4))
    assert t2.paths == train.paths and len(v2) == 3 and t2[0][0].shape == (3, 4, 4)


def test_tiny_imagenet_bad_annotations_are_named(tiny):
    ann = tiny / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn09\t0\t0\t7\t7\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt line 1: wnid 'n09' is not one of the 3"):
        tiny_imagenet(str(tiny), "test")
    with pytest.raises(FileNotFoundError, match="not a Tiny ImageNet folder"):
        tiny_imagenet(str(tiny / "val"))


@pytest.fixture
def lt(tmp_path):
    root = tmp_path / "imagenet"
    lines = [("train/a/1.png", 7), ("train/b/2.png", 300), ("train/a/3.png", 7),
             ("train/c/4.png", 12)]
    for k, (p, _) in enumerate(lines):
        _png(root / p, k)
    (tmp_path / "train.txt").write_text("".join(f"{p} {y}\n" for p, y in lines) + "\n")
    _png(root / "val" / "x.png", 50)
    _png(root / "val" / "y.png", 51)
    (tmp_path / "test.txt").write_text("val/x.png 300\nval/y.png 12\n")   # no class 7 here
    return root, tmp_path


def test_list_labels_map_to_classes_in_increasing_order_and_the_test_list_follows(lt):
    root, d = lt
    train, test, _ = open_data(DataSpec(data="imagenet-lt", root=str(root),
                                        list=str(d / "train.txt"), test_list=str(d / "test.txt")))
    assert train.class_names == ("7", "12", "300")       # the original ids, kept in order
    assert train.labels.tolist() == [0, 2, 0, 1] and train.paths[1] == "train/b/2.png"
    assert test.labels.tolist() == [2, 1]                # numbered like the training list
    assert int(train[3][0][0, 0, 0]) == 3                # the pixels of the 4th listed file
    # a bank made from the same list matches: the fingerprint is the file list and labels
    again = image_list(str(root), str(d / "train.txt"))
    assert again.fingerprint() == train.fingerprint()


@pytest.mark.parametrize("text, message", [
    ("train/a/1.png\n", r"line 1: expected 'relative/path label'"),
    ("train/a/1.png seven\n", r"line 1: expected 'relative/path label'"),
    ("train/a/1.png 1\ntrain/a/1.png 2\n", r"lists train/a/1.png twice \(entries 1 and 2\)"),
    ("train/a/9.png 1\n", r"train/a/9.png is listed in .* but not found"),
    ("\n", r"lists no images"),
])
def test_bad_lists_are_named(lt, text, message):
    root, d = lt
    (d / "bad.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        image_list(str(root), str(d / "bad.txt"))


def test_a_test_label_unknown_to_the_training_list_and_misplaced_flags(lt):
    root, d = lt
    (d / "test2.txt").write_text("val/x.png 5\n")
    with pytest.raises(ValueError, match=r"val/x.png has label 5, which is not one of the training list's 3"):
        open_data(DataSpec(data="places-lt", root=str(root), list=str(d / "train.txt"),
                           test_list=str(d / "test2.txt")))
    with pytest.raises(ValueError, match="needs --list"):
        open_data(DataSpec(data="imagenet-lt", root=str(root)))
    with pytest.raises(ValueError, match="go with --data imagenet-lt or places-lt"):
        open_data(DataSpec(data="mnist-5k", list=str(d / "train.txt")))


def _inat(d, name, images, anns, cats):
    import json
    (d / name).write_text(json.dumps(dict(
        images=[dict(id=i, file_name=f) for i, f in images],
        annotations=[dict(id=k, image_id=i, category_id=c) for k, (i, c) in enumerate(anns)],
        categories=[dict(id=c, name=n) for c, n in cats])))
    return str(d / name)


def test_inat_json_train_and_val_numbered_alike(lt):
    root, d = lt
    cats = [(40, "Aves"), (3, "Fungi"), (17, "Plantae")]
    train_json = _inat(d, "train2018.json", [(9, "train/c/4.png"), (2, "train/a/1.png"),
                                             (5, "train/b/2.png")],
                       [(2, 3), (5, 40), (9, 17)], cats)
    val_json = _inat(d, "val2018.json", [(1, "val/x.png"), (0, "val/y.png")],
                     [(1, 17), (0, 40)], [(17, "Plantae"), (40, "Aves")])
    train, test, _ = open_data(DataSpec(data="inat2018", root=str(root), json=train_json,
                                        test_json=val_json))
    assert train.class_names == ("Fungi", "Plantae", "Aves")    # category ids 3 < 17 < 40
    assert train.paths == ["train/a/1.png", "train/b/2.png", "train/c/4.png"]   # by image id
    assert train.labels.tolist() == [0, 2, 1]
    assert test.paths == ["val/y.png", "val/x.png"] and test.labels.tolist() == [2, 1]


@pytest.mark.parametrize("images, anns, message", [
    ([(1, "train/a/1.png")], [], r"image id 1 \(train/a/1.png\) has no annotation"),
    ([(1, "train/a/1.png")], [(1, 3), (1, 3)], r"image id 1 .* has two annotations"),
    ([(1, "train/a/1.png")], [(2, 3)], r"names image id 2, which is not in its images"),
    ([(1, "train/a/1.png"), (2, "train/a/1.png")], [(1, 3), (2, 3)], r"lists train/a/1.png twice"),
])
def test_bad_inat_jsons_are_named(lt, images, anns, message):
    root, d = lt
    path = _inat(d, "bad.json", images, anns, [(3, "Fungi")])
    with pytest.raises(ValueError, match=message):
        open_data(DataSpec(data="inat2019", root=str(root), json=path))
    with pytest.raises(ValueError, match="go with --data inat2018 or inat2019"):
        open_data(DataSpec(data="imagenet-lt", root=str(root), list=str(d / "train.txt"),
                           json=path))
