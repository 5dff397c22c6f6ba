"""Reliability item 7: corrupt images in an ImageFolder."""

from __future__ import annotations

import os

import pytest

import dataforge

ImageFolder = pytest.importorskip("dataforge.datasets.image_folder").ImageFolder
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[str, set[str]]:
    root = tmp_path_factory.mktemp("imgs")
    corrupt = set()
    for c in ("cat", "dog"):
        os.makedirs(root / c)
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 10, 200)).save(root / c / f"{i}.jpg", quality=90)
    (root / "cat" / "2.jpg").write_bytes(b"definitely not a jpeg" * 10)
    corrupt.add(str(root / "cat" / "2.jpg"))
    data = (root / "dog" / "4.jpg").read_bytes()
    (root / "dog" / "4.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    corrupt.add(str(root / "dog" / "4.jpg"))
    return str(root), corrupt


def test_raise_names_the_file(folder) -> None:
    root, corrupt = folder
    loader = dataforge.build_loader(ImageFolder(root), batch_size=4, num_workers=0)
    with pytest.raises(Exception) as info:
        list(loader)
    assert any(os.path.basename(p) in str(info.value) for p in corrupt)
    assert "dataset index 2" in str(info.value)


@pytest.mark.parametrize(("on_error", "num_workers"), [("skip", 0), ("substitute", 2)])
def test_skip_and_substitute_finish_and_report_exactly_the_corrupt_files(folder, on_error, num_workers) -> None:
    root, corrupt = folder
    ds = ImageFolder(root)
    loader = dataforge.build_loader(ds, batch_size=4, num_workers=num_workers, on_error=on_error)
    batches = list(loader)
    loader.close()
    n = sum(len(b["label"]) for b in batches)
    assert n == (8 if on_error == "skip" else 10)
    assert {ds.paths[f.index] for f in loader.failures} == corrupt
    assert all(any(os.path.basename(ds.paths[f.index]) in f.message for _ in [0]) for f in loader.failures)
