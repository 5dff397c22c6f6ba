"""Iterable datasets: the base class, its composition ops and the sharded source.

An :class:`IterDataset` is a ``torch.utils.data.IterableDataset``: it works in a
stock ``DataLoader``. A subclass implements ``_iter()``; the base class owns the
ops, ``set_epoch`` propagation and a replay-based ``state_dict``.

NOTE [who splits the work]: sources (``from_shards``, ``IterDataset.from_iterable``,
anything built on :class:`ShardedSource`) split their
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
a copy of the dataset when they start, so under a stock ``DataLoader`` with
``persistent_workers=True`` they keep the epoch they started with (shard order and
shuffle would then repeat). ``dataforge.build_loader`` sets the epoch in every
worker at the start of each pass, persistent workers included.

NOTE [elastic shards] (a pass resumed under another world) is in :mod:`dataforge.datasets.elastic`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, Generic, Literal, TypeVar

import torch.distributed as dist
import torch.utils.data

from dataforge._dist import replayed_consumer, resolve_replicas, worker_info
from dataforge._rng import mix_seed
from dataforge.datasets.batched_map import map_items
from dataforge.datasets.sharding import EQUALIZE, SPLITS, ConsumerPlan, plan_consumer, resolve_split

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")


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

    def trailing_maps(self) -> tuple[IterDataset[Any], list[Callable[[Any], Any]]]:
        """The pipeline without its trailing ``map`` ops, and their functions in the order
        they apply: a map keeps the count and order of its source's items, so they can run
        after a split of the items (:func:`dataforge.datasets.elastic.elastic_items`)."""
        return self, []

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
        ident = replayed_consumer()
        if ident is not None:  # NOTE [elastic shards] in dataforge.datasets.elastic
            return ident[0], ident[1]
        srcs = self._sources()
        if srcs:
            return srcs[0]._replicas()
        return resolve_replicas(self._num_replicas, self._rank)

    def _consumer_seed(self, seed: int) -> int:
        """A seed for (seed, epoch, rank, worker): reproducible, distinct per consumer."""
        _, rank = self._replicas()
        worker, _ = _worker()
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
        """Apply ``fn`` to every item (a group of items per ``fn.call_batch`` call where ``fn``
        has one, as the image presets do: NOTE [batched map] in
        :mod:`dataforge.datasets.batched_map`)."""
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


def _worker() -> tuple[int, int]:
    """``(worker, num_workers)`` of the consumer the pipeline runs as (NOTE [elastic shards]
    in :mod:`dataforge.datasets.elastic`)."""
    ident = replayed_consumer()
    return (ident[2], ident[3]) if ident is not None else worker_info()


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
        return map_items(self._fn, iter(self._source))

    def trailing_maps(self) -> tuple[IterDataset[Any], list[Callable[[Any], Any]]]:
        inner, fns = self._source.trailing_maps()
        return inner, [*fns, self._fn]


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


class ShardedSource(IterDataset[T]):
    """An IterDataset over ``shards`` that splits itself over ranks and workers.

    Args:
        shards: shard descriptions (URLs, lists, ...), passed to ``open_shard``.
        open_shard: ``shard -> iterable of samples``; called once per shard read.
        samples_per_shard: per-shard counts (a list, or one int for all); needed by
            ``equalize``. When missing with ``equalize``, one counting pass over every
            shard runs here, in the constructor (``count_shard``, else ``open_shard``).
        count_shard: a cheaper ``shard -> count`` for that pass.
        shuffle_shards: shuffle the shard order each epoch (same order on all ranks).
        seed: seed of the shard order.
        split: ``"auto"``, ``"shard"`` or ``"sample"`` (see NOTE [split]).
        equalize: ``None``, ``"pad"`` or ``"drop"`` (see NOTE [equalize per worker slot]).
        num_replicas: world size; default from ``torch.distributed`` or 1.
        rank: this rank; default from ``torch.distributed`` or 0.

    Example:
        >>> ds = ShardedSource([[0, 1], [2, 3, 4]], iter, num_replicas=2, rank=0)
        >>> list(ds), list(ShardedSource([[0, 1], [2, 3, 4]], iter, num_replicas=2, rank=1))
        ([0, 1], [2, 3, 4])
        >>> list(ShardedSource([[0, 1], [2, 3, 4]], iter, num_replicas=2, rank=0, equalize="drop"))
        [0, 1]
    """

    def __init__(
        self,
        shards: Sequence[S],
        open_shard: Callable[[S], Iterable[T]],
        *,
        samples_per_shard: int | Sequence[int] | None = None,
        count_shard: Callable[[S], int] | None = None,
        shuffle_shards: bool = False,
        seed: int = 0,
        split: str = "auto",
        equalize: str | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if isinstance(shards, (str, bytes)) or not isinstance(shards, Sequence) or not shards:
            raise ValueError(f"shards must be a non-empty list, got {shards!r}")
        if not callable(open_shard):
            raise TypeError(f"open_shard must be callable, got {open_shard!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {EQUALIZE}, got {equalize!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if num_replicas is not None or rank is not None:
            world, _ = resolve_replicas(num_replicas, rank)  # validates early
            if split == "shard" and len(shards) < world:
                resolve_split(split, len(shards), world)  # raises with the counts
        self.shards = list(shards)
        self._open_shard = open_shard
        self._num_replicas, self._rank = num_replicas, rank
        self.shuffle_shards = bool(shuffle_shards)
        self.seed, self.split, self.equalize = seed, split, equalize
        self.samples_per_shard = self._resolve_counts(samples_per_shard, count_shard)

    def _resolve_counts(self, spec: int | Sequence[int] | None, count_shard: Any) -> list[int] | None:
        n = len(self.shards)
        if spec is None:
            if self.equalize is None:
                return None
            count = count_shard or (lambda s: sum(1 for _ in self._open_shard(s)))
            return [int(count(s)) for s in self.shards]
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec = [spec] * n
        if (
            isinstance(spec, (str, bytes))
            or not isinstance(spec, Sequence)
            or len(spec) != n
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in spec)
        ):
            raise ValueError(
                f"samples_per_shard must be a non-negative int or a list of {n} of them "
                f"(one per shard), got {spec!r}"
            )
        return list(spec)

    def plan(self, rank: int, num_replicas: int, worker: int, num_workers: int) -> ConsumerPlan:
        return plan_consumer(
            len(self.shards), rank=rank, num_replicas=num_replicas, worker=worker,
            num_workers=num_workers, epoch=self._epoch, seed=self.seed,
            shuffle_shards=self.shuffle_shards, split=self.split, equalize=self.equalize,
            counts=self.samples_per_shard,
        )

    def _iter(self) -> Iterator[T]:
        num_replicas, rank = self._replicas()
        worker, num_workers = _worker()
        return self.consumer_iter(rank, num_replicas, worker, num_workers)

    def consumer_iter(self, rank: int, num_replicas: int, worker: int, num_workers: int) -> Iterator[T]:
        """The items of one consumer, for explicit (rank, worker) values (tests, custom loaders)."""
        p = self.plan(rank, num_replicas, worker, num_workers)
        if p.target is None:
            return self._stream(p)
        return self._equalized(p)

    def _stream(self, p: ConsumerPlan) -> Iterator[T]:
        keep = None
        if p.stride > 1:
            index = itertools.count()

            def keep() -> bool:
                return next(index) % p.stride == p.offset

        return itertools.chain.from_iterable(self._open(self.shards[s], keep) for s in p.shards)

    def _open(self, shard: Any, keep: Callable[[], bool] | None) -> Iterable[T]:
        """Items of one shard; ``keep()`` (when given) is asked once per item, in stream
        order, whether this consumer keeps it. Readers override this to skip the data
        of rejected items instead of decoding it (see ``ShardDataset``)."""
        items = self._open_shard(shard)
        return items if keep is None else (x for x in items if keep())

    def _equalized(self, p: ConsumerPlan) -> Iterator[T]:
        target = p.target or 0
        n = 0
        for x in itertools.islice(self._stream(p), target):
            yield x
            n += 1
        # pad: cycle this consumer's own stream; when it has nothing (more consumers
        # than samples, or only empty shards) cycle the whole stream instead.
        everything = ConsumerPlan("shard", list(range(len(self.shards))), 0, 1, None)
        for plan in (p, everything):
            while n < target:
                got = 0
                for x in self._stream(plan):
                    yield x
                    n, got = n + 1, got + 1
                    if n >= target:
                        return
                if not got:
                    break
        if n < target:
            raise RuntimeError(
                f"equalize={self.equalize!r} must yield {target} samples on this consumer but "
                f"the {len(self.shards)} shard(s) yielded none to pad with"
            )
