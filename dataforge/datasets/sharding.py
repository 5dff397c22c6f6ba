"""Which shards / samples each (rank, worker) consumer reads, and rank equalization.

Consumers are the ``num_replicas x num_workers`` DataLoader workers of a
distributed run; consumer id = ``rank * num_workers + worker_id``. The functions
here are pure (no I/O, no global state) so that the property test can check them
for any world; :class:`~dataforge.datasets.iterable.ShardedSource` applies them to a
list of shards.

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

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from dataforge._rng import mix_seed

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
