"""One sample as a shard holds it: tar members, a JSONL line or a Parquet row.

:func:`encode_sample` and :func:`encode_row` check a sample's key and field names
(NOTE [webdataset keys]) and encode its fields (``fields.encode_field`` and its
JSON and Parquet forms); :mod:`dataforge.datasets.writer` groups the results into
shards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dataforge.datasets.fields import encode_field, to_json_value, to_parquet_value

TAR_BLOCK = 512
# NOTE [webdataset keys]: a member's key is its path up to the first dot of the
# basename, so a key's last path part must hold no dot; fields are lowercased on read.
_FIELD = re.compile(r"^[a-z0-9_-][a-z0-9_.+-]*$")


def _check_key(key: Any, index: int) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"sample {index}: __key__ must be a non-empty str, got {key!r}")
    parts = key.split("/")
    if "." in parts[-1] or key.startswith("/") or any(p in ("", "..") for p in parts) or "\0" in key:
        raise ValueError(
            f"sample {index}: __key__ {key!r} cannot name tar members: a key is a relative path whose "
            "last part has no dot (webdataset splits a member name at the first dot of its basename)"
        )
    return key


def _ustar_header(name: bytes, size: int) -> bytes:
    """The ustar header ``tarfile`` writes for a short ASCII name (the fields of NOTE
    [deterministic shards] in ``writer.py``), built directly: ``TarInfo.tobuf`` was most
    of the time of writing small samples."""
    buf = b"".join((
        name.ljust(100, b"\0"), b"0000444\0", b"0000000\0", b"0000000\0", b"%011o\0" % size,
        b"00000000000\0", b"        ", b"0", bytes(100), b"ustar\x0000", bytes(32 + 32 + 8 + 8 + 155),
    )).ljust(TAR_BLOCK, b"\0")
    return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]  # checksum: the byte sum, its field as spaces


def _tar_member(name: str, data: bytes) -> bytes:
    import tarfile

    if name.isascii() and len(name) <= 100 and len(data) < 8**11:
        return _ustar_header(name.encode("ascii"), len(data)) + data + b"\0" * (-len(data) % TAR_BLOCK)
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")  # pax only for long/non-ASCII names
    return header + data + b"\0" * (-len(data) % TAR_BLOCK)


def _key_and_fields(sample: Any, index: int, format: str) -> tuple[str, list[str]]:
    if not isinstance(sample, Mapping):
        raise TypeError(
            f"sample {index} is a {type(sample).__name__}; write_shards takes dicts of fields such as "
            "{'jpg': image, 'cls': 3}: map the dataset first (ds.map(lambda s: {...}))"
        )
    key = sample.get("__key__", f"{index:09d}")
    if format == "tar":
        key = _check_key(key, index)
    elif not isinstance(key, str) or not key:
        raise ValueError(f"sample {index}: __key__ must be a non-empty str, got {key!r}")
    names = [k for k in sample if not (isinstance(k, str) and k.startswith("_"))]
    bad = [f for f in names if not isinstance(f, str)]
    if bad:
        raise ValueError(f"sample {index} (key {key!r}): field name {bad[0]!r} is not a str; name fields "
                         "by what they hold, such as 'jpg' or 'cls'")
    if not names:
        raise ValueError(f"sample {index} (key {key!r}) has no fields to write (names starting with '_' are metadata)")
    return key, sorted(names)


def encode_sample(sample: Any, index: int, format: str, jpeg_quality: int = 95) -> tuple[str, bytes]:
    """``(key, bytes)`` of one sample as a tar shard (its members) or a JSONL shard (its line) holds it."""
    key, fields = _key_and_fields(sample, index, format)
    if format == "jsonl":
        record = {"__key__": key}
        record.update({f: to_json_value(f, sample[f], key=key, jpeg_quality=jpeg_quality) for f in fields})
        try:
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"sample {index} (key {key!r}) is not JSON data for a JSONL shard: {e}; "
                             "convert the field, or write format='tar'") from None
        return key, line.encode() + b"\n"
    out = []
    for f in fields:
        if not _FIELD.match(f) or f.endswith("."):
            raise ValueError(
                f"sample {index} (key {key!r}): field name {f!r} cannot be a tar member extension; use "
                "lowercase letters, digits and '_-+.' such as 'jpg', 'cls' or 'seg.png'"
            )
        out.append(_tar_member(f"{key}.{f}", encode_field(f, sample[f], key=key, jpeg_quality=jpeg_quality)))
    return key, b"".join(out)


def encode_row(sample: Any, index: int, jpeg_quality: int = 95) -> tuple[str, dict[str, Any], int]:
    """``(key, row, bytes)`` of one sample as a parquet shard holds it: the row maps ``__key__``
    and each field to its column value (``fields.to_parquet_value``); ``bytes`` is their encoded size."""
    key, fields = _key_and_fields(sample, index, "parquet")
    row: dict[str, Any] = {"__key__": key}
    size = len(key.encode())
    for f in fields:
        v = row[f] = to_parquet_value(f, sample[f], key=key, jpeg_quality=jpeg_quality)
        size += 8 if isinstance(v, int) else len(v.encode()) if isinstance(v, str) else len(v)
    return key, row, size
