"""Image folders: the deterministic file list, pixel-exact decoding, and every bad-input case."""

import numpy as np
import pytest
import torch

from sgan_fast.data import ImageFolder
from sgan_fast.labels import DatasetFingerprint

Image = pytest.importorskip("PIL.Image", reason="Pillow decodes image folders (quickstart installs it)")


def _folder(tmp_path, per_class=(3, 2, 4), size=(6, 5), seed=0):
    """root/<class>/<i>.png with random RGB pixels; returns (root, {relpath: pixels})."""
    g = np.random.default_rng(seed)
    pixels = {}
    for c, n in enumerate(per_class):
        d = tmp_path / f"class_{c}"
        d.mkdir()
        for i in range(n):
            a = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"img{i:02d}.png")
            pixels[f"class_{c}/img{i:02d}.png"] = a
    return tmp_path, pixels


def test_sorted_file_list_and_pixel_exact_items(tmp_path):
    root, pixels = _folder(tmp_path)
    (root / "class_1" / ".DS_Store").write_bytes(b"finder metadata")  # hidden: ignored
    ds = ImageFolder(root)
    assert ds.class_names == ("class_0", "class_1", "class_2")
    assert ds.paths == sorted(pixels) and ds.class_counts().tolist() == [3, 2, 4]
    for i, rel in enumerate(ds.paths):
        img, cls, idx = ds[i]
        assert img.dtype == torch.uint8 and img.shape == (3, 5, 6)
        assert torch.equal(img, torch.from_numpy(pixels[rel]).permute(2, 0, 1))
        assert cls == int(rel.split("/")[0][-1]) and idx == i
    arrays = ds.to_arrays(progress=False)
    assert np.array_equal(arrays.images[4], pixels[ds.paths[4]]) and np.array_equal(arrays.labels, ds.labels)
    assert ds.fingerprint() == DatasetFingerprint.of(ds.labels, 3, ds.paths)


def test_modes_are_converted(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    rgb = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(d / "grey.png")
    Image.fromarray(rgb).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(d / "palette.bmp")
    ds = ImageFolder(tmp_path)
    assert all(ds[i][0].shape == (3, 4, 4) for i in range(4))
    assert torch.equal(ds[ds.paths.index("a/rgba.png")][0], torch.from_numpy(rgb).permute(2, 0, 1))
    grey = ImageFolder(tmp_path, channels=1)
    assert grey[0][0].shape == (1, 4, 4)


def test_resolution_resizes_and_crops(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    Image.new("RGB", (40, 20), (10, 200, 30)).save(d / "wide.png")
    Image.new("RGB", (9, 30), (250, 0, 0)).save(d / "tall.webp", lossless=True)
    ds = ImageFolder(tmp_path, resolution=16)
    for i, color in ((ds.paths.index("a/tall.webp"), (250, 0, 0)), (ds.paths.index("a/wide.png"), (10, 200, 30))):
        img = ds[i][0]
        assert img.shape == (3, 16, 16)
        assert torch.equal(img, torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, 16, 16))


def test_different_sizes_without_resolution_name_the_file(tmp_path):
    root, _ = _folder(tmp_path)
    Image.new("RGB", (7, 7)).save(root / "class_2" / "zz_odd.png")
    ds = ImageFolder(root)
    with pytest.raises(ValueError, match=r"class_2/zz_odd.png is 7x7 but the first image is 6x5; "
                                         "pass resolution="):
        ds[len(ds) - 1]


@pytest.mark.parametrize("case", ["corrupt", "truncated", "not_image", "empty_class", "folder"])
def test_bad_input_raises_naming_the_file_or_is_skipped(tmp_path, case):
    root, pixels = _folder(tmp_path)
    bad = root / "class_1" / "bad.png"
    if case == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif case == "truncated":
        data = (root / "class_1" / "img00.png").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif case == "not_image":
        bad = root / "class_1" / "notes.txt"
        bad.write_text("not an image")
    elif case == "folder":
        bad = root / "class_1" / "nested"
        bad.mkdir()
    else:
        bad = root / "class_3"
        bad.mkdir()
    decode_time = case in ("corrupt", "truncated")
    if decode_time:
        ds = ImageFolder(root)   # found when the file is read: the message names it
        with pytest.raises(ValueError, match=rf"cannot decode .*{bad.name}"):
            ds[ds.paths.index(f"class_1/{bad.name}")]
    else:
        with pytest.raises(ValueError, match=rf"{bad.name}|class_3"):
            ImageFolder(root)
    with pytest.warns(RuntimeWarning):
        ds = ImageFolder(root, on_bad="skip", progress=False)
    assert sorted(ds.paths) == sorted(pixels)
    assert len(ds.skipped) == (0 if case == "empty_class" else 1)
    if case == "empty_class":
        assert ds.num_classes == 4 and ds.class_counts().tolist() == [3, 2, 4, 0]


def test_a_dataloader_worker_error_keeps_its_message(tmp_path):
    root, _ = _folder(tmp_path)
    (root / "class_0" / "zz.png").write_bytes(b"not a png")
    ds = ImageFolder(root)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1)
    with pytest.raises(ValueError, match="cannot decode .*class_0/zz.png"):
        list(loader)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="on_bad must be"):
        ImageFolder(tmp_path, on_bad="ignore")
