"""Sharding over ranks x workers: pure functions and the property test."""

from __future__ import annotations

import pickle
from collections import Counter
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge.datasets import iterable
from dataforge.datasets.iterable import ShardedSource
from dataforge.datasets.sharding import (
    equalized_targets,
    natural_counts,
    plan_consumer,
    resolve_split,
    shard_order,
)


def make_shards(sizes: list[int]) -> list[list[tuple[int, int]]]:
    return [[(s, i) for i in range(n)] for s, n in enumerate(sizes)]


def run_world(ds: ShardedSource, ranks: int, workers: int) -> dict[tuple[int, int], list]:
    """Items per (rank, worker) through the real code path: explicit rank, patched worker info.

    ``workers=0`` is the main process (no patch): one consumer per rank.
    """
    out = {}
    for r in range(ranks):
        ds._num_replicas, ds._rank = ranks, r
        if workers == 0:
            out[r, 0] = list(ds)
            continue
        for w in range(workers):
            with mock.patch.object(iterable, "worker_info", return_value=(w, workers)):
                out[r, w] = list(ds)
    return out


world = {
    "ranks": st.integers(1, 4),
    "workers": st.integers(0, 3),
    "sizes": st.lists(st.integers(0, 6), min_size=1, max_size=9),
    "shuffle": st.booleans(),
    "seed": st.integers(0, 2**31),
    "epoch": st.integers(0, 3),
    "split": st.sampled_from(["auto", "sample"]),
}


@given(**world)
def test_every_sample_exactly_once(ranks, workers, sizes, shuffle, seed, epoch, split) -> None:
    shards = make_shards(sizes)
    ds = ShardedSource(shards, iter, shuffle_shards=shuffle, seed=seed, split=split)
    ds.set_epoch(epoch)
    got = run_world(ds, ranks, workers)
    seen = Counter(x for items in got.values() for x in items)
    assert seen == Counter(x for s in shards for x in s)


@given(equalize=st.sampled_from(["pad", "drop"]), **world)
def test_equalize_gives_equal_counts_per_rank(ranks, workers, sizes, shuffle, seed, epoch, split, equalize) -> None:
    shards = make_shards(sizes)
    everything = Counter(x for s in shards for x in s)
    ds = ShardedSource(shards, iter, shuffle_shards=shuffle, seed=seed, split=split, equalize=equalize)
    ds.set_epoch(epoch)
    got = run_world(ds, ranks, workers)
    per_rank = Counter()
    for (r, _), items in got.items():
        per_rank[r] += len(items)
    assert len(set(per_rank[r] for r in range(ranks))) == 1, per_rank
    # equal per worker slot too, so batch counts match for any batch size
    for w in range(max(workers, 1)):
        assert len({len(got[r, w]) for r in range(ranks)}) == 1
    seen = Counter(x for items in got.values() for x in items)
    if equalize == "pad":
        assert set(seen) == set(everything)  # nothing dropped
    else:
        assert all(c == 1 for c in seen.values()) and set(seen) <= set(everything)  # nothing repeated


def test_shard_order_same_for_all_ranks_and_new_per_epoch() -> None:
    assert shard_order(5, seed=0, epoch=0, shuffle=False) == [0, 1, 2, 3, 4]
    a = shard_order(50, seed=1, epoch=0, shuffle=True)
    assert a == shard_order(50, seed=1, epoch=0, shuffle=True) and sorted(a) == list(range(50))
    assert a != shard_order(50, seed=1, epoch=1, shuffle=True)
    assert a != shard_order(50, seed=2, epoch=0, shuffle=True)


def test_resolve_split() -> None:
    assert resolve_split("auto", 8, 8) == "shard"
    assert resolve_split("auto", 3, 8) == "sample"
    assert resolve_split("sample", 100, 2) == "sample"
    with pytest.raises(ValueError, match=r"got 3 shard\(s\) for 8 consumers"):
        resolve_split("shard", 3, 8)


def test_counts_and_targets() -> None:
    # 4 shards of sizes 5, 1, 2, 7 over 2 consumers: consumer 0 gets shards 0, 2
    assert natural_counts([5, 1, 2, 7], [0, 1, 2, 3], "shard", 2) == [7, 8]
    assert natural_counts([5, 1, 2, 7], [0, 1, 2, 3], "sample", 4) == [4, 4, 4, 3]
    # 2 ranks x 2 workers, natural (5, 5 | 6, 4): slots get max (6, 5) or min (5, 4)
    assert equalized_targets([5, 5, 6, 4], 2, 2, "pad") == [6, 5, 6, 5]
    assert equalized_targets([5, 5, 6, 4], 2, 2, "drop") == [5, 4, 5, 4]
    assert equalized_targets([5, 5, 6, 4], 2, 2, None) is None


def test_plan_consumer() -> None:
    p = plan_consumer(6, rank=1, num_replicas=2, worker=0, num_workers=2)
    assert (p.mode, p.shards, p.stride) == ("shard", [2], 1)
    p = plan_consumer(2, rank=1, num_replicas=2, worker=1, num_workers=2, counts=[3, 3], equalize="pad")
    assert (p.mode, p.offset, p.stride, p.target) == ("sample", 3, 4, 2)
    with pytest.raises(ValueError, match="counts"):
        plan_consumer(2, rank=0, num_replicas=1, worker=0, num_workers=1, equalize="pad")


def test_forced_shard_split_with_too_few_shards() -> None:
    with pytest.raises(ValueError, match=r"got 2 shard\(s\) for 3 consumers"):
        ShardedSource([[1], [2]], iter, split="shard", num_replicas=3, rank=0)
    ds = ShardedSource([[1], [2], [3]], iter, split="shard", num_replicas=3, rank=0)
    with mock.patch.object(iterable, "worker_info", return_value=(0, 2)), pytest.raises(
        ValueError, match=r"got 3 shard\(s\) for 6 consumers"
    ):
        list(ds)


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"split": "rows"}, ValueError, "split"),
        ({"equalize": "trim"}, ValueError, "equalize"),
        ({"samples_per_shard": [1]}, ValueError, "samples_per_shard"),
        ({"samples_per_shard": [1, -1]}, ValueError, "samples_per_shard"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"rank": 2, "num_replicas": 2}, ValueError, "rank"),
    ],
)
def test_sharded_source_validation(kwargs, exc, word) -> None:
    with pytest.raises(exc, match=word):
        ShardedSource([[1], [2]], iter, **kwargs)
    with pytest.raises(ValueError, match="shards"):
        ShardedSource([], iter)


def test_samples_per_shard_given_or_counted() -> None:
    shards = [[1, 2], [3]]
    assert ShardedSource(shards, iter, equalize="pad").samples_per_shard == [2, 1]
    assert ShardedSource(shards, iter, equalize="pad", samples_per_shard=4).samples_per_shard == [4, 4]
    assert ShardedSource(shards, iter).samples_per_shard is None  # no pass without equalize


def test_pad_when_a_consumer_has_no_sample_of_its_own() -> None:
    ds = ShardedSource([[7]], iter, equalize="pad")
    assert [list(ds.consumer_iter(r, 3, 0, 1)) for r in range(3)] == [[7], [7], [7]]
    ds = ShardedSource([[7]], iter, equalize="drop")
    assert [list(ds.consumer_iter(r, 3, 0, 1)) for r in range(3)] == [[], [], []]


def test_equalize_holds_when_a_shard_yields_less_than_counted() -> None:
    ds = ShardedSource([[1, 2], [3, 4]], iter, equalize="pad", samples_per_shard=[2, 5])
    a, b = (list(ds.consumer_iter(r, 2, 0, 1)) for r in range(2))
    assert len(a) == len(b) == 5 and a == [1, 2, 1, 2, 1] and b == [3, 4, 3, 4, 3]


def test_pickled_source_keeps_its_plan() -> None:
    ds = ShardedSource([list(range(5)), list(range(5, 9))], iter, num_replicas=2, rank=1, equalize="pad")
    assert list(pickle.loads(pickle.dumps(ds))) == list(ds) == [5, 6, 7, 8, 5]
