from __future__ import annotations

import json

import pytest

from dataforge.bench.common import BenchError
from dataforge.bench.data import (
    cache_dir,
    check_image_folder,
    check_jsonl,
    demo_image_folder,
    demo_text_corpus,
    photo_image_folder,
)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAFORGE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("DATAFORGE_CACHE")
    assert cache_dir().parts[-3:] == (".cache", "dataforge", "demo")


def test_demo_images_generated_once(tmp_path):
    root = demo_image_folder(6, cache=tmp_path, progress=False)
    items = check_image_folder(root)
    assert len(items) == 6 and root.parent == tmp_path
    first = sorted(p.stat().st_mtime_ns for p in root.rglob("*.jpg"))
    again = demo_image_folder(6, cache=tmp_path, progress=False)
    assert again == root
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*.jpg")) == first  # not rewritten
    assert not list(tmp_path.glob("*.tmp-*"))  # nothing half-written left behind


def test_photos_are_camera_sized_mixed_jpegs_generated_once(tmp_path):
    from PIL import Image

    root = photo_image_folder(3, cache=tmp_path, progress=False)
    files = sorted(root.rglob("*.jpg"))
    assert len(check_image_folder(root)) == 3 and len(files) == 3
    layers, progressive = [], []
    for f in files:
        with Image.open(f) as im:
            assert 0.9e6 <= im.size[0] * im.size[1] <= 12.1e6, (f.name, im.size)
            layers.append(im.layer[0][1:3])  # luma sampling factors: (2, 2) 4:2:0, (2, 1) 4:2:2
            progressive.append(bool(im.info.get("progressive")))
    assert layers == [(2, 2), (2, 1), (2, 2)] and progressive == [False, False, True]
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert photo_image_folder(3, cache=tmp_path, progress=False) == root
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    with pytest.raises(BenchError, match="positive int"):
        photo_image_folder(0, cache=tmp_path)


def test_demo_text_generated_once(tmp_path):
    path = demo_text_corpus(20, cache=tmp_path, progress=False)
    assert check_jsonl(path) == 20
    mtime = path.stat().st_mtime_ns
    assert demo_text_corpus(20, cache=tmp_path, progress=False).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_demo_sizes_checked(tmp_path, n):
    with pytest.raises(BenchError, match="positive int"):
        demo_image_folder(n, cache=tmp_path)
    with pytest.raises(BenchError, match="positive int"):
        demo_text_corpus(n, cache=tmp_path)


def test_check_image_folder_items(tiny_images):
    items = check_image_folder(tiny_images)
    assert len(items) == 12
    assert sorted({label for _, label in items}) == [0, 1, 2]
    assert items == sorted(items, key=lambda t: (t[1], t[0]))


def test_check_image_folder_skips_hidden_and_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a" / "x.PNG").write_bytes(b"")
    (tmp_path / "a" / "readme.md").write_text("")
    (tmp_path / "a" / ".y.jpg").write_bytes(b"")
    assert [p.rsplit("/", 1)[1] for p, _ in check_image_folder(tmp_path)] == ["x.PNG"]


def test_check_jsonl_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n\n")
    with pytest.raises(BenchError, match="is empty"):
        check_jsonl(p)
    p.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(BenchError, match="no 'label' key"):
        check_jsonl(p)
    assert check_jsonl(p, label_key=None) == 1
    p.write_text(json.dumps({"text": 3, "label": 0}) + "\n")
    with pytest.raises(BenchError, match="line 1 has no string 'text'"):
        check_jsonl(p)
    with pytest.raises(BenchError, match="is missing"):
        check_jsonl(tmp_path / "none.jsonl")
