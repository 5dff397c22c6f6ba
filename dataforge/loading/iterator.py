"""One pass over a ``Loader``: bookkeeping per batch, worker failures, clean shutdown."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dataforge.loading.engine import Engine
from dataforge.loading.fetch import BatchMeta
from dataforge.loading.stats import LoaderStats


@dataclass(frozen=True)
class PassHooks:
    """What a pass reports to its loader.

    Attributes:
        stats: the loader's statistics.
        receive: called with each batch's metadata, before the batch is handed over.
        finished: called with the iterator when its epoch ran to the end.
        where: the loader's position in words, for error messages.
    """

    stats: LoaderStats
    receive: Callable[[BatchMeta], None]
    finished: Callable[[LoaderIterator], None]
    where: Callable[[], str]


class LoaderIterator(Iterator[Any]):
    """One pass of a ``Loader``: takes ``(meta, batch)`` pairs from ``source``, reports
    them through ``hooks`` (position, failures, statistics) and turns worker deaths and
    timeouts into clear errors."""

    def __init__(self, engine: Engine, source: Iterator[tuple[BatchMeta, Any]], hooks: PassHooks) -> None:
        self.engine = engine
        self.source = source
        self.hooks = hooks
        self.done = False

    def __next__(self) -> Any:
        if self.done:
            raise StopIteration
        stats = self.hooks.stats
        t0 = time.perf_counter()
        while True:
            try:
                meta, batch = next(self.source)
            except StopIteration:
                stats.record(time.perf_counter() - t0, 0, batch=False)
                self.close()
                self.hooks.finished(self)
                raise
            except Exception as exc:
                self._fatal(exc)
                raise
            self.hooks.receive(meta)
            if batch is not None:
                stats.record(time.perf_counter() - t0, meta.num_samples)
                return batch

    def _fatal(self, exc: BaseException) -> None:
        what = self.engine.diagnose(exc)
        if what is None:
            self.close()  # NOTE: a failed pass is over; the next iter() starts afresh
            return
        self.close(kill=True)
        what, _, details = what.partition("\n")  # NOTE: details (a stack) go last
        raise RuntimeError(
            f"dataforge.Loader: {what} while loading {self.hooks.where()} "
            f"({type(exc).__name__}: {str(exc).strip()}); the workers were stopped. "
            "Check the dataset's __getitem__ (crashes, memory, hangs) or run with num_workers=0 "
            "to debug" + (f"\n{details}" if details else "")
        ) from exc

    def close(self, *, kill: bool = False) -> None:
        if self.done:
            return
        self.done = True
        close_src = getattr(self.source, "close", None)
        if close_src is not None:
            with contextlib.suppress(Exception):
                close_src()
        self.engine.stop(kill=kill)
