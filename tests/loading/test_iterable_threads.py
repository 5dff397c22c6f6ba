"""engine="thread" over an iterable dataset (NOTE [iterable threads]): the process engine's
batches, order, state, error counts and errors, from worker threads."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from test_loader_iterable import TWO_BAD_SHARDS, corrupt_tar_shards, keys

import dataforge
from dataforge.datasets.iterable import IterDataset
from dataforge.loading.thread_engine import THREAD_PREFIX


def numbers(n: int = 103) -> IterDataset:
    return IterDataset.from_iterable(range(n)).shuffle(16, seed=3).map(lambda x: x * 10)


def batches(loader) -> list:
    return [b.tolist() if isinstance(b, torch.Tensor) else b for b in loader]


def build(engine: str, ds=None, batch_size=8, workers=2, **kw):
    return dataforge.build_loader(numbers() if ds is None else ds, batch_size, num_workers=workers,
                                  engine=engine, **kw)


@pytest.mark.parametrize(("batch_size", "drop_last", "workers"),
                         [(8, False, 2), (8, True, 3), (None, False, 2), (5, False, 1)])
def test_the_same_batches_in_the_same_order_as_worker_processes(batch_size, drop_last, workers) -> None:
    process = build("process", batch_size=batch_size, drop_last=drop_last, workers=workers)
    thread = build("thread", batch_size=batch_size, drop_last=drop_last, workers=workers)
    assert thread.engine == "thread"
    want = batches(process)
    assert batches(thread) == want
    process.set_epoch(1)
    thread.set_epoch(1)
    assert batches(thread) == batches(process) != want  # the next epoch's shuffle, the same


@pytest.mark.parametrize(("first", "then"), [("thread", "process"), ("process", "thread"), ("thread", "thread")])
@pytest.mark.parametrize("stop", [1, 4, 7])
def test_a_state_taken_under_one_engine_resumes_exactly_under_the_other(first, then, stop) -> None:
    want = batches(build("process"))
    loader = build(first)
    it = iter(loader)
    got = [next(it).tolist() for _ in range(stop)]
    state = loader.state_dict()
    del it
    loader.close()
    resumed = build(then)
    resumed.load_state_dict(state)
    assert got + batches(resumed) == want


def test_skipped_shards_are_counted_once_per_worker_thread(tmp_path) -> None:
    pattern, readable = corrupt_tar_shards(str(tmp_path))
    ds = dataforge.from_shards(pattern, on_error="skip")
    process = dataforge.build_loader(ds, 3, collate_fn=keys, num_workers=2, engine="process")
    thread = dataforge.build_loader(ds, 3, collate_fn=keys, num_workers=2, engine="thread")
    got = list(thread)
    assert got == list(process)
    assert sorted(k for b in got for k in b) == sorted(readable)
    assert thread.errors == TWO_BAD_SHARDS == process.errors
    list(thread)
    assert thread.errors == {"skipped_shards": 4, "skipped_lines": 0}  # cumulative, as processes


class Plain(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(10))


def test_a_plain_iterable_dataset_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"engine='thread'.*Plain.*engine='process'.*from_iterable"):
        dataforge.build_loader(Plain(), 4, num_workers=2, engine="thread")
    # with no workers there is nothing to shard: it loads in the calling thread
    assert batches(dataforge.build_loader(Plain(), 4, num_workers=0, engine="process")) == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def boom(x: int) -> int:
    if x == 37:
        raise KeyError(f"bad item {x}")
    return x


def test_an_error_in_a_worker_thread_reaches_the_consumer_as_raised() -> None:
    loader = build("thread", ds=IterDataset.from_iterable(range(100)).map(boom))
    with pytest.raises(KeyError, match="bad item 37"):
        list(loader)
    assert batches(build("thread", ds=IterDataset.from_iterable(range(10)))) == [
        [0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]  # the loader's next pass is unharmed


def slow(x: int) -> int:
    if x == 5:
        time.sleep(3)
    return x


def test_a_timeout_names_the_worker_and_shows_where_it_is_stuck() -> None:
    loader = build("thread", ds=IterDataset.from_iterable(range(40)).map(slow), batch_size=2, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)worker 1's next batch timed out after 0.5 s.*in slow"):
        list(loader)
    assert time.monotonic() - t0 < 2.5


def test_worker_init_fn_runs_once_in_each_thread_and_threads_end_with_the_pass() -> None:
    seen: list[tuple[int, str]] = []
    loader = build("thread", worker_init_fn=lambda w: seen.append((w, threading.current_thread().name)))
    it = iter(loader)
    next(it)
    assert sorted(w for w, _ in seen) == [0, 1] and all(n.startswith(THREAD_PREFIX) for _, n in seen)
    del it
    loader.close()
    _threads_end()


def _threads_end(deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while any(t.name.startswith(THREAD_PREFIX + "iterable") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        time.sleep(0.05)


def test_a_loader_dropped_mid_pass_stops_its_threads() -> None:
    import gc

    def start() -> None:
        loader = build("thread", ds=IterDataset.from_iterable(range(10_000)))
        it = iter(loader)
        next(it)

    start()
    gc.collect()
    _threads_end()
