"""Compressed shards are refused past the expansion bound (NOTE [expansion bound])."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from dataforge.datasets import tar_stream
from dataforge.datasets.shards import ShardError, from_shards
from dataforge.datasets.table import TableDataset
from dataforge.datasets.tar_stream import check_max_expansion, decompressed


@pytest.fixture(autouse=True)
def _small_floor(monkeypatch) -> None:
    monkeypatch.setattr(tar_stream, "EXPANSION_FLOOR", 1 << 20)  # keeps the bombs a few MiB


def _bomb_jsonl() -> bytes:
    return gzip.compress(b'{"a": 1}\n' * (300_000), 9)  # 2.7 MB -> ~5 KB


def test_a_gz_jsonl_bomb_is_refused_with_the_sizes_and_the_parameter(tmp_path) -> None:
    p = tmp_path / "bomb.jsonl.gz"
    p.write_bytes(_bomb_jsonl())
    with pytest.raises(ShardError, match=r"decompression bomb.*max_expansion=None") as e:
        list(from_shards(str(p), samples_per_shard=1))
    assert e.value.url is not None and "bomb.jsonl.gz" in str(e.value)


def test_a_csv_gz_bomb_is_refused() -> None:
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 700_000, 9)
    f = decompressed(io.BytesIO(data), "x.csv.gz")
    with pytest.raises(ShardError, match="decompression bomb"):
        f.read()


def test_a_tar_gz_bomb_is_refused(tmp_path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("k0.bin")
        info.size = 3 << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    p = tmp_path / "bomb.tar.gz"
    p.write_bytes(gzip.compress(buf.getvalue(), 9))
    with pytest.raises(ShardError, match="decompression bomb"):
        list(from_shards(str(p), samples_per_shard=1))


def test_normal_and_unbounded_streams_read_in_full() -> None:
    rows = b"".join(json.dumps({"i": i, "t": f"text {i * 7919}"}).encode() + b"\n" for i in range(60_000))
    assert decompressed(io.BytesIO(gzip.compress(rows)), "ok.jsonl.gz").read() == rows  # ~5x
    bomb = _bomb_jsonl()
    assert len(decompressed(io.BytesIO(bomb), "b.gz", max_expansion=None).read()) == 2_700_000
    assert len(decompressed(io.BytesIO(bomb), "b.gz", max_expansion=1e6).read()) == 2_700_000


def test_bad_max_expansion_values_are_refused_by_name() -> None:
    assert check_max_expansion(None) is None and check_max_expansion(50) == 50.0
    for bad in (0, -1, True, "200", float("nan")):
        with pytest.raises(ValueError, match="max_expansion"):
            check_max_expansion(bad)


def test_from_shards_max_expansion_none_reads_the_shard(tmp_path) -> None:
    p = tmp_path / "big.jsonl.gz"
    p.write_bytes(_bomb_jsonl())
    rows = list(from_shards(str(p), samples_per_shard=1, max_expansion=None))
    assert len(rows) == 300_000 and rows[0] == {"a": 1}
    with pytest.raises(ValueError, match="max_expansion"):
        from_shards(str(p), max_expansion=0)


def test_a_bomb_under_on_error_skip_is_counted_and_the_next_shard_read(tmp_path) -> None:
    (tmp_path / "a.jsonl.gz").write_bytes(_bomb_jsonl())
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b'{"b": 2}\n{"b": 3}\n'))
    ds = from_shards(str(tmp_path / "*.jsonl.gz"), on_error="skip")
    with pytest.warns(RuntimeWarning, match="a.jsonl.gz.*decompression bomb"):
        rows = list(ds)
    assert rows[-2:] == [{"b": 2}, {"b": 3}] and len(rows) < 300_000
    assert ds.errors["skipped_shards"] == 1


def test_map_style_sources_take_the_bound_too(tmp_path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(b"x,y\n" + b"1,0\n" * 700_000, 9))
    with pytest.raises(ShardError, match="decompression bomb"):
        TableDataset.from_file(p, target="y")
    assert len(TableDataset.from_file(p, target="y", max_expansion=None)) == 700_000
