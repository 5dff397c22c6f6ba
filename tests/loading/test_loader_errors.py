from __future__ import annotations

import logging

import pytest
import torch
from loading_fixtures import Failing

import dataforge
from dataforge.loading.policies import with_context


@pytest.mark.parametrize(("engine", "num_workers"), [("process", 0), ("process", 2), ("thread", 2)])
def test_raise_keeps_the_type_and_names_index_and_worker(engine: str, num_workers: int) -> None:
    loader = dataforge.build_loader(
        Failing(12, bad=(7,)), batch_size=4, num_workers=num_workers, engine=engine
    )
    with pytest.raises(ValueError, match=r"dataset index 7 \(worker \d, epoch 0\): sample 7 is broken"):
        list(loader)
    loader.close()


def test_raise_with_a_type_that_cannot_take_one_string() -> None:
    class Picky(Exception):
        def __init__(self, a: int, b: int) -> None:
            super().__init__(a, b)

    class DS(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int):
            raise Picky(1, 2)

    with pytest.raises(RuntimeError, match=r"Picky: dataset index 0") as info:
        list(dataforge.build_loader(DS(), batch_size=2, num_workers=0))
    assert isinstance(info.value.__cause__, Picky)


def test_with_context_chains_the_original() -> None:
    orig = KeyError("k")
    new = with_context(orig, "dataset index 3")
    assert isinstance(new, KeyError) and new.__cause__ is orig and "dataset index 3" in str(new)


@pytest.mark.parametrize(("engine", "num_workers"), [("process", 0), ("process", 2), ("thread", 2)])
def test_skip_drops_counts_and_reports(engine: str, num_workers: int, caplog) -> None:
    loader = dataforge.build_loader(
        Failing(10, bad=(2, 8, 9)), batch_size=4, num_workers=num_workers, engine=engine,
        on_error="skip",
    )
    with caplog.at_level(logging.WARNING, logger="dataforge.loading"):
        batches = [b.tolist() for b in loader]
    loader.close()
    assert batches == [[0, 1, 3], [4, 5, 6, 7]]  # the last batch (8, 9) failed entirely: dropped
    assert [f.index for f in loader.failures] == [2, 8, 9]
    assert loader.failures[0] == (2, "ValueError", "sample 2 is broken")
    stats = loader.stats()
    assert stats["num_failures"] == 3 and stats["failures"][0] == [2, "ValueError", "sample 2 is broken"]
    assert stats["samples"] == 7
    assert sum("dataset index 2" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_substitute_keeps_batch_sizes_deterministically(num_workers: int) -> None:
    loader = dataforge.build_loader(
        Failing(10, bad=(2, 3, 9)), batch_size=4, num_workers=num_workers, on_error="substitute"
    )
    batches = [b.tolist() for b in loader]
    loader.close()
    # 2 and 3 -> 4 (the next index that loads); 9 -> 0 (mod len)
    assert batches == [[0, 1, 4, 4], [4, 5, 6, 7], [8, 0]]
    assert sorted(f.index for f in loader.failures) == [2, 3, 9]


def test_substitute_gives_up_when_nothing_loads() -> None:
    loader = dataforge.build_loader(Failing(3, bad=(0, 1, 2)), batch_size=2, num_workers=0,
                                    on_error="substitute")
    with pytest.raises(RuntimeError, match="no index of the dataset loads"):
        list(loader)


def test_getitems_is_used_and_falls_back_per_sample_on_error() -> None:
    class Batched(Failing):
        calls = 0

        def __getitems__(self, indices: list[int]):
            Batched.calls += 1
            return [self[i] for i in indices]

    loader = dataforge.build_loader(Batched(8, bad=(5,)), batch_size=4, num_workers=0, on_error="skip")
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 6, 7]]
    assert Batched.calls == 2 and [f.index for f in loader.failures] == [5]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_collate_error_names_batch_indices_and_worker(num_workers: int) -> None:
    def bad_collate(samples):
        raise TypeError("cannot stack")

    loader = dataforge.build_loader(list(range(6)), batch_size=3, num_workers=num_workers,
                                    collate_fn=bad_collate)
    with pytest.raises(TypeError, match=r"collate of batch 0 \(epoch 0, dataset indices \[0, 1, 2\], worker \d\)"):
        list(loader)
    loader.close()


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_worker_init_fn_error_keeps_type_and_names_worker(engine: str) -> None:
    def init(worker_id: int) -> None:
        raise OSError(f"no device for {worker_id}")

    loader = dataforge.build_loader(
        list(range(4)), batch_size=2, num_workers=1, worker_init_fn=init, engine=engine
    )
    with pytest.raises(OSError, match=r"worker_init_fn of worker 0: no device for 0"):
        list(loader)
    loader.close()


def test_a_failed_pass_ends_without_advancing_the_epoch() -> None:
    loader = dataforge.build_loader(Failing(8, bad=(5,)), batch_size=2, num_workers=0)
    it = iter(loader)
    next(it)
    with pytest.raises(ValueError):
        next(it)
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    assert loader.epoch == 0 and loader.state_dict()["batches_yielded"] == 2


def test_thread_engine_runs_worker_init_fn_once_per_thread() -> None:
    import threading

    seen: list[tuple[int, str]] = []

    def init(worker_id: int) -> None:
        seen.append((worker_id, threading.current_thread().name))

    loader = dataforge.build_loader(
        list(range(8)), batch_size=2, num_workers=2, worker_init_fn=init, engine="thread"
    )
    assert len(list(loader)) == 4
    assert sorted(seen) == [(0, "dataforge-fetch-0"), (1, "dataforge-fetch-1")]
