"""``from_shards``: an IterDataset over tar (webdataset layout) or JSONL shard files.

URLs may be a list, one path, a glob (``data/*.tar``), brace patterns
(``train-{000..099}.tar``, ``{a,b}``) or fsspec URLs (``http://``, ``s3://``, ...;
needs ``pip install dataforge[remote]``). Local paths are opened with ``open``.

NOTE [counting for equalize]: ``equalize`` needs each shard's sample count to
know the per-rank targets. Given ``samples_per_shard`` (one int or a list) is
trusted; otherwise ``from_shards`` runs ONE counting pass in the constructor, in
the main process before any worker starts: tar headers are walked without keeping
member data (local uncompressed shards still read each header, a few ms per shard),
JSONL lines are counted. Shards written by ``write_shards`` are not read at all: their
counts come from the index beside them, local or remote (NOTE [index counts]); other
remote shards are downloaded once for that pass, so pass ``samples_per_shard`` for
large remote data sets. Counts are cached per process by
(url, size, mtime). Whatever the counts, each consumer yields exactly its target
(padding from its own stream if a shard turns out shorter), so ranks stay equal.

NOTE [error counts]: with ``on_error="skip"`` a bad shard is cut at the error (the
sample being assembled is dropped unless it is complete, NOTE [complete before
damage] in ``tar_stream.py``) and a bad JSONL line is skipped; ``ds.errors`` counts
them, and one warning per shard with skips names it, IN THE PROCESS THAT READS. Under
DataLoader workers each worker has its own copy, so the main-process ``ds.errors``
stays 0: read the totals from the loader instead, ``dataforge.build_loader(ds, ...)
.errors`` (also ``stats()["dataset_errors"]``), summed over its workers and
cumulative over its epochs (see NOTE [iterable error counts] in
``loading/iterable_engine.py``); the warnings are printed by the worker that skipped.
Each skip is counted by one consumer only: split by shard, the shard's
reader; split by sample, where every consumer walks every shard, a bad line by the
consumer that owns it and a bad shard by the consumer that owns the next item slot
(the error takes one slot of the round-robin in every consumer, so they stay in
step). Across ``torch.distributed`` ranks, sum the ranks' totals.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Literal

from dataforge.datasets.cache import ShardCache
from dataforge.datasets.fields import FieldDecoder, decode_fields
from dataforge.datasets.iterable import IterDataset, ShardedSource
from dataforge.datasets.readers import ReadOptions, reader_for
from dataforge.datasets.records import MAX_LINE_BYTES, check_max_line_bytes
from dataforge.datasets.remote import RetryPolicy, is_transient, open_remote
from dataforge.datasets.sharding import ConsumerPlan
from dataforge.datasets.tar_stream import (
    MAX_EXPANSION,
    MAX_MEMBER_BYTES,
    ShardError,
    check_max_expansion,
)
from dataforge.datasets.writer import read_index

__all__ = ["ShardError", "ShardDataset", "expand_braces", "expand_urls", "from_shards"]

_ON_ERROR = ("raise", "skip")
_WRITTEN = re.compile(r"^(?P<prefix>.+)-\d{6,}\.[a-z0-9.]+$")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_COUNT_CACHE: dict[tuple[Any, ...], int] = {}


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            "reading remote shards (http://, s3://, ...) needs fsspec: pip install dataforge[remote]"
        ) from None
    return fsspec


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{000..099}`` ranges (zero padding kept), left to right.

    Example:
        >>> expand_braces("s-{08..10}.{tar,jsonl}")
        ['s-08.tar', 's-08.jsonl', 's-09.tar', 's-09.jsonl', 's-10.tar', 's-10.jsonl']
    """
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, parts, last = 0, [], start + 1
    for i in range(start, len(pattern)):
        c = pattern[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                parts.append(pattern[last:i])
                break
        elif c == "," and depth == 1:
            parts.append(pattern[last:i])
            last = i + 1
    else:
        raise ValueError(f"urls pattern {pattern!r} has an unclosed '{{'; close it or escape it")
    head, tail = pattern[:start], pattern[i + 1 :]
    if len(parts) == 1:
        m = _RANGE.match(parts[0])
        if not m:  # a lone {x} is literal, as in bash
            return [head + "{" + parts[0] + "}" + t for t in expand_braces(tail)]
        a, b = m.group(1), m.group(2)
        pad = any(len(x.lstrip("-")) > 1 and x.lstrip("-")[0] == "0" for x in (a, b))
        width = max(len(a), len(b)) if pad else 0
        lo, hi = int(a), int(b)
        step = 1 if hi >= lo else -1
        alts = [str(v).zfill(width) for v in range(lo, hi + step, step)]
    else:
        alts = [alt for p in parts for alt in expand_braces(p)]
    tails = expand_braces(tail)
    return [head + alt + t for alt in alts for t in tails]


def expand_urls(
    urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Expand braces, then globs (local, or remote through fsspec); check local files exist.

    Raises:
        FileNotFoundError: a local path or glob that matches nothing.
    """
    if isinstance(urls, (str, os.PathLike)):
        urls = [urls]
    if not isinstance(urls, Sequence) or not urls:
        raise ValueError(f"urls must be a path, a pattern or a non-empty list of them, got {urls!r}")
    out: list[str] = []
    for u in urls:
        if not isinstance(u, (str, os.PathLike)):
            raise TypeError(f"urls must contain str or path-like entries, got {u!r}")
        for url in expand_braces(os.fspath(u)):
            remote = _is_remote(url)
            if any(c in url for c in "*?["):
                if remote:
                    fs, _, paths = _fsspec().get_fs_token_paths(url, storage_options=storage_options)
                    hits = sorted(fs.unstrip_protocol(p) for p in paths)  # same list on all ranks
                else:
                    hits = sorted(globlib.glob(_local(url)))
                if not hits:
                    raise FileNotFoundError(f"urls pattern {url!r} matched no file")
                out.extend(hits)
            elif remote:
                _fsspec()  # fail now, not in a worker
                out.append(url)
            elif not os.path.isfile(_local(url)):
                raise FileNotFoundError(f"shard {url!r} (from urls={os.fspath(u)!r}) is not a file")
            else:
                out.append(url)
    return out


def _format_of(urls: list[str], format: str | None) -> str:
    """The one reader name for ``urls`` (NOTE [reader registry] in ``readers.py``)."""
    if format is not None:
        return reader_for("", format).name
    found = {reader_for(u).name for u in urls}
    if len(found) > 1:
        raise ValueError(f"urls mix {sorted(found)} shards ({urls[:4]}...); use one format per from_shards call")
    return found.pop()


def counts_from_index(urls: list[str], storage_options: dict[str, Any] | None = None) -> list[int] | None:
    """Sample counts of shards from the index :func:`write_shards` left beside them.

    NOTE [index counts]: a shard ``<dir>/<prefix>-NNNNNN.<ext>`` is looked up in
    ``<dir>/<prefix>.index.json``; the counts are used only when every shard is listed there
    with its current size in bytes (a rewritten or edited shard falls back to counting).
    Remote shards (fsspec URLs) are looked up the same way: one read of the index and one
    listing of the folder per index, instead of a download of every shard; any failure of
    those falls back to counting, which is always right.
    """
    docs: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    out = []
    for url in urls:
        remote = _is_remote(url)
        path = url if remote else _local(url)
        folder, name = path.rsplit("/", 1) if remote else os.path.split(path)
        m = _WRITTEN.match(name)
        if m is None:
            return None
        index = f"{folder}/{m['prefix']}.index.json" if remote else os.path.join(folder, f"{m['prefix']}.index.json")
        if index not in docs:
            try:
                doc = read_index(index, storage_options)
                if remote:
                    sizes.update(_remote_sizes(folder, storage_options))
            except Exception:  # missing, not ours, stale or unreachable: counting is the safe answer
                return None
            docs[index] = {s["name"]: s for s in doc["shards"]}
        entry = docs[index].get(name)
        size = sizes.get(f"{folder}/{name}") if remote else os.path.getsize(path)
        if entry is None or entry["bytes"] != size:
            return None
        out.append(entry["samples"])
    return out


def _remote_sizes(folder: str, storage_options: dict[str, Any] | None) -> dict[str, int]:
    """``{url: size in bytes}`` of the files in a remote folder (one listing)."""
    fs, _, (root,) = _fsspec().get_fs_token_paths(folder, storage_options=storage_options or {})
    fs.invalidate_cache(root)  # a listing cached by an earlier call may predate a rewrite
    return {f"{folder}/{e['name'].rsplit('/', 1)[-1]}": int(e["size"])
            for e in fs.ls(root, detail=True) if e.get("type") == "file"}


def open_url(url: str, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """Open a shard for binary streaming reads: ``open`` for local paths, fsspec otherwise."""
    if not _is_remote(url):
        return open(_local(url), "rb")
    return open_remote(url, storage_options)


class ShardDataset(ShardedSource[dict[str, Any]]):
    """What :func:`from_shards` returns; ``errors`` counts skipped shards and lines in the
    reading process (a loader sums its workers', see NOTE [error counts])."""

    def __init__(
        self,
        urls: list[str],
        format: str,
        on_error: str,
        *,
        max_member_bytes: int = MAX_MEMBER_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_expansion: float | None = MAX_EXPANSION,
        storage_options: dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        cache: ShardCache | None = None,
        **kw: Any,
    ) -> None:
        self.format, self.on_error = format, on_error
        self.max_member_bytes, self.max_line_bytes = max_member_bytes, max_line_bytes
        self.max_expansion = max_expansion
        self.storage_options, self.retry, self.cache = storage_options, retry or RetryPolicy(), cache
        self._next_of: dict[str, list[str]] = {}  # download-ahead: a shard -> the consumer's next ones
        self.errors = {"skipped_shards": 0, "skipped_lines": 0}
        if any(_is_remote(u) for u in urls):
            self.errors["retried_reads"] = 0  # NOTE [shard retries] in remote.py
        self._counting = False
        super().__init__(urls, self._read, count_shard=self._count_samples, **kw)

    def decode(self, decoder: FieldDecoder | None = None) -> IterDataset[dict[str, Any]]:
        """This stream with its fields decoded by ``decoder`` (default :data:`decode_fields`:
        images to tensors, JSON parsed, numbers, ...; NOTE [field rules] in ``fields.py``)."""
        if decoder is not None and not isinstance(decoder, FieldDecoder):
            raise TypeError(f"decoder must be a dataforge.datasets.fields.FieldDecoder or None, got {type(decoder).__name__}")
        return self.map(decoder if decoder is not None else decode_fields)

    def _on_bad(self, error: ShardError, kind: str, report: dict[str, Any]) -> None:
        """Raise ``error`` under ``"raise"``; else count it (not in the counting pass)."""
        if self.on_error == "raise":
            raise error
        if not self._counting:
            self.errors[kind] += 1
            report[kind] += 1
            report.setdefault("first", str(error))

    def _open(self, shard: Any, keep: Callable[[], bool] | None) -> Iterator[Any]:
        return self._read(shard, keep)

    def _stream(self, p: ConsumerPlan) -> Iterator[Any]:
        if self.cache is None or not self.cache.ahead:
            return super()._stream(p)
        return self._ahead(p, [str(self.shards[s]) for s in p.shards])

    def _ahead(self, p: ConsumerPlan, urls: list[str]) -> Iterator[Any]:
        """Download-ahead (NOTE [shard cache] in ``cache.py``): this consumer's next shards
        are fetched while the one opened now is read. The next shards are kept per shard,
        so streams interleaved in one process (replays) each fetch their own."""
        assert self.cache is not None
        remote = [u for u in urls if _is_remote(u)]
        for i, u in enumerate(remote):
            self._next_of[u] = remote[i + 1 : i + 1 + self.cache.ahead]
        yield from super()._stream(p)

    def _count_retry(self, error: BaseException) -> None:
        if not self._counting:
            self.errors["retried_reads"] += 1

    def _open_shard_file(self, url: str) -> IO[bytes]:
        """The shard's bytes: its cached copy when a cache is set (downloads retried there),
        else a stream (retried by ``_read``)."""
        if self.cache is None or not _is_remote(url):
            return open_url(url, self.storage_options)
        self.cache.fetch_ahead(self._next_of.get(url, []))
        return self.cache.open(url, self._count_retry)

    def _read(self, url: str, keep: Callable[[], bool] | None = None) -> Iterator[Any]:
        report: dict[str, Any] = {"skipped_shards": 0, "skipped_lines": 0}
        done = attempt = 0  # records yielded; retries of this shard (NOTE [shard retries])
        answers: list[bool] = []  # keep()'s answers for this shard, replayed on a retry
        calls = 0

        def replay() -> bool:
            nonlocal calls
            calls += 1
            if calls > len(answers):
                answers.append(bool(keep()))  # type: ignore[misc]
            return answers[calls - 1]

        try:
            while True:
                calls = 0
                opts = ReadOptions(
                    keep=None if keep is None else replay, bodies=not self._counting, max_member_bytes=self.max_member_bytes,
                    max_line_bytes=self.max_line_bytes,
                    on_bad_line=lambda e: self._on_bad(e, "skipped_lines", report), max_expansion=self.max_expansion,
                )
                try:
                    with self._open_shard_file(url) as f:
                        for i, record in enumerate(reader_for(url, self.format).read(f, url, opts)):
                            if i >= done:
                                done += 1
                                yield record
                    return
                except Exception as e:
                    local = not _is_remote(url) or self.cache is not None  # a cache retried its download
                    if attempt >= self.retry.retries or local or not is_transient(e):
                        raise
                    self._count_retry(e)
                    self.retry.wait(attempt)
                    attempt += 1
        except Exception as e:
            if not isinstance(e, (ShardError, OSError, EOFError, zlib.error)) and not is_transient(e):
                raise  # zlib.error: a corrupt .gz; transient: a remote read that spent its retries
            if self.on_error == "raise" or keep is None or keep():  # NOTE [error counts]
                if not isinstance(e, ShardError):
                    e = ShardError(f"cannot read shard {url!r}: {type(e).__name__}: {e}", url=url)
                self._on_bad(e, "skipped_shards", report)
        finally:
            _warn_skipped(url, report)

    def _count_samples(self, url: str) -> int:
        key: tuple[Any, ...] = (self.format, url, self.max_member_bytes, self.max_line_bytes, self.max_expansion)  # limits cut shards
        if not _is_remote(url):
            st = os.stat(_local(url))
            key += (st.st_size, st.st_mtime_ns)
        if key not in _COUNT_CACHE:
            counter = reader_for(url, self.format).count
            if counter is not None:
                try:
                    with self._open_shard_file(url) as f:
                        _COUNT_CACHE[key] = counter(f, url)
                    return _COUNT_CACHE[key]
                except (ShardError, OSError):
                    pass  # a bad shard: the reading pass below applies on_error to it
            self._counting = True
            try:
                _COUNT_CACHE[key] = sum(1 for _ in self._read(url))
            finally:
                self._counting = False
        return _COUNT_CACHE[key]


def _warn_skipped(url: str, report: dict[str, Any]) -> None:
    """One warning per shard that had skips: the shard, the counts, the first error."""
    lines, shard = report["skipped_lines"], report["skipped_shards"]
    if not lines and not shard:
        return
    parts = [f"{lines} bad line{'s' * (lines != 1)}"] if lines else []
    parts += ["the rest of the shard"] if shard else []
    first = "the error" if lines + shard == 1 else "the first error"
    warnings.warn(
        f"on_error='skip': shard {url!r}: skipped {' and '.join(parts)} (counted in .errors); "
        f"{first}: {report['first']}",
        RuntimeWarning, stacklevel=2,
    )


def from_shards(
    urls: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str | None = None,
    *,
    shuffle_shards: bool = False,
    seed: int = 0,
    split: Literal["auto", "shard", "sample"] = "auto",
    equalize: Literal["pad", "drop"] | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    on_error: Literal["raise", "skip", "warn"] = "raise",
    samples_per_shard: int | Sequence[int] | None = None,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_expansion: float | None = MAX_EXPANSION,
    storage_options: dict[str, Any] | None = None,
    retries: int = 3,
    retry_backoff: float = 0.5,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit_bytes: int | None = None,
    cache_ahead: int = 2,
) -> ShardDataset:
    """An IterDataset over tar or JSONL shards, split over DataLoader workers and ranks.

    Tar shards follow the webdataset layout: consecutive members sharing a key
    (path up to the first dot of the basename) form one sample
    ``{"__key__", "__url__", "<ext>": bytes}``; members are streamed, never
    extracted, never unpickled. JSONL shards yield one parsed object per line.

    Args:
        urls: a list, a path, a glob, brace patterns, or fsspec URLs.
        format: a registered reader name (``"tar"``, ``"jsonl"``, ``"parquet"``, see
            ``dataforge.datasets.readers``), or ``None`` to infer it from the extension.
        shuffle_shards: shuffle the shard order each epoch (``set_epoch``), same on all ranks.
        seed: seed of the shard order.
        split: ``"auto"`` (by shard when shards >= consumers, else by sample),
            ``"shard"`` (error when too few shards) or ``"sample"``.
        equalize: ``None`` (every sample once), ``"pad"`` or ``"drop"`` (equal
            counts per rank and worker slot, see NOTE [counting for equalize]).
        num_replicas: world size; default from ``torch.distributed`` or 1.
        rank: this rank; default from ``torch.distributed`` or 0.
        on_error: ``"raise"`` a :class:`ShardError` naming the shard and member/line,
            or ``"skip"`` the rest of a bad shard (a bad JSONL line), count it in
            ``ds.errors`` and warn once per shard with skips; through a loader, read
            ``loader.errors`` (NOTE [error counts]). ``"warn"`` is a deprecated alias of
            ``"skip"``; ``"substitute"`` (a Loader policy) needs indices a stream has not.
        samples_per_shard: known sample counts (one int or one per shard) for ``equalize``;
            default: from the ``<prefix>.index.json`` of :func:`write_shards` when every
            shard is listed there (NOTE [index counts]), else counted by reading.
        max_member_bytes: the largest tar member read (NOTE [bounded members] in
            ``tar_stream.py``); a larger one is a :class:`ShardError`.
        max_line_bytes: the longest JSONL line read; a longer one is a bad line (the
            other limits of a line are in ``dataforge.datasets.records``).
        max_expansion: the largest ratio of decompressed to compressed bytes of a gzip,
            bz2 or xz shard once past 16 MiB of output (NOTE [expansion bound] in
            ``tar_stream.py``): beyond it the shard is a :class:`ShardError`, handled by
            ``on_error``. ``None``: no bound.
        storage_options: options of the fsspec filesystem of remote URLs (for s3fs:
            ``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``).
        retries: retries of a remote shard read that fails with a transient error (a
            dropped connection, a timeout), ``retry_backoff * 2**attempt`` seconds apart;
            counted in ``errors["retried_reads"]``; then ``on_error`` applies (NOTE
            [shard retries] in ``dataforge/datasets/remote.py``).
        retry_backoff: the first wait between retries, in seconds.
        cache_dir: a local folder to keep remote shards in: each is downloaded once per
            machine (workers and ranks share it) and read from disk, the next
            ``cache_ahead`` shards of each consumer are downloaded while one is read
            (NOTE [shard cache] in ``dataforge/datasets/cache.py``). ``None``: stream.
        cache_limit_bytes: the size the cache is kept under by evicting the least
            recently used shards not open; ``None``: no limit.
        cache_ahead: shards downloaded ahead per consumer (0: none).

    Example:
        >>> ds = from_shards("data/train-{000..003}.tar", equalize="pad")  # doctest: +SKIP
        >>> next(iter(ds))  # doctest: +SKIP
        {'__key__': 'train/000000', '__url__': 'data/train-000.tar', 'jpg': b'...', 'cls': b'3'}
    """
    if on_error == "warn":
        warnings.warn(
            "from_shards(on_error='warn') is deprecated: use on_error='skip', which counts and "
            "warns the same way", DeprecationWarning, stacklevel=2,
        )
        on_error = "skip"
    if on_error == "substitute":
        raise ValueError(
            "from_shards(on_error='substitute') is not possible: a stream has no index to load a "
            "substitute from; use on_error='skip' (bad records skipped and counted) or 'raise'"
        )
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}")
    if isinstance(max_member_bytes, bool) or not isinstance(max_member_bytes, int) or max_member_bytes <= 0:
        raise ValueError(f"max_member_bytes must be a positive int (bytes), got {max_member_bytes!r}")
    retry = RetryPolicy(retries, retry_backoff)
    cache = None
    if cache_dir is not None:
        cache = ShardCache(
            cache_dir, cache_limit_bytes, ahead=cache_ahead, storage_options=storage_options, retry=retry,
        )
    elif cache_limit_bytes is not None:
        raise ValueError("cache_limit_bytes needs cache_dir= (the folder the cached shards go to)")
    expanded = expand_urls(urls, storage_options)
    fmt = _format_of(expanded, format)
    if samples_per_shard is None and equalize is not None:
        samples_per_shard = counts_from_index(expanded, storage_options)
    return ShardDataset(
        expanded, fmt, on_error, shuffle_shards=shuffle_shards, seed=seed, split=split,
        equalize=equalize, num_replicas=num_replicas, rank=rank, samples_per_shard=samples_per_shard,
        max_member_bytes=max_member_bytes, max_line_bytes=check_max_line_bytes(max_line_bytes),
        max_expansion=check_max_expansion(max_expansion), storage_options=storage_options, retry=retry, cache=cache,
    )
