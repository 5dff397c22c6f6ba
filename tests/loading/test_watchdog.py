"""The hang watchdog: a batch that does not arrive within ``timeout`` raises an error with
the stuck worker's Python stack and the indices it was loading (NOTE [hang watchdog] in
process_engine.py, NOTE [thread engine])."""

from __future__ import annotations

import inspect
import re
import threading
import time

import pytest
import torch

import dataforge

STUCK = 5  # the index whose __getitem__ never returns
TIMEOUT = 1.0
RELEASE = threading.Event()  # lets an abandoned fetch thread finish after its test


def wait_for_ever() -> None:
    while not RELEASE.wait(0.05):
        pass


STUCK_LINE = inspect.getsourcelines(wait_for_ever)[1] + 1  # the `while` line


class HangsOnOne(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == STUCK:
            wait_for_ever()
        return torch.tensor([i])


@pytest.fixture
def release() -> object:
    RELEASE.clear()
    yield RELEASE
    RELEASE.set()


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_a_hung_worker_shows_its_stack_and_indices(engine: str, release: object) -> None:
    loader = dataforge.build_loader(HangsOnOne(), batch_size=4, num_workers=2, engine=engine,
                                    timeout=TIMEOUT)
    got = []
    t0 = time.perf_counter()
    try:
        with pytest.raises(RuntimeError) as info:
            for batch in loader:
                got.append(batch)
        elapsed = time.perf_counter() - t0
    finally:
        loader.close()
    err = str(info.value)
    assert elapsed < TIMEOUT + 5, (elapsed, err)
    assert len(got) == 1, err  # batch 0 arrived, batch 1 (indices 4..7) hung
    assert "timed out" in err
    assert "batch 1 of epoch 0" in err and "dataset indices [4, 5, 6, 7]" in err
    assert "wait_for_ever" in err and f"line {STUCK_LINE}" in err, err
    assert __file__ in err
    if engine == "process":
        assert "worker 1 (pid" in err
    else:
        assert re.search(r"worker thread dataforge-fetch-[01]'s Python stack", err), err  # either thread



def test_a_hung_iterable_worker_shows_its_stack(release: object) -> None:
    def hang_on_stuck(x: int) -> int:
        if x == STUCK:
            wait_for_ever()
        return x

    ds = dataforge.IterDataset.from_iterable(range(16)).map(hang_on_stuck)
    t0 = time.perf_counter()
    with (dataforge.build_loader(ds, batch_size=4, num_workers=1, timeout=TIMEOUT) as loader,
          pytest.raises(RuntimeError) as info):
        list(loader)
    err = str(info.value)
    assert time.perf_counter() - t0 < TIMEOUT + 5, err
    assert "worker 0 (pid" in err and "on its part of the dataset's stream" in err, err
    assert "wait_for_ever" in err and f"line {STUCK_LINE}" in err and "hang_on_stuck" in err, err
