"""from_shards: URL expansion, tar grouping, JSONL, corrupt shards, workers."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch.utils.data
from helpers import run_test_save_load_state
from shard_files import sample_members, write_jsonl, write_tar, write_tar_shards

import dataforge
from dataforge.datasets.shards import ShardError, expand_braces, expand_urls, from_shards
from dataforge.datasets.tar_stream import iter_samples

# on_error="skip" warns once per bad shard; the tests that check it use pytest.warns
pytestmark = pytest.mark.filterwarnings("ignore:on_error='skip'")


def keys(ds) -> list[str]:
    return [x["__key__"] for x in ds]


def get_key(sample: dict) -> str:
    return sample["__key__"]


@pytest.fixture
def shards(tmp_path):
    """4 tar shards of 3, 1, 4, 2 samples."""
    all_keys = write_tar_shards(tmp_path, [3, 1, 4, 2])
    return tmp_path, all_keys


def test_public_name() -> None:
    assert dataforge.from_shards is from_shards


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a-{000..003}.tar", ["a-000.tar", "a-001.tar", "a-002.tar", "a-003.tar"]),
        ("a-{8..10}.tar", ["a-8.tar", "a-9.tar", "a-10.tar"]),
        ("a-{08..10}", ["a-08", "a-09", "a-10"]),
        ("a-{3..1}", ["a-3", "a-2", "a-1"]),
        ("{x,y}-{0..1}", ["x-0", "x-1", "y-0", "y-1"]),
        ("{a,b{1..2}}.t", ["a.t", "b1.t", "b2.t"]),
        ("no-braces", ["no-braces"]),
        ("lit-{x}", ["lit-{x}"]),
    ],
)
def test_expand_braces(pattern, expected) -> None:
    assert expand_braces(pattern) == expected


def test_expand_braces_unclosed() -> None:
    with pytest.raises(ValueError, match="unclosed"):
        expand_braces("a-{0..3.tar")


def test_urls_list_path_glob_brace(shards) -> None:
    root, all_keys = shards
    one = os.path.join(root, "shard-000.tar")
    assert keys(from_shards(one)) == all_keys[:3]
    assert keys(from_shards([one, os.path.join(root, "shard-001.tar")])) == all_keys[:4]
    assert keys(from_shards(os.path.join(root, "*.tar"))) == all_keys
    assert keys(from_shards(os.path.join(root, "shard-{000..003}.tar"))) == all_keys
    assert keys(from_shards("file://" + os.path.join(root, "shard-00{0,1}.tar"))) == all_keys[:4]
    assert expand_urls([root / "shard-000.tar"]) == [one]  # PathLike accepted


def test_missing_files_and_bad_arguments(shards, tmp_path) -> None:
    root, _ = shards
    with pytest.raises(FileNotFoundError, match="shard-004.tar"):
        from_shards(os.path.join(root, "shard-{000..009}.tar"))
    with pytest.raises(FileNotFoundError, match="matched no file"):
        from_shards(os.path.join(root, "*.zip"))
    with pytest.raises(ValueError, match="urls"):
        from_shards([])
    with pytest.raises(ValueError, match="on_error"):
        from_shards(os.path.join(root, "*.tar"), on_error="ignore")
    with pytest.raises(ValueError, match="format"):
        from_shards(os.path.join(root, "*.tar"), format="zip")
    other = tmp_path / "x.bin"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="pass format= one of"):
        from_shards(str(other))
    write_jsonl(tmp_path / "a.jsonl", [1])
    with pytest.raises(ValueError, match=r"mix \[.jsonl., .tar.\]"):
        from_shards([os.path.join(root, "shard-000.tar"), str(tmp_path / "a.jsonl")])


def test_tar_grouping_and_safety(tmp_path) -> None:
    payload = pickle.dumps({"x": 1})
    members = [
        ("a/b/000123.jpg", b"JPEG"),
        ("a/b/000123.cls", b"7"),
        ("a/b/000123.seg.PNG", b"PNG"),  # multi-dot extension, lower-cased
        ("a/b/000123.pyd", payload),  # never unpickled
        ("a/b/README", b"no extension: ignored"),
        ("a/b/000124.cls", b"8"),
    ]
    path = write_tar(tmp_path / "s.tar", members)
    out = list(from_shards(path))
    assert out == [
        {"__key__": "a/b/000123", "__url__": path, "jpg": b"JPEG", "cls": b"7", "seg.png": b"PNG", "pyd": payload},
        {"__key__": "a/b/000124", "__url__": path, "cls": b"8"},
    ]


def test_tar_long_names_gz_and_directories(tmp_path) -> None:
    deep = "d" * 120 + "/" + "k" * 110  # longer than the 100-byte ustar name field
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / f"long{fmt}.tar.gz"
        with tarfile.open(path, "w:gz", format=fmt) as tf:
            d = tarfile.TarInfo("dir")
            d.type = tarfile.DIRTYPE
            tf.addfile(d)  # a directory member: skipped
            for name, data in sample_members([deep]):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        assert list(from_shards(str(path))) == [
            {"__key__": deep, "__url__": str(path), "txt": deep.encode(), "cls": b"231"}
        ]


def test_duplicate_member_is_an_error(tmp_path) -> None:
    path = write_tar(tmp_path / "dup.tar", [("k.txt", b"1"), ("k.txt", b"2")])
    with pytest.raises(ShardError, match=r"duplicate member 'k.txt'"):
        list(from_shards(path))


def test_jsonl(tmp_path) -> None:
    rows = [{"text": f"doc {i}", "label": i % 2} for i in range(5)]
    a = write_jsonl(tmp_path / "a.jsonl", rows[:3], extra_lines=("",))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[3:]))
    assert list(from_shards([a, str(tmp_path / "b.jsonl.gz")])) == rows
    assert list(from_shards(a, format="jsonl", num_replicas=3, rank=1)) == rows[1:2]  # 1 shard: by sample


def test_jsonl_bad_line(tmp_path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [1, 2], extra_lines=('{"cut": ', "3"))
    with pytest.raises(ShardError, match=r"line 3 of .*bad.jsonl"):
        list(from_shards(path))
    ds = from_shards(path, on_error="skip")
    with pytest.warns(RuntimeWarning, match="line 3"):
        assert list(ds) == [1, 2, 3]
    assert ds.errors == {"skipped_shards": 0, "skipped_lines": 1}
    with pytest.warns(DeprecationWarning, match="use on_error='skip'"):
        ds = from_shards(path, on_error="warn")
    with pytest.warns(RuntimeWarning, match="line 3"):
        assert list(ds) == [1, 2, 3]


def _corrupt_variants(tmp_path) -> dict[str, tuple[str, int, str]]:
    """name -> (path, samples readable before the damage, text the error must contain)."""
    good = write_tar(tmp_path / "good.tar", sample_members([f"k{i}" for i in range(4)]))
    data = Path(good).read_bytes()
    # layout: each member = 512 header + 512 data; sample i = members 2i, 2i+1
    out = {}

    def put(name: str, blob: bytes, n_ok: int, text: str) -> None:
        p = tmp_path / f"{name}.tar"
        p.write_bytes(blob)
        out[name] = (str(p), n_ok, text)

    # damage in k2's first member: k1 is complete and kept (NOTE [complete before damage])
    put("cut_in_data", data[: 4 * 1024 + 700], 2, "truncated member 'k2.txt'")
    put("cut_at_boundary", data[: 5 * 1024], 2, "without the end-of-archive marker")
    bad = bytearray(data)
    bad[3 * 1024 + 100 : 3 * 1024 + 140] = b"\xff" * 40  # header of member k1.cls
    put("bad_header", bytes(bad), 1, "invalid tar header")
    put("garbage", b"not a tar file at all " * 50, 0, "invalid tar header")
    gz = gzip.compress(data)
    put("bad_gzip", gz[: len(gz) // 2], 0, "cannot read shard")
    return out


@pytest.mark.parametrize("variant", ["cut_in_data", "cut_at_boundary", "bad_header", "garbage", "bad_gzip"])
def test_corrupt_tar_each_on_error(tmp_path, variant) -> None:
    path, n_ok, text = _corrupt_variants(tmp_path)[variant]
    with pytest.raises(ShardError) as e:
        list(from_shards(path, format="tar"))
    assert text in str(e.value) and path in str(e.value)
    good = write_tar(tmp_path / "after.tar", sample_members(["z"]))
    ds = from_shards([path, good], format="tar", on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipped the rest of the shard"):
        assert keys(ds) == [f"k{i}" for i in range(n_ok)] + ["z"]  # the rest of the bad shard skipped
    assert ds.errors == {"skipped_shards": 1, "skipped_lines": 0}


def test_corrupt_shard_with_equalize(tmp_path) -> None:
    path, _, _ = _corrupt_variants(tmp_path)["cut_in_data"]
    with pytest.raises(ShardError):  # the counting pass already meets it
        from_shards(path, format="tar", equalize="pad")
    good = write_tar(tmp_path / "g.tar", sample_members(["a", "b", "c"]))
    parts = [keys(from_shards([path, good], format="tar", equalize="pad", on_error="skip",
                              num_replicas=2, rank=r)) for r in range(2)]
    assert parts == [["k0", "k1", "k0"], ["a", "b", "c"]]


def test_equalize_and_split_over_ranks(shards) -> None:
    root, all_keys = shards
    pattern = os.path.join(root, "shard-{000..003}.tar")
    plain = [keys(from_shards(pattern, num_replicas=2, rank=r)) for r in range(2)]
    assert sorted(plain[0] + plain[1]) == sorted(all_keys) and not set(plain[0]) & set(plain[1])
    pad = [from_shards(pattern, equalize="pad", num_replicas=2, rank=r) for r in range(2)]
    assert pad[0].samples_per_shard == [3, 1, 4, 2]
    assert [len(keys(d)) for d in pad] == [7, 7]
    drop = [keys(from_shards(pattern, equalize="drop", num_replicas=2, rank=r)) for r in range(2)]
    assert [len(d) for d in drop] == [3, 3]
    given = from_shards(pattern, equalize="drop", samples_per_shard=[3, 1, 4, 2], num_replicas=2, rank=0)
    assert keys(given) == drop[0]
    with pytest.raises(ValueError, match=r"4 shard\(s\) for 8 consumers"):
        list(from_shards(pattern, split="shard", num_replicas=8, rank=0))


def test_shuffle_shards_per_epoch(tmp_path) -> None:
    write_tar_shards(tmp_path, [1] * 12)
    ds = from_shards(os.path.join(tmp_path, "*.tar"), shuffle_shards=True, seed=5)
    e0 = keys(ds)
    ds.set_epoch(1)
    e1 = keys(ds)
    assert sorted(e0) == sorted(e1) and e0 != e1
    ds.set_epoch(0)
    assert keys(ds) == e0


@pytest.mark.parametrize(
    "kw", [{}, {"equalize": "pad", "num_replicas": 2, "rank": 1}], ids=["plain", "equalize"]
)
def test_resume(shards, kw) -> None:
    root, _ = shards
    pattern = os.path.join(root, "*.tar")
    run_test_save_load_state(
        lambda: from_shards(pattern, shuffle_shards=True, **kw).shuffle(3).map(get_key), epochs=2
    )


def test_remote_needs_fsspec(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImportError, match=r"pip install dataforge\[remote\]"):
        from_shards("s3://bucket/train-{000..001}.tar")


def test_dataloader_two_workers(shards) -> None:
    root, all_keys = shards
    ds = from_shards(os.path.join(root, "*.tar")).map(get_key)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list, timeout=60)
    seen = [k for batch in loader for k in batch]
    assert Counter(seen) == Counter(all_keys)


class _ReadOnly:
    """A stream without seek (like an HTTP response)."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


@pytest.mark.parametrize("variant", ["cut_in_data", "cut_at_boundary", "bad_header", "garbage", "bad_gzip"])
@pytest.mark.parametrize("read", [True, False], ids=["read", "count"])
def test_corrupt_tar_detected_in_unseekable_streams(tmp_path, variant, read) -> None:
    path, n_ok, _ = _corrupt_variants(tmp_path)[variant]
    got = []
    with pytest.raises(ShardError, match="shard '"):
        for s in iter_samples(_ReadOnly(Path(path).read_bytes()), path, read=read):
            got.append(s["__key__"])
    assert got == [f"k{i}" for i in range(n_ok)]
    good = Path(write_tar(tmp_path / "ok.tar", sample_members(["a", "b"]))).read_bytes()
    assert [s["__key__"] for s in iter_samples(_ReadOnly(good), "ok", read=read)] == ["a", "b"]


def test_split_by_sample_skips_other_consumers_data(tmp_path, monkeypatch) -> None:
    from dataforge.datasets import tar_stream

    path = write_tar(tmp_path / "one.tar", [(f"k{i}.bin", b"x" * (1000 + i)) for i in range(6)])
    requested = []
    real = tar_stream._read_exact
    monkeypatch.setattr(tar_stream, "_read_exact", lambda f, n: requested.append(n) or real(f, n))
    ds = from_shards(path, num_replicas=3, rank=1)  # 1 shard, 3 consumers: by sample
    assert keys(ds) == ["k1", "k4"]
    assert sorted(n for n in requested if n >= 1000) == [1001, 1004]  # only its own members read


def test_split_by_sample_bad_line_reported_once(tmp_path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [0, 1], extra_lines=("{oops", "3"))
    parts = [from_shards(path, num_replicas=2, rank=r, on_error="skip") for r in range(2)]
    assert [list(d) for d in parts] == [[0], [1, 3]]
    assert [d.errors["skipped_lines"] for d in parts] == [1, 0]  # only the owner parsed it


@pytest.mark.parametrize("variant", ["cut_in_data", "bad_header", "garbage", "bad_gzip"])
def test_split_by_sample_bad_shard_reported_once(tmp_path, variant) -> None:
    # 2 shards for 3 consumers: split by sample, so every consumer walks the bad shard
    path, _, _ = _corrupt_variants(tmp_path)[variant]
    good = write_tar(tmp_path / "after.tar", sample_members(["a", "b", "c", "d"]))
    whole = keys(from_shards([path, good], format="tar", on_error="skip"))
    parts = [from_shards([path, good], format="tar", on_error="skip", num_replicas=3, rank=r) for r in range(3)]
    got = [keys(d) for d in parts]
    assert sorted(k for g in got for k in g) == sorted(whole)  # still every sample once
    assert sum(d.errors["skipped_shards"] for d in parts) == 1  # the skip takes one slot
    with pytest.raises(ShardError):  # "raise" still raises in every consumer
        keys(from_shards([path, good], format="tar", num_replicas=3, rank=1))


def _bad_jsonl_shards(root: Path) -> list[str]:
    """a: 2 bad lines, b: 1 bad line, c: a gzip cut in half (a bad shard)."""
    a = write_jsonl(root / "a.jsonl", [{"a": i} for i in range(5)], extra_lines=("{oops", '{"a": 5}', "[1,"))
    b = write_jsonl(root / "b.jsonl", [{"b": i} for i in range(4)], extra_lines=("nope", '{"b": 4}'))
    blob = gzip.compress(b"".join(json.dumps({"c": i}).encode() + b"\n" for i in range(50)))
    c = root / "c.jsonl.gz"
    c.write_bytes(blob[: len(blob) // 2])
    return [a, b, str(c)]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("a", {"skipped_shards": 0, "skipped_lines": 2}),  # 1 shard: split by sample in workers
        ("abc", {"skipped_shards": 1, "skipped_lines": 3}),  # 3 shards: split by shard
    ],
)
def test_loader_totals_of_bad_jsonl(tmp_path, num_workers, which, expected) -> None:
    urls = [u for u in _bad_jsonl_shards(tmp_path) if Path(u).name[0] in which]
    whole = list(from_shards(urls, on_error="skip"))
    loader = dataforge.build_loader(
        from_shards(urls, on_error="skip").map(json.dumps), 2, collate_fn=list, num_workers=num_workers
    )
    got = [row for batch in loader for row in batch]
    assert sorted(got) == sorted(json.dumps(r) for r in whole)
    assert loader.errors == expected and loader.stats()["dataset_errors"] == expected
    list(loader)  # a second epoch adds the same skips again: totals are cumulative
    assert loader.errors == {k: 2 * v for k, v in expected.items()}


def test_loader_totals_sum_every_source_of_a_mix(tmp_path) -> None:
    a, b, c = _bad_jsonl_shards(tmp_path)
    path, _, _ = _corrupt_variants(tmp_path)["garbage"]
    tar = from_shards([path, write_tar(tmp_path / "ok.tar", sample_members(["x", "y"]))], on_error="skip")
    mixed = dataforge.mix([from_shards([a, b, c], on_error="skip"), tar.map(get_key)], stop="all_exhausted")
    loader = dataforge.build_loader(mixed, 3, collate_fn=list, num_workers=2)
    assert len([x for batch in loader for x in batch]) == 6 + 5 + 2  # rows of a, b; samples
    assert loader.errors == {"skipped_shards": 2, "skipped_lines": 3}
