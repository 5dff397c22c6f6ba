from __future__ import annotations

import time

import pytest
import torch

import dataforge
from dataforge.loading.stats import DataWaitMeter, batch_len


class Slow(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(0.01)
        return torch.tensor(i)


def test_loader_stats_measure_throughput_and_wait() -> None:
    loader = dataforge.build_loader(Slow(), batch_size=2, num_workers=0)
    for _ in loader:
        time.sleep(0.02)  # the "training step"
    s = loader.stats()
    assert (s["batches"], s["samples"], s["num_failures"]) == (3, 6, 0)
    assert 0.2 < s["wait_fraction"] < 0.8
    assert s["samples_per_s"] > 0 and s["batches_per_s"] == pytest.approx(s["batches"] / s["wall_s"])
    assert 0.015 <= s["time_to_first_batch_s"] < 1
    loader.reset_stats()
    assert loader.stats()["batches"] == 0


def test_data_wait_meter_wraps_a_stock_dataloader() -> None:
    meter = DataWaitMeter(torch.utils.data.DataLoader(Slow(), batch_size=4))
    assert len(meter) == 2
    for _ in meter:
        pass
    s = meter.stats()
    assert (s["batches"], s["samples"]) == (2, 6)
    assert s["wait_fraction"] > 0.9  # nothing else happened in the loop
    with pytest.raises(TypeError, match="iterable"):
        DataWaitMeter(5)  # type: ignore[arg-type]


def test_batch_len() -> None:
    assert batch_len(torch.zeros(5, 2)) == 5
    assert batch_len({"id": ["a", "b"], "x": torch.zeros(3)}) == 2
    assert batch_len((torch.zeros(4), torch.zeros(4))) == 4
    assert batch_len([1, 2, 3]) == 3 and batch_len(7) == 1
