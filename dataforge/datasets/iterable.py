"""Iterable datasets: the base class, its composition ops and ``mix``.

An :class:`IterDataset` is a ``torch.utils.data.IterableDataset``: it works in a
stock ``DataLoader``. A subclass implements ``_iter()``; the base class owns the
ops, ``set_epoch`` propagation and a replay-based ``state_dict``.

NOTE [who splits the work]: sources (``from_shards``, ``IterDataset.from_iterable``,
anything built on :class:`~dataforge.datasets.sharding.ShardedSource`) split their
items over DataLoader workers and ``torch.distributed`` ranks themselves, so the
ops below see only this consumer's items. Ops therefore act PER CONSUMER:
``take(10)`` under 2 workers yields up to 10 items from each worker.

NOTE [resume by replay]: every pipeline here is deterministic given (seed, epoch,
rank, worker), so ``state_dict()`` is just ``{"epoch", "yielded"}`` and loading it
makes the next ``iter()`` skip the items already yielded. Exact for any chain of
ops, at the cost of re-reading the skipped items. Under DataLoader workers each
worker iterates its own copy: the counts of the main-process object are then
not the workers' (a loader-level state must count batches per worker).

NOTE [epochs and workers]: call ``set_epoch`` before ``iter(loader)``: workers get
a copy of the dataset when they start, so with ``persistent_workers=True`` they
keep the epoch they started with (shard order and shuffle would then repeat).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, Literal, TypeVar

import torch.distributed as dist
import torch.utils.data

from dataforge._dist import resolve_replicas, worker_info
from dataforge._rng import mix_seed

T = TypeVar("T")
U = TypeVar("U")

_STOPS = ("first_exhausted", "all_exhausted", "never")


def _check_int(name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} must be a {kind} int, got {value!r}; {fix}")
    return value


class IterDataset(torch.utils.data.IterableDataset, Generic[T]):
    """Base class of dataforge iterable datasets.

    Subclasses implement ``_iter()`` (and ``_sources()`` when they wrap other
    datasets). Ops return new datasets; nothing is mutated. ``len()`` is not
    defined: an iterable's length is generally unknown.

    Example:
        >>> import dataforge
        >>> ds = dataforge.IterDataset.from_iterable(range(10))
        >>> list(ds.filter(lambda x: x % 2).map(lambda x: x * 10).batch(2))
        [[10, 30], [50, 70], [90]]
    """

    _epoch: int = 0
    _skip: int = 0
    _yielded: int = 0
    # explicit (num_replicas, rank) of a source; None -> torch.distributed / (1, 0)
    _num_replicas: int | None = None
    _rank: int | None = None

    # -- subclass contract -------------------------------------------------
    def _iter(self) -> Iterator[T]:
        raise NotImplementedError(f"{type(self).__name__} must implement _iter()")

    def _sources(self) -> Sequence[IterDataset[Any]]:
        """The datasets this one reads from (for ``set_epoch`` propagation)."""
        return ()

    def sources(self) -> tuple[IterDataset[Any], ...]:
        """The datasets this one reads from (empty for a source)."""
        return tuple(self._sources())

    # -- plumbing ----------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        # A plain function (not a generator) so that the counters are reset at
        # iter() time, before the first next().
        skip, self._skip = self._skip, 0
        self._yielded = skip
        it = self._iter()
        if skip:
            it = itertools.islice(it, skip, None)
        return self._counted(it)

    def _counted(self, it: Iterator[T]) -> Iterator[T]:
        for x in it:
            self._yielded += 1
            yield x

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (mixed into shuffle seeds and shard order) here and in all sources."""
        _check_int("epoch", epoch, 0, "pass the epoch number, 0 for the first")
        self._epoch = epoch
        for src in self._sources():
            src.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "yielded"}``: where the current iteration stands (see NOTE [resume by replay])."""
        return {"epoch": self._epoch, "yielded": self._yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``iter()`` runs epoch ``state["epoch"]`` minus its first ``state["yielded"]`` items."""
        if not isinstance(state, dict) or not {"epoch", "yielded"} <= state.keys():
            raise ValueError(
                f"state must be a dict from state_dict() with keys 'epoch' and 'yielded', got {state!r}"
            )
        self.set_epoch(state["epoch"])
        self._skip = _check_int("state['yielded']", state["yielded"], 0, "use a state_dict() output")
        self._yielded = self._skip

    def _replicas(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` of this consumer; ops ask their first source."""
        srcs = self._sources()
        if srcs:
            return srcs[0]._replicas()
        return resolve_replicas(self._num_replicas, self._rank)

    def _consumer_seed(self, seed: int) -> int:
        """A seed for (seed, epoch, rank, worker): reproducible, distinct per consumer."""
        _, rank = self._replicas()
        worker, _ = worker_info()
        return mix_seed(seed, self._epoch, rank, worker)

    def __getstate__(self) -> dict[str, Any]:
        # NOTE [rank in workers]: DataLoader workers started with spawn/forkserver
        # do not inherit the torch.distributed process group, so a leaf pins the
        # rank it has in the parent when it is pickled for them.
        state = self.__dict__.copy()
        if not self._sources() and dist.is_available() and dist.is_initialized():
            state["_num_replicas"], state["_rank"] = resolve_replicas(self._num_replicas, self._rank)
        return state

    # -- constructors ------------------------------------------------------
    @staticmethod
    def from_iterable(
        source: Iterable[T] | Callable[[], Iterable[T]],
        *,
        equalize: Literal["pad", "drop"] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> IterDataset[T]:
        """An IterDataset over a re-iterable (list, range, ...) or a zero-argument factory.

        Items are split by sample over DataLoader workers and ranks (consumer ``c``
        of ``k`` takes items ``c, c + k, ...``), so each is seen once per epoch.

        Args:
            source: iterated afresh on every pass (so not a generator object); a
                callable is called to get a fresh iterable each time.
            equalize: ``"pad"``/``"drop"`` to give every rank the same count (needs
                ``len(source)`` or one counting pass), see ``from_shards``.
            num_replicas: world size; default from ``torch.distributed`` or 1.
            rank: this rank; default from ``torch.distributed`` or 0.

        Example:
            >>> list(IterDataset.from_iterable(range(6), num_replicas=2, rank=1))
            [1, 3, 5]
        """
        from dataforge.datasets.sharding import ShardedSource

        if not callable(source) and not isinstance(source, Iterable):
            raise TypeError(
                f"source must be an iterable or a callable returning one, got {type(source).__name__}"
            )
        if isinstance(source, Iterator):
            raise TypeError(
                f"source must be re-iterable, got a one-shot {type(source).__name__} that would be "
                "empty from the second epoch on; pass a list or a function returning a fresh iterator"
            )
        counts = [len(source)] if isinstance(source, Sized) and not callable(source) else None
        return ShardedSource(
            [source], _open_iterable, split="sample", equalize=equalize,
            samples_per_shard=counts, num_replicas=num_replicas, rank=rank,
        )

    # -- ops ---------------------------------------------------------------
    def map(self, fn: Callable[[T], U]) -> IterDataset[U]:
        """Apply ``fn`` to every item."""
        return _Map(self, fn)

    def filter(self, pred: Callable[[T], Any]) -> IterDataset[T]:
        """Keep the items for which ``pred(item)`` is true."""
        return _Filter(self, pred)

    def shuffle(self, buffer_size: int, seed: int = 0) -> IterDataset[T]:
        """Shuffle with a buffer of ``buffer_size`` items (see :class:`_Shuffle`)."""
        return _Shuffle(self, buffer_size, seed)

    def batch(self, n: int, drop_last: bool = False) -> IterDataset[list[T]]:
        """Group items into lists of ``n`` (the last one shorter unless ``drop_last``)."""
        return _Batch(self, n, drop_last)

    def take(self, n: int) -> IterDataset[T]:
        """The first ``n`` items (per consumer, see NOTE [who splits the work])."""
        return _Take(self, n)

    def repeat(self, times: int | None = None) -> IterDataset[T]:
        """Iterate the source ``times`` times (``None``: forever)."""
        return _Repeat(self, times)


def _open_iterable(source: Any) -> Iterable[Any]:
    return source() if callable(source) else source


class _Op(IterDataset[T]):
    def __init__(self, source: IterDataset[Any]) -> None:
        if not isinstance(source, IterDataset):
            raise TypeError(
                f"source must be a dataforge IterDataset, got {type(source).__name__}; "
                "wrap it with IterDataset.from_iterable(...)"
            )
        self._source = source
        self._epoch = source.epoch

    def _sources(self) -> Sequence[IterDataset[Any]]:
        return (self._source,)


class _Map(_Op[T]):
    def __init__(self, source: IterDataset[Any], fn: Callable[[Any], T]) -> None:
        super().__init__(source)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self._fn = fn

    def _iter(self) -> Iterator[T]:
        fn = self._fn
        for x in self._source:
            yield fn(x)


class _Filter(_Op[T]):
    def __init__(self, source: IterDataset[T], pred: Callable[[T], Any]) -> None:
        super().__init__(source)
        if not callable(pred):
            raise TypeError(f"pred must be callable, got {pred!r}")
        self._pred = pred

    def _iter(self) -> Iterator[T]:
        pred = self._pred
        for x in self._source:
            if pred(x):
                yield x


class _Shuffle(_Op[T]):
    """Buffer shuffle: fill a buffer, then emit a random slot and refill it.

    The generator is ``random.Random(mix_seed(seed, epoch, rank, worker))``: the
    order is reproducible for a seed, differs per epoch (``set_epoch``) and per
    consumer. Larger buffers shuffle better and cost memory.
    """

    def __init__(self, source: IterDataset[T], buffer_size: int, seed: int) -> None:
        super().__init__(source)
        self._size = _check_int("buffer_size", buffer_size, 1, "use e.g. 1000")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self._seed = seed

    def _iter(self) -> Iterator[T]:
        rng = random.Random(self._consumer_seed(self._seed))
        buf: list[T] = []
        size = self._size
        for x in self._source:
            if len(buf) < size:
                buf.append(x)
                continue
            j = rng.randrange(size)
            out, buf[j] = buf[j], x
            yield out
        rng.shuffle(buf)
        yield from buf


class _Batch(_Op[list[T]]):
    def __init__(self, source: IterDataset[T], n: int, drop_last: bool) -> None:
        super().__init__(source)
        self._n = _check_int("n", n, 1, "pass the batch size")
        self._drop_last = bool(drop_last)

    def _iter(self) -> Iterator[list[T]]:
        it = iter(self._source)
        while True:
            chunk = list(itertools.islice(it, self._n))
            if not chunk or (self._drop_last and len(chunk) < self._n):
                return
            yield chunk


class _Take(_Op[T]):
    def __init__(self, source: IterDataset[T], n: int) -> None:
        super().__init__(source)
        self._n = _check_int("n", n, 0, "pass how many items to take")

    def _iter(self) -> Iterator[T]:
        if self._n:  # do not even open the source for take(0)
            yield from itertools.islice(iter(self._source), self._n)


class _Repeat(_Op[T]):
    def __init__(self, source: IterDataset[T], times: int | None) -> None:
        super().__init__(source)
        if times is not None:
            _check_int("times", times, 0, "or None to repeat forever")
        self._times = times

    def _iter(self) -> Iterator[T]:
        passes = itertools.count() if self._times is None else range(self._times)
        for _ in passes:
            empty = True
            for x in self._source:
                empty = False
                yield x
            if empty:  # an empty source repeated forever would hang
                return


class _Mix(IterDataset[Any]):
    def __init__(
        self, datasets: Sequence[IterDataset[Any]], weights: Sequence[float], seed: int, stop: str
    ) -> None:
        self._datasets = tuple(datasets)
        self._weights = tuple(weights)
        self._seed = seed
        self._stop = stop
        self._epoch = self._datasets[0].epoch

    def _sources(self) -> Sequence[IterDataset[Any]]:
        return self._datasets

    def _iter(self) -> Iterator[Any]:
        rng = random.Random(self._consumer_seed(self._seed))
        # zero-weight sources are never drawn, so they never count as exhausted
        active = [i for i, w in enumerate(self._weights) if w > 0]
        iters: dict[int, Iterator[Any]] = {i: iter(self._datasets[i]) for i in active}
        fresh = dict.fromkeys(active, True)  # no item yet from the current iterator
        while active:
            cum = list(itertools.accumulate(self._weights[i] for i in active))
            j = bisect.bisect_right(cum, rng.random() * cum[-1])
            k = active[min(j, len(active) - 1)]
            try:
                x = next(iters[k])
            except StopIteration:
                if self._stop == "first_exhausted":
                    return
                if self._stop == "never" and not fresh[k]:
                    iters[k], fresh[k] = iter(self._datasets[k]), True
                else:  # all_exhausted, or a source that is empty even when restarted
                    active.remove(k)
                continue
            fresh[k] = False
            yield x


def mix(
    datasets: Sequence[IterDataset[Any]],
    weights: Sequence[float] | None = None,
    seed: int = 0,
    stop: Literal["first_exhausted", "all_exhausted", "never"] = "first_exhausted",
) -> IterDataset[Any]:
    """Interleave datasets, drawing the next source at random in proportion to ``weights``.

    Args:
        datasets: the IterDatasets to mix (at least one).
        weights: one non-negative finite weight per dataset, not all zero (need not
            sum to 1); default equal. A zero-weight dataset is never drawn.
        seed: seed of the choice generator (mixed with epoch, rank and worker).
        stop: ``"first_exhausted"`` ends when a drawn source has no item left;
            ``"all_exhausted"`` drops exhausted sources and ends when all are done;
            ``"never"`` restarts exhausted sources (an empty source is dropped).

    Example:
        >>> import dataforge
        >>> a = dataforge.IterDataset.from_iterable(["a"] * 3)
        >>> b = dataforge.IterDataset.from_iterable(["b"] * 3)
        >>> sorted(dataforge.mix([a, b], [1, 1], stop="all_exhausted"))
        ['a', 'a', 'a', 'b', 'b', 'b']
    """
    if isinstance(datasets, IterDataset) or not isinstance(datasets, Sequence) or not datasets:
        raise ValueError(f"datasets must be a non-empty list of IterDatasets, got {datasets!r}")
    for i, d in enumerate(datasets):
        if not isinstance(d, IterDataset):
            raise TypeError(
                f"datasets[{i}] must be a dataforge IterDataset, got {type(d).__name__}; "
                "wrap it with IterDataset.from_iterable(...)"
            )
    if weights is None:
        weights = [1.0] * len(datasets)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a list of numbers, got {weights!r}")
    if len(weights) != len(datasets):
        raise ValueError(
            f"weights must have one entry per dataset ({len(datasets)}), got {len(weights)}: {weights!r}"
        )
    try:
        ws = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise TypeError(f"weights must be numbers, got {weights!r}") from None
    if any(not math.isfinite(w) or w < 0 for w in ws):
        raise ValueError(f"weights must be finite and non-negative, got {weights!r}")
    if not any(w > 0 for w in ws):
        raise ValueError(f"weights must not all be zero, got {weights!r}; give at least one a positive weight")
    if stop not in _STOPS:
        raise ValueError(f"stop must be one of {_STOPS}, got {stop!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return _Mix(datasets, ws, seed, stop)
