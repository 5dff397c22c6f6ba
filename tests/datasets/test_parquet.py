"""Parquet shards through the reader registry (pyarrow, the ``parquet`` extra)."""

from __future__ import annotations

import pytest

from dataforge.datasets.shards import ShardError, from_shards

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _write(path, start: int, n: int, row_group_size: int) -> None:
    table = pa.table({"id": list(range(start, start + n)), "text": [f"row {i}" for i in range(start, start + n)]})
    pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_shards_stream_and_count_from_row_groups(tmp_path) -> None:
    sizes = [7, 3, 10]
    start = 0
    for s, n in enumerate(sizes):
        _write(tmp_path / f"part-{s}.parquet", start, n, row_group_size=3)
        start += n
    assert pq.ParquetFile(tmp_path / "part-2.parquet").num_row_groups == 4
    ds = from_shards(str(tmp_path / "part-{0..2}.parquet"), equalize="pad")
    assert ds.samples_per_shard == sizes  # from the row-group metadata
    rows = list(ds)
    assert sorted(r["id"] for r in rows) == list(range(sum(sizes)))
    assert all(r["text"] == f"row {r['id']}" for r in rows)


def test_parquet_split_by_sample_over_ranks_covers_every_row(tmp_path) -> None:
    _write(tmp_path / "one.parquet", 0, 11, row_group_size=4)
    seen = []
    for rank in range(2):
        seen += [r["id"] for r in from_shards(str(tmp_path / "one.parquet"), split="sample", num_replicas=2, rank=rank)]
    assert sorted(seen) == list(range(11))


def test_corrupt_parquet_shard_is_a_named_error_or_skipped(tmp_path) -> None:
    _write(tmp_path / "a.parquet", 0, 4, row_group_size=2)
    (tmp_path / "b.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(ShardError, match="b.parquet"):
        list(from_shards([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]))
    ds = from_shards([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], on_error="skip")
    with pytest.warns(RuntimeWarning, match="b.parquet"):
        assert sorted(r["id"] for r in ds) == [0, 1, 2, 3]
    assert ds.errors["skipped_shards"] == 1


def test_counting_reads_the_footer_not_the_rows(tmp_path, monkeypatch) -> None:
    _write(tmp_path / "c.parquet", 0, 9, row_group_size=2)

    def no_rows(*a, **k):
        raise AssertionError("counting read a row group")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", no_rows)
    assert from_shards(str(tmp_path / "c.parquet"), equalize="drop").samples_per_shard == [9]


def test_table_dataset_over_parquet(tmp_path) -> None:
    import torch

    from dataforge.datasets.table import TableDataset

    table = pa.table({"x": [0.5, 1.5, 2.5, 3.5, 4.5], "y": [1, 2, 3, 4, 5], "label": ["a", "b", "a", "b", "a"]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    ds = TableDataset.from_parquet(tmp_path / "t.parquet", target="label")
    assert len(ds) == 5
    x, t = ds[3]
    assert torch.equal(x, torch.tensor([3.5, 4.0]))
    assert [ds[i][1] for i in range(5)] == [0, 1, 0, 1, 0]
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(ShardError, match="bad.parquet"):
        TableDataset.from_parquet(tmp_path / "bad.parquet", target="label")
    assert TableDataset.from_file(tmp_path / "t.parquet", target="label").features.shape == (5, 2)
    pq.write_table(pa.table({"x": ["1", "2", "oops"], "label": [0, 1, 0]}), tmp_path / "s.parquet", row_group_size=2)
    with pytest.raises(ValueError, match="feature column 'x' has a non-numeric value 'oops' at line 3"):
        TableDataset.from_parquet(tmp_path / "s.parquet", target="label")
    pq.write_table(pa.table({"x": pa.array([], pa.float64()), "label": pa.array([], pa.int64())}), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="e.parquet' has no rows"):
        TableDataset.from_parquet(tmp_path / "e.parquet", target="label")


def test_without_pyarrow_the_error_names_the_extra(tmp_path, monkeypatch) -> None:
    import sys

    _write(tmp_path / "a.parquet", 0, 2, row_group_size=2)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"dataforge\[parquet\]"):
        list(from_shards(str(tmp_path / "a.parquet")))
