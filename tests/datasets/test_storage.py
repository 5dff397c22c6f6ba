from __future__ import annotations

import pickle

import numpy as np
import pytest

from dataforge.datasets.storage import StringStorage

STRINGS = ["a", "", "héllo wörld", "日本語", "x" * 1000, "tab\tnew\nline", "\udcff"]


def test_roundtrip_and_negative_index() -> None:
    s = StringStorage(STRINGS)
    assert len(s) == len(STRINGS)
    assert list(s) == STRINGS
    assert s.tolist() == STRINGS
    assert s[-1] == STRINGS[-1] and s[-len(STRINGS)] == STRINGS[0]
    assert s[np.int64(2)] == STRINGS[2]
    assert s.get_bytes(2) == "héllo wörld".encode()
    assert "日本語" in s and s.index("日本語") == 3


def test_buffers_are_flat_numpy() -> None:
    s = StringStorage(["ab", "cde"])
    assert s._data.dtype == np.uint8 and s._offsets.dtype == np.int64
    assert s._offsets.tolist() == [0, 2, 5]
    assert s.nbytes == 5 + 3 * 8


def test_prefix_is_stored_once() -> None:
    s = StringStorage(["1.jpg", "2.jpg"], prefix="/root/")
    assert s[1] == "/root/2.jpg" and s.prefix == "/root/"
    assert s.get_bytes(1) == b"2.jpg"
    assert s.nbytes == 10 + 3 * 8


def test_empty() -> None:
    s = StringStorage([])
    assert len(s) == 0 and list(s) == []
    with pytest.raises(IndexError, match="index 0 is out of range for a StringStorage of length 0"):
        s[0]


@pytest.mark.parametrize("index", [7, -8, 100])
def test_index_out_of_range(index: int) -> None:
    with pytest.raises(IndexError, match=f"index {index} is out of range .* length 7"):
        StringStorage(STRINGS)[index]


def test_take_and_slice() -> None:
    s = StringStorage(STRINGS, prefix="p:")
    t = s.take([3, 0, -1, 3])
    assert list(t) == ["p:" + STRINGS[i] for i in (3, 0, -1, 3)]
    assert list(s[1:4]) == ["p:" + x for x in STRINGS[1:4]]
    assert list(s[::-2]) == ["p:" + x for x in STRINGS[::-2]]
    assert len(s.take([])) == 0
    with pytest.raises(IndexError, match="out of range"):
        s.take([0, 7])


def test_pickle_is_cheap_and_equal() -> None:
    strings = [f"/data/train/class_{i % 100:03d}/img_{i:08d}.jpg" for i in range(20_000)]
    s = StringStorage(strings)
    blob = pickle.dumps(s)
    back = pickle.loads(blob)
    assert back == s and back[123] == strings[123]
    # two flat buffers: no per-string pickle overhead beyond the bytes themselves
    assert len(blob) < s.nbytes + 1000


def test_equality_and_repr() -> None:
    assert StringStorage(["a"]) == StringStorage(["a"])
    assert StringStorage(["a"]) != StringStorage(["a"], prefix="/")
    assert StringStorage(["ab"]) != StringStorage(["a", "b"])
    assert "len=7" in repr(StringStorage(STRINGS))


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="strings must be an iterable of str, got a single str"):
        StringStorage("abc")
    with pytest.raises(TypeError, match=r"strings must contain only str, got int 3 at position 1"):
        StringStorage(["a", 3])
    with pytest.raises(TypeError, match="prefix must be a str"):
        StringStorage(["a"], prefix=1)  # type: ignore[arg-type]
