"""``BucketBatchSampler``: batches of similar length, by count or by token budget."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch

from dataforge.samplers.base import EpochSampler, check_int
from dataforge.samplers.class_balanced import ClassBalancedSampler
from dataforge.samplers.functional import (
    CHUNK,
    geometric_boundaries,
    index_dtype,
    pack_batches,
    pool_sort,
)
from dataforge.samplers.quota_stream import keyed_rng

POOL_BATCHES = 100  # a pool holds about this many batches (as lhotse / fairseq do)
AUTO_RATIO = 1.1  # automatic buckets span at most this factor of lengths (unless merged)
AUTO_MIN_BATCHES = 10  # ... and hold at least this many batches' worth of samples
_LOOKUP_LENGTHS = 1 << 20  # longest length whose bucket id comes from a table (<= 2 MiB)


def as_lengths(lengths: Any, name: str = "lengths") -> np.ndarray:
    """Validate per-sample lengths and return them as a 1-D int64 array.

    Accepts a list, array, tensor or an object with a ``.lengths`` attribute.

    Raises:
        ValueError: empty, not 1-D, not whole numbers, or not positive (index named).
    """
    if not isinstance(lengths, (np.ndarray, torch.Tensor, list, tuple)) and hasattr(
        lengths, "lengths"
    ):
        lengths = lengths.lengths
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    try:
        arr = np.asarray(lengths)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a 1-D array-like of positive ints: {e}") from e
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array-like, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        bad |= arr != np.floor(np.where(bad, 0, arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name} must be whole numbers, got {name}[{i}]={arr[i].item()!r}")
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be positive ints, got dtype {arr.dtype} ({name}[0]={arr[0]!r})")
    arr = arr.astype(np.int64, copy=False)
    if int(arr.min()) <= 0:
        i = int(np.argmin(arr))
        raise ValueError(
            f"{name} must be positive, got {name}[{i}]={int(arr[i])}; drop empty samples first"
        )
    return arr


def _as_lists(flat: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[list[int]]:
    """Batches ``flat[lo[i]:hi[i]]`` as lists of ints.

    NOTE [ints in batch order]: one ``tolist`` of the batches gathered in the order
    they are yielded makes the Python ints in consumption order, so slicing and later
    freeing them stays in cache; per-batch ``tolist`` calls, or slices of a list made
    in layout order and taken in shuffled batch order, miss the cache on every int.
    """
    sizes = hi - lo
    ends = np.cumsum(sizes)
    begins = ends - sizes
    idx = np.repeat(lo - begins, sizes)
    idx += np.arange(len(idx), dtype=np.int64)
    values = flat[idx].tolist()
    return [values[a:b] for a, b in zip(begins.tolist(), ends.tolist())]


def _length_keys(lengths: np.ndarray, boundaries: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample sort keys of a streamed window plan (NOTE [length keys] below).

    Returns ``(keys, edges)``: ``keys[i]`` is the rank of ``lengths[i]`` among the
    distinct lengths, longest first (uint16 when they fit), and the buckets are runs
    of keys: bucket ``b`` (longest first) holds keys ``edges[b]`` to ``edges[b + 1] - 1``.
    """
    n = len(lengths)
    longest = int(lengths.max())
    if longest <= _LOOKUP_LENGTHS:
        seen = np.zeros(longest + 1, bool)
        for s in range(0, n, CHUNK):
            seen[lengths[s : s + CHUNK]] = True
        values = np.flatnonzero(seen)
    else:
        values = np.unique(lengths)
    num = len(values)
    dtype = np.uint16 if num <= 1 << 16 else np.uint32
    keys = np.empty(n, dtype)
    if longest <= _LOOKUP_LENGTHS:
        table = np.zeros(longest + 1, dtype)
        table[values] = np.arange(num - 1, -1, -1)
        for s in range(0, n, CHUNK):
            np.take(table, lengths[s : s + CHUNK], out=keys[s : s + CHUNK])
    else:
        for s in range(0, n, CHUNK):
            keys[s : s + CHUNK] = num - 1 - np.searchsorted(values, lengths[s : s + CHUNK])
    if boundaries is None:
        return keys, np.array([0, num], np.int64)
    bucket = np.searchsorted(boundaries, values[::-1], side="right")  # of each key
    first = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    return keys, np.append(first, num).astype(np.int64)


def _window_order(keys: np.ndarray, edges: np.ndarray, batch_size: int) -> np.ndarray:
    """Layout of one streamed window: batch ``j`` is ``order[j * batch_size:][:batch_size]``.

    ``keys`` are the window's :func:`_length_keys` in stream order and ``edges`` the
    buckets' key runs. Each bucket's share of the window is one pool: sorted longest
    first (ties in stream order) and cut into batches; what it holds beyond whole
    batches (its shortest items) joins a remainder at the end, also longest first,
    so every batch but the last is full.

    NOTE [one sort per window]: buckets are runs of keys, so one stable 16-bit radix
    sort of the keys orders the window by (bucket, length, stream position) at once;
    moving each bucket's partial batch to the end keeps the remainder sorted, as the
    buckets' key runs follow each other. A window's share of a bucket is on average
    4 pools of ``pool_size`` (the window is sized that way) rather than pools of
    exactly ``pool_size``: per-pool sorts would need a radix sort by bucket first,
    a gather of pool ids and a second sort (~25 ns per index more, against ~100 ns
    per index for the whole epoch), for batches of the same character (a bucket's
    items of one length in stream order).
    """
    order = np.argsort(keys, kind="stable")
    per_key = np.bincount(keys, minlength=int(edges[-1]))
    ends = np.cumsum(per_key)[edges[1:] - 1]  # where each bucket ends in ``order``
    tails = (ends - np.append(0, ends[:-1])) % batch_size
    if not tails.any():
        return order
    keep: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    a = 0
    for e, t in zip(ends.tolist(), tails.tolist()):
        keep.append(order[a : e - t])
        rest.append(order[e - t : e])
        a = e
    return np.concatenate(keep + rest)


class BucketBatchSampler(EpochSampler[list[int]]):
    """A batch sampler yielding lists of indices of similar length.

    Each epoch: draw the indices (all of them, or a class-balanced multiset with
    ``labels`` + ``balance``), shuffle them, split them into buckets
    (``bucket_boundaries``) and pools of about ``100`` batches, sort each pool by
    length (longest first), cut it into batches and shuffle the batch order. With ``max_tokens``
    every batch satisfies ``len(batch) * max(lengths[batch]) <= max_tokens``.
    Every rank gets the same number of batches (padded by repeating batches, or
    dropped, per ``drop_last``); ranks' batches are disjoint apart from padding.
    ``len()`` is exact: it computes (and caches) the current epoch's batches.
    With ``balance`` and no ``max_tokens`` the (possibly much longer) balanced
    epoch is streamed and planned in windows of about 2^20 indices instead (NOTE
    [streamed balanced batches]): every batch but the epoch's last is full and
    ``len()`` is ``ceil(epoch indices / batch_size)`` without planning.

    Args:
        lengths: positive length per sample (array-like or object with ``.lengths``).
        batch_size: samples per batch (with ``max_tokens``: the most per batch).
        max_tokens: token budget per batch, padding included.
        bucket_boundaries: increasing lengths; batches never cross a boundary.
            Default: automatic geometric buckets (see ``NOTE [automatic buckets]``);
            ``[]``: no buckets, pools only.
        shuffle: randomise pools and batch order (``False``: deterministic, input order).
        seed: base seed; the batches depend only on ``(seed, epoch)``.
        drop_last: drop trailing batches instead of padding so ranks get equal counts.
        labels: class id per sample, used with ``balance``.
        balance: a ``ClassBalancedSampler`` strategy (``"oversample"``,
            ``"undersample"``, ``"sqrt"`` or ``{class_id: weight}``).
        num_replicas: ranks (default from ``torch.distributed``, else 1).
        rank: this rank (default from ``torch.distributed``, else 0).
        oversize: a sample longer than ``max_tokens``: ``"error"`` (``ValueError``
            in ``__init__``) or ``"single"`` (a batch of its own).

    Example:
        >>> s = BucketBatchSampler([5, 1, 4, 2, 8, 1], max_tokens=8, seed=0)
        >>> sorted(sorted(b) for b in s)
        [[0], [1, 5], [2, 3], [4]]
    """

    _chunk = 1024

    def __init__(
        self,
        lengths: Any,
        *,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        bucket_boundaries: Sequence[int] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        labels: Any = None,
        balance: str | Mapping[int, float] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        oversize: str = "error",
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.lengths = as_lengths(lengths)
        self.batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
        self.max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
        if self.batch_size is None and self.max_tokens is None:
            raise ValueError("pass batch_size=, max_tokens= or both (max_tokens with a batch_size cap)")
        if oversize not in ("error", "single"):
            raise ValueError(f"oversize must be 'error' or 'single', got {oversize!r}")
        self.oversize = oversize
        if self.max_tokens is not None and oversize == "error":
            too_long = self.lengths > self.max_tokens
            if too_long.any():
                i = int(np.argmax(too_long))
                raise ValueError(
                    f"lengths[{i}]={int(self.lengths[i])} exceeds max_tokens={self.max_tokens}; "
                    "raise max_tokens, truncate or drop that sample, or pass oversize='single' "
                    "to give it a batch of its own"
                )
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
        self.shuffle = shuffle
        if (labels is None) != (balance is None):
            raise ValueError(
                "labels and balance go together: pass both (e.g. labels=ds.labels, "
                f"balance='oversample') or neither; got labels={'set' if labels is not None else None}, "
                f"balance={balance!r}"
            )
        per_batch = self.batch_size or len(self.lengths)
        if self.max_tokens is not None:
            per_batch = min(per_batch, max(1, self.max_tokens // int(np.mean(self.lengths))))
        self.pool_size = POOL_BATCHES * per_batch
        # NOTE [automatic buckets]: sorting within pools alone leaves the long tail of a
        # skewed (log-normal) distribution poorly packed: a pool's longest batch spans
        # its top 1%. Geometric buckets (a factor of 1.1 each, merged until each holds
        # 10 batches' worth) keep each pool's lengths within ~10%; measured padding
        # efficiency on log-normal lengths rises from ~0.92 to ~0.99 (sigma 0.8).
        if bucket_boundaries is None:
            self.bucket_boundaries: np.ndarray | None = geometric_boundaries(
                self.lengths, AUTO_MIN_BATCHES * per_batch, AUTO_RATIO
            )
        else:
            self.bucket_boundaries = self._check_boundaries(bucket_boundaries)
        if self.bucket_boundaries is not None and len(self.bucket_boundaries) == 0:
            self.bucket_boundaries = None
        # the balancer comes after the boundaries: its grouping is not yet resident while
        # geometric_boundaries holds a temporary of 8 bytes per sample
        self._balancer: ClassBalancedSampler | None = None
        if balance is not None:
            try:
                self._balancer = ClassBalancedSampler(
                    labels, strategy=balance, seed=seed, num_replicas=1, rank=0
                )
            except ValueError as e:  # name the argument as the caller spelled it
                raise ValueError(f"balance={balance!r} / labels: {e}") from e
            if self._balancer.num_labels != len(self.lengths):
                raise ValueError(
                    f"labels has {self._balancer.num_labels} entries but lengths has "
                    f"{len(self.lengths)}; pass one label per sample"
                )
        self._lookup: np.ndarray | None = None  # bucket id by length, see _bucket_ids
        self._keys: tuple[np.ndarray, np.ndarray] | None = None
        if self._streamed():  # NOTE [length keys]
            self._keys = _length_keys(self.lengths, self.bucket_boundaries)
        else:
            longest = int(self.lengths.max())
            if self.bucket_boundaries is not None and longest <= _LOOKUP_LENGTHS:
                ids = np.searchsorted(self.bucket_boundaries, np.arange(longest + 1), side="right")
                self._lookup = ids.astype(
                    np.uint16 if len(self.bucket_boundaries) < 1 << 16 else np.int64
                )
        self._plan: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._wplan: tuple[int, int, np.ndarray, np.ndarray] | None = None
        self._wstream: tuple[int, int, Iterator[np.ndarray], list[np.ndarray]] | None = None

    @staticmethod
    def _check_boundaries(boundaries: Sequence[int] | None) -> np.ndarray | None:
        if boundaries is None:
            return None
        b = np.asarray(boundaries)
        if b.size == 0:
            return b.astype(np.int64).reshape(0)  # no buckets: pools only
        if b.ndim != 1 or b.dtype.kind not in "iu" or (b <= 0).any():
            raise ValueError(
                f"bucket_boundaries must be a list of positive ints, got {boundaries!r}"
            )
        if (np.diff(b) <= 0).any():
            raise ValueError(f"bucket_boundaries must be strictly increasing, got {boundaries!r}")
        return b.astype(np.int64)

    def _bucket_ids(self, lengths: np.ndarray) -> np.ndarray | None:
        """The bucket of each length (``None`` without buckets); a lookup table when the
        longest length is at most ``_LOOKUP_LENGTHS`` (a gather in cache, not a search)."""
        if self.bucket_boundaries is None:
            return None
        if self._lookup is not None:
            return self._lookup[lengths]
        return np.searchsorted(self.bucket_boundaries, lengths, side="right")

    def _epoch_plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(flat, starts, batch_order)`` of the current epoch: batch ``j`` is
        ``flat[starts[j]:starts[j + 1]]``; cached per epoch."""
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1:]
        rng = self.generator()
        n = len(self.lengths)
        if self._balancer is not None:
            idx = np.concatenate(list(self._balancer.epoch_chunks(self.epoch)))
        elif self.shuffle:
            idx = rng.permutation(n).astype(index_dtype(n))
        else:
            idx = np.arange(n, dtype=index_dtype(n))
        lengths = self.lengths[idx]
        buckets = self._bucket_ids(lengths)
        order, pool_starts = pool_sort(lengths, self.pool_size, buckets)
        flat = idx[order]
        starts = pack_batches(lengths[order], pool_starts, self.batch_size, self.max_tokens)
        num_batches = len(starts) - 1
        batch_order = rng.permutation(num_batches) if self.shuffle else np.arange(num_batches)
        self._plan = (self.epoch, flat, starts, batch_order)
        return flat, starts, batch_order

    # NOTE [streamed balanced batches]: a balanced epoch can be many times the data
    # set, so with ``balance`` and no ``max_tokens`` it is planned window by window
    # (``_window`` items of the balanced stream each, a multiple of batch_size):
    # buckets, pools and batch order stay within a window, and what each bucket holds
    # beyond whole batches ends the window in a pooled, length-sorted remainder, so
    # it holds exactly ceil(items / batch_size) batches and ``len()`` needs no plan.
    # Memory: the balancer's, 2 bytes per sample (NOTE [length keys]) and O(window).
    # NOTE [length keys]: a streamed window needs each item's bucket and length; both
    # come from one per-sample key made at construction (the rank of its length,
    # longest first: uint16 for up to 65,536 distinct lengths), so a window gathers 2
    # bytes per item at random instead of an 8-byte length, and buckets and lengths
    # are compared as keys (a bucket is a run of keys).
    _window = 1 << 20

    def _streamed(self) -> bool:
        return self._balancer is not None and self.max_tokens is None

    def _window_batches(self) -> int:
        buckets = 1 + (0 if self.bucket_boundaries is None else len(self.bucket_boundaries))
        return -(-max(self._window, 4 * self.pool_size * buckets) // cast(int, self.batch_size))

    def _global_len(self) -> int:
        if self._streamed():
            balancer = cast(ClassBalancedSampler, self._balancer)
            return -(-balancer.num_samples // cast(int, self.batch_size))
        return len(self._epoch_plan()[2])

    def _global_chunks(self, start: int) -> Iterator[np.ndarray]:
        if not self._streamed():
            yield self._epoch_plan()[2][start:]
            return
        per, total = self._window_batches(), self._global_len()
        a = start
        while a < total:  # one window's batch ids at a time
            b = min((a // per + 1) * per, total)
            yield np.arange(a, b, dtype=np.int64)
            a = b

    def _to_items(self, chunk: np.ndarray) -> list[list[int]]:
        if self._streamed():
            per = self._window_batches()
            out: list[list[int]] = []
            for k in np.unique(chunk // per).tolist():
                flat, batch_order = self._window_plan(k)
                out += self._window_lists(flat, batch_order[chunk[chunk // per == k] - k * per])
            return out
        flat, starts, _ = self._epoch_plan()
        return _as_lists(flat, starts[chunk], starts[chunk + 1])

    def _window_lists(self, flat: np.ndarray, rows: np.ndarray) -> list[list[int]]:
        """Batches ``rows`` of a window laid out as ``flat`` (full batches, the window's
        last may be short), as lists: one gather of whole rows and one ``tolist``
        (NOTE [ints in batch order])."""
        size = cast(int, self.batch_size)
        full = len(flat) // size
        if full * size == len(flat):
            return cast(list[list[int]], np.take(flat.reshape(full, size), rows, axis=0).tolist())
        short = rows == full
        if full == 0:
            return [flat.tolist() for _ in range(len(rows))]
        layout = flat[: full * size].reshape(full, size)
        out = cast(list[list[int]], np.take(layout, np.where(short, 0, rows), axis=0).tolist())
        for i in np.flatnonzero(short).tolist():
            out[i] = flat[full * size :].tolist()
        return out

    def _window_plan(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``k`` of the current epoch: ``(indices in batch layout, batch order)``;
        batch ``j`` of the layout is ``flat[j * batch_size:][:batch_size]``."""
        if self._wplan is not None and self._wplan[:2] == (self.epoch, k):
            return self._wplan[2:]
        balancer, batch_size = cast(ClassBalancedSampler, self._balancer), cast(int, self.batch_size)
        size = self._window_batches() * batch_size
        if self._wstream is None or self._wstream[:2] != (self.epoch, k):  # not the next window
            self._wstream = (self.epoch, k, balancer.epoch_chunks(self.epoch, k * size), [])
        _, _, chunks, carry = self._wstream
        parts, got = carry, sum(len(c) for c in carry)
        while got < size:
            arr = next(chunks, None)
            if arr is None:  # the epoch's last window
                break
            parts.append(arr)
            got += len(arr)
        idx = np.concatenate(parts) if parts else np.empty(0, np.int64)
        self._wstream = (self.epoch, k + 1, chunks, [idx[size:].copy()] if len(idx) > size else [])
        idx = idx[:size]
        self._wplan = None  # the previous window's arrays go before this one's are made
        keys, edges = cast(tuple[np.ndarray, np.ndarray], self._keys)
        order = _window_order(np.take(keys, idx), edges, batch_size)
        batch_order = keyed_rng(self.seed, self.epoch, k).permutation(-(-len(idx) // batch_size))
        self._wplan = (self.epoch, k, np.take(idx, order), batch_order)
        return self._wplan[2:]

    def _state_fields(self) -> dict[str, Any]:
        return {
            "num_lengths": len(self.lengths),
            "batch_size": self.batch_size,
            "max_tokens": self.max_tokens,
            "shuffle": self.shuffle,
        }
