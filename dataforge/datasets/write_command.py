"""``dataforge shards write SRC OUT``: an image folder or a table file written as shards.

:func:`add_arguments` fills the ``write`` parser that ``dataforge.cli`` makes;
:func:`main` runs it through :func:`dataforge.datasets.writer.write_shards`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912: a byte count with an optional K, M, G or T (powers of 1024)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = 1024 ** (" KMGT".index(t[-1]) if t and t[-1] in "KMGT" else 0)
    try:
        v = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        v = 0
    if not v >= 1 or v != int(v):
        raise argparse.ArgumentTypeError(f"expected a size in bytes such as 1000000, 256M or 1G, got {text!r}")
    return int(v)


def add_arguments(w: argparse.ArgumentParser, *, count: Callable[[str], Any]) -> None:
    """The options of ``dataforge shards write``; ``count`` parses a positive int."""
    w.add_argument("src", metavar="SRC", help="an image folder (SRC/<class>/<image>), or a table: .csv, .tsv, .jsonl, .parquet (any registered reader)")
    w.add_argument("out", metavar="OUT", help="the output folder, or an fsspec URL (s3://bucket/prefix)")
    w.add_argument("--format", choices=("tar", "jsonl", "parquet"), default="tar",
                   help="shard format (default tar; parquet needs dataforge[parquet])")
    w.add_argument("--max-count", type=count, default=10_000, metavar="N",
                   help="samples per shard at most (default 10000)")
    w.add_argument("--max-bytes", type=parse_size, default=256 << 20, metavar="SIZE",
                   help="bytes per shard at most, e.g. 512M or 1G (default 256M)")
    w.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes writing shards in parallel (default 0: this process)")
    w.add_argument("--prefix", default="shard", help="shard name prefix (default shard)")
    w.add_argument("--quiet", action="store_true", help="no progress bar")


class _FolderSample:
    """An ImageFolder item (``decode=False``) as a shard sample: image bytes and class id."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        ext = os.path.splitext(item["path"])[1].lower().lstrip(".")
        return {ext: item["image"], "cls": item["label"]}


def _source(src: Path, format: str) -> tuple[Any, dict[str, Any]]:
    """The samples of ``SRC`` and the metadata stored in the index."""
    import dataforge
    from dataforge.datasets.readers import FileRecords, readers

    if src.is_dir():
        folder = dataforge.ImageFolder(src, decode=False)
        return folder.map(_FolderSample()), {"source": str(src), "classes": folder.classes}
    if not src.is_file():
        raise FileNotFoundError(f"SRC {str(src)!r} does not exist; expected an image folder or a table file")
    tsv = src.suffix.lower() == ".tsv"  # a CSV with tabs
    try:  # any format of the reader registry, by the file's extension
        records = FileRecords(src, "csv" if tsv else None, delimiter="\t" if tsv else ",")
    except ValueError:
        known = sorted({e for r in readers().values() for e in r.extensions if r.name != "tar"} | {".tsv"})
        raise ValueError(f"SRC {str(src)!r} is neither a folder nor a file of a known format {known}") from None
    if records.reader.name == "tar":
        raise ValueError(f"SRC {str(src)!r} is a tar shard: to write shards again, pass "
                         "dataforge.from_shards(...) to dataforge.write_shards in Python")
    rows = [row for _, row in records]
    if not rows:
        raise ValueError(f"{str(src)!r} has no records (a CSV needs a header row naming the columns)")
    samples = [row if format == "jsonl" else {"json": row} for row in rows]
    return dataforge.from_sequence(samples), {"source": str(src)}


def main(args: argparse.Namespace) -> int:
    """Run ``dataforge shards write`` with parsed ``args``; the exit code."""
    from dataforge.datasets.writer import write_shards

    samples, meta = _source(Path(args.src).expanduser(), args.format)
    t0 = time.perf_counter()
    w = write_shards(samples, args.out, format=args.format, max_count=args.max_count, max_bytes=args.max_bytes,
                     num_workers=args.workers, prefix=args.prefix, metadata=meta, progress=not args.quiet)
    n = len(w.urls)
    print(f"wrote {w.total_samples} samples in {n} shard{'s' * (n != 1)} ({w.total_bytes / 2**20:.1f} MiB) in "
          f"{time.perf_counter() - t0:.1f} s\n  shards: {w.pattern}\n  index:  {w.index}", flush=True)
    return 0
