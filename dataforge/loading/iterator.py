"""One pass over a ``Loader``: bookkeeping per batch, worker failures, clean shutdown."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from dataforge.loading.process_engine import dead_workers, shutdown_workers, worker_crashed
from dataforge.loading.thread_engine import ThreadBatchIterator


class LoaderIterator(Iterator[Any]):
    """One pass of a ``Loader``: takes ``(meta, batch)`` pairs from ``source``, reports
    them to the loader (position, failures, statistics) and turns worker deaths and
    timeouts into clear errors."""

    def __init__(self, loader: Any, raw: Any, source: Iterator[tuple[Any, Any]]) -> None:
        self.loader = loader
        self.raw = raw
        self.source = source
        self.done = False

    def __next__(self) -> Any:
        loader = self.loader
        if self.done:
            raise StopIteration
        t0 = time.perf_counter()
        while True:
            try:
                meta, batch = next(self.source)
            except StopIteration:
                loader._stats.record(time.perf_counter() - t0, 0, batch=False)
                self.close()
                if loader._active is not None and loader._active() is self:
                    loader._end_epoch()
                raise
            except Exception as exc:
                self._fatal(exc)
                raise
            loader._receive(meta)
            if batch is not None:
                loader._stats.record(time.perf_counter() - t0, meta[1])
                return batch

    def _fatal(self, exc: BaseException) -> None:
        if not worker_crashed(exc, self.raw):
            self.close()  # NOTE: a failed pass is over; the next iter() starts afresh
            return
        loader = self.loader
        msg = str(exc)
        dead = dead_workers(self.raw)
        what = f"worker process(es) died: {dead}" if dead else "a worker did not answer"
        if "DataLoader timed out" in msg:
            what = f"timed out after timeout={loader.timeout} s waiting for a worker"
        self.close(kill=True)
        raise RuntimeError(
            f"dataforge.Loader: {what} while loading batch {loader._yielded} of epoch "
            f"{loader._epoch} ({type(exc).__name__}: {msg.strip()}); the workers were stopped. "
            "Check the dataset's __getitem__ (crashes, memory, hangs) or run with num_workers=0 "
            "to debug"
        ) from exc

    def close(self, *, kill: bool = False) -> None:
        if self.done:
            return
        self.done = True
        close_src = getattr(self.source, "close", None)
        if close_src is not None:
            with contextlib.suppress(Exception):
                close_src()
        if isinstance(self.raw, ThreadBatchIterator):
            self.raw.close()
        elif kill or not self.loader.persistent_workers:
            shutdown_workers(self.raw, kill=kill)
            if self.loader._dataloader is not None and kill:
                self.loader._dataloader._iterator = None
