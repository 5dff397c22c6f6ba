"""The reader registry: extension claims, registration, a custom format through from_shards."""

from __future__ import annotations

import json

import pytest

from dataforge.datasets.readers import Reader, reader_for, readers, register_reader
from dataforge.datasets.shards import ShardError, from_shards


def test_builtin_readers_claim_compound_extensions() -> None:
    assert {"tar", "jsonl", "parquet"} <= set(readers())
    assert reader_for("a/b.tar.gz").name == "tar"
    assert reader_for("a/b.JSONL.GZ").name == "jsonl"
    assert reader_for("s3://x/y.parquet?v=1").name == "parquet"
    assert reader_for("anything", "jsonl").name == "jsonl"
    with pytest.raises(ValueError, match="register_reader"):
        reader_for("a/b.gz")
    with pytest.raises(ValueError, match="format must be one of"):
        reader_for("a/b.tar", "zip")


def test_registration_rejects_clashes_and_bad_extensions() -> None:
    with pytest.raises(ValueError, match="claimed by 'tar'"):
        register_reader(Reader("tar2", (".tgz",), lambda f, u, o: iter(())))
    with pytest.raises(ValueError, match="is registered"):
        register_reader(Reader("tar", (".zzz",), lambda f, u, o: iter(())))
    with pytest.raises(ValueError, match="start with '.'"):
        register_reader(Reader("bad", ("txt",), lambda f, u, o: iter(())))
    with pytest.raises(TypeError, match="Reader"):
        register_reader("tar")  # type: ignore[arg-type]


def test_a_registered_format_streams_through_from_shards(tmp_path) -> None:
    def read_lines(f, url, opts):
        for i, line in enumerate(f.read().decode().splitlines()):
            if opts.keep is None or opts.keep():
                yield {"url": url, "i": i, "text": line}

    register_reader(Reader("lines-test", (".lines",), read_lines), replace=True)
    for s in range(3):
        (tmp_path / f"s{s}.lines").write_text("\n".join(f"{s}-{i}" for i in range(s + 2)))
    ds = from_shards(str(tmp_path / "s*.lines"), equalize="pad")
    got = sorted(r["text"] for r in ds)
    assert got == sorted(f"{s}-{i}" for s in range(3) for i in range(s + 2))
    assert ds.samples_per_shard == [2, 3, 4]


def test_jsonl_reader_still_counts_bad_lines(tmp_path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"a": 1}) + "\n{bad\n" + json.dumps({"a": 2}) + "\n")
    ds = from_shards(str(p), on_error="skip")
    with pytest.warns(RuntimeWarning, match="1 bad line"):
        assert [r["a"] for r in ds] == [1, 2]
    assert ds.errors["skipped_lines"] == 1


def _written(tmp_path, n: int = 23):
    import dataforge
    from dataforge.datasets.writer import write_shards

    samples = [{"__key__": f"k{i:03d}", "cls": i, "json": {"i": i}} for i in range(n)]
    write_shards(dataforge.from_sequence(samples), tmp_path, format="tar", max_count=10)
    return str(tmp_path / "shard-{000000..000002}.tar")


def test_from_shards_takes_counts_from_the_writer_index(tmp_path, monkeypatch) -> None:
    from dataforge.datasets import shards as shards_mod

    pattern = _written(tmp_path)

    def no_counting(self, url):
        raise AssertionError(f"counted {url} although the index lists it")

    monkeypatch.setattr(shards_mod.ShardDataset, "_count_samples", no_counting)
    assert from_shards(pattern, equalize="pad").samples_per_shard == [10, 10, 3]


def test_an_edited_shard_is_counted_not_taken_from_the_index(tmp_path) -> None:
    pattern = _written(tmp_path)
    last = tmp_path / "shard-000002.tar"
    last.write_bytes(last.read_bytes() + b"\0" * 512)  # size no longer matches the index
    from dataforge.datasets.shards import counts_from_index, expand_urls

    assert counts_from_index(expand_urls(pattern)) is None
    assert from_shards(pattern, equalize="pad").samples_per_shard == [10, 10, 3]


def test_decode_applies_the_field_decoders(tmp_path) -> None:
    from dataforge.datasets.fields import FieldDecoder

    ds = from_shards(_written(tmp_path)).decode()
    rows = sorted(ds, key=lambda r: r["__key__"])
    assert [r["cls"] for r in rows] == list(range(23))
    assert rows[5]["json"] == {"i": 5}
    assert sorted(from_shards(_written(tmp_path)).decode(FieldDecoder()), key=lambda r: r["cls"])[0]["cls"] == 0
    with pytest.raises(TypeError, match="decoder"):
        from_shards(_written(tmp_path)).decode(lambda s: s)  # type: ignore[arg-type]


def test_csv_shards_stream_rows_and_skip_ragged_lines(tmp_path) -> None:
    import gzip as gz

    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y\n")
    with gz.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write("id,name\n3,z\n4,w,extra\n5,v\n")
    with pytest.raises(ShardError, match="line 3 has 3 fields, the header has 2"):
        list(from_shards([str(tmp_path / "a.csv"), str(tmp_path / "b.csv.gz")]))
    ds = from_shards([str(tmp_path / "a.csv"), str(tmp_path / "b.csv.gz")], on_error="skip")
    with pytest.warns(RuntimeWarning, match="1 bad line"):
        assert sorted(r["id"] for r in ds) == ["1", "2", "3", "5"]
    assert from_shards(str(tmp_path / "*.csv*"), equalize="pad", on_error="skip").samples_per_shard == [2, 2]


def test_csv_shard_with_bad_utf8_names_the_line(tmp_path) -> None:
    (tmp_path / "a.csv").write_bytes(b"id,name\n1,x\n2,\xff\n")
    with pytest.raises(ShardError, match=r"line 3 of .*a.csv' is not UTF-8"):
        list(from_shards(str(tmp_path / "a.csv")))


def test_a_registered_format_reaches_the_table_and_text_sources(tmp_path) -> None:
    """One registration makes a format readable by TableDataset and TextDataset too."""
    import dataforge

    def read_kv(f, url, opts):  # "x=1;y=2;label=a" per line
        for n, line in enumerate(f.read().decode().splitlines(), 1):
            if opts.keep is None or opts.keep():
                opts.line = n
                yield dict(part.split("=") for part in line.split(";"))

    register_reader(Reader("kv-test", (".kv",), read_kv), replace=True)
    p = tmp_path / "t.kv"
    p.write_text("x=1;y=2;label=b\nx=3;y=4;label=a\n")
    table = dataforge.TableDataset.from_file(p, target="label")
    assert table.features.tolist() == [[1.0, 2.0], [3.0, 4.0]] and table.classes == ["a", "b"]
    assert table.labels.tolist() == [1, 0]
    text = dataforge.TextDataset.from_file(p, text_key="x", label_key="label")
    assert [text[i] for i in range(2)] == [{"text": "1", "label": 1}, {"text": "3", "label": 0}]
    p.write_text("x=1;y=2;label=b\nx=3;label=a\n")
    with pytest.raises(ValueError, match=r"unknown key 'y' at line 2; keys present: \['x', 'label'\]"):
        dataforge.TableDataset.from_file(p, target="label", features=["x", "y"])
