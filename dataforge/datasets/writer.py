"""``write_shards``: a dataset of sample dicts into tar (webdataset layout), JSONL or Parquet shards.

Samples are dicts of fields encoded by their kind (NOTE [field rules] in
``fields.py``). A tar shard holds, for each sample, one member ``<key>.<field>`` per
field, fields in sorted order, all with the sample's key (webdataset's layout: its
``WebDataset`` and dataforge's ``from_shards`` read them back sample for sample). A
JSONL shard holds one object per sample: ``{"__key__": key, field: value, ...}``. A
Parquet shard holds one row per sample: a ``__key__`` column then one typed column per
field, in sorted order; every sample of a shard has the fields of its first one (NOTE
[parquet row groups] in ``parquet.py`` for how rows are grouped).

NOTE [deterministic shards]: the dataset is cut into blocks of ``max_count``
consecutive samples; a block becomes one shard, or several when ``max_bytes`` is
reached first (a shard closes before the sample that would take it past
``max_bytes``; a single larger sample is a shard of its own; a parquet shard counts
its samples' encoded field bytes, before parquet's compression and footer). Workers write whole
blocks, each a contiguous index range, and the shards are numbered in block order at
the end, so the output (names and bytes) depends on the dataset, ``max_count`` and
``max_bytes`` only, never on ``num_workers``. Tar headers carry no time or owner
(mtime 0, mode 0444, uid/gid 0), so two runs give byte-identical files.

NOTE [atomic publish]: shards are first written under hidden temporary names
(``.<prefix>.tmp-...``, matched by no ``*.tar`` glob nor brace pattern). Only when
every block is written are they renamed (``os.replace``; on fsspec URLs, uploaded to
a temporary name then moved, or, on object stores, whose PUT is atomic (an object
appears whole or not at all), uploaded concurrently under the final names) to
``<prefix>-NNNNNN.<format>``, shards of an earlier
run past the new count are deleted, and the index ``<prefix>.index.json`` (samples
and bytes per shard, totals) is written LAST. A failed run deletes its temporary
files and leaves an earlier complete run untouched; a run interrupted while
publishing leaves whole shards and no index. A rerun is not resumed: it writes
everything again and overwrites cleanly. One writer per folder and prefix at a time.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal, cast

from dataforge.datasets.fields import parquet_column
from dataforge.datasets.sample_encoding import TAR_BLOCK, encode_row, encode_sample

__all__ = ["WrittenShards", "read_index", "write_shards"]

_FORMATS = ("tar", "jsonl", "parquet")
INDEX_VERSION = 1
_END = b"\0" * (2 * TAR_BLOCK)  # end-of-archive: two zero blocks


@dataclass(frozen=True)
class WrittenShards:
    """What :func:`write_shards` wrote: pass ``pattern`` (and the counts) to ``from_shards``.

    Attributes:
        urls: the shards, in order.
        samples_per_shard: samples in each shard.
        bytes_per_shard: size of each shard in bytes.
        pattern: a brace pattern naming every shard (``out/shard-{000000..000003}.tar``).
        index: where the index file is.
    """

    urls: list[str]
    samples_per_shard: list[int]
    bytes_per_shard: list[int]
    pattern: str
    index: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def total_samples(self) -> int:
        return sum(self.samples_per_shard)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_per_shard)


@dataclass(frozen=True)
class _Plan:
    format: str
    max_count: int
    max_bytes: int
    staging: str
    token: str
    prefix: str
    jpeg_quality: int


class _BytesFile:
    """A tar or JSONL shard being written: records are bytes; a tar ends with two zero blocks."""

    def __init__(self, path: str, end: bytes) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close() / abort()
        self._end = end

    def write(self, data: bytes, nbytes: int) -> None:
        self._f.write(data)

    def close(self) -> None:
        self._f.write(self._end)
        self._f.close()

    def abort(self) -> None:
        self._f.close()


class _ShardSink:
    """Writes one block's samples into temporary shards, cutting them at ``max_bytes``."""

    def __init__(self, plan: _Plan, block: int) -> None:
        self.plan, self.block = plan, block
        self.done: list[tuple[str, int, int]] = []
        self._f: Any = None
        self._count = self._bytes = 0
        self._last_key: str | None = None
        self._end = _END if plan.format == "tar" else b""

    def _open(self, first: Any) -> Any:
        p = self.plan
        name = f".{p.prefix}.tmp-{p.token}-{self.block:06d}-{len(self.done):04d}.{p.format}"
        self._path = os.path.join(p.staging, name)
        if p.format != "parquet":
            return _BytesFile(self._path, self._end)
        from dataforge.datasets.parquet import ParquetShardFile

        return ParquetShardFile(self._path, {f: parquet_column(f) for f in first if f != "__key__"})

    def add(self, key: str, data: Any, nbytes: int, index: int) -> None:
        if self._f is not None and self._bytes + nbytes + len(self._end) > self.plan.max_bytes:
            self.close()
        if self._f is None:
            self._f = self._open(data)
            self._count = self._bytes = 0
            self._last_key = None
        if key == self._last_key and self.plan.format == "tar":
            raise ValueError(f"sample {index} has the same __key__ {key!r} as the sample before it; a reader "
                             "would merge them into one sample: give every sample its own key")
        if self.plan.format == "parquet" and data.keys() != self._f.columns.keys():
            raise ValueError(
                f"sample {index} (key {key!r}) has fields {sorted(set(data) - {'__key__'})}, the first sample of "
                f"its shard {sorted(set(self._f.columns) - {'__key__'})}: a parquet shard has one column per "
                "field; give every sample the same fields, or write format='tar'"
            )
        self._f.write(data, nbytes)
        self._count += 1
        self._bytes += nbytes
        self._last_key = key

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            self.done.append((self._path, self._count, os.path.getsize(self._path)))

    def abort(self) -> None:
        if self._f is not None:
            self._f.abort()
            self._f = None


def _write_block(plan: _Plan, block: int, samples: Iterable[tuple[int, Any]],
                 tick: Callable[[int], None] | None = None) -> list[tuple[str, int, int]]:
    sink = _ShardSink(plan, block)
    try:
        for index, sample in samples:
            if plan.format == "parquet":
                key, row, nbytes = encode_row(sample, index, plan.jpeg_quality)
                sink.add(key, row, nbytes, index)
            else:
                key, data = encode_sample(sample, index, plan.format, plan.jpeg_quality)
                sink.add(key, data, len(data), index)
            if tick is not None:
                tick(1)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return sink.done


def _read(dataset: Any, lo: int, hi: int) -> Iterator[tuple[int, Any]]:
    for i in range(lo, hi):
        try:
            sample = dataset[i]
        except Exception as e:
            raise RuntimeError(f"write_shards: reading sample {i} of the dataset failed: "
                               f"{type(e).__name__}: {e}") from e
        yield i, sample


_WORKER: dict[str, Any] = {}


def _init_worker(dataset: Any, plan: _Plan, written: Any) -> None:
    # NOTE [writer workers]: forked (on Linux, as the loader's workers) so the dataset is
    # not pickled; one intra-op thread each, as DataLoader workers: a parent that already
    # ran a parallel torch op leaves an OpenMP pool that hangs a forked child using it.
    import torch

    torch.set_num_threads(1)
    _WORKER.update(dataset=dataset, plan=plan, written=written)


def _count_written(n: int) -> None:
    with _WORKER["written"].get_lock():
        _WORKER["written"].value += n


def _run_block(block: int, lo: int, hi: int) -> list[tuple[str, int, int]]:
    return _write_block(_WORKER["plan"], block, _read(_WORKER["dataset"], lo, hi), _count_written)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _fs(out: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"writing shards to {out!r} needs fsspec: pip install dataforge[remote]") from None
    fs, path = fsspec.core.url_to_fs(out, **dict(storage_options or {}))
    return fs, path.rstrip("/")


def write_shards(
    dataset: Any,
    out: str | os.PathLike[str],
    *,
    format: Literal["tar", "jsonl", "parquet"] = "tar",
    max_count: int = 10_000,
    max_bytes: int = 256 << 20,
    num_workers: int = 0,
    prefix: str = "shard",
    jpeg_quality: int = 95,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> WrittenShards:
    """Write ``dataset`` (sample dicts) as shards ``out/<prefix>-NNNNNN.<format>`` plus an index.

    Output is deterministic for a dataset and shard size (NOTE [deterministic
    shards]) and published atomically (NOTE [atomic publish]); field encoding
    follows NOTE [field rules] in ``dataforge/datasets/fields.py``.

    Args:
        dataset: a map-style dataset (``len`` and ``[i]``) of dicts of fields, such as
            ``{"__key__": "000017", "jpg": uint8 tensor, "cls": 3}``; ``__key__`` defaults
            to the index, zero padded. Any iterable of dicts works with ``num_workers=0``.
        out: a folder, or an fsspec URL (``s3://bucket/prefix``; needs ``dataforge[remote]``).
        format: ``"tar"`` (webdataset layout), ``"jsonl"`` (JSON values; binary fields
            as base64, see ``fields.py``; lines over 2 MiB need ``max_line_bytes=`` to read)
            or ``"parquet"`` (typed columns, see ``fields.py``; needs ``dataforge[parquet]``).
        max_count: the most samples in a shard; shards start at multiples of it.
        max_bytes: the most bytes in a shard, unless a single sample is larger.
        num_workers: processes writing blocks in parallel (0: in this process).
        prefix: the shards' name prefix.
        jpeg_quality: quality of images encoded to JPEG.
        metadata: JSON data stored in the index (class names, the source, ...).
        progress: show a tqdm progress bar.
        storage_options: passed to fsspec for URLs.

    Returns:
        :class:`WrittenShards`: the shard URLs, counts, sizes, a brace pattern and the index.

    Example:
        >>> import tempfile, dataforge
        >>> ds = dataforge.from_sequence([{"cls": i % 2, "txt": f"doc {i}"} for i in range(5)])
        >>> w = write_shards(ds, tempfile.mkdtemp(), max_count=2)
        >>> w.samples_per_shard, w.pattern.rsplit("/", 1)[1]
        ([2, 2, 1], 'shard-{000000..000002}.tar')
        >>> from dataforge.datasets.fields import decode_fields
        >>> [s["cls"] for s in dataforge.from_shards(w.pattern).map(decode_fields)]
        [0, 1, 0, 1, 0]
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
    if format == "parquet":
        from dataforge.datasets.parquet import require_pyarrow

        require_pyarrow("write_shards(format='parquet')")
    _check_int("max_count", max_count, 1)
    _check_int("max_bytes", max_bytes, 1)
    _check_int("num_workers", num_workers, 0)
    _check_int("jpeg_quality", jpeg_quality, 1)
    if jpeg_quality > 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if not isinstance(prefix, str) or not prefix or "/" in prefix or prefix.startswith("."):
        raise ValueError(f"prefix must be a file name part without '/' or a leading dot, got {prefix!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path or an fsspec URL, got {type(out).__name__} {out!r}")
    try:
        meta = json.loads(json.dumps(dict(metadata or {}), allow_nan=False))  # a JSON copy
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be a dict of JSON data (it goes into the index): {e}") from None
    url = os.fspath(out)
    remote = "://" in url and not url.startswith("file://")
    local_out = None if remote else os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
    remote_fs: tuple[Any, str] | None = _fs(url, storage_options) if remote else None  # fail before any work
    mapped = hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
    if not mapped and not isinstance(dataset, Iterable):
        raise TypeError(f"dataset must be a map-style dataset or an iterable of dicts, got {type(dataset).__name__}")
    if not mapped and num_workers:
        raise ValueError("num_workers > 0 needs a map-style dataset (len and [i]) to split into index ranges; "
                         "pass num_workers=0 for an iterable")
    total = len(dataset) if mapped else None
    if total == 0:
        raise ValueError("dataset is empty: there is nothing to write")

    if local_out is not None:
        if os.path.exists(local_out) and not os.path.isdir(local_out):
            raise NotADirectoryError(f"out {url!r} is a file; pass a folder for the shards")
        os.makedirs(local_out, exist_ok=True)
        staging = local_out
        for name in os.listdir(staging):  # an earlier run's, killed before its cleanup
            if name.startswith(f".{prefix}.tmp-"):
                os.remove(os.path.join(staging, name))
    else:
        staging = tempfile.mkdtemp(prefix="dataforge-shards-")
    plan = _Plan(format, max_count, max_bytes, staging, uuid.uuid4().hex[:12], prefix, jpeg_quality)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="sample", desc=f"write {format} shards", disable=not progress)
    try:
        blocks = _write_all(dataset, plan, total, num_workers, bar.update)
        return _publish(blocks, plan, url, local_out, remote_fs, meta)
    finally:
        bar.close()
        for name in os.listdir(staging):
            if name.startswith(f".{prefix}.tmp-{plan.token}-"):
                os.remove(os.path.join(staging, name))
        if local_out is None:
            shutil.rmtree(staging, ignore_errors=True)


def _write_all(dataset: Any, plan: _Plan, total: int | None, num_workers: int,
               tick: Callable[[int], None]) -> list[tuple[str, int, int]]:
    """Every block written to temporary shards; the shards in block order."""
    if total is None:  # an iterable: consecutive blocks, in this process
        it = iter(enumerate(dataset))
        done: list[tuple[str, int, int]] = []
        block = 0
        while chunk := list(islice(it, plan.max_count)):
            done += _write_block(plan, block, chunk, tick)
            block += 1
        if not done:
            raise ValueError("dataset is empty: there is nothing to write")
        return done
    ranges = [(b, b * plan.max_count, min((b + 1) * plan.max_count, total))
              for b in range(math.ceil(total / plan.max_count))]
    if num_workers == 0 or len(ranges) == 1:
        return [s for b, lo, hi in ranges for s in _write_block(plan, b, _read(dataset, lo, hi), tick)]
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    written = ctx.Value("q", 0)  # samples written by all workers, for the progress bar
    with ProcessPoolExecutor(min(num_workers, len(ranges)), mp_context=ctx,
                             initializer=_init_worker, initargs=(dataset, plan, written)) as ex:
        futures = [ex.submit(_run_block, b, lo, hi) for b, lo, hi in ranges]
        pending, shown = set(futures), 0
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for fut in finished:
                error = fut.exception()
                if error is not None:
                    ex.shutdown(wait=True, cancel_futures=True)
                    raise error
            now = written.value
            tick(now - shown)
            shown = now
        return [s for f in futures for s in f.result()]


# object stores whose uploads are atomic (NOTE [atomic publish]): no temporary name and move
# (a server-side copy of every byte) is needed there
_ATOMIC_PUT = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _shard_name(prefix: str, n: int, format: str) -> str:
    return f"{prefix}-{n:06d}.{format}"


def _publish(blocks: list[tuple[str, int, int]], plan: _Plan, url: str, local_out: str | None,
             remote_fs: tuple[Any, str] | None, meta: dict[str, Any]) -> WrittenShards:
    """NOTE [atomic publish]: drop the old index, rename the shards, drop stale ones, write the index."""
    names = [_shard_name(plan.prefix, n, plan.format) for n in range(len(blocks))]
    index_name = f"{plan.prefix}.index.json"
    stale = re.compile(rf"^{re.escape(plan.prefix)}-(\d{{6,}})\.({'|'.join(_FORMATS)})$")
    last = len(blocks) - 1
    pattern = names[0] if last == 0 else f"{plan.prefix}-{{000000..{last:06d}}}.{plan.format}"
    doc = {
        "format": "dataforge.shards", "version": INDEX_VERSION, "shard_format": plan.format,
        "pattern": pattern, "max_count": plan.max_count, "max_bytes": plan.max_bytes,
        "total_samples": sum(c for _, c, _ in blocks), "total_bytes": sum(b for _, _, b in blocks),
        "shards": [{"name": n, "samples": c, "bytes": b} for n, (_, c, b) in zip(names, blocks)],
        "metadata": meta,
    }
    data = (json.dumps(doc, indent=1) + "\n").encode()
    if local_out is not None:
        base = local_out
        index_path = os.path.join(base, index_name)
        if os.path.exists(index_path):
            os.remove(index_path)
        for name, (tmp, _, _) in zip(names, blocks):
            os.replace(tmp, os.path.join(base, name))
        for name in os.listdir(base):
            m = stale.match(name)
            if m and (m.group(2) != plan.format or int(m.group(1)) > last):
                os.remove(os.path.join(base, name))
        tmp_index = os.path.join(base, f".{plan.prefix}.tmp-{plan.token}-index.json")
        with open(tmp_index, "wb") as f:
            f.write(data)
        os.replace(tmp_index, index_path)
        sep = os.sep
    else:
        base = url.rstrip("/")
        fs, root = cast("tuple[Any, str]", remote_fs)
        index_path = f"{base}/{index_name}"
        if fs.exists(f"{root}/{index_name}"):
            fs.rm(f"{root}/{index_name}")
        if _ATOMIC_PUT & set(_protocols(fs)):
            fs.put([tmp for tmp, _, _ in blocks], [f"{root}/{name}" for name in names])
        else:
            for name, (tmp, _, _) in zip(names, blocks):
                part = f"{root}/.{plan.prefix}.tmp-{plan.token}-{name}"
                fs.put_file(tmp, part)
                fs.mv(part, f"{root}/{name}")
        for path in fs.ls(root, detail=False):
            m = stale.match(path.rstrip("/").rsplit("/", 1)[-1])
            if m and (m.group(2) != plan.format or int(m.group(1)) > last):
                fs.rm(path)
        fs.pipe_file(f"{root}/{index_name}", data)
        sep = "/"
    return WrittenShards(
        urls=[f"{base}{sep}{n}" for n in names], samples_per_shard=[c for _, c, _ in blocks],
        bytes_per_shard=[b for _, _, b in blocks], pattern=f"{base}{sep}{pattern}", index=index_path,
        metadata=meta,
    )


def read_index(path: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and check an index written by :func:`write_shards` (a local path or an fsspec URL).

    Raises:
        ValueError: not a dataforge shard index, or its counts do not add up.
    """
    url = os.fspath(path)
    if "://" in url and not url.startswith("file://"):
        fs, p = _fs(url, storage_options)
        raw = fs.cat_file(p)
    else:
        with open(url.removeprefix("file://"), "rb") as f:
            raw = f.read()
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{url!r} is not a shard index (invalid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != "dataforge.shards" or doc.get("version") != INDEX_VERSION:
        raise ValueError(f"{url!r} is not a version-{INDEX_VERSION} dataforge shard index")
    shards = doc.get("shards")
    if not isinstance(shards, list):
        raise ValueError(f"{url!r}: 'shards' must be a list of {{name, samples, bytes}}; rewrite the shards")
    ok = all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("samples"), int)
        and isinstance(s.get("bytes"), int) for s in shards)
    if not ok or sum(s["samples"] for s in shards) != doc.get("total_samples") or sum(
            s["bytes"] for s in shards) != doc.get("total_bytes"):
        raise ValueError(f"{url!r}: the shard list does not match total_samples / total_bytes; rewrite the shards")
    return doc

