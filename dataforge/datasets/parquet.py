"""Parquet shards: records are rows (dicts of column -> Python value), read one row
group at a time; counting uses the footer metadata only. :class:`ParquetShardFile`
writes the shards of ``write_shards(format="parquet")``. Needs the ``parquet`` extra
(pyarrow), imported when a parquet file is first read or written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from dataforge.datasets.tar_stream import ShardError

__all__ = ["ParquetShardFile", "count_parquet", "read_parquet", "require_pyarrow"]


def require_pyarrow(what: str = "reading .parquet") -> Any:
    """``pyarrow.parquet``, or an ImportError saying that ``what`` needs the ``parquet`` extra."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(
            f"{what} needs pyarrow: pip install 'dataforge[parquet]' (or pip install pyarrow)"
        ) from e
    return pq



def _file(f: Any, url: str) -> Any:
    try:
        return require_pyarrow().ParquetFile(f)
    except ImportError:
        raise
    except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError) and others
        raise ShardError(f"cannot read parquet shard {url!r}: {type(e).__name__}: {e}", url=url) from e


# opts is a readers.ReadOptions; typed Any because readers imports this module (no cycle)
def read_parquet(f: IO[bytes], url: str, opts: Any) -> Iterator[dict[str, Any]]:
    """Yield the rows of a parquet stream, one row group in memory at a time.

    Row groups whose rows ``opts.keep`` all reject are still read (keep is asked once per
    row, in order); a counting pass (``bodies=False``) reads no data pages. Sets
    ``opts.columns`` (the schema's names) and ``opts.line`` (the 1-based row number).
    """
    pf = _file(f, url)
    opts.columns = list(pf.schema_arrow.names)
    if not opts.bodies:
        for _ in range(pf.metadata.num_rows):
            yield {}
        return
    keep = opts.keep
    n = 0
    for g in range(pf.num_row_groups):
        try:
            rows = pf.read_row_group(g).to_pylist()
        except Exception as e:  # a corrupt page: ArrowInvalid, OSError, ...
            raise ShardError(f"cannot read row group {g} of parquet shard {url!r}: {type(e).__name__}: {e}", url=url) from e
        for row in rows:
            n += 1
            if keep is None or keep():
                opts.line = n
                yield row


def count_parquet(f: IO[bytes], url: str) -> int:
    """Rows in a parquet stream, from its footer (the sum of its row groups' counts)."""
    md = _file(f, url).metadata
    return sum(md.row_group(i).num_rows for i in range(md.num_row_groups))


# NOTE [parquet row groups]: a written shard is cut into row groups of at most
# ROW_GROUP_ROWS rows or ROW_GROUP_BYTES encoded bytes (the row that passes it closes
# the group), so a reader holds one bounded group in memory whatever the shard size;
# both depend on the samples only, keeping the output deterministic.
ROW_GROUP_ROWS = 4096
ROW_GROUP_BYTES = 16 << 20


class ParquetShardFile:
    """One parquet shard being written: ``__key__`` (string) then one column per field.

    Args:
        path: the local file to write.
        columns: field name -> ``"int64"`` / ``"string"`` / ``"binary"`` (``fields.parquet_column``),
            in column order.
    """

    def __init__(self, path: str, columns: dict[str, str]) -> None:
        pq = require_pyarrow("write_shards(format='parquet')")
        import pyarrow as pa

        types = {"int64": pa.int64(), "string": pa.string(), "binary": pa.binary()}
        self.columns = {"__key__": "string", **columns}
        self._schema = pa.schema([(name, types[t]) for name, t in self.columns.items()])
        stats = [n for n, t in self.columns.items() if t != "binary"]  # no min/max of image bytes
        self._writer = pq.ParquetWriter(path, self._schema, compression="snappy", write_statistics=stats)
        self._pa = pa
        self._rows: dict[str, list[Any]] = {n: [] for n in self.columns}
        self._count = self._bytes = 0

    def write(self, row: dict[str, Any], nbytes: int) -> None:
        """Add a row (its keys are the columns) of ``nbytes`` encoded bytes."""
        for name, values in self._rows.items():
            values.append(row[name])
        self._count += 1
        self._bytes += nbytes
        if self._count >= ROW_GROUP_ROWS or self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._count:
            self._writer.write_table(self._pa.table(self._rows, schema=self._schema))
            self._rows = {n: [] for n in self.columns}
            self._count = self._bytes = 0

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        self._writer.close()
