"""Reading untrusted text records: bounded lines, strict UTF-8, bounded JSON, CSV rows.

JSONL shards, ``TableDataset`` and ``TextDataset`` read lines written by others.
Every failure to read one record is a :class:`RecordError` naming the file and the
line, so a caller can report it or skip and count it, and nothing a line holds can
make the reader spend more than its limits:

- a line is at most ``max_line_bytes`` (default ``MAX_LINE_BYTES``, 2 MiB, a
  keyword of every reader): longer lines are refused, and only that many of their
  bytes are ever held. The bound also bounds parsing, whose time and memory grow
  with the arrays and objects a line holds (up to one per 2 bytes); the costliest
  lines under it are in the budget test of ``tests/datasets/test_untrusted_records.py``;
- a line is decoded as strict UTF-8 before parsing (``json.loads(bytes)`` would
  guess UTF-16/32 from the first bytes and accept ``b'\\xff\\xfe{\\x00}\\x00'``);
- JSON nests at most ``MAX_JSON_DEPTH`` (128) arrays/objects deep, checked before
  parsing (the parser recurses and would raise ``RecursionError`` at about 1,000);
- a CSV field is bounded by the ``csv`` module's own ``csv.field_size_limit()``
  (131,072 characters unless the application raises it).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

MAX_LINE_BYTES = 2 << 20
MAX_JSON_DEPTH = 128
_GC_PAUSE_CONTAINERS = 10_000
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a non-UTF-8 byte
_STEP = np.zeros(256, dtype=np.int8)  # nesting change of each byte outside strings
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1


class RecordError(ValueError):
    """One record of a file (a JSONL line, a CSV row) that cannot be read.

    Attributes:
        path: the file (or shard URL).
        line: the 1-based line number, or None when not known.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path, self.line = path, line

    def __reduce__(self) -> Any:
        return _rebuild, (type(self), str(self), self.path, self.line)


def _rebuild(cls: type[RecordError], message: str, path: str | None, line: int | None) -> RecordError:
    return cls(message, path=path, line=line)


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters (hostile values can be megabytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = repr(value) if not isinstance(value, (str, bytes)) or len(value) < 4 * limit else repr(value[: 2 * limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_max_line_bytes(value: Any) -> int:
    """Validate a ``max_line_bytes`` argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"max_line_bytes must be a positive int (bytes), got {value!r}")
    return value


def iter_lines(f: IO[bytes], max_line_bytes: int = MAX_LINE_BYTES, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a binary stream (without ``\\n``), read ``chunk`` bytes at a time.

    A line longer than ``max_line_bytes`` is yielded cut to ``max_line_bytes + 1``
    bytes (so its reader can tell and refuse it); the rest of it is read and dropped,
    never held.
    """
    rest = b""
    dropping = False  # inside a line already cut: drop bytes up to its newline
    while True:
        b = f.read(chunk)
        if not b:
            break
        start = 0
        if dropping:
            nl = b.find(b"\n")
            if nl < 0:
                continue
            dropping, start = False, nl + 1
        parts = (rest + b[start:] if rest else b[start:]).split(b"\n")
        rest = parts.pop()
        for line in parts:
            yield line[: max_line_bytes + 1]
        if len(rest) > max_line_bytes:
            yield rest[: max_line_bytes + 1]
            rest, dropping = b"", True
    if rest:
        yield rest


def check_line(raw: bytes, path: str, line: int, max_line_bytes: int = MAX_LINE_BYTES) -> str:
    """``raw`` decoded as strict UTF-8 (a leading UTF-8 BOM dropped), or a RecordError."""
    if len(raw) > max_line_bytes:
        raise RecordError(
            f"line {line} of {path!r} is longer than the limit of {max_line_bytes} bytes; "
            "pass a larger max_line_bytes= to the reader if such lines are expected",
            path=path, line=line,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(
            f"line {line} of {path!r} is not UTF-8 (byte {raw[e.start:e.start + 1]!r} at column "
            f"{e.start + 1}); re-encode the file as UTF-8",
            path=path, line=line,
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in the JSON text ``raw``, brackets inside strings ignored.

    Vectorized (a few numpy passes, no backtracking): a quote opens or closes a string
    unless an odd run of backslashes precedes it. Bytes work for UTF-8 text: no byte
    of a multi-byte character is ASCII.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(a == 0x22)
    escaped = quotes[(quotes > 0) & (a[quotes - 1] == 0x5C)]  # the few after a backslash
    if escaped.size:
        idx = np.arange(a.size, dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(a == 0x5C, np.int32(-1), idx))  # last non-backslash
        run = escaped - 1 - last_other[escaped - 1]  # backslashes right before the quote
        quotes = np.setdiff1d(quotes, escaped[run % 2 == 1], assume_unique=True)
    marks = np.zeros(a.size, dtype=np.uint8)
    marks[quotes] = 1
    step = _STEP[a]
    step[np.bitwise_xor.accumulate(marks).view(bool)] = 0  # inside a string
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def parse_json_line(
    raw: bytes, path: str, line: int, *, max_line_bytes: int = MAX_LINE_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """Parse one JSONL line within the limits; every failure is a :class:`RecordError`.

    Example:
        >>> parse_json_line(b'{"a": [1, 2]}', "f.jsonl", 1)
        {'a': [1, 2]}
    """
    text = check_line(raw, path, line, max_line_bytes)
    # counting the brackets is a cheap upper bound; the exact depth only past the limit
    containers = raw.count(b"[") + raw.count(b"{")
    if containers > max_depth and (depth := json_depth(raw)) > max_depth:
        raise RecordError(
            f"line {line} of {path!r} holds JSON nested deeper than {max_depth} levels ({depth})",
            path=path, line=line,
        )
    try:
        if containers < _GC_PAUSE_CONTAINERS:
            return json.loads(text)
        with _gc_paused():
            return json.loads(text)
    except RecursionError:  # the caller's own stack was already deep
        raise RecordError(f"line {line} of {path!r} holds JSON nested too deep to parse here", path=path, line=line) from None
    except ValueError as e:  # JSONDecodeError, or an integer of over 4,300 digits
        raise RecordError(f"invalid JSON at line {line} of {path!r}: {str(e)[:200]}", path=path, line=line) from None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """NOTE [JSON without the cyclic GC]: parsing a line of many small arrays allocates
    one tracked container per 3 bytes, and the collections they trigger cost 10-16x the
    parse (an 8 MiB line of ``[],`` takes seconds instead of a fraction of one). Such a
    line is parsed with the collector paused; it holds no cycles. ``gc`` is process-wide:
    only the pause that found it enabled enables it again, so a user's ``gc.disable()``
    made before stays in force.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _text_lines(f: IO[bytes], path: str, max_line_bytes: int) -> Iterator[str]:
    """Lines as ``open(newline="")`` gives them (ended by ``\\n``, ``\\r\\n`` or a lone
    ``\\r``, as the csv module wants), at most ``max_line_bytes`` characters each held.

    Bytes that are not UTF-8 decode to lone surrogates (``surrogateescape``), which
    no UTF-8 text holds: the first one names the line and column of the bad byte.
    """
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    n = 0
    while line := text.readline(max_line_bytes + 1):
        n += 1
        if len(line) > max_line_bytes and line[-1] not in "\r\n":
            raise RecordError(
                f"line {n} of {path!r} is longer than the limit of {max_line_bytes} characters; "
                "pass a larger max_line_bytes= to the reader if such lines are expected",
                path=path, line=n,
            )
        bad = _ESCAPED_BYTE.search(line)
        if bad is not None:
            raise RecordError(
                f"line {n} of {path!r} is not UTF-8 (byte {bytes([ord(bad.group()) - 0xDC00])!r} at "
                f"column {bad.start() + 1}); re-encode the file as UTF-8",
                path=path, line=n,
            )
        yield line[1:] if n == 1 and line.startswith("\ufeff") else line


def csv_rows(
    f: IO[bytes], path: str, delimiter: str = ",", max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each non-empty CSV row, the header included; ``line`` is the
    row's last physical line. Bad UTF-8, an over-long line or a field over
    ``csv.field_size_limit()`` is a :class:`RecordError` naming ``path`` and the line.
    """
    reader = csv.reader(_text_lines(f, path, max_line_bytes), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            line = reader.line_num
            hint = (
                f"; if such fields are expected, raise the limit with csv.field_size_limit(n) "
                f"(now {csv.field_size_limit()})" if "field limit" in str(e) else ""
            )
            raise RecordError(f"bad CSV row at line {line} of {path!r}: {e}{hint}", path=path, line=line) from None
        if row:
            yield reader.line_num, row
