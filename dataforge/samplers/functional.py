"""Pure sampling math without randomness of its own: quotas, grouping by class,
length bucketing and batch packing (random draws are in ``draws.py``).

Nothing here owns state; a function that draws takes the ``numpy.random.Generator``
to draw from, so the same generator state always gives the same result (on every rank).

Example:
    >>> import numpy as np
    >>> largest_remainder(10, np.array([1.0, 1.0, 1.0])).tolist()
    [4, 3, 3]
    >>> out, offsets = counting_sort(np.array([2, 0, 2, 1]), 3)
    >>> out.tolist(), offsets.tolist()
    ([1, 3, 0, 2], [0, 1, 2, 4])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

CHUNK = 1 << 20  # elements per vectorised step: bounds temporaries to a few MB
_RADIX_KEYS = 1 << 16  # groupings with at most this many keys use numpy's radix argsort
_HISTOGRAM_SPAN = 1 << 22  # widest range of lengths counted by a histogram (32 MiB)


def index_dtype(n: int) -> type[np.signedinteger]:
    """int32 when every index of an ``n``-element collection fits, else int64."""
    return np.int32 if n < 2**31 else np.int64


def largest_remainder(
    total: int, weights: np.ndarray, tie_break: np.ndarray | None = None
) -> np.ndarray:
    """Split ``total`` into integer quotas proportional to ``weights`` (Hamilton's method).

    Each quota is the floor or the ceiling of its exact share and the quotas sum to
    ``total``. Leftover units go to the largest fractional parts; equal fractional
    parts are ordered by ``tie_break`` (larger first; e.g. random numbers so that no
    class is favoured every epoch), else by position.

    Args:
        total: non-negative int to split.
        weights: non-negative floats, at least one positive.
        tie_break: optional floats of the same length.

    Example:
        >>> largest_remainder(7, np.array([1.0, 2.0, 0.0, 1.0])).tolist()
        [2, 3, 0, 2]
    """
    w = np.asarray(weights, dtype=np.float64)
    exact = total * (w / w.sum())
    quotas = np.floor(exact).astype(np.int64)
    frac = exact - quotas
    left = int(total - quotas.sum())
    if left > 0:
        tb = np.zeros(len(w)) if tie_break is None else -np.asarray(tie_break, dtype=np.float64)
        # lexsort: last key is primary. Zero-weight entries never receive a unit.
        order = np.lexsort((np.arange(len(w)), tb, -frac, w <= 0))
        quotas[order[:left]] += 1
    elif left < 0:  # float rounding pushed a floor up; take units back from the smallest fractions
        order = np.lexsort((np.arange(len(w)), frac, quotas <= 0))
        quotas[order[:-left]] -= 1
    return quotas


def _rechunk(pieces: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Re-cut an iterable of 1-D arrays into consecutive arrays of ``chunk`` items (the
    last may be shorter); small pieces are joined so per-step overhead stays per chunk."""
    buf: list[np.ndarray] = []
    size = 0
    for piece in pieces:
        if size == 0 and len(piece) >= chunk:  # large piece: slice it, no copy
            full = len(piece) // chunk * chunk
            for s in range(0, full, chunk):
                yield piece[s : s + chunk]
            piece = piece[full:]
        if len(piece) == 0:
            continue
        buf.append(piece)
        size += len(piece)
        if size >= chunk:
            joined = np.concatenate(buf)
            full = len(joined) // chunk * chunk
            for s in range(0, full, chunk):
                yield joined[s : s + chunk]
            rest = joined[full:]
            buf, size = ([rest], len(rest)) if len(rest) else ([], 0)
    if size:
        yield np.concatenate(buf)


def counting_sort(
    keys: np.ndarray,
    num_keys: int,
    values: Iterable[np.ndarray] | None = None,
    *,
    counts: np.ndarray | None = None,
    dtype: type[np.integer] | None = None,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Stably group ``values`` (default: the positions ``0..len(keys)-1``) by ``keys``.

    A chunked counting sort: the only full-size allocation is the output, so peak
    memory is ``len(keys) * itemsize`` plus a few MB, and the work is O(N). Within a
    chunk the grouping is a sort of unique composite keys ``key << bits | position``,
    whose result does not depend on the sort algorithm, so every machine agrees.

    Args:
        keys: 1-D non-negative ints ``< num_keys`` (any integer dtype, e.g. int8).
        num_keys: number of distinct key values (the grouping's size).
        values: optional iterable of 1-D arrays whose concatenation aligns with ``keys``.
        counts: optional precomputed ``np.bincount(keys, minlength=num_keys)``.
        dtype: output dtype (default: :func:`index_dtype` of ``len(keys)``).
        chunk: elements per vectorised step.

    Returns:
        ``(out, offsets)``: group ``k`` is ``out[offsets[k]:offsets[k + 1]]``.
    """
    n = len(keys)
    if counts is None:
        counts = np.zeros(num_keys, np.int64)
        step = max(chunk, 2 * num_keys)
        for s in range(0, n, step):
            counts += np.bincount(keys[s : s + step], minlength=num_keys)
    offsets = np.zeros(num_keys + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(n, dtype if dtype is not None else index_dtype(n))
    cursor = offsets[:-1].copy()
    if values is None and num_keys <= _RADIX_KEYS:
        _radix_group(keys, num_keys, out, cursor, chunk)
        return out, offsets
    shift = max(int(chunk - 1).bit_length(), 1)
    ctype = np.uint32 if shift + max(int(num_keys - 1).bit_length(), 1) <= 32 else np.uint64
    mask = ctype((1 << shift) - 1)
    ramp_c = np.arange(chunk, dtype=ctype)
    ramp = np.arange(chunk, dtype=np.int64)
    if values is None:
        values = (np.arange(s, min(s + chunk, n), dtype=out.dtype) for s in range(0, n, chunk))
    pos = 0
    for piece in _rechunk(values, chunk):
        m = len(piece)
        comp = keys[pos : pos + m].astype(ctype)
        comp <<= ctype(shift)
        comp |= ramp_c[:m]
        comp.sort()
        vals = piece[comp & mask]
        comp >>= ctype(shift)  # now the sorted keys
        run_start = np.flatnonzero(comp[1:] != comp[:-1])
        run_start += 1
        run_start = np.concatenate(([0], run_start))
        run_len = np.diff(np.append(run_start, m))
        run_keys = comp[run_start].astype(np.intp)
        del comp
        if len(run_start) <= 64:  # few groups per chunk: contiguous copies, no index array
            for a, ln, c in zip(run_start.tolist(), run_len.tolist(), cursor[run_keys].tolist()):
                out[c : c + ln] = vals[a : a + ln]
        else:
            dest = np.repeat(cursor[run_keys] - run_start, run_len)
            dest += ramp[:m]
            out[dest] = vals
        cursor[run_keys] += run_len
        pos += m
    if pos != n:
        raise ValueError(f"values hold {pos} items but keys hold {n}; they must align")
    return out, offsets


def _radix_group(
    keys: np.ndarray, num_keys: int, out: np.ndarray, cursor: np.ndarray, chunk: int
) -> None:
    """Positions grouped by key into ``out`` from ``cursor`` on (stable), chunk by chunk.

    NOTE [radix grouping]: numpy's stable argsort of 8- and 16-bit keys is a radix
    sort, O(chunk) and about 10x faster than sorting composite 32-bit keys, so
    keys below 2^16 are grouped this way; the result is the same stable grouping.
    """
    ktype = np.uint8 if num_keys <= 256 else np.uint16
    n = len(keys)
    for s in range(0, n, chunk):
        piece = keys[s : s + chunk].astype(ktype, copy=False)
        local = np.argsort(piece, kind="stable").astype(out.dtype)
        local += s
        cnt = np.bincount(piece, minlength=num_keys)
        nz = np.flatnonzero(cnt)
        if len(nz) <= 64:  # few groups per chunk: contiguous copies
            a = 0
            for k, c in zip(nz.tolist(), cnt[nz].tolist()):
                out[cursor[k] : cursor[k] + c] = local[a : a + c]
                a += c
        else:
            dest = np.repeat(cursor[nz] - (np.cumsum(cnt[nz]) - cnt[nz]), cnt[nz])
            dest += np.arange(len(piece), dtype=np.int64)
            out[dest] = local
        cursor += cnt


def pool_sort(
    lengths: np.ndarray, pool_size: int, bucket_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Order positions by (bucket, pool, length descending), keeping ties in input order.

    Pools are consecutive runs of ``pool_size`` items within each bucket. Returns
    ``(order, pool_starts)`` where ``pool_starts`` (with a final ``len(lengths)``)
    marks where each pool begins in ``order``.
    """
    n = len(lengths)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    if bucket_ids is None:
        pool = np.arange(n, dtype=np.int64) // pool_size
    else:
        counts = np.bincount(bucket_ids)
        keys = bucket_ids.astype(np.uint16) if len(counts) <= _RADIX_KEYS else bucket_ids
        by_bucket = np.argsort(keys, kind="stable")
        per_bucket = -(-counts // pool_size)
        # dense pool id = pools of the buckets before + pool number within the bucket
        first = np.repeat(np.cumsum(counts) - counts, counts)
        pool = np.empty(n, np.int64)
        pool[by_bucket] = np.repeat(np.cumsum(per_bucket) - per_bucket, counts) + (
            np.arange(n) - first
        ) // pool_size
    longest = int(lengths.max())
    if longest < _RADIX_KEYS and int(pool[-1] if bucket_ids is None else pool.max()) < _RADIX_KEYS:
        # NOTE [radix pool sort]: two stable 16-bit radix argsorts (length descending,
        # then pool) give lexsort's order in O(n), several times faster
        by_length = np.argsort((longest - lengths).astype(np.uint16), kind="stable")
        order = by_length[np.argsort(pool[by_length].astype(np.uint16), kind="stable")]
    else:
        order = np.lexsort((-lengths.astype(np.int64), pool))
    sorted_pool = pool[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_pool[1:] != sorted_pool[:-1])))
    return order, np.append(starts, n).astype(np.int64)


def pack_batches(
    sorted_lengths: np.ndarray,
    pool_starts: np.ndarray,
    batch_size: int | None,
    max_tokens: int | None,
) -> np.ndarray:
    """Batch boundaries over pools whose lengths are sorted in decreasing order.

    Each batch stays inside one pool and holds at most ``batch_size`` items and at
    most ``max_tokens // first_length`` items (its first item is its longest, so
    ``len(batch) * max_len <= max_tokens``); an item longer than ``max_tokens`` is
    a batch of its own. Returns the batch starts followed by ``len(sorted_lengths)``.

    Example:
        >>> pack_batches(np.array([5, 4, 2, 2, 1]), np.array([0, 5]), None, 8).tolist()
        [0, 1, 3, 5]
    """
    n = len(sorted_lengths)
    if max_tokens is None:
        step = batch_size if batch_size is not None else max(n, 1)
        starts = [np.arange(a, b, step) for a, b in zip(pool_starts[:-1], pool_starts[1:])]
        return np.append(np.concatenate(starts) if starts else np.empty(0, np.int64), n)
    fit = np.maximum(max_tokens // np.maximum(sorted_lengths, 1), 1)
    if batch_size is not None:
        np.minimum(fit, batch_size, out=fit)
    fit_list = fit.tolist()
    out: list[int] = []
    for a, b in zip(pool_starts[:-1].tolist(), pool_starts[1:].tolist()):
        s = a
        while s < b:
            out.append(s)
            s += fit_list[s]
    out.append(n)
    return np.asarray(out, dtype=np.int64)


def padding_efficiency(lengths: np.ndarray, batches: Iterable[Iterable[int]]) -> float:
    """Real tokens / padded tokens: ``sum(lengths) / sum(len(b) * max(lengths[b]))``."""
    real = 0
    padded = 0
    for batch in batches:
        lb = lengths[np.asarray(list(batch), dtype=np.int64)]
        real += int(lb.sum())
        padded += len(lb) * int(lb.max())
    return real / padded if padded else 1.0


def _bucket_counts(lengths: np.ndarray, edges: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """How many of ``lengths`` (all in ``[lo, hi]``) fall in each bucket of the sorted interior
    ``edges`` (bucket ``b``: ``edges[b - 1] <= length < edges[b]``), chunk by chunk.

    NOTE [length histogram]: lengths are small integers, so a histogram of them (one
    ``bincount`` pass) read at the edges counts the buckets; a binary search per
    length costs about 50 ns at 100M lengths against 2. Past ``_HISTOGRAM_SPAN``
    distinct values the search is used.
    """
    span = hi - lo + 1
    if span <= _HISTOGRAM_SPAN:
        hist = np.zeros(span, np.int64)
        for s in range(0, len(lengths), CHUNK):
            hist += np.bincount(lengths[s : s + CHUNK] - lo, minlength=span)
        below = np.concatenate(([0], np.cumsum(hist)))  # below[x - lo]: lengths < x
        return np.diff(below[np.concatenate(([0], edges - lo, [span]))])
    counts = np.zeros(len(edges) + 1, np.int64)
    for s in range(0, len(lengths), CHUNK):
        counts += np.bincount(np.searchsorted(edges, lengths[s : s + CHUNK], side="right"),
                              minlength=len(edges) + 1)
    return counts


def geometric_boundaries(lengths: np.ndarray, min_count: int, ratio: float = 1.1) -> np.ndarray:
    """Bucket boundaries spanning a factor ``ratio`` each, merged until each bucket
    holds at least ``min_count`` of ``lengths`` (so a sparse tail is one bucket).

    Example:
        >>> geometric_boundaries(np.array([1, 1, 2, 2, 9, 10]), min_count=2, ratio=2.0).tolist()
        [2, 4]
    """
    lo, hi = int(lengths.min()), int(lengths.max())
    edges = [lo]
    while edges[-1] <= hi:
        edges.append(max(edges[-1] + 1, int(np.ceil(edges[-1] * ratio))))
    edges_arr = np.asarray(edges[1:-1], dtype=np.int64)  # interior edges only
    counts = _bucket_counts(lengths, edges_arr, lo, hi)
    out: list[int] = []
    acc = 0
    for b, c in enumerate(counts.tolist()):
        acc += c
        if acc >= min_count and b < len(edges_arr):
            out.append(int(edges_arr[b]))
            acc = 0
    if out and acc < min_count:
        out.pop()  # a short last bucket joins the previous one
    return np.asarray(out, dtype=np.int64)
