"""One registry of shard readers: the file formats :func:`from_shards` can stream.

A :class:`Reader` opens one shard (a binary stream) and yields its records as dicts;
it may also count them without reading the bodies. Readers claim file extensions,
compound ones included (``.jsonl.gz``, ``.tar.gz``); the longest claimed extension of a
path wins. Add a format with one call::

    register_reader(Reader("myfmt", (".myf",), read=my_read, count=my_count))

Built in: ``tar`` (webdataset layout), ``jsonl``, ``csv`` (rows as ``{column: str}``) and ``parquet`` (pyarrow, the
``parquet`` extra, imported only when a parquet shard is read).

The same readers serve the map-style sources (``TableDataset.from_file``,
``TextDataset.from_file`` and their ``from_csv`` / ``from_jsonl`` / ``from_parquet``)
through :class:`FileRecords`, so a registered format is readable there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from dataforge.datasets.records import (
    MAX_LINE_BYTES,
    RecordError,
    check_max_line_bytes,
    csv_rows,
    iter_lines,
    parse_json_line,
)
from dataforge.datasets.tar_stream import (
    MAX_EXPANSION,
    MAX_MEMBER_BYTES,
    ShardError,
    check_max_expansion,
    decompressed,
    iter_samples,
)

__all__ = ["FileRecords", "ReadOptions", "Reader", "reader_for", "readers", "register_reader"]


@dataclass
class ReadOptions:
    """What a reader gets besides the stream.

    Attributes:
        keep: ``None`` (every record) or a callable asked once per record, in order;
            a record it rejects belongs to another consumer and need not be decoded.
        bodies: ``False`` in a counting pass (record bodies may be left unread).
        max_member_bytes: the largest tar member read.
        max_line_bytes: the longest JSONL or CSV line read.
        on_bad_line: called with a :class:`ShardError` for one bad record that the
            reader can skip; it raises to stop the shard.
        delimiter: the field separator of CSV.
        line: set by the reader before it yields a record: the record's 1-based line
            (JSONL; CSV: the row's last line) or row (Parquet); 0 for formats without
            one (tar). Error messages of the map-style sources name it.
        columns: set by readers of formats with a header or a schema (CSV, Parquet)
            once it is read, before the first record; ``None`` otherwise.
        max_expansion: the bound on decompressed / compressed bytes of a gzip, bz2 or xz
            stream (NOTE [expansion bound] in ``tar_stream.py``); ``None``: unbounded.
    """

    keep: Callable[[], bool] | None
    bodies: bool
    max_member_bytes: int
    max_line_bytes: int
    on_bad_line: Callable[[ShardError], None]
    delimiter: str = ","
    line: int = 0
    columns: list[str] | None = None
    max_expansion: float | None = MAX_EXPANSION


@dataclass(frozen=True)
class Reader:
    """A shard format.

    Attributes:
        name: the ``format=`` value that selects it.
        extensions: lower-case extensions it claims, with the dot (``".jsonl.gz"``).
        read: ``read(stream, url, options)`` yields the shard's records.
        count: optional ``count(stream, url)``, the number of records without reading them
            (from metadata); ``None`` means counting reads the shard with ``bodies=False``.
    """

    name: str
    extensions: tuple[str, ...]
    read: Callable[[IO[bytes], str, ReadOptions], Iterator[dict[str, Any]]]
    count: Callable[[IO[bytes], str], int] | None = None


# NOTE [reader registry]: one table, name -> Reader, shared by from_shards (streaming) and
# format inference; a format lives in one place. Extensions are matched longest first so a
# compound extension (.tar.gz) beats its tail (.gz); two readers claiming one extension is
# an error at registration, not a silent override.
_READERS: dict[str, Reader] = {}


def register_reader(reader: Reader, *, replace: bool = False) -> Reader:
    """Register ``reader`` under its name and extensions; returns it.

    Raises:
        ValueError: the name or an extension is taken (pass ``replace=True`` to swap a
            reader of the same name), or an extension does not start with a dot.
    """
    if not isinstance(reader, Reader):
        raise TypeError(f"reader must be a dataforge.datasets.readers.Reader, got {type(reader).__name__}")
    for ext in reader.extensions:
        if not ext.startswith(".") or ext != ext.lower():
            raise ValueError(f"reader {reader.name!r}: extension {ext!r} must be lower case and start with '.'")
    if reader.name in _READERS and not replace:
        raise ValueError(f"a reader named {reader.name!r} is registered; pass replace=True to swap it")
    for other in _READERS.values():
        if other.name == reader.name:
            continue
        clash = set(other.extensions) & set(reader.extensions)
        if clash:
            raise ValueError(f"reader {reader.name!r}: extensions {sorted(clash)} are claimed by {other.name!r}")
    _READERS[reader.name] = reader
    return reader


def readers() -> dict[str, Reader]:
    """A copy of the registry, name -> Reader."""
    return dict(_READERS)


def reader_for(url: str, format: str | None = None) -> Reader:
    """The reader named ``format``, or the one claiming the longest extension of ``url``.

    Raises:
        ValueError: unknown ``format``, or no reader claims the extension of ``url``.
    """
    if format is not None:
        if format not in _READERS:
            raise ValueError(f"format must be one of {sorted(_READERS)} or None (from the extension), got {format!r}")
        return _READERS[format]
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    best: tuple[int, Reader] | None = None
    for r in _READERS.values():
        for ext in r.extensions:
            if path.endswith(ext) and (best is None or len(ext) > best[0]):
                best = (len(ext), r)
    if best is None:
        raise ValueError(
            f"cannot tell the format of {url!r} from its extension; pass format= one of {sorted(_READERS)} "
            "or register a reader for it (dataforge.datasets.readers.register_reader)"
        )
    return best[1]


def _read_tar(f: IO[bytes], url: str, opts: ReadOptions) -> Iterator[dict[str, Any]]:
    return iter_samples(f, url, read=opts.bodies, keep=opts.keep, max_member_bytes=opts.max_member_bytes,
                        max_expansion=opts.max_expansion)


def _read_jsonl(f: IO[bytes], url: str, opts: ReadOptions) -> Iterator[dict[str, Any]]:
    if url.split("?", 1)[0].lower().endswith(".gz"):
        f = decompressed(f, url, opts.max_expansion)
    keep = opts.keep
    for lineno, raw in enumerate(iter_lines(f, opts.max_line_bytes), 1):
        if not raw.strip() or (keep is not None and not keep()):
            continue  # blank, or another consumer's line (not even parsed)
        try:
            obj = parse_json_line(raw, url, lineno, max_line_bytes=opts.max_line_bytes)
        except RecordError as e:
            opts.on_bad_line(ShardError(str(e), url=url, line=lineno))
            continue
        opts.line = lineno
        yield obj


def _read_csv(f: IO[bytes], url: str, opts: ReadOptions) -> Iterator[dict[str, Any]]:
    """Rows of a CSV with a header line as ``{column: str}``; a row with a different number
    of fields than the header is a bad line (skipped or raised by ``opts.on_bad_line``).
    Bad UTF-8, a line over ``max_line_bytes`` or a field over ``csv.field_size_limit()``
    stops the shard: a :class:`ShardError` whose cause is the ``RecordError`` naming the line."""
    if url.split("?", 1)[0].lower().endswith(".gz"):
        f = decompressed(f, url, opts.max_expansion)
    try:
        rows = csv_rows(f, url, opts.delimiter, opts.max_line_bytes)
        first = next(rows, None)
        if first is None:
            return
        header = first[1]
        opts.columns = list(header)
        for lineno, row in rows:
            if opts.keep is not None and not opts.keep():
                continue
            if len(row) != len(header):
                opts.on_bad_line(ShardError(
                    f"{url}: line {lineno} has {len(row)} fields, the header has {len(header)}", url=url, line=lineno))
                continue
            opts.line = lineno
            yield dict(zip(header, row))
    except RecordError as e:
        raise ShardError(str(e), url=url, line=e.line) from e


register_reader(Reader("tar", (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"), _read_tar))
register_reader(Reader("jsonl", (".jsonl", ".jsonl.gz", ".ndjson"), _read_jsonl))
register_reader(Reader("csv", (".csv", ".csv.gz"), _read_csv))

from dataforge.datasets import parquet as _parquet  # noqa: E402  (pyarrow itself is imported lazily)

register_reader(Reader("parquet", (".parquet",), _parquet.read_parquet, _parquet.count_parquet))


class FileRecords:
    """The records of one local file through its registered reader, for map-style sources.

    Iterating gives ``(line, record)`` pairs (NOTE [file records]); ``columns`` is the
    header or schema once read (CSV, Parquet), else ``None``.

    NOTE [file records]: a map-style source reads a whole file and stops at its first
    bad record, so a bad line is a :class:`~dataforge.datasets.records.RecordError`
    (a ``ValueError``) naming the file and the line, never skipped; every record must
    be a JSON object / dict; ``line`` is the reader's ``ReadOptions.line``.

    Args:
        path: the file.
        format: a registered reader name, or ``None`` to pick it by extension.
        max_line_bytes: the longest line read (JSONL, CSV).
        delimiter: the CSV field separator.
        max_expansion: the bound on the expansion of a compressed file (NOTE [expansion
            bound] in ``tar_stream.py``); ``None``: unbounded.
    """

    def __init__(self, path: str | Any, format: str | None = None, *, max_line_bytes: int = MAX_LINE_BYTES,
                 delimiter: str = ",", max_expansion: float | None = MAX_EXPANSION) -> None:
        self.path = str(path)
        self.reader = reader_for(self.path, format)
        self.options = ReadOptions(keep=None, bodies=True, max_member_bytes=MAX_MEMBER_BYTES,
                                   max_line_bytes=check_max_line_bytes(max_line_bytes),
                                   on_bad_line=self._bad, delimiter=delimiter,
                                   max_expansion=check_max_expansion(max_expansion))

    @property
    def columns(self) -> list[str] | None:
        return self.options.columns

    def _bad(self, error: ShardError) -> None:
        raise RecordError(str(error), path=self.path, line=error.line)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        where = self.path
        with open(where, "rb") as f:
            try:
                for record in self.reader.read(f, where, self.options):
                    line = self.options.line
                    if not isinstance(record, dict):
                        raise RecordError(
                            f"{where!r}: line {line} holds a {type(record).__name__}, expected a JSON object",
                            path=where, line=line,
                        )
                    yield line, record
            except ShardError as e:
                if isinstance(e.__cause__, RecordError):
                    raise e.__cause__ from None
                raise
