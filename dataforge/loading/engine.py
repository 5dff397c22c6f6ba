"""The engine contract: how a ``Loader`` gets its batches loaded.

NOTE [engine contract]: an engine loads; the ``Loader`` decides. The loader
validates its arguments, owns the plan (or the iterable stream's bookkeeping),
the statistics, the device path and the state, and hands the engine the work of
one pass: an iterator of :class:`~dataforge.loading.fetch.BatchKey` for a
map-style dataset, a :class:`~dataforge.loading.iterable_engine.ShardPlan` for an
iterable one. The engine yields :class:`~dataforge.loading.fetch.Fetched`
batches in the order of the work, and is told when the pass ends. Four engines:
``ProcessEngine`` (worker processes, ``engine="process"``), ``ThreadEngine``
(``engine="thread"``), ``IterableEngine`` (worker processes over an
``IterableDataset``) and ``IterableThreadEngine`` (worker threads over an
``IterDataset``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from dataforge.loading.fetch import Fetched


class Engine(Protocol):
    """What every engine implements (NOTE [engine contract])."""

    persistent: bool  # workers outlive a pass

    def start(self, work: Any) -> Iterator[Fetched]:
        """Begin a pass over ``work``; yields its batches in order."""
        ...

    def stop(self, *, kill: bool = False) -> None:
        """End the current pass (persistent workers stay, unless ``kill``)."""
        ...

    def close(self, *, grace: float | None = None) -> None:
        """End the pass and every worker; with ``grace``, kill those still running after it."""
        ...

    def diagnose(self, exc: BaseException) -> str | None:
        """What ``exc``, raised while waiting for a batch, says of the workers: a worker
        death or a timeout in words (a first line, then any details, such as a hung
        worker's stack: NOTE [hang watchdog] in ``process_engine.py``), or ``None`` for an
        ordinary error."""
        ...
