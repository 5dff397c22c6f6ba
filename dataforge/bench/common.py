"""Shared pieces of the benchmark harness: environment record, arm order, memory.

Every benchmark module (``dataforge.bench.<name>``) exposes
``run(*, quick: bool = False, seconds: float | None = None, device: str = "cpu",
data: str | None = None, out: str | None = None, **kw) -> dict`` returning a
JSON-serialisable result with an ``"env"`` entry (``env_info()``) and
``format_table(result) -> str`` for the terminal.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class BenchError(Exception):
    """A user-facing benchmark error: the CLI prints it on one line and exits 2."""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def env_info(device: str = "cpu") -> dict[str, Any]:
    """The facts a reader needs to compare runs: CPU, cores, versions, GPU."""
    import torchvision

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def rotated(arms: Sequence[T], r: int) -> list[T]:
    """``arms`` (their names, or the arms) rotated left by ``r``: the arm order of repeat ``r``.

    NOTE [interleaving] in :mod:`dataforge.bench.runner`: repeats are the outer loop,
    arms the inner one, the order rotated each repeat, so that a slow drift of the
    machine spreads over all arms instead of hitting one.
    """
    k = r % len(arms) if arms else 0
    return [*arms[k:], *arms[:k]]


def interleaved(
    arms: Mapping[str, Callable[[], T]],
    repeats: int,
    after: Callable[[int, str, T], None] | None = None,
) -> dict[str, list[T]]:
    """Call each of ``arms`` once per repeat, in the order :func:`rotated` gives;
    ``after(r, name, value)`` runs after each call. Returns each arm's values in
    repeat order."""
    names = list(arms)
    runs: dict[str, list[T]] = {n: [] for n in names}
    for r in range(repeats):
        for name in rotated(names, r):
            runs[name].append(arms[name]())
            if after is not None:
                after(r, name, runs[name][-1])
    return runs


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """Current resident memory of this process in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return peak_rss_mb()
