"""Resuming an iterable pipeline's pass under another world: replaying old consumers.

NOTE [elastic shards]: a pass that resumes under another world (other ranks, workers
or engine) replays the OLD consumers. Every pipeline is deterministic given (seed,
epoch, rank, worker) (NOTE [resume by replay] in :mod:`dataforge.datasets.iterable`), so old consumer ``(rank, worker)`` of
a world of ``num_replicas x num_workers`` is re-created exactly by iterating the
pipeline under that identity (:func:`replay_as`; :class:`IterDataset` and
:class:`ShardedSource` read it with ``dataforge._dist.replayed_consumer``), whatever ops, shuffle buffers,
shard orders and ``equalize`` it holds. A *unit* is one old consumer's stream minus
the ``skip`` items it had delivered; the new consumer ``c`` of ``C`` takes items
``c, c + C, ...`` of the units' concatenation (:func:`elastic_items`), so every item
not yet delivered is delivered exactly once, and new consumers' counts differ by at
most one. A unit's stream may itself be an elastic consumer's (``base``: a second
change of world within the epoch), so the units nest. The cost is replay: every new
consumer reads every unit, consumed part included, for the rest of the resumed epoch
only (the pipeline's trailing ``map`` ops, decoding mostly, run on the consumer's own
items only, so they run once per item); the next epoch
is split as a run started under the new world splits it. With ``equalize`` (of the
pipeline's sharded sources) the remainder is equalized again, over the new consumers:
``"pad"`` repeats one item on the consumers one short, ``"drop"`` leaves out the last
incomplete round (at most ``C - 1`` items), so every new rank and worker slot gets the
same count and DDP ranks the same number of batches; without it counts differ by at
most one item per consumer. Pad repeats the old consumers had planned are delivered
as planned (NOTE [equalize per worker slot] in :mod:`dataforge.datasets.sharding`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from dataforge._dist import set_replayed_consumer
from dataforge.datasets.batched_map import map_items
from dataforge.datasets.iterable import IterDataset, ShardedSource

T = TypeVar("T")


def replay_as(dataset: Iterable[T], ident: tuple[int, int, int, int]) -> Iterator[T]:
    """``dataset``'s items as consumer ``ident = (num_replicas, rank, worker, num_workers)``
    yields them (NOTE [elastic shards]); the identity holds in this thread during each
    step only, so several replays interleave."""
    it: Iterator[T] | None = None
    end = object()
    while True:
        before = set_replayed_consumer(ident)
        try:
            if it is None:
                it = iter(dataset)
            x = next(it, end)
        finally:
            set_replayed_consumer(before)
        if x is end:
            return
        yield x  # type: ignore[misc]


# the fields of a unit (NOTE [elastic shards]): the old consumer, the items it delivered,
# and the units it read itself (None: its natural stream)
UNIT_KEYS = ("num_replicas", "rank", "num_workers", "worker", "skip", "base")


def _unit_stream(dataset: Iterable[T], unit: dict[str, Any]) -> Iterator[T]:
    world, rank, workers, worker = (unit[k] for k in UNIT_KEYS[:4])
    if unit["base"] is None:
        stream = replay_as(dataset, (world, rank, worker, workers))
    else:
        stream = elastic_items(dataset, unit["base"], rank * workers + worker, world * workers)
    return itertools.islice(stream, unit["skip"], None)


def _equalize_of(dataset: Any) -> str | None:
    """The ``equalize`` of the pipeline's sharded sources: ``"pad"`` if any pads, else
    ``"drop"`` if any drops, else ``None`` (NOTE [elastic shards])."""
    found: set[str] = set()
    todo = [dataset]
    while todo:
        ds = todo.pop()
        if isinstance(ds, ShardedSource) and ds.equalize is not None:
            found.add(ds.equalize)
        if isinstance(ds, IterDataset):
            todo.extend(ds.sources())
    return "pad" if "pad" in found else "drop" if "drop" in found else None


def _round_robin(stream: Iterator[T], consumer: int, num_consumers: int, equalize: str | None) -> Iterator[T]:
    """Items ``consumer, consumer + num_consumers, ...`` of ``stream``; with ``equalize``
    every consumer gets the same count: ``"pad"`` repeats its first item (the stream's
    when it has none) once after the last round's end, ``"drop"`` yields an item only
    once its round is complete."""
    if equalize is None:
        yield from itertools.islice(stream, consumer, None, num_consumers)
        return
    n, last, mine = 0, num_consumers - 1, 0
    first: tuple[T] | None = None  # its first item, else the stream's
    pending: tuple[T] | None = None
    for i, x in enumerate(stream):
        n = i + 1
        if i == 0 or i == consumer:
            first = (x,)
        if i % num_consumers == consumer:
            if equalize == "pad":
                mine += 1
                yield x
            else:
                pending = (x,)
        if pending is not None and i % num_consumers == last:  # "drop": its round is complete
            yield pending[0]
            pending = None
    if equalize == "pad" and first is not None and mine < -(-n // num_consumers):
        yield first[0]


def elastic_items(dataset: Iterable[T], units: list[dict[str, Any]], consumer: int, num_consumers: int) -> Iterator[T]:
    """Items ``consumer, consumer + num_consumers, ...`` of the ``units``' remainders in
    order, equal counts per consumer when the pipeline equalizes (NOTE [elastic shards]);
    every unit is a dict with :data:`UNIT_KEYS`."""
    equalize = _equalize_of(dataset)
    # trailing maps (decoding, mostly) run on this consumer's items only: a map keeps
    # the count and order of its source's items
    fns: list[Callable[[Any], Any]] = []
    if isinstance(dataset, IterDataset):
        dataset, fns = dataset.trailing_maps()
    stream = itertools.chain.from_iterable(_unit_stream(dataset, u) for u in units)
    mine: Iterator[Any] = _round_robin(stream, consumer, num_consumers, equalize)
    for fn in fns:
        mine = map_items(fn, mine)
    return mine


def check_units(units: Any, what: str) -> list[dict[str, Any]]:
    """``units`` if it is a well-formed list of units (NOTE [elastic shards]), else a
    ``ValueError`` naming ``what``."""
    ok = isinstance(units, list) and all(
        isinstance(u, dict) and set(u) == set(UNIT_KEYS)
        and all(isinstance(u[k], int) and not isinstance(u[k], bool) and u[k] >= 0 for k in UNIT_KEYS[:5])
        and u["num_replicas"] >= 1 and u["num_workers"] >= 1
        and u["rank"] < u["num_replicas"] and u["worker"] < u["num_workers"]
        and (u["base"] is None or check_units(u["base"], what) is not None)
        for u in units
    )
    if not ok:
        raise ValueError(
            f"{what} must be a list of dicts with keys {list(UNIT_KEYS)} (ints, rank < num_replicas, "
            f"worker < num_workers, base None or such a list), got {units!r}; pass a dict from "
            "Loader.state_dict()"
        )
    return units
