"""Throughput and data-wait statistics: :class:`LoaderStats` and :class:`DataWaitMeter`.

NOTE [wait fraction]: the consumer "waits for data" for the time spent inside the
loader's ``__next__``. Wall time runs from ``iter()`` to the last ``__next__``
return. ``wait_fraction = wait / wall`` is the share of the training loop lost
to the input pipeline: near 0 means the model is the bottleneck, near 1 means
the data is.

NOTE [stage statistics]: ``stats()["stages"]`` sums, per stage, the seconds and the
count of every batch the consumer received: the worker stages each batch brought
along (NOTE [stage timing] in ``stages.py``), the consumer-side stages the loader
timed itself (``batch_transform``, ``h2d``: their time on the host, which for a CUDA
target is the time to issue the work on the side stream), and ``wait`` (the
consumer's wait, NOTE [wait fraction]; one count per batch). ``stats()["workers"]``
holds the worker stages per worker (``"main"`` when the loader has no workers,
else ``"0"``, ``"1"``...) with its batches and samples; ``stats()["timeline"]`` the
last ``TIMELINE`` batches, each ``{"worker", "start", "end", "stages"}``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import torch

from dataforge.loading.stages import BatchTiming

T = TypeVar("T")
TIMELINE = 10_000  # batches kept in stats()["timeline"]


class Failure(NamedTuple):
    """One sample that could not be loaded: ``(index, exc_type, message)``."""

    index: int  # type: ignore[assignment]
    exc_type: str
    message: str


def batch_len(batch: Any) -> int:
    """Number of samples in a batch: dim 0 of its first tensor, else its ``len``, else 1."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            if isinstance(v, (torch.Tensor, Mapping)) or (
                isinstance(v, Sequence) and not isinstance(v, (str, bytes))
            ):
                return batch_len(v)
        return 1
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        for v in batch:
            if isinstance(v, torch.Tensor):
                return batch_len(v)
        return len(batch)
    return 1


def _add(table: dict[str, list[float]], name: str, seconds: float, count: int) -> None:
    entry = table.get(name)
    if entry is None:
        table[name] = [seconds, count]
    else:
        entry[0] += seconds
        entry[1] += count


def _table(table: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {k: {"seconds": v[0], "count": int(v[1])} for k, v in table.items()}


class StageTimes:
    """The stage statistics of a loader (NOTE [stage statistics])."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._stages: dict[str, list[float]] = {}
        self._workers: dict[str, tuple[dict[str, list[float]], list[int]]] = {}
        self._timeline: collections.deque[tuple[str, BatchTiming]] = collections.deque(maxlen=TIMELINE)

    def add_batch(self, worker: str, timing: BatchTiming, samples: int) -> None:
        """One received batch, loaded by ``worker`` in ``timing``."""
        entry = self._workers.get(worker)
        if entry is None:
            entry = self._workers[worker] = ({}, [0, 0])
        stages, counts = entry
        for name, seconds in timing.seconds.items():
            n = timing.counts.get(name, 1)
            _add(self._stages, name, seconds, n)
            _add(stages, name, seconds, n)
        counts[0] += 1
        counts[1] += samples
        self._timeline.append((worker, timing))

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        """A consumer-side stage (``batch_transform``, ``h2d``)."""
        _add(self._stages, name, seconds, count)

    def as_dict(self, wait_s: float, batches: int) -> dict[str, Any]:
        stages = _table(self._stages)
        stages["wait"] = {"seconds": wait_s, "count": batches}
        return {
            "stages": stages,
            "workers": {
                w: {"stages": _table(st), "batches": c[0], "samples": c[1]}
                for w, (st, c) in self._workers.items()
            },
            "timeline": [
                {"worker": w, "start": t.start, "end": t.end, "stages": dict(t.seconds)}
                for w, t in self._timeline
            ],
        }


class LoaderStats:
    """Counters behind ``Loader.stats()`` and ``DataWaitMeter.stats()``."""

    def __init__(self) -> None:
        self.stages = StageTimes()
        self.reset()

    def reset(self) -> None:
        self.stages.reset()
        self.batches = 0
        self.samples = 0
        self.wait_s = 0.0
        self.wall_s = 0.0
        self.time_to_first_batch_s: float | None = None
        self.failures: list[Failure] = []
        self._t_start: float | None = None
        self._t_last: float | None = None
        self._first_pending = False

    def start(self) -> None:
        """A new pass (``iter()``) begins now."""
        self._flush()
        self._t_start = self._t_last = time.perf_counter()
        self._first_pending = True

    def _flush(self) -> None:
        if self._t_start is not None and self._t_last is not None:
            self.wall_s += self._t_last - self._t_start
        self._t_start = self._t_last = None

    def record(self, wait_s: float, samples: int, *, batch: bool = True) -> None:
        """One ``__next__`` took ``wait_s`` and returned ``samples`` samples."""
        now = time.perf_counter()
        self.wait_s += wait_s
        if batch:
            self.batches += 1
            self.samples += samples
            if self._first_pending and self._t_start is not None:
                self.time_to_first_batch_s = now - self._t_start
                self._first_pending = False
        self._t_last = now

    def as_dict(self) -> dict[str, Any]:
        wall = self.wall_s
        if self._t_start is not None and self._t_last is not None:
            wall += self._t_last - self._t_start
        return {
            "batches": self.batches,
            "samples": self.samples,
            "wall_s": wall,
            "wait_s": self.wait_s,
            "wait_fraction": self.wait_s / wall if wall > 0 else 0.0,
            "samples_per_s": self.samples / wall if wall > 0 else 0.0,
            "batches_per_s": self.batches / wall if wall > 0 else 0.0,
            "time_to_first_batch_s": self.time_to_first_batch_s,
            "num_failures": len(self.failures),
            "failures": [list(f) for f in self.failures],
            **self.stages.as_dict(self.wait_s, self.batches),
        }


class _MeterIterator(Iterator[T]):
    def __init__(self, it: Iterator[T], stats: LoaderStats) -> None:
        self._it = it
        self._stats = stats

    def __next__(self) -> T:
        t0 = time.perf_counter()
        try:
            item = next(self._it)
        except StopIteration:
            self._stats.record(time.perf_counter() - t0, 0, batch=False)
            raise
        self._stats.record(time.perf_counter() - t0, batch_len(item))
        return item


class DataWaitMeter(Generic[T]):
    """Measure how long a training loop waits for any iterable of batches.

    For users who keep a stock ``DataLoader``: wrap it and read ``stats()``
    (the same keys as ``Loader.stats()``).

    Args:
        iterable: any iterable of batches (a ``DataLoader``, a ``DevicePrefetcher``...).

    Example:
        >>> import torch
        >>> meter = DataWaitMeter(torch.utils.data.DataLoader(list(range(10)), batch_size=4))
        >>> [len(b) for b in meter]
        [4, 4, 2]
        >>> s = meter.stats(); (s["batches"], s["samples"])
        (3, 10)
    """

    def __init__(self, iterable: Iterable[T]) -> None:
        if not isinstance(iterable, Iterable):
            raise TypeError(
                f"iterable must be an iterable of batches, got {type(iterable).__name__}"
            )
        self.iterable = iterable
        self._stats = LoaderStats()

    def __iter__(self) -> Iterator[T]:
        self._stats.start()
        return _MeterIterator(iter(self.iterable), self._stats)

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        """Samples/s, batches/s, wait fraction, time to first batch (see NOTE [wait fraction])."""
        return self._stats.as_dict()

    def reset_stats(self) -> None:
        self._stats.reset()
