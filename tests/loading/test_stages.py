"""The loader's own per-stage timing: ``stage()``, ``stats()["stages"|"workers"|"timeline"]``
(NOTE [stage timing] in stages.py, NOTE [stage statistics] in stats.py)."""

from __future__ import annotations

import time

import pytest
import torch

import dataforge
from dataforge.loading import stages as stages_mod
from dataforge.loading import stats as stats_mod
from dataforge.loading.stages import stage

N, BATCH = 24, 4
READ_S, PLAIN_S = 0.004, 0.001
SLACK_S = 2.0  # a busy machine may stretch any sleep; the bounds only catch gross errors


class Timed(torch.utils.data.Dataset):
    """Each sample sleeps ``READ_S`` in "read" and ``PLAIN_S`` outside any named stage."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> torch.Tensor:
        with stage("read"):
            time.sleep(READ_S)
        time.sleep(PLAIN_S)
        return torch.tensor([i])


def _about(seconds: float, expected: float) -> bool:
    return 0.9 * expected <= seconds <= expected + SLACK_S


@pytest.mark.parametrize("engine", ["thread", "process"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_stages_per_sample_per_batch_and_per_worker(engine: str, num_workers: int) -> None:
    with dataforge.build_loader(Timed(), batch_size=BATCH, num_workers=num_workers, engine=engine) as loader:
        batches = [b for b in loader]
        s = loader.stats()
    nb = N // BATCH
    assert len(batches) == nb
    st = s["stages"]
    assert set(st) == {"read", "fetch", "collate", "wait"}
    assert (st["read"]["count"], st["fetch"]["count"], st["collate"]["count"], st["wait"]["count"]) == (
        N, N, nb, nb)
    assert _about(st["read"]["seconds"], N * READ_S), st
    assert _about(st["fetch"]["seconds"], N * PLAIN_S), st
    assert st["fetch"]["seconds"] < st["read"]["seconds"]  # the named stage is not fetch too
    assert st["wait"]["seconds"] == pytest.approx(s["wait_s"])
    expected = {"main"} if num_workers == 0 else {"0", "1"}
    assert set(s["workers"]) == expected
    assert sum(w["batches"] for w in s["workers"].values()) == nb
    assert sum(w["samples"] for w in s["workers"].values()) == N
    assert sum(w["stages"]["read"]["count"] for w in s["workers"].values()) == N
    assert len(s["timeline"]) == nb
    for e in s["timeline"]:
        assert e["worker"] in expected
        assert e["start"] <= e["end"]
        assert set(e["stages"]) == {"read", "fetch", "collate"}
        assert sum(e["stages"].values()) <= e["end"] - e["start"] + 1e-6


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_iterable_dataset_times_each_next_as_fetch(num_workers: int) -> None:
    def decode(x: int) -> int:
        with stage("decode"):
            time.sleep(READ_S)
        return x

    ds = dataforge.IterDataset.from_iterable(range(N)).map(decode)
    with dataforge.build_loader(ds, batch_size=BATCH, num_workers=num_workers) as loader:
        assert sorted(x for b in loader for x in b.tolist()) == list(range(N))
        s = loader.stats()
    st = s["stages"]
    assert (st["decode"]["count"], st["fetch"]["count"], st["collate"]["count"]) == (N, N, N // BATCH)
    assert _about(st["decode"]["seconds"], N * READ_S), st
    assert set(s["workers"]) == ({"main"} if num_workers == 0 else {"0", "1"})
    assert sum(w["samples"] for w in s["workers"].values()) == N
    assert len(s["timeline"]) == N // BATCH


def test_nested_stages_are_exclusive() -> None:
    class Nested(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> int:
            with stage("read"):
                time.sleep(0.001)
                with stage("decode"):
                    time.sleep(0.004)
            return i

    with dataforge.build_loader(Nested(), batch_size=4, num_workers=0) as loader:
        list(loader)
        st = loader.stats()["stages"]
    assert st["decode"]["count"] == st["read"]["count"] == 8
    assert _about(st["decode"]["seconds"], 8 * 0.004)
    assert st["read"]["seconds"] < st["decode"]["seconds"]  # decode's time is not read's


def test_consumer_side_stages_and_reset() -> None:
    def double(batch: torch.Tensor) -> torch.Tensor:
        time.sleep(0.002)
        return batch * 2

    with dataforge.build_loader(Timed(), batch_size=BATCH, num_workers=0, device="cpu",
                                batch_transforms=double) as loader:
        assert [b.tolist() for b in loader][0] == [[0], [2], [4], [6]]
        st = loader.stats()["stages"]
        assert st["batch_transform"]["count"] == st["h2d"]["count"] == N // BATCH
        assert _about(st["batch_transform"]["seconds"], N // BATCH * 0.002)
        loader.reset_stats()
        s = loader.stats()
    assert s["stages"] == {"wait": {"seconds": 0.0, "count": 0}}
    assert s["workers"] == {} and s["timeline"] == []


def test_the_timeline_keeps_the_last_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod, "TIMELINE", 3)
    with dataforge.build_loader(Timed(), batch_size=BATCH, num_workers=0) as loader:
        list(loader)
        timeline = loader.stats()["timeline"]
    assert len(timeline) == 3
    assert timeline == sorted(timeline, key=lambda e: e["start"])


def test_stage_outside_a_loader_does_nothing_and_checks_its_name() -> None:
    with stage("read"):
        pass
    assert Timed()[0].tolist() == [0]
    with pytest.raises(ValueError, match="stage name"):
        stage("")


def test_stage_timing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stages_mod, "ENABLED", False)
    with dataforge.build_loader(Timed(), batch_size=BATCH, num_workers=2, engine="thread") as loader:
        assert len(list(loader)) == N // BATCH
        s = loader.stats()
    assert set(s["stages"]) == {"wait"} and s["workers"] == {} and s["timeline"] == []


def test_data_wait_meter_reports_the_wait_stage_only() -> None:
    meter = dataforge.DataWaitMeter(torch.utils.data.DataLoader(list(range(10)), batch_size=4))
    list(meter)
    s = meter.stats()
    assert s["stages"]["wait"]["count"] == 3 and s["workers"] == {} and s["timeline"] == []


@pytest.mark.gpu
def test_cuda_device_path_reports_pin_and_h2d() -> None:
    with dataforge.build_loader(Timed(), batch_size=BATCH, num_workers=2, engine="thread",
                                device="cuda", batch_transforms=lambda b: b * 2) as loader:
        out = [b for b in loader]
        st = loader.stats()["stages"]
    assert all(b.is_cuda for b in out)
    nb = N // BATCH
    assert st["pin"]["count"] == st["h2d"]["count"] == st["batch_transform"]["count"] == nb, st
