"""Elastic resume of a map-style loader: a state saved under one world size, number of
workers and engine loads under another (NOTE [elastic resume] in loading/plan.py).

Ranks are simulated in one process: each rank's loader is built with the world size
and rank it would get from ``torch.distributed`` (``resolve_replicas`` patched where
the loader reads it). The real multi-process run is ``test_elastic_chaos.py``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

import dataforge
import dataforge.loading.loader as loader_mod
from dataforge.samplers.bucket import BucketBatchSampler
from dataforge.samplers.class_balanced import ClassBalancedSampler
from dataforge.samplers.weighted import WeightedSampler

N, BS = 60, 4


def _make(kind: str, world: int, rank: int, workers: int = 0, engine: str = "process", n: int = N) -> Any:
    sampler: Any = None
    if kind == "weighted":
        sampler = WeightedSampler(torch.arange(1, n + 1).float(), n, seed=5, num_replicas=world, rank=rank)
    elif kind == "balanced":
        sampler = ClassBalancedSampler([i % 3 for i in range(n)], num_samples=n, seed=5,
                                       num_replicas=world, rank=rank)
    return dataforge.build_loader(
        torch.arange(n), BS, shuffle=kind == "shuffle", sampler=sampler, seed=7, num_workers=workers,
        engine=engine,
    )


def _ranks(monkeypatch: pytest.MonkeyPatch, kind: str, world: int, **kw: Any) -> list[Any]:
    loaders = []
    for r in range(world):
        monkeypatch.setattr(loader_mod, "resolve_replicas", lambda r=r: (world, r))
        loaders.append(_make(kind, world, r, **kw))
    return loaders


def rank_epochs(loaders: list[Any], stop: int | None = None) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """Each rank's sample ids (at most ``stop`` batches) and each rank's state after them."""
    ids, states = [], []
    for loader in loaders:
        got: list[int] = []
        for i, b in enumerate(loader):
            got.extend(b.tolist())
            if stop is not None and i + 1 == stop:
                break
        ids.append(got)
        states.append(json.loads(json.dumps(loader.state_dict())))
    return ids, states


# NOTE: the stops leave a rest divisible by the new world size: otherwise the new ranks pad
# their shares by repeating the order's start, as DistributedSampler does
@pytest.mark.parametrize("kind", ["shuffle", "sequential", "weighted", "balanced"])
@pytest.mark.parametrize(("w1", "w2", "stop"), [(1, 2, 5), (2, 1, 3), (2, 3, 3), (3, 2, 1)])
def test_resume_under_another_world_size(monkeypatch, kind: str, w1: int, w2: int, stop: int) -> None:
    full, _ = rank_epochs(_ranks(monkeypatch, kind, w1))
    head, states = rank_epochs(_ranks(monkeypatch, kind, w1), stop)
    assert all(s == states[0] for s in states)  # global progress: one dict on every rank
    resumed = _ranks(monkeypatch, kind, w2)
    for loader in resumed:
        loader.load_state_dict(states[0])
    tail, ends = rank_epochs(resumed)
    assert Counter(i for r in head + tail for i in r) == Counter(i for r in full for i in r)
    assert len({len(r) for r in tail}) == 1  # every new rank the same number of samples
    assert all(e["epoch"] == 1 and e["batches_yielded"] == 0 for e in ends)
    fresh = _ranks(monkeypatch, kind, w2)
    for loader in fresh:
        loader.set_epoch(1)
    assert rank_epochs(resumed)[0] == rank_epochs(fresh)[0]  # the next epoch: a run started at w2


@pytest.mark.parametrize("kind", ["shuffle", "weighted", "balanced"])
@pytest.mark.parametrize(("w1", "w2"), [(1, 2), (2, 1), (2, 3), (3, 2), (3, 4)])
def test_an_epoch_that_does_not_divide_loses_nothing_and_repeats_only_padding(
    monkeypatch, kind: str, w1: int, w2: int
) -> None:
    # NOTE [exactly once] in loading/state.py: the repeats are the resuming run's padding
    n = 61
    order = rank_epochs(_ranks(monkeypatch, kind, 1, n=n))[0][0]  # the epoch's global order
    rng = random.Random(f"{kind}-{w1}-{w2}")
    batches = math.ceil(math.ceil(n / w1) / BS)  # per rank at w1
    for stop in rng.sample(range(1, batches), 2):
        head, states = rank_epochs(_ranks(monkeypatch, kind, w1, n=n), stop)
        resumed = _ranks(monkeypatch, kind, w2, n=n)
        for loader in resumed:
            loader.load_state_dict(states[0])
        tail, _ = rank_epochs(resumed)
        got = Counter(i for r in head + tail for i in r)
        assert not Counter(order) - got, f"stop {stop}: lost {Counter(order) - got}"
        rest = n - states[0]["sampler_state"]["position"]
        pad = -rest % w2
        assert got - Counter(order) == Counter(order[:pad]) and pad < w2, f"stop {stop}"
        assert len({len(r) for r in tail}) == 1


def _buckets(monkeypatch: pytest.MonkeyPatch, world: int) -> list[Any]:
    loaders = []
    for r in range(world):
        monkeypatch.setattr(loader_mod, "resolve_replicas", lambda r=r: (world, r))
        bucket = BucketBatchSampler([1 + (i * 7) % 13 for i in range(61)], max_tokens=24, seed=3,
                                    num_replicas=world, rank=r)
        loaders.append(dataforge.build_loader(torch.arange(61), batch_sampler=bucket, num_workers=0))
    return loaders


def _batch_lists(loaders: list[Any], stop: int | None = None) -> tuple[list[list[Any]], list[Any]]:
    out, states = [], []
    for loader in loaders:
        got = []
        for i, b in enumerate(loader):
            got.append(tuple(b.tolist()))
            if stop is not None and i + 1 == stop:
                break
        out.append(got)
        states.append(json.loads(json.dumps(loader.state_dict())))
    return out, states


@pytest.mark.parametrize(("w1", "w2"), [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_a_bucket_batch_sampler_resumes_under_another_world_size(monkeypatch, w1: int, w2: int) -> None:
    # its global order is of batches: the rest of them is split over the new ranks, and the
    # repeats are the new run's padding batches (NOTE [exactly once] in loading/state.py)
    order = _batch_lists(_buckets(monkeypatch, 1))[0][0]
    for stop in (1, 2, 3):
        head, states = _batch_lists(_buckets(monkeypatch, w1), stop)
        assert all(s == states[0] for s in states)
        resumed = _buckets(monkeypatch, w2)
        for loader in resumed:
            loader.load_state_dict(states[0])
        tail, _ = _batch_lists(resumed)
        got = Counter(b for r in head + tail for b in r)
        pad = -(len(order) - states[0]["sampler_state"]["position"]) % w2
        assert not Counter(order) - got and got - Counter(order) == Counter(order[:pad]), stop
        assert len({len(r) for r in tail}) == 1
        fresh = _buckets(monkeypatch, w2)
        for loader in fresh:
            loader.set_epoch(1)
        assert _batch_lists(resumed)[0] == _batch_lists(fresh)[0]


def test_without_a_sampler_the_epoch_is_split_like_distributed_sampler(monkeypatch) -> None:
    for kind in ("shuffle", "sequential"):
        ids, _ = rank_epochs(_ranks(monkeypatch, kind, 3))
        assert sorted(i for r in ids for i in r) == list(range(N))
    monkeypatch.setattr(loader_mod, "resolve_replicas", lambda: (2, 1))
    odd = dataforge.build_loader(list(range(5)), batch_size=None, num_workers=0)
    stock = torch.utils.data.DistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
    assert list(odd) == list(stock) == [1, 3, 0]


@pytest.mark.parametrize(("workers", "engine"), [(2, "process"), (2, "thread")])
def test_resume_under_other_workers_and_engine(monkeypatch, workers: int, engine: str) -> None:
    full, _ = rank_epochs(_ranks(monkeypatch, "shuffle", 2))
    head, states = rank_epochs(_ranks(monkeypatch, "shuffle", 2), 3)
    resumed = _ranks(monkeypatch, "shuffle", 2, workers=workers, engine=engine)
    for loader in resumed:
        loader.load_state_dict(states[0])
    tail, _ = rank_epochs(resumed)
    for loader in resumed:
        loader.close()
    assert [h + t for h, t in zip(head, tail)] == full


class _Plain(torch.utils.data.Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Any:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


def _with_plain(monkeypatch: pytest.MonkeyPatch, world: int) -> Any:
    monkeypatch.setattr(loader_mod, "resolve_replicas", lambda: (world, 0))
    return dataforge.build_loader(torch.arange(N), BS, sampler=_Plain(N), num_workers=0)


def test_a_sampler_without_state_refuses_another_world_size(monkeypatch) -> None:
    a = _with_plain(monkeypatch, 2)
    it = iter(a)
    next(it)
    state = a.state_dict()
    with pytest.raises(ValueError, match="world size 2 and the world size is 3 now.*_Plain has no state_dict"):
        _with_plain(monkeypatch, 3).load_state_dict(state)
    same = _with_plain(monkeypatch, 2)
    same.load_state_dict(state)  # the saved world size: replayed exactly
    assert [b.tolist() for b in same] == [b.tolist() for b in it]


def _version1(state: dict[str, Any]) -> dict[str, Any]:
    old = {k: v for k, v in state.items() if k != "num_replicas"}
    return {**old, "version": 1, "sampler_state": None}


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_version1_state_of_the_own_order_is_converted(shuffle: bool) -> None:
    def make() -> Any:
        return dataforge.build_loader(torch.arange(N), BS, shuffle=shuffle, seed=3, num_workers=0)

    a = make()
    it = iter(a)
    for _ in range(4):
        next(it)
    b = make()
    b.load_state_dict(_version1(a.state_dict()))
    assert [x.tolist() for x in b] == [x.tolist() for x in it]


def test_a_state_of_another_version_is_refused() -> None:
    loader = dataforge.build_loader(torch.arange(N), BS, num_workers=0)
    with pytest.raises(ValueError, match="'version' is 7; this dataforge reads version 2"):
        loader.load_state_dict({**loader.state_dict(), "version": 7})
    bad: Callable[[], None] = lambda: loader.load_state_dict({**loader.state_dict(), "num_replicas": 0})  # noqa: E731
    with pytest.raises(ValueError, match="num_replicas"):
        bad()


def test_one_iterable_loader_state_loads_only_on_its_rank_and_world_size(monkeypatch) -> None:
    # its progress is the rank's own worker streams (NOTE [loader state]), not global: another
    # world takes the list of every rank's state (test_elastic_shards.py)
    def on(world: int, rank: int) -> Any:
        monkeypatch.setattr(loader_mod, "resolve_replicas", lambda: (world, rank))
        return dataforge.build_loader(dataforge.IterDataset.from_iterable(range(8)), 2, num_workers=0)

    a = on(2, 0)
    next(iter(a))
    state = a.state_dict()
    assert state["rank"] == 0
    with pytest.raises(ValueError, match="saved by rank 0 and this is rank 1"):
        on(2, 1).load_state_dict(state)
    with pytest.raises(ValueError, match="saved under world size 2 with num_workers=0 and the world size is 1"):
        on(1, 0).load_state_dict(state)
    same = on(2, 0)
    same.load_state_dict(state)
    assert same.state_dict() == state
