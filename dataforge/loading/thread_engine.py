"""``engine="thread"``: fetch batches in a pool of threads in the main process.

NOTE [thread engine]: ``num_workers`` daemon threads each load whole batches
(``BatchFetcher``, so ``__getitems__``, error policies and collation are the
same as in worker processes). Batches come back in order from a bounded window
of ``num_workers * prefetch_factor`` batches in flight. Decoding and resizing
in torchvision / PIL / numpy release the GIL, so threads run them in parallel
without inter-process copies or worker start-up. The global RNGs are shared by
the threads (they are not reseeded per worker; a ``worker_init_fn`` runs once in
each thread, without seeding); per-sample randomness must come from
``(seed, epoch, index)`` (``MapDataset.map(fn, seed=)`` or ``generator=``), which is
what makes the batches identical to the process engine's (tested). Blocks that
seed the global RNGs hold a lock, so transforms that draw from them run one at a
time, while those that take ``generator=`` run in parallel (NOTE [global RNGs
under threads] in :mod:`dataforge._rng`). Threads are started for each pass (cheap) and stopped at its
end. A hung fetch cannot be killed: with ``timeout`` the consumer gets an error and
the daemon thread is abandoned, and the error shows the batch and the stack of
the thread loading it (NOTE [hang watchdog] in ``process_engine.py`` is the same
for worker processes).

NOTE [one intra-op thread per worker]: as a stock DataLoader does in its worker
processes, each fetch thread runs torch ops single-threaded
(``torch.set_num_threads(1)``): otherwise every resize in every worker thread fans
out over all cores' OpenMP threads, which then spin against each other (measured
on 2 cores: 5x the context switches, 10-20% fewer samples/s). torch keeps that
setting per thread once a thread has run an op, but its global value is what new
threads start from, so the pool restores the global value it found when it stops.

NOTE [threads at exit]: a daemon thread that touches torch while the interpreter
shuts down aborts the process ("terminate called without an active exception"):
Python ends such a thread with ``pthread_exit`` when it asks for the GIL back, and
the unwind through torch's C++ frames calls ``std::terminate``. Freeing a tensor
is enough (seen in a gdb backtrace: ``THPVariable_clear`` -> ``take_gil`` ->
``pthread_exit``), so a thread that has been told to stop but is still dropping its
last batch is as dangerous as one mid-fetch. An ``atexit`` hook therefore closes
every live pool and joins every fetch thread still running, whether or not its
pool object still exists (up to ``EXIT_JOIN_S`` in all), except the threads a
``timeout`` abandoned as hung: waiting for those could take forever.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import queue
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import torch

from dataforge._dist import set_thread_worker_id
from dataforge.loading.fetch import BatchFetcher, BatchKey, Fetched
from dataforge.loading.policies import with_context

_STOP = object()
EXIT_JOIN_S = 10.0
THREAD_PREFIX = "dataforge-fetch-"
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # passes with a close(): NOTE [threads at exit]
_ABANDONED: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # hung past a timeout


def track(running: Any) -> None:
    """Have the exit hook close ``running`` (it has a ``close()``) and join its threads,
    named with :data:`THREAD_PREFIX` (NOTE [threads at exit])."""
    _LIVE.add(running)


def abandon(thread: threading.Thread) -> None:
    """A thread hung past a timeout: the exit hook does not wait for it."""
    _ABANDONED.add(thread)


def _worker(
    worker_id: int, tasks: queue.SimpleQueue[Any], init_fn: Callable[[int], Any] | None
) -> None:
    set_thread_worker_id(worker_id)
    torch.set_num_threads(1)  # NOTE [one intra-op thread per worker]
    init_error: BaseException | None = None
    if init_fn is not None:
        try:
            init_fn(worker_id)
        except Exception as exc:
            init_error = with_context(exc, f"worker_init_fn of worker {worker_id}")
    while True:
        item = tasks.get()
        if item is _STOP:
            return
        fut, fn, key = item
        if not fut.set_running_or_notify_cancel():
            continue
        fut.df_thread = threading.current_thread()  # type: ignore[attr-defined]  # for a timeout
        if init_error is not None:
            fut.set_exception(init_error)
            continue
        try:
            fut.set_result(fn(key))
        except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
            fut.set_exception(exc)


class ThreadBatchIterator(Iterator[Any]):
    """Yield ``fetch(key)`` for each key of ``keys``, in order, computed by threads.

    Args:
        fetch: loads one batch key (runs in a worker thread).
        keys: the batch keys, consumed lazily in the calling thread.
        num_workers: threads; 0 fetches synchronously in the calling thread.
        prefetch_factor: batches in flight per thread.
        timeout: seconds to wait for one batch (0: forever).
        init_fn: run once in each thread with its worker id (the user's ``worker_init_fn``;
            an error there is raised for every batch that thread takes).
    """

    def __init__(
        self,
        fetch: Callable[[Any], Any],
        keys: Iterator[Any],
        num_workers: int,
        prefetch_factor: int = 2,
        timeout: float = 0,
        init_fn: Callable[[int], Any] | None = None,
    ) -> None:
        self._fetch = fetch
        self._keys = keys
        self._timeout = timeout
        self._window = max(1, num_workers * prefetch_factor)
        self._pending: collections.deque[tuple[Future[Any], Any]] = collections.deque()
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._keys_done = False
        self._torch_threads = torch.get_num_threads()
        for i in range(num_workers):
            t = threading.Thread(
                target=_worker, args=(i, self._tasks, init_fn), name=f"{THREAD_PREFIX}{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        if self._threads:
            track(self)

    def _submit_more(self) -> None:
        while not self._keys_done and len(self._pending) < self._window:
            try:
                key = next(self._keys)
            except StopIteration:
                self._keys_done = True
                return
            fut: Future[Any] = Future()
            self._tasks.put((fut, self._fetch, key))
            self._pending.append((fut, key))

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        if not self._threads:  # synchronous
            try:
                key = next(self._keys)
            except StopIteration:
                self.close()
                raise
            return self._fetch(key)
        self._submit_more()
        if not self._pending:
            self.close()
            raise StopIteration
        fut, key = self._pending.popleft()
        try:
            result = fut.result(timeout=self._timeout if self._timeout > 0 else None)
        except FutureTimeout:
            hung = getattr(fut, "df_thread", None)
            if hung is not None:
                abandon(hung)  # NOTE [threads at exit]
            message = self._hung(key, hung)
            self.close()
            raise RuntimeError(message) from None
        except BaseException:
            self.close()
            raise
        self._submit_more()
        return result

    def _hung(self, key: Any, thread: threading.Thread | None) -> str:
        """The timeout's message: the batch, and the stack of the thread loading it (of
        every fetch thread when none has taken it: a hung ``worker_init_fn``); NOTE
        [thread engine]."""
        what = key.describe() if isinstance(key, BatchKey) else repr(key)
        lines = [
            f"dataforge thread engine: loading {what} timed out after {self._timeout} s "
            "(a hung __getitem__ or a slow source); raise timeout= or fix the dataset"
        ]
        frames = sys._current_frames()
        for t in [thread] if thread is not None else self._threads:
            frame = frames.get(t.ident) if t.ident is not None else None
            if frame is not None:
                lines.append(f"worker thread {t.name}'s Python stack (most recent call last):")
                lines.append("".join(traceback.format_stack(frame)).rstrip())
        return "\n".join(lines)

    def close(self) -> None:
        """Cancel pending batches and stop the threads (a hung thread is abandoned)."""
        if self._closed:
            return
        self._closed = True
        for fut, _ in self._pending:
            fut.cancel()
        self._pending.clear()
        for _ in self._threads:
            self._tasks.put(_STOP)
        if self._threads:
            torch.set_num_threads(self._torch_threads)  # NOTE [one intra-op thread per worker]
        self._threads = []

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class PassEngine:
    """The engine contract's ending side for engines whose workers are threads started
    for each pass (``ThreadEngine``, ``IterableThreadEngine``): the running pass has a
    ``close()``."""

    persistent = False
    _pass: Any = None

    def stop(self, *, kill: bool = False) -> None:
        running, self._pass = self._pass, None
        if running is not None:
            running.close()

    def close(self, *, grace: float | None = None) -> None:
        self.stop()

    def diagnose(self, exc: BaseException) -> str | None:
        return None  # a timeout is already a clear RuntimeError; threads cannot die alone


class ThreadEngine(PassEngine):
    """``engine="thread"`` (NOTE [thread engine]) behind the engine contract (``engine.py``)."""

    def __init__(
        self, fetcher: BatchFetcher, *, num_workers: int, prefetch_factor: int | None,
        timeout: float, init_fn: Callable[[int], Any] | None,
    ) -> None:
        self.fetcher = fetcher
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor or 2
        self.timeout = timeout
        self.init_fn = init_fn

    def start(self, work: Iterator[BatchKey]) -> Iterator[Fetched]:
        running = ThreadBatchIterator(
            self.fetcher.__getitem__, work, self.num_workers, self.prefetch_factor,
            self.timeout, init_fn=self.init_fn,
        )
        self._pass = running
        return running


@atexit.register
def _stop_all_at_exit() -> None:
    """NOTE [threads at exit]."""
    for pool in list(_LIVE):
        with contextlib.suppress(Exception):
            pool.close()
    deadline = time.monotonic() + EXIT_JOIN_S
    me = threading.current_thread()
    for t in threading.enumerate():
        if t.name.startswith(THREAD_PREFIX) and t is not me and t not in _ABANDONED:
            t.join(max(0.0, deadline - time.monotonic()))
