"""Stock-DataLoader fidelity (issue #15, "Why"): each test here failed before its fix."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from helpers import run_test_save_load_state
from torch.utils.data import Dataset, IterableDataset

import dataforge


def _user_seeds(worker_id: int) -> None:
    """A worker_init_fn as users write them: seed every library from the worker id."""
    random.seed(1000 + worker_id)
    np.random.seed(2000 + worker_id)
    torch.manual_seed(3000 + worker_id)


def _expected_first_draws(worker_id: int) -> tuple[float, float, float]:
    _user_seeds(worker_id)
    return random.random(), float(np.random.rand()), float(torch.rand(1))


class FirstDraws(Dataset):
    """Sample i: (worker id, first draws of random / numpy / torch since the last sample)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> tuple:
        info = torch.utils.data.get_worker_info()
        return (info.id, random.random(), float(np.random.rand()), float(torch.rand(1)))


@pytest.mark.parametrize("persistent", [False, True])
def test_worker_init_fn_seeding_is_not_undone(persistent: bool) -> None:
    loader = dataforge.build_loader(
        FirstDraws(), batch_size=None, num_workers=2, worker_init_fn=_user_seeds,
        persistent_workers=persistent,
    )
    first = list(loader)[:2]  # index b goes to worker b % 2: each worker's first sample
    loader.close()
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        for wid, *draws in first:
            assert tuple(draws) == pytest.approx(_expected_first_draws(int(wid)))
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


class InfoProbe(Dataset):
    """Sample i: whether get_worker_info() shows this dataset and a seed torch agrees with."""

    def __init__(self) -> None:
        self.marker = "user"

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> list:
        info = torch.utils.data.get_worker_info()
        return [
            int(getattr(info.dataset, "marker", "") == "user" and type(info.dataset) is InfoProbe),
            int(info.seed == torch.initial_seed()),
        ]


class IterInfoProbe(IterableDataset):
    def __init__(self) -> None:
        self.marker = "user"

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        ok = type(info.dataset) is IterInfoProbe and info.seed == torch.initial_seed()
        yield from ([int(ok), info.id] for _ in range(2))


@pytest.mark.parametrize("dataset", [InfoProbe, IterInfoProbe])
def test_get_worker_info_shows_the_user_dataset_and_the_torch_seed(dataset: type) -> None:
    seen_in_init: list[bool] = []

    def init(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        if not isinstance(info.dataset, dataset):
            raise TypeError(f"worker_init_fn sees {type(info.dataset).__name__}")
        seen_in_init.append(True)

    loader = dataforge.build_loader(dataset(), batch_size=None, num_workers=2, worker_init_fn=init)
    rows = [torch.as_tensor(r).tolist() for r in loader]
    loader.close()
    assert rows and all(r[0] == 1 for r in rows)
    if dataset is InfoProbe:
        assert all(r[1] == 1 for r in rows)


def test_nested_tensors_get_a_clear_collate_error() -> None:
    nt = torch.nested.as_nested_tensor([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match=r"nested tensors cannot be collated"):
        dataforge.default_collate([{"x": nt}, {"x": nt}])


def test_batch_size_none_with_drop_last_is_refused() -> None:
    with pytest.raises(ValueError, match="drop_last=True needs a batch_size"):
        dataforge.build_loader(list(range(5)), batch_size=None, drop_last=True, num_workers=0)


class Bulk(Dataset):
    """Loads a list of indices in one call, as a stock bulk-loading dataset does."""

    def __init__(self, n: int = 10) -> None:
        self.n = n
        self.calls: list[object] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        self.calls.append(idx)
        return torch.as_tensor(idx) * 10


class ChunkSampler(torch.utils.data.Sampler):
    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __iter__(self):
        return iter([list(range(i, min(i + self.size, self.n))) for i in range(0, self.n, self.size)])

    def __len__(self) -> int:
        return -(-self.n // self.size)


def _stock_bulk() -> list[list[int]]:
    dl = torch.utils.data.DataLoader(Bulk(), batch_size=None, sampler=ChunkSampler(10, 4))
    return [b.tolist() for b in dl]


@pytest.mark.parametrize(("engine", "num_workers"), [("process", 0), ("process", 2), ("thread", 2)])
def test_sampler_yielding_lists_loads_in_bulk_like_stock(engine: str, num_workers: int) -> None:
    ds = Bulk()
    loader = dataforge.build_loader(
        ds, batch_size=None, sampler=ChunkSampler(10, 4), num_workers=num_workers, engine=engine
    )
    assert [b.tolist() for b in loader] == _stock_bulk()
    assert len(loader) == 3
    if num_workers == 0:
        assert ds.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # one call per list


def test_sampler_yielding_lists_with_a_batch_size_points_to_batch_sampler() -> None:
    loader = dataforge.build_loader(Bulk(), batch_size=2, sampler=ChunkSampler(10, 4), num_workers=0)
    with pytest.raises(TypeError, match="batch_sampler="):
        list(loader)


def test_state_for_another_dataset_suggests_only_real_fixes() -> None:
    state = dataforge.build_loader(list(range(100)), 10, num_workers=0).state_dict()
    loader = dataforge.build_loader(list(range(50)), 10, num_workers=0)
    with pytest.raises(ValueError, match="dataset_len") as err:
        loader.load_state_dict(state)
    assert "dataset_len=" not in str(err.value)  # build_loader has no such parameter
    assert "100" in str(err.value) and "50" in str(err.value)


@pytest.mark.parametrize("k", [11, 10**30])
def test_batches_yielded_past_the_end_is_refused(k: int) -> None:
    loader = dataforge.build_loader(list(range(100)), 10, num_workers=0)
    state = json.loads(json.dumps(loader.state_dict()))
    state["batches_yielded"] = k
    with pytest.raises(ValueError, match="batches_yielded"):
        loader.load_state_dict(state)


class EpochStream(IterableDataset):
    """Yields (epoch, worker, i): the epoch set_epoch gave this copy of the dataset."""

    def __init__(self, n: int = 6) -> None:
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        yield from (torch.tensor([self.epoch, wid, i]) for i in range(wid, self.n, nw))


def test_persistent_workers_over_an_iterable_dataset() -> None:
    loader = dataforge.build_loader(EpochStream(), 2, num_workers=2, persistent_workers=True)
    assert loader.persistent_workers
    epochs = []
    for _ in range(3):
        epochs.append(torch.cat(list(loader)).tolist())
    after_three = loader.state_dict()["epoch"]
    loader.set_epoch(7)
    seventh = torch.cat(list(loader)).tolist()
    loader.close()
    assert after_three == 3
    for e, rows in enumerate(epochs):
        assert sorted(r[2] for r in rows) == list(range(6)) and {r[0] for r in rows} == {e}
    assert {r[0] for r in seventh} == {7}


def test_persistent_iterable_workers_resume_mid_epoch() -> None:
    def make():
        return dataforge.build_loader(EpochStream(9), 2, num_workers=2, persistent_workers=True)

    full = make()
    list(full)
    whole = [b.tolist() for b in full]  # epoch 1 on warm workers
    full.set_epoch(1)
    it = iter(full)
    head = [next(it).tolist() for _ in range(2)]
    state = full.state_dict()
    full.close()
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    tail = [b.tolist() for b in resumed]
    resumed.close()
    assert head + tail == whole


@pytest.mark.parametrize("num_workers", [0, 2])
def test_generator_is_accepted_instead_of_seed(num_workers: int) -> None:
    def run(g: torch.Generator) -> list[list[int]]:
        loader = dataforge.build_loader(
            list(range(12)), 4, shuffle=True, generator=g, num_workers=num_workers
        )
        return [b.tolist() for b in loader]

    a, b = run(torch.Generator().manual_seed(5)), run(torch.Generator().manual_seed(5))
    assert a == b
    assert a != run(torch.Generator().manual_seed(6))
    with pytest.raises(ValueError, match="generator"):
        dataforge.build_loader(list(range(4)), 2, seed=3, generator=torch.Generator(), num_workers=0)
    with pytest.raises(TypeError, match="generator"):
        dataforge.build_loader(list(range(4)), 2, generator=5, num_workers=0)


@pytest.mark.parametrize(("engine", "num_workers"), [("process", 0), ("process", 2), ("thread", 2)])
def test_bulk_loading_resumes_exactly(engine: str, num_workers: int) -> None:
    def make():
        return dataforge.build_loader(
            Bulk(10), batch_size=None, sampler=ChunkSampler(10, 3), num_workers=num_workers, engine=engine
        )

    run_test_save_load_state(make, checkpoints=[0, 1, 3], epochs=1)


def test_generator_loader_resumes_on_the_thread_engine() -> None:
    def make():
        g = torch.Generator().manual_seed(11)
        return dataforge.build_loader(
            list(range(10)), 3, shuffle=True, generator=g, num_workers=2, engine="thread"
        )

    run_test_save_load_state(make, epochs=2)


def test_persistent_iterable_loader_resumes_exactly() -> None:
    def make():
        return dataforge.build_loader(EpochStream(9), 2, num_workers=2, persistent_workers=True)

    run_test_save_load_state(make, checkpoints=[0, 1, 3, 5], epochs=2)


def test_multiprocessing_context_without_worker_processes_is_refused() -> None:
    for kwargs in ({"num_workers": 0}, {"num_workers": 2, "engine": "thread"}):
        with pytest.raises(ValueError, match="multiprocessing_context='spawn' is only used by worker"):
            dataforge.build_loader(list(range(4)), 2, multiprocessing_context="spawn", **kwargs)


@pytest.mark.parametrize("attr", ["batch_size", "sampler", "batch_sampler", "drop_last", "dataset"])
def test_plan_attributes_are_fixed_after_construction(attr: str) -> None:
    loader = dataforge.build_loader(list(range(8)), 2, num_workers=0)
    with pytest.raises(ValueError, match=f"{attr} cannot be changed after the Loader is built"):
        setattr(loader, attr, 4)
    assert [len(b) for b in loader] == [2, 2, 2, 2]


def test_loader_is_generic() -> None:
    assert dataforge.Loader[int] is not None


class Unsharded(IterableDataset):
    """Ignores get_worker_info(): every worker yields the whole range."""

    def __len__(self) -> int:
        return 4

    def __iter__(self):
        return iter(range(4))


def test_an_unsharded_iterable_warns_once_past_len_like_stock() -> None:
    loader = dataforge.build_loader(Unsharded(), None, num_workers=2, persistent_workers=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(1 for _ in loader) == 8  # len() not asked (list() would): no warning
    assert len(loader) == 4
    with pytest.warns(UserWarning, match=r"reported to be 4 .* but 5 samples have been fetched"):
        assert len(list(loader)) == 8
