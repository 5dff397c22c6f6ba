"""Per-stage timing of the batches a loader loads: ``stage(name)`` and the batch recorder.

NOTE [stage timing]: while a worker (process, thread, or the main process with
``num_workers=0``) loads one batch, a :class:`Recorder` is active on its thread.
The loader times its own stages with it: ``fetch`` (the samples' ``__getitem__`` /
``__getitems__``, or an iterable dataset's ``next()``), ``collate`` and ``pin`` (the
thread engine's pinning). A dataset names parts of its own ``__getitem__`` with
:func:`stage` (``read``, ``decode``, ``transform``...). Stages nest exclusively:
the time of an inner block is taken out of the block around it, so the time of a
named stage inside ``__getitem__`` is not also counted as ``fetch``, and the
stages of a batch add up to the time it took. Each stage counts its calls, except
``fetch``, which counts samples. The batch's :class:`BatchTiming` travels back to
the main process with the batch (in its ``BatchMeta``), where ``stats.py`` adds it
up per stage and per worker and keeps a timeline; no lock is taken and nothing is
recorded per sample beyond two ``time.perf_counter()`` calls per named block.

Outside a batch's loading (in the training loop, in a dataset used directly)
:func:`stage` only checks that no recorder is active.

``DATAFORGE_STAGE_TIMING=0`` in the environment (read at import) turns the recording
off, for measuring its overhead (benchmarks/README.md, "doctor: stage timing");
``stats()`` then reports no worker stages.

Times are ``time.perf_counter()``: CLOCK_MONOTONIC on Linux, the same clock in every
process of the machine, so the timelines of worker processes line up.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

ENABLED = os.environ.get("DATAFORGE_STAGE_TIMING", "1").strip() not in ("0", "false", "no", "off")

_local = threading.local()
_clock = time.perf_counter


class BatchTiming(NamedTuple):
    """What one batch's loading took: its start and end (``perf_counter``), and per stage
    the seconds (exclusive of nested stages) and the count (calls; samples for ``fetch``)."""

    start: float
    end: float
    seconds: dict[str, float]
    counts: dict[str, int]


class Recorder:
    """The stage times of one batch while it is loaded (NOTE [stage timing])."""

    __slots__ = ("start", "seconds", "counts", "inner")

    def __init__(self) -> None:
        self.start = _clock()
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.inner = 0.0  # time of the blocks nested in the open one (or at top level)

    def add(self, name: str, seconds: float, count: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + count

    def finish(self) -> BatchTiming:
        return BatchTiming(self.start, _clock(), self.seconds, self.counts)


def new_recorder() -> Recorder | None:
    """A recorder for the next batch, or ``None`` when stage timing is off."""
    return Recorder() if ENABLED else None


class recording:  # noqa: N801 - used as a context manager, like contextlib's
    """Make ``rec`` the active recorder of this thread for the block (``None``: none)."""

    __slots__ = ("rec", "prev")

    def __init__(self, rec: Recorder | None) -> None:
        self.rec = rec

    def __enter__(self) -> Recorder | None:
        self.prev = getattr(_local, "rec", None)
        _local.rec = self.rec
        return self.rec

    def __exit__(self, *exc: Any) -> None:
        _local.rec = self.prev


class _Block:
    """Time the block as stage ``name`` of the active recorder, if any."""

    __slots__ = ("name", "count", "rec", "t0", "outer")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count

    def __enter__(self) -> None:
        rec = self.rec = getattr(_local, "rec", None)
        if rec is not None:
            self.outer = rec.inner
            rec.inner = 0.0
            self.t0 = _clock()

    def __exit__(self, *exc: Any) -> None:
        rec = self.rec
        if rec is None:
            return
        dt = _clock() - self.t0
        rec.add(self.name, dt - rec.inner, self.count)
        rec.inner = self.outer + dt


def stage(name: str) -> _Block:
    """Count the time of the ``with`` block as stage ``name`` of the sample being loaded.

    Use it inside a dataset's ``__getitem__`` (or an iterable dataset's pipeline) to
    split its time into named stages; the rest of ``__getitem__`` counts as ``fetch``
    (NOTE [stage timing]). The loader's ``stats()["stages"]`` reports the seconds and
    calls of each stage, per worker as well. Outside a loader's worker it does nothing.

    Args:
        name: the stage, e.g. ``"read"``, ``"decode"``, ``"transform"`` (the names the
            doctor knows); any other name is reported as well.

    Example:
        >>> import time, torch, dataforge
        >>> from dataforge.loading.stages import stage
        >>> class Slow(torch.utils.data.Dataset):
        ...     def __len__(self): return 8
        ...     def __getitem__(self, i):
        ...         with stage("read"):
        ...             time.sleep(0.001)
        ...         return i
        >>> loader = dataforge.build_loader(Slow(), batch_size=4, num_workers=0)
        >>> _ = list(loader)
        >>> loader.stats()["stages"]["read"]["count"]
        8
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"stage name must be a non-empty str, got {name!r}")
    return _Block(name, 1)


def timed(name: str, count: int = 1) -> _Block:
    """The loader's own stages: like :func:`stage`, counting ``count`` (e.g. samples)."""
    return _Block(name, count)


class _End:
    """The sentinel of :func:`timed_items` for a stream's end."""


def timed_items(items: Iterator[Any], take: Callable[[], Recorder | None]) -> Iterator[Any]:
    """Yield the items of the iterator ``items``, each ``next()`` timed as ``fetch`` into the
    recorder ``take()`` returns (an iterable dataset's samples; NOTE [stage timing]).

    The recorder is active only during each ``next()``, so what the consumer does between
    items is not counted. The ``next()`` that finds the end adds its time, not a sample.
    """
    while True:
        block = _Block("fetch", 1)
        with recording(take()), block:
            item = next(items, _End)
            if item is _End:
                block.count = 0
        if item is _End:
            return
        yield item
