"""Elastic resume of a loader over ``from_shards``: the states every rank took at one step
load under another world size, number of workers or engine, and the epoch completes with
every sample exactly once (NOTE [elastic shards] in datasets/elastic.py).

Ranks are simulated in one process as in ``test_elastic_resume.py``: each rank's loader
sees the world size and rank it would get from ``torch.distributed`` and its dataset is
built with them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from test_elastic_resume import rank_epochs

import dataforge
import dataforge.loading.loader as loader_mod

BS = 3
SIZES = [5, 9, 4, 11, 7, 6, 8]  # samples per shard: uneven, 50 in all


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    paths, i = [], 0
    for s, size in enumerate(SIZES):
        path = tmp_path / f"part-{s:02d}.jsonl"
        path.write_text("".join(json.dumps({"id": i + j}) + "\n" for j in range(size)))
        i += size
        paths.append(str(path))
    return paths


def _ranks(monkeypatch: pytest.MonkeyPatch, shards: list[str], world: int, *, workers: int = 0,
           buffer: int = 0, shuffle_shards: bool = False, split: str = "auto",
           equalize: str | None = None) -> list[Any]:
    loaders = []
    for r in range(world):
        monkeypatch.setattr(loader_mod, "resolve_replicas", lambda r=r: (world, r))
        ds: Any = dataforge.from_shards(shards, shuffle_shards=shuffle_shards, seed=4, split=split,
                                        num_replicas=world, rank=r, equalize=equalize)
        if buffer:
            ds = ds.shuffle(buffer, seed=2)
        loaders.append(dataforge.build_loader(ds.map(lambda x: x["id"]), BS, num_workers=workers))
    return loaders


def _resume(loaders: list[Any], states: list[Any]) -> tuple[list[list[int]], list[Any]]:
    for loader in loaders:
        loader.load_state_dict(states)
    out = rank_epochs(loaders)
    return out


EVERY = Counter(range(sum(SIZES)))


@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
@pytest.mark.parametrize(("w1", "w2"), [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_shards_resume_under_another_world_size(monkeypatch, shards, shuffle: bool, w1: int, w2: int) -> None:
    opts: dict[str, Any] = {"shuffle_shards": shuffle, "buffer": 6 if shuffle else 0}
    for stop in (1, 3):
        head, states = rank_epochs(_ranks(monkeypatch, shards, w1, **opts), stop)
        resumed = _ranks(monkeypatch, shards, w2, **opts)
        tail, ends = _resume(resumed, states)
        got = Counter(i for r in head + tail for i in r)
        assert got == EVERY, f"stop {stop}: lost {EVERY - got}, repeated {got - EVERY}"
        assert max(map(len, tail)) - min(map(len, tail)) <= 1  # NOTE [elastic shards]
        assert all(e["epoch"] == 1 and e["elastic_base"] is None for e in ends)
        fresh = _ranks(monkeypatch, shards, w2, **opts)
        for loader in fresh:
            loader.set_epoch(1)
        assert rank_epochs(resumed)[0] == rank_epochs(fresh)[0]  # the next epoch: a run started at w2


@pytest.mark.parametrize(("n1", "n2"), [(0, 2), (2, 0), (2, 1)])
def test_shards_resume_under_other_workers(monkeypatch, shards, n1: int, n2: int) -> None:
    head, states = rank_epochs(_ranks(monkeypatch, shards, 2, workers=n1, buffer=5), 2)
    resumed = _ranks(monkeypatch, shards, 2, workers=n2, buffer=5)
    tail, _ = _resume(resumed, states)
    for loader in resumed:
        loader.close()
    assert Counter(i for r in head + tail for i in r) == EVERY


def test_a_second_change_of_world_within_the_epoch(monkeypatch, shards) -> None:
    # the resumed pass's own state nests the units it was splitting (NOTE [elastic shards])
    head, states = rank_epochs(_ranks(monkeypatch, shards, 2, buffer=4, split="sample"), 2)
    middle = _ranks(monkeypatch, shards, 3, buffer=4, split="sample")
    for loader in middle:
        loader.load_state_dict(states)
    mid, states2 = rank_epochs(middle, 2)
    assert all(s["elastic_base"] is not None for s in states2)
    same = _ranks(monkeypatch, shards, 3, buffer=4, split="sample")[1]
    same.load_state_dict(states2[1])  # its own rank's state, same world: no list needed
    assert same.state_dict() == states2[1]
    tail, _ = _resume(_ranks(monkeypatch, shards, 1, buffer=4, split="sample"), states2)
    assert Counter(i for r in head + mid + tail for i in r) == EVERY


def test_one_rank_state_under_another_world_is_refused_naming_the_fix(monkeypatch, shards) -> None:
    _, states = rank_epochs(_ranks(monkeypatch, shards, 2), 1)
    (other,) = _ranks(monkeypatch, shards, 1)
    with pytest.raises(ValueError, match="pass the list of all 2 ranks' states"):
        other.load_state_dict(states[0])
    with pytest.raises(ValueError, match=r"one per rank of the saving world \(ranks 0..1"):
        other.load_state_dict([states[0], states[0]])
    _, one = rank_epochs(_ranks(monkeypatch, shards, 1), 2)
    two = _ranks(monkeypatch, shards, 2)
    tail, _ = _resume(two, one[0])  # a world of one rank: its one state is all the progress
    assert len(tail[0]) + len(tail[1]) == sum(SIZES) - 2 * BS


@pytest.mark.parametrize("equalize", ["pad", "drop"])
@pytest.mark.parametrize(("w1", "w2", "n2"), [(2, 3, 0), (3, 2, 2)])
def test_an_equalized_epoch_resumes_with_equal_batches_per_rank(monkeypatch, shards, equalize, w1, w2, n2) -> None:
    # the remainder is equalized over the new consumers (NOTE [elastic shards]): DDP ranks
    # run the same number of steps
    head, states = rank_epochs(_ranks(monkeypatch, shards, w1, buffer=4, equalize=equalize), 2)
    resumed = _ranks(monkeypatch, shards, w2, workers=n2, buffer=4, equalize=equalize)
    for loader in resumed:
        loader.load_state_dict(states)
    batches = [[b.tolist() for b in loader] for loader in resumed]
    for loader in resumed:
        loader.close()
    assert len({len(b) for b in batches}) == 1, [len(b) for b in batches]
    assert len({sum(map(len, b)) for b in batches}) == 1
    got = Counter(i for r in head for i in r) + Counter(i for b in batches for x in b for i in x)
    if equalize == "pad":  # nothing lost
        assert set(got) == set(EVERY)
    else:  # nothing repeated
        assert set(got.values()) == {1}


def test_the_trailing_map_runs_once_per_resumed_item(monkeypatch, shards) -> None:
    # the replay reads every old stream in every new consumer, but decoding (the trailing
    # maps) runs on each consumer's own items only (NOTE [elastic shards])
    _, states = rank_epochs(_ranks(monkeypatch, shards, 2, buffer=4), 2)
    calls: list[int] = []
    resumed = []
    for r in range(3):
        monkeypatch.setattr(loader_mod, "resolve_replicas", lambda r=r: (3, r))
        ds = dataforge.from_shards(shards, seed=4, num_replicas=3, rank=r).shuffle(4, seed=2)
        loader = dataforge.build_loader(ds.map(lambda x: calls.append(x["id"]) or x["id"]), BS, num_workers=0)
        loader.load_state_dict(states)
        resumed.append(loader)
    tail = [[i for b in loader for i in b.tolist()] for loader in resumed]
    assert sorted(calls) == sorted(i for r in tail for i in r)
    assert len(calls) == sum(SIZES) - 2 * 2 * BS


def test_persistent_workers_resume_under_another_world_and_continue(monkeypatch, shards) -> None:
    # the resumed pass restarts the workers with the units; the next pass is the plain epoch
    def world(w: int) -> list[Any]:
        out = []
        for r in range(w):
            monkeypatch.setattr(loader_mod, "resolve_replicas", lambda r=r: (w, r))
            ds = dataforge.from_shards(shards, shuffle_shards=True, seed=3, num_replicas=w, rank=r)
            loader = dataforge.build_loader(ds.shuffle(4, seed=1).map(lambda x: x["id"]), BS,
                                            num_workers=2, persistent_workers=True)
            out.append(loader)
        return out

    head, states = rank_epochs(world(2), 2)
    (resumed,) = world(1)
    tail, _ = _resume([resumed], states)
    assert Counter(head[0] + head[1] + tail[0]) == EVERY
    (fresh,) = world(1)
    fresh.set_epoch(1)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in fresh]
    resumed.close()
    fresh.close()


class _Plain(torch.utils.data.IterableDataset):
    def __iter__(self) -> Any:
        return iter(range(12))


def test_a_dataset_that_cannot_replay_resumes_only_under_the_saved_world() -> None:
    # replay needs a dataforge pipeline's deterministic consumer streams (NOTE [elastic shards])
    loader = dataforge.build_loader(_Plain(), BS, num_workers=0)
    next(iter(loader))
    state = loader.state_dict()
    other = dataforge.build_loader(_Plain(), BS, num_workers=2)
    with pytest.raises(ValueError, match="resumes only under the saved world size and num_workers"):
        other.load_state_dict(state)
    same = dataforge.build_loader(_Plain(), BS, num_workers=0)
    same.load_state_dict(state)
    assert [b.tolist() for b in same] == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
