"""``image_file.read_file``: the same bytes and errors through ``dataforge._jpeg.read_file``
(regular files, NOTE [GIL transitions]) and through the os.* loop (everything else, or
no extension)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dataforge.transforms.decode as dec
import dataforge.transforms.image_file as image_file

ENGINES = ["extension", "python"]


@pytest.fixture(params=ENGINES)
def read_file(request, monkeypatch):
    if request.param == "extension" and not dec.HAVE_ROI_DECODE:
        pytest.skip("needs the dataforge._jpeg extension")
    if request.param == "python":
        monkeypatch.setattr(image_file, "_jpeg", None)
    return image_file.read_file


def test_a_regular_file_whole(tmp_path, read_file):
    p = tmp_path / "x.bin"
    data = os.urandom(300_001)
    p.write_bytes(data)
    assert read_file(str(p)) == data
    assert read_file(p) == data  # os.PathLike
    assert read_file(os.fsencode(p)) == data
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(str(tmp_path / "empty")) == b""


def test_max_bytes_refuses_before_reading(tmp_path, read_file):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\xff" * 1000)
    assert read_file(str(p), max_bytes=1000) == b"\xff" * 1000
    with pytest.raises(dec.ImageDecodeError, match="x.jpg: 1000 bytes exceeds max_bytes=999"):
        dec.read_header(str(p), max_bytes=999)


def test_files_without_a_size_are_read_to_the_end(read_file):
    if not os.path.exists("/proc/self/status"):
        pytest.skip("no procfs")
    assert b"Name:" in read_file("/proc/self/status")  # st_size 0: read on to the end


def test_errors_name_the_path(tmp_path, read_file):
    with pytest.raises(FileNotFoundError) as info:
        read_file(str(tmp_path / "missing.jpg"))
    assert info.value.filename in (str(tmp_path / "missing.jpg"), os.fsencode(tmp_path / "missing.jpg"))
    with pytest.raises(IsADirectoryError):
        read_file(str(tmp_path))


def test_read_header_names_a_missing_file(tmp_path, read_file):
    with pytest.raises(FileNotFoundError, match="image file does not exist: .*missing.jpg"):
        dec.read_header(Path(tmp_path / "missing.jpg"))


@pytest.mark.parametrize("in_thread", [False, True])
def test_sizes_around_the_read_buffer(tmp_path, read_file, in_thread):
    # the extension allocates before it knows the size (one GIL hand-off): files smaller
    # and larger than its per-thread buffer, in both orders, read whole
    sizes = [10, 70_000, 65_536, 65_537, 2_000_000, 100, 1_500_000, 3_000_000, 1]
    files = []
    for i, n in enumerate(sizes):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(os.urandom(n))
        files.append(p)

    def check() -> None:
        for p in files:
            assert read_file(str(p)) == p.read_bytes(), p.name

    if in_thread:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(check).result()
    else:
        check()
