from __future__ import annotations

import time

import pytest
import torch

import dataforge
from dataforge.loading import auto


def test_auto_workers_follow_cores_and_local_world_size(monkeypatch) -> None:
    monkeypatch.setattr(auto, "usable_cores", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto.auto_num_workers() == 8  # capped
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto.auto_num_workers() == 3  # 16 // 4 - 1
    monkeypatch.setattr(auto, "usable_cores", lambda: 1)
    assert auto.auto_num_workers() == 0


def test_auto_workers_zero_for_cheap_samples(monkeypatch) -> None:
    monkeypatch.setattr(auto, "usable_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto.auto_num_workers(list(range(10)), batch_size=8) == 0

    class Costly(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> int:
            time.sleep(0.001)
            return i

    assert auto.auto_num_workers(Costly(), batch_size=8) == 7
    loader = dataforge.build_loader(list(range(10)), batch_size=2)
    assert loader.num_workers == 0


def test_auto_pin_memory() -> None:
    assert auto.auto_pin_memory("auto", None) is False
    assert auto.auto_pin_memory("auto", torch.device("cpu")) is False
    assert auto.auto_pin_memory("auto", torch.device("cuda")) is torch.cuda.is_available()
    assert auto.auto_pin_memory(True, None) is True
    with pytest.raises(TypeError, match="pin_memory"):
        auto.auto_pin_memory("yes", None)
