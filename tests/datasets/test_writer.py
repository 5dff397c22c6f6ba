"""write_shards: exact round trips, the index, deterministic and atomic output, webdataset reads it."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import dataforge
from dataforge.datasets.fields import FieldDecoder, decode_fields
from dataforge.datasets.sample_encoding import encode_row, encode_sample
from dataforge.datasets.shards import from_shards
from dataforge.datasets.writer import read_index, write_shards
from dataforge.transforms.decode import decode_image


def make_samples(n: int = 23) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        h, w = 8 + i % 5, 9 + i % 3
        out.append({
            "png": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
            "jpg": torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=g),
            "mask.png": torch.randint(0, 2, (1, h, w), dtype=torch.uint8, generator=g),
            "cls": i % 4,
            "txt": f"sample {i} é ✓",
            "json": {"i": i, "tags": ["a", None, 1.5], "nested": {"k": i * 2}},
            "npy": np.arange(i, dtype=np.float32).reshape(-1, 1),
        })
    return out


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return make_samples()


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def check_exact(back: list[dict], samples: list[dict], raw: list[dict]) -> None:
    assert len(back) == len(samples)
    for b, s, r in zip(back, samples, raw):
        assert torch.equal(b["png"], s["png"]) and torch.equal(b["mask.png"][:1], s["mask.png"])
        assert torch.equal(b["jpg"], decode_image(r["jpg"]))  # jpg: the pixels of the written bytes
        assert b["cls"] == s["cls"] and b["txt"] == s["txt"] and b["json"] == s["json"]
        assert b["npy"].dtype == s["npy"].dtype and np.array_equal(b["npy"], s["npy"])


def has_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


FORMATS = ["tar", "jsonl", pytest.param("parquet", marks=pytest.mark.skipif(not has_pyarrow(), reason="no pyarrow"))]


@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_exact(tmp_path, samples, format):
    w = write_shards(dataforge.from_sequence(samples), tmp_path, format=format, max_count=10)
    assert w.samples_per_shard == [10, 10, 3] and w.total_samples == len(samples)
    ds = from_shards(w.pattern)
    raw = list(ds.map(FieldDecoder(decode_images=False)))  # the written image bytes
    back = list(ds.map(decode_fields))
    assert [b["__key__"] for b in back] == [f"{i:09d}" for i in range(len(samples))]
    check_exact(back, samples, raw)
    masks = list(ds.map(FieldDecoder(image_mode="L")))
    assert all(torch.equal(m["mask.png"], s["mask.png"]) for m, s in zip(masks, samples))


def test_tar_layout_is_webdataset(tmp_path, samples):
    w = write_shards(dataforge.from_sequence(samples[:3]), tmp_path, max_count=10)
    with tarfile.open(w.urls[0]) as tf:
        names = tf.getnames()
        infos = tf.getmembers()
    fields = sorted(["png", "jpg", "mask.png", "cls", "txt", "json", "npy"])
    assert names == [f"{i:09d}.{f}" for i in range(3) for f in fields]  # sorted, one key per sample
    assert {(m.mtime, m.mode, m.uid, m.uname) for m in infos} == {(0, 0o444, 0, "")}


def test_webdataset_reads_dataforge_tars(tmp_path, samples):
    wds = pytest.importorskip("webdataset")
    w = write_shards(dataforge.from_sequence(samples), tmp_path, max_count=7, num_workers=2)
    theirs = list(wds.WebDataset(w.pattern, shardshuffle=False))
    ours = list(from_shards(w.pattern))
    assert len(theirs) == len(ours) == len(samples)
    for t, o in zip(theirs, ours):
        assert t["__key__"] == o["__key__"]
        assert {k: v for k, v in t.items() if not k.startswith("__")} == {
            k: v for k, v in o.items() if not k.startswith("__")}
    decoded = list(wds.WebDataset(w.pattern, shardshuffle=False).decode())  # their basic decoders
    for t, s in zip(decoded, samples):
        assert (t["cls"], t["txt"], t["json"]) == (s["cls"], s["txt"], s["json"])
        assert np.array_equal(t["npy"], s["npy"])


def test_index_is_valid_and_used(tmp_path, samples):
    w = write_shards(dataforge.from_sequence(samples), tmp_path, max_count=6, metadata={"classes": ["a", "b"]})
    idx = read_index(w.index)
    assert Path(w.index).name == "shard.index.json"
    assert idx["pattern"] == "shard-{000000..000003}.tar" and idx["metadata"] == {"classes": ["a", "b"]}
    assert [s["samples"] for s in idx["shards"]] == [6, 6, 6, 5] == w.samples_per_shard
    assert [s["bytes"] for s in idx["shards"]] == [os.path.getsize(u) for u in w.urls] == w.bytes_per_shard
    assert idx["total_samples"] == len(samples) and idx["total_bytes"] == sum(w.bytes_per_shard)
    ds = from_shards(str(tmp_path / idx["pattern"]), samples_per_shard=[s["samples"] for s in idx["shards"]],
                     equalize="pad", num_replicas=2, rank=0)
    assert len(list(ds)) == 12  # the index's counts drive equalize without a counting pass
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**idx, "total_samples": 1}))
    with pytest.raises(ValueError, match="does not match total_samples"):
        read_index(bad)
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a version-1 dataforge shard index"):
        read_index(bad)


def test_max_bytes_cuts_shards(tmp_path, samples):
    one = len(encode_sample(samples[0], 0, "tar")[1])
    w = write_shards(dataforge.from_sequence(samples), tmp_path, max_count=10, max_bytes=3 * one + 1024)
    assert all(b <= 3 * one + 1024 for b in w.bytes_per_shard[:-1]) and max(w.samples_per_shard) <= 3
    assert w.total_samples == len(samples) and len(list(from_shards(w.pattern))) == len(samples)
    w = write_shards(dataforge.from_sequence(samples[:2]), tmp_path / "tiny", max_bytes=1)
    assert w.samples_per_shard == [1, 1]  # a sample over max_bytes is a shard of its own


def encoded_size(sample: dict, format: str) -> int:
    return encode_row(sample, 0)[2] if format == "parquet" else len(encode_sample(sample, 0, format)[1])


@pytest.mark.parametrize("format", FORMATS)
def test_deterministic_whatever_the_workers(tmp_path, samples, format):
    one = encoded_size(samples[0], format)
    kw = {"format": format, "max_count": 5, "max_bytes": 3 * one}
    write_shards(dataforge.from_sequence(samples), tmp_path / "a", **kw)
    write_shards(dataforge.from_sequence(samples), tmp_path / "b", **kw)
    write_shards(dataforge.from_sequence(samples), tmp_path / "c", num_workers=2, **kw)
    assert files(tmp_path / "a") == files(tmp_path / "b") == files(tmp_path / "c")
    assert len(files(tmp_path / "a")) > 6  # 5 blocks, some cut by max_bytes, and the index


class Failing(dataforge.MapDataset):
    def __init__(self, samples: list[dict], bad: int) -> None:
        self.samples, self.bad = samples, bad

    def __len__(self) -> int:
        return len(self.samples)

    def _get(self, index: int) -> dict:
        if index == self.bad:
            raise OSError("disk gone")
        return self.samples[index]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_failure_leaves_no_listed_half_shard(tmp_path, samples, num_workers):
    good = write_shards(dataforge.from_sequence(samples[:4]), tmp_path, max_count=2)
    before = files(tmp_path)
    with pytest.raises(RuntimeError, match="reading sample 13 of the dataset failed: OSError: disk gone"):
        write_shards(Failing(samples, 13), tmp_path, max_count=4, num_workers=num_workers)
    assert files(tmp_path) == before  # the earlier run untouched, no temporary file left
    assert len(list(from_shards(str(tmp_path / "*.tar")))) == 4 == good.total_samples


def test_rerun_overwrites_cleanly(tmp_path, samples):
    write_shards(dataforge.from_sequence(samples), tmp_path, max_count=3)
    assert len(list(tmp_path.glob("*.tar"))) == 8
    w = write_shards(dataforge.from_sequence(samples[:5]), tmp_path, max_count=3, format="jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.jsonl", "shard-000001.jsonl",
                                                           "shard.index.json"]
    assert read_index(w.index)["shard_format"] == "jsonl"


def test_fsspec_url(tmp_path, samples):
    fsspec = pytest.importorskip("fsspec")
    w = write_shards(dataforge.from_sequence(samples[:5]), "memory://h10/out", max_count=2)
    fs = fsspec.filesystem("memory")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("/h10/out", detail=False)) == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "shard.index.json"]
    assert read_index(w.index)["total_samples"] == 5
    local = write_shards(dataforge.from_sequence(samples[:5]), tmp_path, max_count=2)
    assert [fs.cat_file(u.removeprefix("memory://")) for u in w.urls] == [Path(u).read_bytes() for u in local.urls]
    back = write_shards(dataforge.from_sequence(samples[:5]), f"file://{tmp_path}/f", max_count=5)
    assert back.samples_per_shard == [5]


def test_iterable_and_keys(tmp_path):
    gen = ({"__key__": f"dir/s{i}", "cls": i, "__url__": "dropped"} for i in range(5))
    w = write_shards(gen, tmp_path, max_count=2)
    got = list(from_shards(w.pattern).map(decode_fields))
    assert [(s["__key__"], s["cls"]) for s in got] == [(f"dir/s{i}", i) for i in range(5)]
    with pytest.raises(ValueError, match="num_workers > 0 needs a map-style"):
        write_shards(iter([{"cls": 1}]), tmp_path, num_workers=2)


@pytest.mark.parametrize(("sample", "match"), [
    ({"__key__": "a.b", "cls": 1}, "last part has no dot"),
    ({"__key__": "../x", "cls": 1}, "relative path"),
    ({"__key__": 3, "cls": 1}, "non-empty str"),
    ({"JPG": b"x"}, "field name 'JPG'"),
    ({"__key__": "k"}, "no fields"),
    ({"cls": 1.5}, "field 'cls'"),
    ({"json": {1, 2}}, "field 'json': not JSON-serialisable"),
])
def test_bad_samples_are_named(tmp_path, sample, match):
    with pytest.raises((ValueError, TypeError), match=match):
        write_shards([sample], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    ds = dataforge.from_sequence([{"cls": 1}])
    for kw, match in [({"format": "zip"}, "format"), ({"max_count": 0}, "max_count"),
                      ({"max_bytes": -1}, "max_bytes"), ({"num_workers": -1}, "num_workers"),
                      ({"prefix": "a/b"}, "prefix"), ({"jpeg_quality": 101}, "jpeg_quality"),
                      ({"metadata": {"x": object()}}, "metadata must be a dict of JSON data")]:
        with pytest.raises((ValueError, TypeError), match=match):
            write_shards(ds, tmp_path, **kw)
    with pytest.raises(ValueError, match=r"sample 0 \(key '000000000'\) is not JSON data"):
        write_shards([{"x": {1, 2}}], tmp_path, format="jsonl")
    with pytest.raises(TypeError, match="dicts of fields"):
        write_shards(dataforge.from_sequence([1, 2]), tmp_path)
    with pytest.raises(ValueError, match="same __key__"):
        write_shards([{"__key__": "a", "cls": 1}, {"__key__": "a", "cls": 2}], tmp_path)
    with pytest.raises(ValueError, match="empty"):
        write_shards(dataforge.from_sequence([]), tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_shards(ds, tmp_path / "file")


def test_fsspec_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImportError, match=r"needs fsspec: pip install dataforge\[remote\]"):
        write_shards([{"cls": 1}], "s3://bucket/prefix")
    write_shards([{"cls": 1}], tmp_path)  # local paths need no fsspec


def test_killed_run_leftovers_are_hidden_then_removed(tmp_path):
    leftover = tmp_path / ".shard.tmp-0123456789ab-000000-0000.tar"
    leftover.write_bytes(b"half a shard")
    with pytest.raises(FileNotFoundError):
        from_shards(str(tmp_path / "*.tar"))  # never listed
    write_shards([{"cls": 1}], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar", "shard.index.json"]


class BigTensors(dataforge.MapDataset):
    def __len__(self) -> int:
        return 4

    def _get(self, index: int) -> dict:
        x = torch.full((3, 128, 128), index, dtype=torch.uint8).contiguous().permute(1, 2, 0).contiguous()
        return {"png": x.permute(2, 0, 1), "cls": index}


@pytest.mark.timeout(120)
def test_workers_after_parallel_torch_ops_do_not_hang(tmp_path):
    """A parent that ran a parallel torch op forks workers whose own parallel ops hung."""
    torch.ones(1 << 22).mul_(2).sum()  # starts the parent's intra-op (OpenMP) pool
    w = write_shards(BigTensors(), tmp_path, max_count=1, num_workers=2)
    assert [s["cls"] for s in from_shards(w.pattern).map(decode_fields)] == [0, 1, 2, 3]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_progress_bar_counts_every_sample(tmp_path, samples, capsys, num_workers):
    write_shards(dataforge.from_sequence(samples), tmp_path, max_count=4, num_workers=num_workers, progress=True)
    err = capsys.readouterr().err
    assert "write tar shards" in err and f"{len(samples)}/{len(samples)}" in err


pq_only = pytest.mark.skipif(not has_pyarrow(), reason="no pyarrow")


@pq_only
def test_parquet_columns_are_typed_and_read_map_style(tmp_path, samples):
    import pyarrow.parquet as pq

    w = write_shards(dataforge.from_sequence(samples), tmp_path, format="parquet", max_count=10, num_workers=2)
    assert w.pattern.endswith("shard-{000000..000002}.parquet") and w.samples_per_shard == [10, 10, 3]
    schema = pq.read_schema(w.urls[0])
    assert schema.names == ["__key__", "cls", "jpg", "json", "mask.png", "npy", "png", "txt"]
    assert [str(schema.field(n).type) for n in ("__key__", "cls", "txt", "json", "png", "npy")] == [
        "string", "int64", "string", "binary", "binary", "binary"]
    table = pq.read_table(w.urls[1])  # other tools read plain columns
    assert table.column("cls").to_pylist() == [s["cls"] for s in samples[10:20]]
    # map-style: a table of the numeric columns, by the parquet reader
    nums = [{"cls": s["cls"], "count": i, "id": 2 * i} for i, s in enumerate(samples)]
    wt = write_shards(nums, tmp_path / "t", format="parquet", max_count=100)
    table_ds = dataforge.TableDataset.from_parquet(wt.urls[0], target="cls", features=["count", "id"])
    assert len(table_ds) == len(samples) and table_ds.labels.tolist() == [s["cls"] for s in samples]
    assert table_ds[5][0].tolist() == [5.0, 10.0]


@pq_only
def test_parquet_streaming_split_over_workers_and_ranks(tmp_path, samples):
    w = write_shards(dataforge.from_sequence(samples), tmp_path, format="parquet", max_count=4)
    keys = []
    for rank in range(2):
        ds = from_shards(w.pattern, num_replicas=2, rank=rank).decode()
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        keys += [(s["__key__"], s["cls"]) for s in loader]
    assert sorted(keys) == [(f"{i:09d}", i % 4) for i in range(len(samples))]
    assert from_shards(w.pattern, equalize="pad").samples_per_shard == w.samples_per_shard


@pq_only
def test_parquet_row_groups_are_bounded(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from dataforge.datasets import parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 3)
    w = write_shards([{"cls": i, "bin": b"x" * i} for i in range(10)], tmp_path, format="parquet")
    assert pq.ParquetFile(w.urls[0]).num_row_groups == 4
    assert [s["bin"] for s in from_shards(w.pattern)] == [b"x" * i for i in range(10)]


@pq_only
@pytest.mark.parametrize(("rows", "match"), [
    ([{"cls": 1}, {"cls": 2, "txt": "b"}], r"sample 1 \(key '000000001'\) has fields \['cls', 'txt'\], the first"),
    ([{"cls": 2**63}], "does not fit a parquet int64 column"),
    ([{"cls": b"three"}], "field 'cls': expected an integer class id"),
    ([{"txt": b"\xff"}], "field 'txt': not UTF-8"),
    ([{"json": {1, 2}}], "field 'json': not JSON-serialisable"),
    ([{3: b"x"}], "field name 3 is not a str"),
])
def test_parquet_bad_samples_are_named(tmp_path, rows, match):
    with pytest.raises((ValueError, TypeError), match=match):
        write_shards(rows, tmp_path, format="parquet")
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"write_shards\(format='parquet'\) needs pyarrow: .*dataforge\[parquet\]"):
        write_shards([{"cls": 1}], tmp_path, format="parquet")
    assert list(tmp_path.iterdir()) == []


def test_s3_upload_under_final_names_and_rerun(samples):
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    from dataforge.bench.loopback_s3 import LoopbackS3

    with LoopbackS3() as s3:
        s3.make_bucket("writer-test")
        opts = s3.storage_options
        write_shards(dataforge.from_sequence(samples), "s3://writer-test/out", max_count=5, storage_options=opts)
        w = write_shards(dataforge.from_sequence(samples[:7]), "s3://writer-test/out", max_count=5, storage_options=opts)
        listed = sorted(p.rsplit("/", 1)[1] for p in s3.filesystem().ls("writer-test/out", detail=False))
        assert listed == ["shard-000000.tar", "shard-000001.tar", "shard.index.json"]  # no temporary, no stale
        assert read_index(w.index, storage_options=opts)["total_samples"] == 7
        back = list(from_shards(w.pattern, storage_options=opts).map(decode_fields))
        assert [b["cls"] for b in back] == [s["cls"] for s in samples[:7]]


def tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


NAMES = ["a.cls", "dir/000000017.seg.png", "k" * 96 + ".jpg", "x" * 100, "x" * 101, "é/ü.txt"]


@pytest.mark.parametrize("size", [0, 1, 511, 512, 3 * 2**20, 2**33 - 1])
def test_direct_ustar_headers_are_tarfiles(size):
    from dataforge.datasets.sample_encoding import _ustar_header

    for name in NAMES[:4]:  # short ASCII names: the direct header
        assert _ustar_header(name.encode(), size) == tarfile_header(name, size)


def test_tar_members_long_and_non_ascii_names_through_tarfile():
    from dataforge.datasets.sample_encoding import _tar_member

    for name in NAMES:
        for data in (b"", b"abc", b"z" * 513):
            assert _tar_member(name, data) == tarfile_header(name, len(data)) + data + b"\0" * (-len(data) % 512)
