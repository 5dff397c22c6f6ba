"""Parquet shards: records are rows (dicts of column -> Python value), read one row
group at a time; counting uses the footer metadata only. Needs the ``parquet`` extra
(pyarrow), imported when a parquet file is first read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from dataforge.datasets.tar_stream import ShardError

__all__ = ["count_parquet", "read_parquet"]


def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(
            "reading .parquet needs pyarrow: pip install 'dataforge[parquet]' (or pip install pyarrow)"
        ) from e
    return pq


def _file(f: Any, url: str) -> Any:
    try:
        return _pq().ParquetFile(f)
    except ImportError:
        raise
    except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError) and others
        raise ShardError(f"cannot read parquet shard {url!r}: {type(e).__name__}: {e}", url=url) from e


# opts is a readers.ReadOptions; typed Any because readers imports this module (no cycle)
def read_parquet(f: IO[bytes], url: str, opts: Any) -> Iterator[dict[str, Any]]:
    """Yield the rows of a parquet stream, one row group in memory at a time.

    Row groups whose rows ``opts.keep`` all reject are still read (keep is asked once per
    row, in order); a counting pass (``bodies=False``) reads no data pages.
    """
    pf = _file(f, url)
    if not opts.bodies:
        for _ in range(pf.metadata.num_rows):
            yield {}
        return
    keep = opts.keep
    for g in range(pf.num_row_groups):
        try:
            rows = pf.read_row_group(g).to_pylist()
        except Exception as e:  # a corrupt page: ArrowInvalid, OSError, ...
            raise ShardError(f"cannot read row group {g} of parquet shard {url!r}: {type(e).__name__}: {e}", url=url) from e
        for row in rows:
            if keep is None or keep():
                yield row


def count_parquet(f: IO[bytes], url: str) -> int:
    """Rows in a parquet stream, from its footer (the sum of its row groups' counts)."""
    md = _file(f, url).metadata
    return sum(md.row_group(i).num_rows for i in range(md.num_row_groups))
