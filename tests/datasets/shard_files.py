"""Writers of small tar / JSONL shards for the shard tests (and the torchrun worker)."""

from __future__ import annotations

import io
import json
import os
import tarfile


def write_tar(path: str | os.PathLike[str], members: list[tuple[str, bytes]], **kw) -> str:
    """Write ``members`` (name, data) into a tar at ``path`` (mode from the extension)."""
    mode = "w:gz" if str(path).endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(path, mode, **kw) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return os.fspath(path)


def sample_members(keys: list[str]) -> list[tuple[str, bytes]]:
    """Two members per key: ``<key>.txt`` (the key) and ``<key>.cls`` (its length)."""
    out = []
    for k in keys:
        out.append((f"{k}.txt", k.encode()))
        out.append((f"{k}.cls", str(len(k)).encode()))
    return out


def write_tar_shards(root: str | os.PathLike[str], sizes: list[int], prefix: str = "shard") -> list[str]:
    """Shards ``<prefix>-000.tar``... with ``sizes[i]`` samples, keys ``s<i>/<j>``; returns all keys."""
    keys_all = []
    for i, n in enumerate(sizes):
        keys = [f"s{i:03d}/{j:05d}" for j in range(n)]
        write_tar(os.path.join(root, f"{prefix}-{i:03d}.tar"), sample_members(keys))
        keys_all += keys
    return keys_all


def write_jsonl(path: str | os.PathLike[str], rows: list, extra_lines: tuple[str, ...] = ()) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return os.fspath(path)


# ---- hostile inputs (issue #16 findings 6, 7, 8): the regression corpus ----------------


def _header(name: str, size: int, type: bytes = tarfile.REGTYPE) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type = size, type
    return ti.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def _with_size_field(header: bytes, field: bytes) -> bytes:
    """``header`` with its 12-byte size field replaced and the checksum recomputed."""
    assert len(field) == 12
    h = bytearray(header)
    h[124:136] = field
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _base256(value: int) -> bytes:
    """GNU base-256 encoding of a non-negative size: 0x80, then 11 big-endian bytes."""
    return b"\x80" + value.to_bytes(11, "big")


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _pax(records: dict[str, str]) -> bytes:
    body = b""
    for k, v in records.items():
        rec = f" {k}={v}\n".encode()
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    return _header("PaxHeader", len(body), tarfile.XHDTYPE) + _padded(body)


def hostile_tars() -> dict[str, bytes]:
    """Tar shards whose second member is hostile; the first member is the complete sample ``a``.

    Every one must end in a ShardError naming the shard (and, where a header was read,
    the member) that ``on_error="skip"`` catches, after yielding sample ``a``.
    """
    first = _header("a.txt", 3) + _padded(b"aaa")
    end = b"\0" * 1024
    good_b = _header("b.txt", 600) + _padded(b"b" * 600)
    out = {
        "base256_2e62": _with_size_field(_header("b.bin", 0), _base256(2**62)),
        "base256_2e80": _with_size_field(_header("b.bin", 0), _base256(2**80)),
        "base256_negative": _with_size_field(_header("b.bin", 0), b"\xff" * 12),
        "size_beyond_file": _with_size_field(_header("b.bin", 0), _base256(2**40)) + b"x" * 4096,
        "pax_size_abc": _pax({"size": "abc"}) + _header("b.bin", 3) + _padded(b"bbb"),
        "pax_size_1e30": _pax({"size": str(10**30)}) + _header("b.bin", 3) + _padded(b"bbb"),
        "pax_size_negative": _pax({"size": "-7"}) + _header("b.bin", 3) + _padded(b"bbb"),
        "pax_size_5000_digits": _pax({"size": "9" * 5000}) + _header("b.bin", 3) + _padded(b"bbb"),
        "pax_garbage_record": _header("PaxHeader", 9, tarfile.XHDTYPE) + _padded(b"99999 x=y") + good_b,
        "pax_header_2e62": _with_size_field(_header("PaxHeader", 0, tarfile.XHDTYPE), _base256(2**62)),
        "longname_2e62": _with_size_field(_header("././@LongLink", 0, tarfile.GNUTYPE_LONGNAME), _base256(2**62)),
        "cut_in_second_member": good_b[:512 + 300],
        "cut_in_second_header": good_b[:200],
    }
    return {k: first + v + (end if not k.startswith("cut_") else b"") for k, v in out.items()}


def hostile_jsonl_lines() -> dict[str, bytes]:
    """One bad line each (without its newline): deep, not UTF-8, too long, too many digits."""
    return {
        "deep_200k": b"[" * 200_000 + b"]" * 200_000,
        "deep_objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "utf16_bom": b"\xff\xfe{\x00}\x00",
        "latin1": '{"text": "caf\xe9"}'.encode("latin-1"),
        "too_long": b'{"text": "' + b"x" * (5 << 20) + b'"}',
        "digits_5000": b'{"label": ' + b"7" * 5000 + b"}",
    }


def costly_jsonl_lines(limit: int = 2 << 20) -> dict[str, bytes]:
    """Valid lines just under the default line limit that cost the most to parse."""

    def fill(item: bytes) -> bytes:
        return b"[" + item * ((limit - 3) // len(item)) + b"0]"

    deep = b"[" * 127 + b"]" * 127  # 128 levels inside the outer list
    return {
        "many_lists": fill(b"[],"),
        "many_dicts": fill(b"{},"),
        "dicts_of_lists": fill(b'{"a":[]},'),
        "max_depth_many_times": fill(deep + b","),
        "one_long_string": b'"' + b"x" * (limit - 2) + b'"',
        "many_escapes": b'["' + b'\\"' * ((limit - 4) // 3) + b'"]',
    }


def hostile_tables() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file suffix, file bytes, text the error must contain); target column ``y``.

    Every one must fail as a RecordError naming the file and the line of the second data
    row (3 in a CSV file, after the header; 2 in a JSONL file).
    """
    csv_head, json_ok = b"x,y\n1,0\n", b'{"x": 1, "y": 0}\n'
    return {
        "csv_big_field": (".csv", csv_head + b'2,"' + b"z" * 200_000 + b'"\n', "field"),
        "csv_huge_int_target": (".csv", csv_head + b"2," + b"9" * 30 + b"\n", "9999"),
        "csv_negative_target": (".csv", csv_head + b"2,-3\n", "-3"),
        "csv_not_utf8": (".csv", csv_head + b"2,\xff\xfe\n", "UTF-8"),
        "csv_too_long_line": (".csv", csv_head + b"2," + b"1" * (5 << 20) + b"\n", "longer"),
        "jsonl_huge_int_target": (".jsonl", json_ok + b'{"x": 2, "y": ' + b"9" * 30 + b"}\n", "9999"),
        "jsonl_huge_int_feature": (".jsonl", json_ok + b'{"x": ' + b"9" * 400 + b', "y": 1}\n', "x"),
        "jsonl_negative_target": (".jsonl", json_ok + b'{"x": 2, "y": -3}\n', "-3"),
        "jsonl_not_utf8": (".jsonl", json_ok + b"\xff\xfe{\x00}\x00\n", "UTF-8"),
        "jsonl_deep": (".jsonl", json_ok + b"[" * 200_000 + b"]" * 200_000 + b"\n", "deep"),
    }
