"""Untrusted records (issue #16, findings 6, 7, 8): every bad tar member, JSONL line or CSV
row is the library's own named error with its file and position, bounded in time and memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shard_files import (
    costly_jsonl_lines,
    hostile_jsonl_lines,
    hostile_tables,
    hostile_tars,
    sample_members,
    write_tar,
)

import dataforge
from dataforge.datasets.records import (
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    RecordError,
    iter_lines,
    parse_json_line,
)
from dataforge.datasets.shards import ShardError, from_shards
from dataforge.datasets.tar_stream import iter_samples

TAR_CASES = sorted(hostile_tars())
JSONL_CASES = sorted(hostile_jsonl_lines())
TABLE_CASES = sorted(hostile_tables())

pytestmark = pytest.mark.filterwarnings("ignore:on_error='skip'")  # checked with pytest.warns


def keys(ds) -> list[str]:
    return [x["__key__"] for x in ds]


def _write(tmp_path: Path, name: str, blob: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(blob)
    return str(p)


_NAME_UNKNOWN = ("cut_in_second_header", "longname_2e62", "pax_garbage_record", "pax_header_2e62")


def _complete_before_damage(case: str) -> list[str]:
    # damage before the next member's name is read: sample "a" may have had more members
    return [] if case in _NAME_UNKNOWN else ["a"]


# ---- finding 6: tar shards ------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tar.gz"])
@pytest.mark.parametrize("case", TAR_CASES)
def test_hostile_tar_member_is_a_counted_shard_error(tmp_path, case, gz) -> None:
    blob = hostile_tars()[case]
    path = _write(tmp_path, f"{case}.tar" + (".gz" if gz else ""), gzip.compress(blob) if gz else blob)
    with pytest.raises(ShardError) as e:
        list(from_shards(path, format="tar"))
    assert path in str(e.value) and e.value.url == path
    if case in _NAME_UNKNOWN:
        assert "after member 'a.txt'" in str(e.value) and e.value.member is None
    else:
        assert e.value.member == ("b.txt" if case.startswith("cut_") else "b.bin")
    good = write_tar(tmp_path / "after.tar", sample_members(["z"]))
    ds = from_shards([path, good], format="tar", on_error="skip")
    with pytest.warns(RuntimeWarning, match=f"{case}.tar"):
        got = keys(ds)
    assert got == _complete_before_damage(case) + ["z"]
    assert ds.errors == {"skipped_shards": 1, "skipped_lines": 0}


@pytest.mark.parametrize("case", TAR_CASES)
def test_hostile_tar_split_by_sample_still_every_sample_once(tmp_path, case) -> None:
    # 2 shards for 3 consumers: every consumer walks the hostile shard and stays in step
    path = _write(tmp_path, f"{case}.tar", hostile_tars()[case])
    good = write_tar(tmp_path / "after.tar", sample_members(["c", "d", "e", "f"]))
    whole = keys(from_shards([path, good], format="tar", on_error="skip"))
    parts = [from_shards([path, good], format="tar", on_error="skip", num_replicas=3, rank=r) for r in range(3)]
    assert sorted(k for d in parts for k in keys(d)) == sorted(whole)
    assert sum(d.errors["skipped_shards"] for d in parts) == 1


def test_cut_inside_second_member_keeps_the_complete_first_sample(tmp_path) -> None:
    members = sample_members(["k0", "k1"])  # k0.txt k0.cls k1.txt k1.cls
    data = Path(write_tar(tmp_path / "whole.tar", members)).read_bytes()
    path = _write(tmp_path, "cut.tar", data[: 2 * 1024 + 512 + 1])  # cut in k1.txt's data
    with pytest.warns(RuntimeWarning, match="truncated member 'k1.txt'"):
        assert keys(from_shards(path, on_error="skip")) == ["k0"]
    # counting (read=False) sees the same samples as reading
    with open(path, "rb") as f, pytest.raises(ShardError):
        assert [s["__key__"] for s in iter_samples(f, path, read=False)] == ["k0"]


def test_member_size_limit(tmp_path) -> None:
    path = write_tar(tmp_path / "big.tar", [("a.bin", b"x" * 5000), ("b.bin", b"y" * 10)])
    with pytest.raises(ShardError, match=r"'a.bin'.*5000 bytes.*max_member_bytes=4096"):
        list(from_shards(path, max_member_bytes=4096))
    assert keys(from_shards(path, max_member_bytes=5000)) == ["a", "b"]
    with pytest.raises(ValueError, match="max_member_bytes"):
        from_shards(path, max_member_bytes=0)


def test_sample_counts_for_equalize_depend_on_the_limits(tmp_path) -> None:
    path = write_tar(tmp_path / "c.tar", [("a.bin", b"x" * 5000), ("b.bin", b"y" * 10)])
    assert keys(from_shards(path, equalize="pad", num_replicas=2, rank=0)) == ["a"]  # counts 2, cached
    cut = from_shards(path, equalize="pad", on_error="skip", max_member_bytes=4096, num_replicas=2, rank=0)
    assert keys(cut) == []  # its own count (0: the shard is cut at a.bin), not the cached 2


def test_shard_error_keeps_its_position_through_pickle(tmp_path) -> None:
    path = _write(tmp_path, "p.tar", hostile_tars()["pax_size_abc"])
    with pytest.raises(ShardError) as e:
        list(from_shards(path))
    copy = pickle.loads(pickle.dumps(e.value))
    assert str(copy) == str(e.value) and (copy.url, copy.member, copy.offset) == (path, "b.bin", 2048)
    assert type(e.value)(str(e.value)).url is None  # DataLoader's ExceptionWrapper rebuilds from the text


@given(st.binary(min_size=512, max_size=512), st.integers(0, 511), st.booleans())
def test_any_header_bytes_give_samples_or_a_shard_error(header, cut, valid_sum) -> None:
    # a random second header, its checksum made valid or not, whole or cut: only ShardError
    h = bytearray(header)
    if valid_sum:
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
    first = hostile_tars()["cut_in_second_member"][:1024]
    for tail in (bytes(h) + b"\0" * 1024, bytes(h[:cut])):
        try:
            for _ in iter_samples(io.BytesIO(first + tail), "fuzz.tar"):
                pass
        except ShardError:
            pass


# ---- finding 7: JSONL shards ----------------------------------------------------------


@pytest.mark.parametrize("case", JSONL_CASES)
def test_hostile_jsonl_line_is_a_counted_shard_error(tmp_path, case) -> None:
    path = _write(tmp_path, f"{case}.jsonl", b'{"i": 0}\n' + hostile_jsonl_lines()[case] + b'\n{"i": 2}\n')
    with pytest.raises(ShardError, match=rf"line 2 of .*{case}.jsonl") as e:
        list(from_shards(path))
    assert (e.value.url, e.value.line) == (path, 2)
    ds = from_shards(path, on_error="skip")
    with pytest.warns(RuntimeWarning, match=rf"shard .*{case}.jsonl.*skipped 1 bad line"):
        assert list(ds) == [{"i": 0}, {"i": 2}]
    assert ds.errors == {"skipped_shards": 0, "skipped_lines": 1}


def test_corrupt_gzip_jsonl_is_a_counted_shard_error(tmp_path) -> None:
    data = bytearray(gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(2000))))
    data[30:38] = b"\xff" * 8  # zlib.error inside the deflate stream, not an OSError
    path = _write(tmp_path, "bad.jsonl.gz", bytes(data))
    with pytest.raises(ShardError, match="bad.jsonl.gz.*error"):
        list(from_shards(path))
    ds = from_shards(path, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipped the rest of the shard"):
        list(ds)
    assert ds.errors == {"skipped_shards": 1, "skipped_lines": 0}


def test_non_utf8_line_is_an_encoding_error_not_utf16(tmp_path) -> None:
    assert json.loads(b"\xff\xfe{\x00}\x00") == {}  # what json.loads(bytes) does by itself
    with pytest.raises(RecordError, match=r"line 7 of 'f.jsonl' is not UTF-8"):
        parse_json_line(b"\xff\xfe{\x00}\x00", "f.jsonl", 7)


@given(st.lists(st.integers(0, 40), max_size=30), st.integers(1, 9), st.integers(3, 25))
def test_iter_lines_cuts_only_the_long_lines(lengths, chunk, limit) -> None:
    data = b"\n".join(bytes([97 + i % 26]) * n for i, n in enumerate(lengths))
    got = list(iter_lines(io.BytesIO(data), limit, chunk))  # line ends at every chunk boundary
    want = [x[: limit + 1] for x in data.split(b"\n")] if data else []
    assert got == (want[:-1] if want and not want[-1] else want)


def test_line_limit_is_a_keyword_of_every_reader(tmp_path) -> None:
    rows = b'{"x": 1, "y": 0, "text": "' + b"a" * 100 + b'", "label": 1}\n'
    path = _write(tmp_path, "r.jsonl", rows * 2)
    for read in (dataforge.TableDataset.from_jsonl, dataforge.TextDataset.from_jsonl):
        kw = {"target": "y", "features": ["x"]} if read == dataforge.TableDataset.from_jsonl else {}
        with pytest.raises(RecordError, match=r"line 1 .*longer than the limit of 50 bytes.*max_line_bytes"):
            read(path, max_line_bytes=50, **kw)
        assert len(read(path, max_line_bytes=200, **kw)) == 2
        with pytest.raises(ValueError, match="max_line_bytes must be a positive int"):
            read(path, max_line_bytes=0, **kw)
    csv_path = _write(tmp_path, "r.csv", b"text,label\n" + b"b" * 100 + b",1\n")
    with pytest.raises(RecordError, match="line 2"):
        dataforge.TextDataset.from_csv(csv_path, max_line_bytes=50)
    ds = from_shards(path, max_line_bytes=50, on_error="skip")
    with pytest.warns(RuntimeWarning, match="skipped 2 bad lines"):
        assert list(ds) == []
    assert len(list(from_shards(path, max_line_bytes=200))) == 2
    with pytest.raises(ValueError, match="max_line_bytes"):
        from_shards(path, max_line_bytes=-1)


@pytest.mark.parametrize("case", sorted(costly_jsonl_lines()))
def test_costliest_lines_under_the_limit_are_read(case) -> None:
    raw = costly_jsonl_lines()[case]
    assert len(raw) <= MAX_LINE_BYTES
    assert parse_json_line(raw, "f", 1) == json.loads(raw)


@given(st.binary(max_size=300) | st.text(alphabet='[]{}",:\\ 0a\xe9', max_size=300).map(str.encode))
def test_any_line_parses_or_is_a_record_error(raw) -> None:
    try:
        parse_json_line(raw, "f", 1, max_line_bytes=200, max_depth=5)
    except RecordError as e:
        assert e.line == 1 and "'f'" in str(e)


@given(st.binary(max_size=300) | st.text(alphabet='x,y\n"\r0-9.\xe9', max_size=300).map(str.encode))
def test_any_csv_reads_or_is_a_named_value_error(raw) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        f.write(b"x,y\n" + raw)
        f.flush()
        for read in (dataforge.TableDataset.from_csv, dataforge.TextDataset.from_csv):
            kw = {"target": "y"} if read == dataforge.TableDataset.from_csv else {"text_key": "x", "label_key": "y"}
            try:
                read(f.name, **kw)
            except (ValueError, TypeError) as e:  # RecordError for a row; ValueError for the whole file
                assert f.name in str(e) or "line" in str(e)


def test_json_depth_limit_is_exact() -> None:
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json_line(ok, "f", 1) is not None
    with pytest.raises(RecordError, match=rf"nested deeper than {MAX_JSON_DEPTH}"):
        parse_json_line(b"[" + ok + b"]", "f", 1)
    # brackets inside strings do not count; escaped quotes do not end a string
    text = json.dumps({"s": "[" * 5000 + '\\"{' * 3000}).encode()
    assert parse_json_line(text, "f", 1) == {"s": "[" * 5000 + '\\"{' * 3000}
    assert parse_json_line(b"\xef\xbb\xbf[1]", "f", 1) == [1]  # a UTF-8 BOM is accepted


# ---- finding 8: TableDataset / TextDataset --------------------------------------------


@pytest.mark.parametrize("case", TABLE_CASES)
def test_hostile_table_row_is_a_record_error(tmp_path, case) -> None:
    suffix, blob, text = hostile_tables()[case]
    path = _write(tmp_path, case + suffix, blob)
    read = dataforge.TableDataset.from_csv if suffix == ".csv" else dataforge.TableDataset.from_jsonl
    with pytest.raises(RecordError) as e:
        read(path, target="y")
    msg, line = str(e.value), 3 if suffix == ".csv" else 2  # the second data row
    assert path in msg and f"line {line}" in msg and text in msg and len(msg) < 600
    assert (e.value.path, e.value.line) == (path, line)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_dataset_names_file_and_line(tmp_path, suffix) -> None:
    if suffix == ".csv":
        blob = b"text,label\nok,0\n\xff\xfe,1\n"
    else:
        blob = b'{"text": "ok", "label": 0}\n' + b"[" * 100_000 + b"\n"
    path = _write(tmp_path, "t" + suffix, blob)
    read = dataforge.TextDataset.from_csv if suffix == ".csv" else dataforge.TextDataset.from_jsonl
    with pytest.raises(RecordError, match=r"line [23]") as e:
        read(path)
    assert path in str(e.value)
    with pytest.raises(RecordError, match=r"target -3 at line 1 is a negative class id"):
        dataforge.TextDataset.from_jsonl(_write(tmp_path, "n.jsonl", b'{"text": "a", "label": -3}\n'))


def test_csv_field_limit_named_and_raisable(tmp_path) -> None:
    import csv

    path = _write(tmp_path, "f.csv", b'x,y\n"' + b"1" * 200_000 + b'",1\n')
    with pytest.raises(RecordError, match=r"field limit.*csv.field_size_limit"):
        dataforge.TableDataset.from_csv(path, target="y")
    old = csv.field_size_limit(300_000)
    try:
        assert len(dataforge.TableDataset.from_csv(path, target="y")) == 1
    finally:
        csv.field_size_limit(old)


def test_record_error_pickles_with_its_position() -> None:
    e = RecordError("bad", path="f.csv", line=3)
    copy = pickle.loads(pickle.dumps(e))
    assert isinstance(copy, ValueError) and (str(copy), copy.path, copy.line) == ("bad", "f.csv", 3)


# ---- one on_error vocabulary ----------------------------------------------------------


def test_on_error_vocabulary(tmp_path) -> None:
    path = _write(tmp_path, "b.jsonl", b"1\n{oops\n3\n")
    with pytest.warns(DeprecationWarning, match="on_error='skip'"):
        ds = from_shards(path, on_error="warn")
    assert ds.on_error == "skip"
    with pytest.warns(RuntimeWarning, match=r"shard .*b.jsonl.*skipped 1 bad line.*line 2"):
        assert list(ds) == [1, 3]
    with pytest.raises(ValueError, match=r"substitute.*on_error='skip'") as e:
        from_shards(path, on_error="substitute")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="on_error must be one of"):
        from_shards(path, on_error="ignore")
    with warnings.catch_warnings():  # the consumer that does not own the bad line: no warning
        warnings.simplefilter("error")
        assert list(from_shards(tmp_path / "b.jsonl", on_error="skip", num_replicas=2, rank=0)) == [1, 3]


# ---- the corpus's cost: 1 s and 512 MB per input, in a child process ---------------------

_BUDGET = r"""
import gc, gzip, json, os, resource, sys, tempfile, time, warnings
sys.path.insert(0, sys.argv[1])
from shard_files import costly_jsonl_lines, hostile_jsonl_lines, hostile_tables, hostile_tars
import dataforge
from dataforge.datasets.records import RecordError
from dataforge.datasets.shards import from_shards

warnings.simplefilter("ignore")
root = tempfile.mkdtemp()
def put(name, blob):
    p = os.path.join(root, name)
    with open(p, "wb") as f:
        f.write(blob)
    return p
def table(p, suffix):
    read = dataforge.TableDataset.from_csv if suffix == ".csv" else dataforge.TableDataset.from_jsonl
    try:
        read(p, target="y")
    except RecordError:
        pass
runs = []
for k, v in hostile_tars().items():
    runs.append((k, lambda p=put(k + ".tar", v): list(from_shards(p, on_error="skip"))))
    runs.append((k + ".gz", lambda p=put(k + ".tar.gz", gzip.compress(v)): list(from_shards(p, on_error="skip"))))
for k, v in hostile_jsonl_lines().items():
    runs.append((k, lambda p=put(k + ".jsonl", b"1\n" + v + b"\n2\n"): list(from_shards(p, on_error="skip"))))
for k, v in costly_jsonl_lines().items():  # valid: parsed, and the objects freed in the run
    runs.append((k, lambda p=put(k + ".jsonl", v + b"\n"): list(from_shards(p))))
for k, (suffix, blob, _) in hostile_tables().items():
    runs.append((k, lambda p=put(k + suffix, blob), s=suffix: table(p, s)))
gc.collect()
for _, run in runs[:2]:
    run()  # warm-up: imports and first allocations are not an input's cost
vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))

def status(key):
    return next(int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith(key))
out = {}
for name, run in runs:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss = status("VmRSS:")
    t = time.process_time()  # CPU seconds: the input's work, not the machine's other load
    run()
    out[name] = (time.process_time() - t, status("VmHWM:") - rss)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_corpus_within_one_second_and_512_mb_each() -> None:
    # every input of the corpus, read with default limits in a fresh process: its CPU
    # time, and its peak RSS above the RSS before it (Linux: VmHWM reset by /proc/self/clear_refs)
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc to measure each input's peak memory")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", _BUDGET, str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(got) == 2 * len(TAR_CASES) + len(JSONL_CASES) + len(costly_jsonl_lines()) + len(TABLE_CASES)
    slow = {k: round(t, 3) for k, (t, _) in got.items() if t > 1.0}
    big = {k: m >> 20 for k, (_, m) in got.items() if m > 512 << 20}
    assert not slow and not big, f"over 1 s: {slow}; over 512 MiB (MiB): {big}"


def test_stdlib_agrees_the_base256_shards_are_bad() -> None:
    # the hostile sizes are what tarfile itself decodes (not an artefact of the writer)
    blob = hostile_tars()["base256_2e80"]
    info = tarfile.TarInfo.frombuf(blob[1024:1536], "utf-8", "surrogateescape")
    assert info.size == 2**80 and io.BytesIO(blob).read(512)[:5] == b"a.txt"
