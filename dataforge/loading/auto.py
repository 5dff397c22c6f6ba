"""The ``"auto"`` choices of :func:`dataforge.build_loader`: worker count and pinning.

NOTE [auto num_workers]: the rule, in order:

1. ``cores`` = CPUs this process may run on (``os.sched_getaffinity``), divided by
   the processes sharing the machine under torchrun (``LOCAL_WORLD_SIZE``), at
   least 1.
2. One core is left to the main (training) process: ``workers = cores - 1``,
   capped at :data:`MAX_AUTO_WORKERS` (8). More workers rarely help and each one
   costs memory and start-up time.
3. Batch cost: when one sample, timed once in the main process, costs so little
   that a whole batch takes under :data:`CHEAP_BATCH_SECONDS` (2 ms), worker
   processes would cost more in inter-process copies than they save, so the
   answer is 0 (load in the main process). The probe reads ``dataset[0]`` once;
   an exception there is ignored (the real loading will report it).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

MAX_AUTO_WORKERS = 8
CHEAP_BATCH_SECONDS = 0.002


def usable_cores() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def local_world_size() -> int:
    """Processes per machine under torchrun (``LOCAL_WORLD_SIZE``), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def probe_batch_seconds(dataset: Any, batch_size: int) -> float | None:
    """Seconds one batch of ``batch_size`` would take to fetch, estimated from ``dataset[0]``."""
    try:
        if len(dataset) == 0:
            return None
        t0 = time.perf_counter()
        dataset[0]
        return (time.perf_counter() - t0) * max(1, batch_size)
    except Exception:  # the loader itself reports errors; the probe only estimates
        return None


def auto_num_workers(dataset: Any = None, batch_size: int = 1) -> int:
    """The worker count ``num_workers="auto"`` resolves to (see NOTE [auto num_workers]).

    Example:
        >>> n = auto_num_workers()
        >>> 0 <= n <= MAX_AUTO_WORKERS
        True
    """
    cores = max(1, usable_cores() // local_world_size())
    workers = min(MAX_AUTO_WORKERS, cores - 1)
    if workers > 0 and dataset is not None:
        cost = probe_batch_seconds(dataset, batch_size)
        if cost is not None and cost < CHEAP_BATCH_SECONDS:
            return 0
    return max(0, workers)


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``None`` stays ``None``; a string becomes a ``torch.device`` (``"cuda"`` -> ``cuda:<current>``)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be a torch.device or a string such as 'cuda' or 'cpu', got {device!r}"
        ) from exc
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def auto_pin_memory(pin_memory: bool | str, device: torch.device | None) -> bool:
    """``"auto"`` pins only when batches go to a CUDA device that exists."""
    if pin_memory == "auto":
        return device is not None and device.type == "cuda" and torch.cuda.is_available()
    if not isinstance(pin_memory, bool):
        raise TypeError(f"pin_memory must be True, False or 'auto', got {pin_memory!r}")
    return pin_memory
