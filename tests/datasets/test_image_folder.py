from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import dataforge
from dataforge.datasets.storage import StringStorage
from dataforge.synthetic import make_image_folder
from dataforge.transforms.decode import ImageDecodeError


def _png(path: Path, size: tuple[int, int] = (5, 4), color: tuple[int, int, int] = (10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _png(root / "dog" / "b.png", color=(0, 255, 0))
    _png(root / "dog" / "a.PNG", color=(0, 0, 255))
    _png(root / "cat" / "z.png", size=(3, 2), color=(255, 0, 0))
    _png(root / "cat" / "nested" / "deep.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / ".cache").mkdir()
    (root / "README").write_text("a file at the top level is not a class")
    return root


def test_scan_is_sorted_and_labelled(folder: Path) -> None:
    ds = dataforge.ImageFolder(folder)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    rel = [str(Path(p).relative_to(folder)) for p in ds.paths]
    assert rel == ["cat/z.png", "cat/nested/deep.png", "dog/a.PNG", "dog/b.png"]  # files, then sub-folders
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.labels.dtype == np.int64
    assert isinstance(ds.paths, StringStorage)
    assert len(ds) == 4 and "ImageFolder(" in repr(ds)


def test_items(folder: Path) -> None:
    ds = dataforge.ImageFolder(folder)
    item = ds[0]
    assert set(item) == {"image", "label", "path"}
    assert item["label"] == 0 and item["path"] == str(folder / "cat" / "z.png")
    img = item["image"]
    assert img.dtype == torch.uint8 and img.shape == (3, 2, 3)
    assert img[:, 0, 0].tolist() == [255, 0, 0]
    assert ds[-1]["image"][:, 0, 0].tolist() == [0, 255, 0]
    batch = ds.__getitems__([3, 2])
    assert [b["label"] for b in batch] == [1, 1]


def test_decode_false_gives_bytes_and_transform_applies(folder: Path) -> None:
    raw = dataforge.ImageFolder(folder, decode=False)
    data = raw[0]["image"]
    assert isinstance(data, bytes) and data == (folder / "cat" / "z.png").read_bytes()
    sizes = dataforge.ImageFolder(folder, transform=lambda b: len(b), decode=False)
    assert sizes[0]["image"] == len(data)
    flipped = dataforge.ImageFolder(folder, transform=lambda t: t.flip(-1).float() / 255)
    img = flipped[0]["image"]
    assert img.dtype == torch.float32 and img.shape == (3, 2, 3)


def test_extensions_and_classes(folder: Path) -> None:
    only_txt = dataforge.ImageFolder(folder, extensions=".txt", decode=False)
    assert len(only_txt) == 1 and only_txt[0]["image"] == b"not an image"
    picked = dataforge.ImageFolder(folder, classes=["dog", "cat"])
    assert picked.classes == ["dog", "cat"] and picked.labels.tolist() == [0, 0, 1, 1]
    assert picked[0]["path"].endswith("a.PNG")
    one = dataforge.ImageFolder(folder, classes=["dog"])
    assert len(one) == 2 and one.labels.tolist() == [0, 0]


def test_works_with_ops_and_loader(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, num_images=12, num_classes=3, imbalance=2.0, sizes=(16, 24), progress=False)
    ds = dataforge.ImageFolder(root, transform=lambda t: t[:, :8, :8])
    train, val = ds.split([0.75, 0.25], stratify=True, seed=0)
    assert set(val.labels.tolist()) == {0, 1, 2}
    loader = DataLoader(train, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(train)
    assert batches[0]["image"].shape == (4, 3, 8, 8) and batches[0]["image"].dtype == torch.uint8
    assert torch.cat([b["label"] for b in batches]).tolist() == train.labels.tolist()


def test_pickles_cheaply(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path, num_images=30, num_classes=2, sizes=(8, 8), progress=False)
    ds = dataforge.ImageFolder(root)
    blob = pickle.dumps(ds)
    back = pickle.loads(blob)
    assert list(back.paths) == list(ds.paths) and back.labels.tolist() == ds.labels.tolist()
    assert torch.equal(back[3]["image"], ds[3]["image"])
    assert len(blob) < ds.paths.nbytes + ds.labels.nbytes + 2000


def test_corrupt_image_names_the_file(folder: Path) -> None:
    bad = folder / "dog" / "c.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = dataforge.ImageFolder(folder)
    with pytest.raises(ImageDecodeError, match=r"c\.png"):
        ds[list(ds.paths).index(str(bad))]
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG")
    trunc = folder / "dog" / "d.jpg"
    trunc.write_bytes(buf.getvalue()[:-40])
    ds = dataforge.ImageFolder(folder)
    with pytest.raises(ImageDecodeError, match=r"d\.jpg"):
        ds[list(ds.paths).index(str(trunc))]


def test_bad_input(tmp_path: Path, folder: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"ImageFolder root does not exist: '{missing}'"):
        dataforge.ImageFolder(missing)
    with pytest.raises(NotADirectoryError, match="not a folder"):
        dataforge.ImageFolder(folder / "README")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class folders .* root/<class_name>/<image files>"):
        dataforge.ImageFolder(empty)
    (empty / "a").mkdir()
    (empty / "a" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match=r"found no images under .*expected files ending in \('\.jpg'"):
        dataforge.ImageFolder(empty)
    with pytest.raises(ValueError, match="extensions must be suffixes with a leading dot such as '.jpg', got 'png'"):
        dataforge.ImageFolder(folder, extensions=("png",))
    with pytest.raises(TypeError, match="extensions must be a non-empty tuple"):
        dataforge.ImageFolder(folder, extensions=())
    with pytest.raises(ValueError, match=r"classes names folders that do not exist .*\['bird'\]"):
        dataforge.ImageFolder(folder, classes=["cat", "bird"])
    with pytest.raises(ValueError, match="without duplicates"):
        dataforge.ImageFolder(folder, classes=["cat", "cat"])
    with pytest.raises(TypeError, match="classes must be a list of folder names"):
        dataforge.ImageFolder(folder, classes="cat")
    with pytest.raises(TypeError, match="transform must be callable"):
        dataforge.ImageFolder(folder, transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode must be True, False or .auto."):
        dataforge.ImageFolder(folder, decode="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="root must be a path, got int"):
        dataforge.ImageFolder(3)  # type: ignore[arg-type]
