"""``engine="thread"`` over an iterable dataset: a thread per worker, the stock order.

NOTE [iterable threads]: worker thread ``w`` of ``n`` iterates its own copy of the
pipeline (``copy.deepcopy`` at each pass: a pipeline keeps per-iteration counters,
error counters included, that threads must not share) as process worker ``w`` would:
in that thread ``worker_info()`` answers ``(w, n)`` (``_dist.py``), so dataforge sources
shard over the threads as they do over processes. A thread batches as torch's
iterable fetcher does (``batch_size`` items, a short last batch unless ``drop_last``)
and collates with the process workers' ``TaggedCollate``, so its batches carry the
same tags, and the consumer takes them in the stock ``DataLoader``'s order: worker
``0, 1, ..., n - 1, 0, ...``, skipping a worker once its stream has ended. Hence the
bookkeeping, the state and its resume (NOTE [iterable resume] in
``iterable_engine.py``) are the process engine's, and a state taken under one engine
resumes under the other. Only ``IterDataset`` pipelines are accepted (``from_shards``,
``IterDataset.from_iterable``, their ops): a plain ``IterableDataset`` that shards
itself with torch's ``get_worker_info()`` sees no worker in a thread and would yield
its items ``n`` times. The global RNGs are not reseeded per thread (NOTE [thread
engine]); a ``worker_init_fn`` runs once in each thread. Each worker runs at most
``prefetch_factor`` batches ahead. With ``timeout``, a batch that does not come in
time ends the pass with an error that names the worker and shows its stack.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

from dataforge._dist import set_iter_worker, set_thread_worker_id
from dataforge.loading.fetch import Fetched
from dataforge.loading.iterable_engine import (
    ResumableSource,
    ShardPlan,
    TaggedCollate,
    fetched_batches,
)
from dataforge.loading.policies import with_context
from dataforge.loading.seeding import WorkerSeeding
from dataforge.loading.thread_engine import THREAD_PREFIX, PassEngine, abandon, track

_DONE = object()  # a worker's stream has ended
_POLL_S = 0.1  # how often a blocked worker looks at its stop flag


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; ``False`` if the pass stopped first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _work(
    w: int, n: int, source: ResumableSource, collate: TaggedCollate, batch_size: int | None,
    drop_last: bool, init_fn: Callable[[int], Any] | None, q: queue.Queue[Any], stop: threading.Event,
) -> None:
    """Worker thread ``w`` of ``n``: its stream's batches, then ``_DONE`` (NOTE [iterable threads])."""
    set_thread_worker_id(w)
    set_iter_worker(w, n)
    torch.set_num_threads(1)  # NOTE [one intra-op thread per worker] in thread_engine.py
    try:
        if init_fn is not None:
            try:
                init_fn(w)
            except Exception as exc:
                raise with_context(exc, f"worker_init_fn of worker {w}") from None
        it = iter(source)
        while not stop.is_set():
            if batch_size is None:
                data: Any = next(it, _DONE)
                if data is _DONE:
                    break
            else:
                data = list(itertools.islice(it, batch_size))
                if not data or (drop_last and len(data) < batch_size):
                    break
            if not _put(q, collate(data), stop):
                return
        _put(q, _DONE, stop)
    except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
        _put(q, _Failure(exc), stop)


class _ThreadWorkers(Iterator[Any]):
    """One pass: ``n`` threads, each a worker's stream of tagged batches, merged in the
    stock order (NOTE [iterable threads])."""

    def __init__(
        self, source: ResumableSource, collate: Callable[[Any], Any], *, batch_size: int | None,
        drop_last: bool, num_workers: int, prefetch_factor: int, timeout: float,
        init_fn: Callable[[int], Any] | None,
    ) -> None:
        self._timeout = timeout
        self._stop = threading.Event()
        self._queues: list[queue.Queue[Any]] = [queue.Queue(prefetch_factor) for _ in range(num_workers)]
        self._order = collections.deque(range(num_workers))
        self._threads: list[threading.Thread] = []
        self._torch_threads = torch.get_num_threads()
        for w in range(num_workers):
            own = copy.copy(source)
            own.dataset = copy.deepcopy(source.dataset)
            tagged = TaggedCollate(collate, batch_size is not None, drop_last, own)
            # NOTE: the thread holds the queue and the stop flag, not this object, so that a
            # pass dropped without close() is collected and its __del__ stops the threads
            t = threading.Thread(
                target=_work, args=(w, num_workers, own, tagged, batch_size, drop_last, init_fn,
                                    self._queues[w], self._stop),
                name=f"{THREAD_PREFIX}iterable-{w}", daemon=True,
            )
            self._threads.append(t)
        track(self)  # NOTE [threads at exit] in thread_engine.py
        for t in self._threads:
            t.start()

    def __next__(self) -> Any:
        while self._order:
            w = self._order[0]
            item = self._get(w)
            if item is _DONE:
                self._order.popleft()
                continue
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
            self._order.rotate(-1)
            return item
        self.close()
        raise StopIteration

    def _get(self, w: int) -> Any:
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = _POLL_S if deadline is None else min(_POLL_S, max(0.0, deadline - time.monotonic()))
            try:
                return self._queues[w].get(timeout=wait)
            except queue.Empty:
                pass
            if not self._threads[w].is_alive() and self._queues[w].empty():
                self.close()
                raise RuntimeError(f"dataforge iterable thread engine: worker {w} ended without a result")
            if deadline is not None and time.monotonic() >= deadline:
                abandon(self._threads[w])
                message = self._hung(w)
                self.close()
                raise RuntimeError(message)

    def _hung(self, w: int) -> str:
        t = self._threads[w]
        lines = [
            f"dataforge iterable thread engine: worker {w}'s next batch timed out after "
            f"{self._timeout} s (a hung source or a slow read); raise timeout= or fix the dataset"
        ]
        frame = sys._current_frames().get(t.ident) if t.ident is not None else None
        if frame is not None:
            lines.append(f"worker thread {t.name}'s Python stack (most recent call last):")
            lines.append("".join(traceback.format_stack(frame)).rstrip())
        return "\n".join(lines)

    def close(self) -> None:
        """Tell the threads to stop; they end at their next batch (a hung one is left)."""
        if self._stop.is_set():
            return
        self._stop.set()
        torch.set_num_threads(self._torch_threads)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class IterableThreadEngine(PassEngine):
    """``engine="thread"`` over an ``IterDataset`` (NOTE [iterable threads]) behind the
    engine contract (``engine.py``); its work is a :class:`ShardPlan`."""

    def __init__(
        self, dataset: Any, *, batch_size: int | None, drop_last: bool, collate_fn: Callable[[Any], Any],
        num_workers: int, prefetch_factor: int | None, timeout: float, seeding: WorkerSeeding,
    ) -> None:
        self.batched = batch_size is not None
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor or 2
        self.timeout = timeout
        self.init_fn = seeding.user_fn
        self.source = ResumableSource(dataset, batch_size or 1, num_workers, seeding)

    def start(self, work: ShardPlan) -> Iterator[Fetched]:
        self.stop()
        self.source.set_plan(work)
        self.source.elastic = work.elastic
        self._pass = _ThreadWorkers(
            self.source, self.collate_fn, batch_size=self.batch_size, drop_last=self.drop_last,
            num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
            timeout=self.timeout, init_fn=self.init_fn,
        )
        return fetched_batches(self._pass, work.start, self.batched)
