"""Pipelines with one known bottleneck each, for the doctor's tests and the README example.

Every cost is a ``time.sleep`` (GIL-free and clear-cut on a busy 2-core machine), marked
with the loader's stage names through ``dataforge.loading.stages.stage``. Each factory
takes ``**overrides`` (NOTE [rebuild rule] in ``dataforge/doctor/trials.py``).
"""

from __future__ import annotations

import time
from typing import Any

import torch

import dataforge
from dataforge.loading.stages import stage

N = 4096
BATCH = 8


class Sleepy(torch.utils.data.Dataset):
    """Sample ``i`` is ``float(i)``; each ``__getitem__`` sleeps ``read_s`` in "read",
    ``transform_s`` in "transform" and ``plain_s`` outside any named sub-stage ("fetch")."""

    def __init__(self, read_s: float = 0.0, transform_s: float = 0.0, plain_s: float = 0.0) -> None:
        self.read_s, self.transform_s, self.plain_s = read_s, transform_s, plain_s

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.read_s:
            with stage("read"):
                time.sleep(self.read_s)
        if self.transform_s:
            with stage("transform"):
                time.sleep(self.transform_s)
        if self.plain_s:
            time.sleep(self.plain_s)
        return torch.tensor([float(i)])


class SlowCollate:
    """``default_collate`` after a sleep of ``seconds`` per batch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, samples: list[Any]) -> Any:
        time.sleep(self.seconds)
        return torch.utils.data.default_collate(samples)


class DeviceTransform:
    """The per-sample transform applied to the whole batch at once, as a batch
    transform on the device would: ``seconds`` per batch instead of per sample."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return batch


def _loader(dataset: Any, num_workers: int, engine: str, **kw: Any) -> Any:
    return dataforge.build_loader(dataset, batch_size=BATCH, num_workers=num_workers, engine=engine,
                                  **kw)


def slow_read(num_workers: int = 2, engine: str = "thread", **kw: Any) -> Any:
    """Reading costs 6 ms per sample: 24 ms per batch on 2 workers."""
    return _loader(Sleepy(read_s=0.006), num_workers, engine, **kw)


def slow_transform(num_workers: int = 2, engine: str = "thread", transform_on_device: bool = False,
                   **kw: Any) -> Any:
    """A 6 ms per-sample transform; on the device it costs 2 ms per batch."""
    if transform_on_device:
        return _loader(Sleepy(read_s=0.0002), num_workers, engine,
                       batch_transforms=DeviceTransform(0.002), **kw)
    return _loader(Sleepy(read_s=0.0002, transform_s=0.006), num_workers, engine, **kw)


def heavy_collate(num_workers: int = 2, engine: str = "thread", **kw: Any) -> Any:
    """Collating costs 40 ms per batch: 20 ms per batch on 2 workers."""
    return _loader(Sleepy(read_s=0.0002), num_workers, engine, collate_fn=SlowCollate(0.04), **kw)


def one_worker(num_workers: int = 1, engine: str = "thread", **kw: Any) -> Any:
    """Loading costs 4 ms per sample, and a single worker does it all."""
    return _loader(Sleepy(plain_s=0.004), num_workers, engine, **kw)
