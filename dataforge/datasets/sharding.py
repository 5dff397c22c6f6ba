"""Which shards / samples each (rank, worker) consumer reads, and rank equalization.

Consumers are the ``num_replicas x num_workers`` DataLoader workers of a
distributed run; consumer id = ``rank * num_workers + worker_id``. The functions
here are pure (no I/O, no global state) so that the property test can check them
for any world; :class:`ShardedSource` applies them to a list of shards.

NOTE [split]: by shard when there are at least as many shards as consumers
(consumer ``c`` reads shards ``order[c::C]``, each shard opened once overall),
else by sample (every consumer walks the whole concatenated stream and keeps
items ``c, c + C, ...``; readers skip the others' items without decoding them,
``from_shards`` even seeks over their tar members in local files). Either way
every sample is seen exactly once per epoch.

NOTE [equalize per worker slot]: DDP hangs when ranks run different numbers of
steps, and a DataLoader batches each worker's items separately, so equal sample
counts per rank are not enough: rank 0 with workers yielding (5, 5) and rank 1
with (6, 4) give different batch counts for batch_size 4. So equalization targets
each worker SLOT: worker ``w`` of every rank yields the max (``"pad"``) or min
(``"drop"``) over ranks of what worker ``w`` would naturally yield. Ranks then
yield equal sample AND batch counts, for any batch size, provided every rank uses
the same ``num_workers``. ``"pad"`` never drops a sample, ``"drop"`` never repeats one.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from dataforge._dist import resolve_replicas, worker_info
from dataforge._rng import mix_seed
from dataforge.datasets.iterable import IterDataset

T = TypeVar("T")
S = TypeVar("S")

SPLITS = ("auto", "shard", "sample")
EQUALIZE = (None, "pad", "drop")


def shard_order(num_shards: int, *, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """Shard indices in reading order: identity, or a permutation of (seed, epoch) same on all ranks."""
    order = list(range(num_shards))
    if shuffle:
        random.Random(mix_seed(seed, epoch)).shuffle(order)
    return order


def resolve_split(split: str, num_shards: int, num_consumers: int) -> Literal["shard", "sample"]:
    """``"shard"`` or ``"sample"`` for this world (see NOTE [split])."""
    if split == "sample":
        return "sample"
    if num_shards >= num_consumers:
        return "shard"
    if split == "shard":
        raise ValueError(
            f"split='shard' needs at least as many shards as consumers, got {num_shards} shard(s) "
            f"for {num_consumers} consumers (ranks x DataLoader workers); use more shards, fewer "
            "workers, or split='auto' / 'sample' to split by sample"
        )
    return "sample"


def natural_counts(counts: Sequence[int], order: Sequence[int], mode: str, num_consumers: int) -> list[int]:
    """Samples each consumer yields without equalization, from per-shard ``counts``."""
    if mode == "shard":
        out = [0] * num_consumers
        for pos, s in enumerate(order):
            out[pos % num_consumers] += counts[s]
        return out
    total = sum(counts)
    return [len(range(c, total, num_consumers)) for c in range(num_consumers)]


def equalized_targets(
    natural: Sequence[int], num_replicas: int, num_workers: int, equalize: str | None
) -> list[int] | None:
    """Per-consumer target counts (see NOTE [equalize per worker slot]); ``None`` without equalize."""
    if equalize is None:
        return None
    pick = max if equalize == "pad" else min
    slot = [pick(natural[r * num_workers + w] for r in range(num_replicas)) for w in range(num_workers)]
    return [slot[c % num_workers] for c in range(num_replicas * num_workers)]


@dataclass(frozen=True)
class ConsumerPlan:
    """What one consumer reads: ``shards`` (in order), then keeps every ``stride``-th
    item from ``offset`` (stride 1 when split by shard); yields exactly ``target``
    items when equalizing."""

    mode: Literal["shard", "sample"]
    shards: list[int]
    offset: int
    stride: int
    target: int | None


def plan_consumer(
    num_shards: int,
    *,
    rank: int,
    num_replicas: int,
    worker: int,
    num_workers: int,
    epoch: int = 0,
    seed: int = 0,
    shuffle_shards: bool = False,
    split: str = "auto",
    equalize: str | None = None,
    counts: Sequence[int] | None = None,
) -> ConsumerPlan:
    """The :class:`ConsumerPlan` of consumer ``(rank, worker)``; ``counts`` needed with ``equalize``."""
    n_cons = num_replicas * num_workers
    cid = rank * num_workers + worker
    order = shard_order(num_shards, seed=seed, epoch=epoch, shuffle=shuffle_shards)
    mode = resolve_split(split, num_shards, n_cons)
    target = None
    if equalize is not None:
        if counts is None:
            raise ValueError(f"equalize={equalize!r} needs per-shard sample counts, got counts=None")
        natural = natural_counts(counts, order, mode, n_cons)
        target = equalized_targets(natural, num_replicas, num_workers, equalize)[cid]  # type: ignore[index]
    if mode == "shard":
        return ConsumerPlan("shard", order[cid::n_cons], 0, 1, target)
    return ConsumerPlan("sample", order, cid, n_cons, target)


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
        worker, num_workers = worker_info()
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
