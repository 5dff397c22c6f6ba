"""A small thread-pool loader that reports ``stats()`` in the loader's stage-timing contract.

A test double for the doctor's end-to-end tests where ``dataforge.loading.stages`` (the
loader's own stage timing) is not available: it measures the same stages the same way
(per sample: named sub-stages, the rest of ``__getitem__`` as "fetch"; per batch:
collate in the worker, batch transforms on the consumer side) and reports them as
``{"stages", "workers", "timeline"}``. It has no ``engine`` attribute, so the doctor
never proposes another engine for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

_local = threading.local()


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the time of the block as sub-stage ``name`` of the current sample."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        acc = getattr(_local, "sub", None)
        if acc is not None:
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0


def _add(stages: dict[str, dict[str, float]], name: str, seconds: float, count: int = 1) -> None:
    entry = stages.setdefault(name, {"seconds": 0.0, "count": 0})
    entry["seconds"] += seconds
    entry["count"] += count


class ContractLoader:
    def __init__(self, dataset: Any, batch_size: int, *, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None,
                 batch_transforms: Callable[[Any], Any] | None = None) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.collate_fn = collate_fn or torch.utils.data.default_collate
        self.batch_transforms = batch_transforms
        self._lock = threading.Lock()
        self.reset_stats()

    def reset_stats(self) -> None:
        self._stages: dict[str, dict[str, float]] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._timeline: list[dict[str, Any]] = []
        self._batches = self._samples = 0
        self._t0: float | None = None
        self._t_last = 0.0

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def _load(self, b: int) -> Any:
        wid = str(int(threading.current_thread().name.rsplit("_", 1)[-1])) if self.num_workers else "main"
        start = time.perf_counter()
        stages: dict[str, float] = {}
        samples = []
        for i in range(b * self.batch_size, (b + 1) * self.batch_size):
            _local.sub = sub = {}
            t = time.perf_counter()
            samples.append(self.dataset[i])
            total = time.perf_counter() - t
            _local.sub = None
            for k, v in {**sub, "fetch": total - sum(sub.values())}.items():
                stages[k] = stages.get(k, 0.0) + v
        t = time.perf_counter()
        batch = self.collate_fn(samples)
        stages["collate"] = time.perf_counter() - t
        end = time.perf_counter()
        with self._lock:
            w = self._workers.setdefault(wid, {"stages": {}, "batches": 0, "samples": 0})
            for k, v in stages.items():
                n = self.batch_size if k != "collate" else 1
                _add(self._stages, k, v, n)
                _add(w["stages"], k, v, n)
            w["batches"] += 1
            w["samples"] += len(samples)
            self._timeline.append({"worker": wid, "start": start, "end": end, "stages": stages})
        return batch

    def __iter__(self) -> Iterator[Any]:
        self._t0 = self._t_last = time.perf_counter()
        n = len(self)
        if self.num_workers == 0:
            for b in range(n):
                yield self._deliver(self._load(b))
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="contract") as pool:
            ahead: deque[Future[Any]] = deque()
            nxt = 0
            try:
                for _ in range(n):
                    while nxt < n and len(ahead) < 2 * self.num_workers:
                        ahead.append(pool.submit(self._load, nxt))
                        nxt += 1
                    yield self._deliver(ahead.popleft().result())
            finally:
                for f in ahead:
                    f.cancel()

    def _deliver(self, batch: Any) -> Any:
        if self.batch_transforms is not None:
            t = time.perf_counter()
            batch = self.batch_transforms(batch)
            _add(self._stages, "batch_transform", time.perf_counter() - t)
        self._batches += 1
        self._samples += self.batch_size
        self._t_last = time.perf_counter()
        return batch

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "batches": self._batches, "samples": self._samples, "num_workers": self.num_workers,
                "wall_s": self._t_last - self._t0 if self._t0 is not None else 0.0,
                "stages": {k: dict(v) for k, v in self._stages.items()},
                "workers": {k: {**v, "stages": {s: dict(e) for s, e in v["stages"].items()}}
                            for k, v in self._workers.items()},
                "timeline": list(self._timeline[-10_000:]),
            }

    def close(self) -> None:
        pass
