"""Compressed shards are refused past the expansion bound (NOTE [expansion bound])."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from dataforge.datasets import tar_stream
from dataforge.datasets.shards import ShardError, from_shards
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
