"""The dataset's own state nested in the loader's (NOTE [dataset state] in loading/state.py).

A dataset with ``state_dict``/``load_state_dict`` is saved and restored by the loader:
map-style in the main process, iterable in every worker, whose copies are then not
fast-forwarded a second time by the loader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from helpers import run_test_save_load_state

import dataforge


class Cursor(torch.utils.data.IterableDataset):
    """Worker ``w`` streams ``(w, i, passes)`` for ``i < sizes[w]``. It keeps its position and
    its pass count itself (as torchdata's test datasets do): loading a state resumes at that
    position, and ``iter()`` after a finished stream starts the next pass."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.pos, self.passes = 0, 0
        self.resume: int | None = None

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        info = torch.utils.data.get_worker_info()
        w = 0 if info is None else info.id
        size = sum(self.sizes) if info is None else self.sizes[w]
        start, self.resume = self.resume or 0, None
        for i in range(start, size):
            self.pos = i + 1
            yield w, i, self.passes
        self.pos, self.passes = 0, self.passes + 1

    def state_dict(self) -> dict[str, int]:
        return {"pos": self.pos, "passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume, self.passes = state["pos"], state["passes"]


def _rows(batch: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    return list(batch)


WORKERS = [(0, None), (2, False), (2, True)]


@pytest.mark.parametrize(("workers", "persistent"), WORKERS)
def test_a_dataset_keeping_its_own_position_resumes_at_every_step(workers: int, persistent: Any) -> None:
    # uneven worker streams: worker 0 ends first, and its ended stream is not iterated again
    # (that would start its next pass); a second skip by the loader would lose samples
    def make() -> Any:
        return dataforge.build_loader(
            Cursor([5, 8]), 3, num_workers=workers, persistent_workers=persistent, collate_fn=_rows
        )

    run_test_save_load_state(make, checkpoints=range(6), epochs=2)


@pytest.mark.parametrize(("workers", "persistent"), WORKERS)
def test_a_state_taken_after_an_epoch_carries_the_dataset_into_the_next(workers: int, persistent: Any) -> None:
    def make() -> Any:
        return dataforge.build_loader(
            Cursor([4, 6]), 2, num_workers=workers, persistent_workers=persistent, collate_fn=_rows
        )

    a = make()
    list(a)
    state = json.loads(json.dumps(a.state_dict()))
    assert state["epoch"] == 1 and len(state["dataset_state"]) == max(1, workers)
    following = list(a)
    b = make()
    b.load_state_dict(state)
    assert list(b) == following
    # the copies count their passes only where they persist (a stock DataLoader's rule)
    assert {p for batch in following for _, _, p in batch} == {1 if persistent or workers == 0 else 0}


def test_the_state_of_a_worker_not_yet_heard_from_is_its_start() -> None:
    a = dataforge.build_loader(Cursor([4, 6]), 2, num_workers=2, persistent_workers=True, collate_fn=_rows)
    list(a)  # the persistent copies now count one pass
    it = iter(a)
    first = next(it)
    state = a.state_dict()
    assert state["dataset_state"][0] == {"pos": 2, "passes": 1}
    assert state["dataset_state"][1] == {"pos": 0, "passes": 1}
    b = dataforge.build_loader(Cursor([4, 6]), 2, num_workers=2, persistent_workers=True, collate_fn=_rows)
    b.load_state_dict(state)
    assert first and list(b) == list(it)


class Curriculum(torch.utils.data.Dataset):
    """A map dataset whose samples depend on a level the training loop sets."""

    def __init__(self) -> None:
        self.level = 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, self.level

    def state_dict(self) -> dict[str, int]:
        return {"level": self.level}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.level = state["level"]


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_a_map_dataset_state_reaches_the_workers(engine: str) -> None:
    a = dataforge.build_loader(Curriculum(), 2, num_workers=2, engine=engine)
    a.dataset.level = 3
    it = iter(a)
    next(it)
    state = json.loads(json.dumps(a.state_dict()))
    assert state["dataset_state"] == {"level": 3}
    b = dataforge.build_loader(Curriculum(), 2, num_workers=2, engine=engine)
    list(b)  # live (persistent) workers hold copies at level 0
    b.load_state_dict(state)
    rest = list(b)
    assert len(rest) == 3 and all(level.tolist() == [3, 3] for _, level in rest)
    c = dataforge.build_loader(Curriculum(), 2, num_workers=2, engine=engine)
    c.load_state_dict(state)
    c.set_epoch(4)  # another epoch drops the position, not the dataset's state
    assert [level.tolist() for _, level in c] == [[3, 3]] * 4
    for loader in (a, b, c):
        loader.close()


def test_a_dataset_state_the_dataset_cannot_take_is_refused() -> None:
    a = dataforge.build_loader(Curriculum(), 2, num_workers=0)
    state = a.state_dict()
    with pytest.raises(ValueError, match="field 'dataset_state'.*no state_dict/load_state_dict"):
        dataforge.build_loader(list(range(8)), 2, num_workers=0).load_state_dict(state)
    s = dataforge.build_loader(Cursor([3]), 1, num_workers=0).state_dict()
    replayed = dataforge.build_loader(dataforge.IterDataset.from_iterable(range(3)), 1, num_workers=0)
    assert replayed.state_dict()["dataset_state"] is None  # resumed by replay, not nested
    with pytest.raises(ValueError, match="field 'dataset_state'.*IterDataset, resumed by replay"):
        replayed.load_state_dict(s)
    two = dataforge.build_loader(Cursor([3, 3]), 1, num_workers=2)
    with pytest.raises(ValueError, match="'dataset_state' must be a list of 2 per-worker states"):
        two.load_state_dict({**two.state_dict(), "dataset_state": [{"pos": 0, "passes": 0}]})
    with pytest.raises(ValueError, match="'workers_ended' must be a list of 2 bools"):
        two.load_state_dict({**two.state_dict(), "workers_ended": [1, 0]})
