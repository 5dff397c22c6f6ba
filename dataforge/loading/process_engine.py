"""``engine="process"``: worker processes of a stock DataLoader; crash detection, shutdown.

The process engines run a stock ``torch.utils.data.DataLoader``.
:class:`StockEngine` notices dead workers (NOTE [worker deaths]) and timeouts,
turns them into messages that name the worker, and stops the rest of the
workers at once so that nothing hangs and nothing is left behind.
:class:`ProcessEngine` runs it over batch keys (``batch_size=None``; collation
happens in the worker, so one batch crosses the process boundary as a few large
tensors); ``iterable_engine.py`` runs it over an iterable dataset.

NOTE [hang watchdog]: with ``timeout`` set, a batch that does not arrive in time
ends the pass with an error that shows where the worker is stuck. Each worker
process registers ``faulthandler`` on ``STACK_SIGNAL`` (SIGUSR2) with a file of its
own in a temporary folder of the loader (:class:`StackDumps`, before the user's
``worker_init_fn``). On a timeout the main process finds the worker that owes the
awaited batch (torch's task table) and the batch key it was sent (:class:`KeyFeed`
remembers the keys of the pass in order), signals that worker and reads its
stack, most recent call first, before the workers are killed. ``faulthandler``
dumps from a C signal handler, so a worker stuck in C code or a blocking call is
shown too. Where the signal does not exist (Windows) the error has no stack.

NOTE [worker deaths]: a worker's death is found by the main thread while it waits
for a batch, never by an exception from a signal handler. Stock torch registers
the workers with a SIGCHLD handler that raises in the main thread wherever it
happens to be; raised inside ``Queue.put`` just after a lock was taken, the lock
stays held and the process hangs at exit joining the queue's feeder thread. So
the engine keeps that handler quiet while it starts the workers (when it runs in
the main thread, the only one that may set a handler), takes their pids off
torch's list, and waits for a batch in steps of ``DEATH_POLL_S``,
checking the workers' exit codes between steps (:func:`poll_deaths`). The error
has torch's handler's wording (``DataLoader worker (pid N) is killed by signal:
...``), at most ``DEATH_POLL_S`` later than the handler would have raised it.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import torch.utils.data

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.fetch import BatchFetcher, BatchKey, Fetched, identity
from dataforge.loading.policies import short
from dataforge.loading.seeding import WorkerSeeding

KEYS_KEPT = 4096  # keys of a pass remembered for the watchdog (far more than are in flight)
DEATH_POLL_S = 0.1  # NOTE [worker deaths]: how often a wait for a batch checks the workers


STACK_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR2", None)
STACK_WAIT_S = 1.5  # the longest wait for a stuck worker's stack dump
_dump_file: TextIO | None = None  # this worker's dump file, kept open for faulthandler


def _remove(folder: str, owner: int) -> None:
    if os.getpid() == owner:  # never from a forked worker
        shutil.rmtree(folder, ignore_errors=True)


class StackDumps:
    """A worker ``init_fn`` that first registers the worker's stack dump (NOTE [hang
    watchdog]), then runs ``init_fn``; :meth:`stack` reads a worker's stack from the main
    process. Picklable (spawned workers); the folder goes with the main process's copy."""

    def __init__(self, init_fn: Callable[[int], Any]) -> None:
        self.init_fn = init_fn
        self.folder = tempfile.mkdtemp(prefix="dataforge-stacks-")
        weakref.finalize(self, _remove, self.folder, os.getpid())

    def __call__(self, worker_id: int) -> None:
        global _dump_file
        if STACK_SIGNAL is not None:
            f = open(os.path.join(self.folder, f"{os.getpid()}.txt"), "w")  # noqa: SIM115 - kept open
            faulthandler.register(STACK_SIGNAL, file=f, all_threads=True, chain=False)
            _dump_file = f
        self.init_fn(worker_id)

    def stack(self, pid: int) -> str | None:
        """The Python stack of worker ``pid``, most recent call first, or ``None``."""
        path = os.path.join(self.folder, f"{pid}.txt")
        if STACK_SIGNAL is None or not os.path.exists(path):
            return None
        start = os.path.getsize(path)
        try:
            os.kill(pid, STACK_SIGNAL)
        except OSError:
            return None
        deadline = time.perf_counter() + STACK_WAIT_S
        size = start
        while time.perf_counter() < deadline:
            time.sleep(0.05)
            now = os.path.getsize(path)
            if now > start and now == size:  # written, and no longer growing
                break
            size = now
        with open(path) as f:
            f.seek(start)
            text = f.read().strip()
        return text or None


def dead_workers(raw: Any) -> str:
    out = []
    for i, w in enumerate(getattr(raw, "_workers", []) or []):
        code = w.exitcode
        if code is None:
            continue
        if code < 0:
            try:
                how = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        out.append(f"worker {i} (pid {w.pid}, {how})")
    return ", ".join(out)


def death_message(pid: int | None, code: int) -> str:
    """Torch's SIGCHLD handler's words for a worker that ended with exit code ``code``."""
    if code < 0:
        try:
            what = signal.strsignal(-code) or f"signal {-code}"
        except ValueError:
            what = f"signal {-code}"
        return f"DataLoader worker (pid {pid}) is killed by signal: {what}. "
    return (f"DataLoader worker (pid {pid}) exited unexpectedly with exit code {code}. "
            "Details are lost due to multiprocessing. Rerunning with num_workers=0 may give "
            "better error trace.")


@contextlib.contextmanager
def quiet_sigchld() -> Iterator[None]:
    """NOTE [worker deaths]: torch's SIGCHLD handler installed but not run while the body
    starts the workers (a death then is found by :func:`poll_deaths`)."""
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    from torch.utils.data._utils import signal_handling

    signal_handling._set_SIGCHLD_handler()  # now, so that the handler put back is torch's
    handler = signal.getsignal(signal.SIGCHLD)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, handler)


def poll_deaths(raw: Any) -> None:
    """NOTE [worker deaths]: take the workers of torch's iterator ``raw`` off torch's
    SIGCHLD list and make its waits for a batch check their exit codes every
    ``DEATH_POLL_S`` seconds."""
    from torch.utils.data._utils import signal_handling

    if not getattr(raw, "_worker_pids_set", False):
        return
    signal_handling._remove_worker_pids(id(raw))
    raw._worker_pids_set = False
    # NOTE: no reference to ``raw`` from its own attribute: a cycle would leave a dropped
    # iterator (and its workers) to the cyclic GC instead of ending it at once
    wait = type(raw)._try_get_data  # torch's: one wait, then its own liveness check
    ref = weakref.ref(raw)
    workers = raw._workers

    def first_death() -> str | None:
        for w in workers:
            if w.exitcode:  # None: running; 0: left when told to
                return death_message(w.pid, w.exitcode)
        return None

    def try_get_data(timeout: float = torch.utils.data._utils.MP_STATUS_CHECK_INTERVAL) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            death = first_death()
            if death is not None:
                raise RuntimeError(death)
            left = deadline - time.monotonic()
            it = ref()
            if it is None:
                return False, None
            try:
                got = wait(it, max(0.0, min(DEATH_POLL_S, left)))
            except RuntimeError as exc:  # torch's liveness check: say how the worker ended
                death = first_death()
                if death is None:
                    raise
                raise RuntimeError(death) from exc
            if got[0] or left <= DEATH_POLL_S:
                return got

    raw._try_get_data = try_get_data


def _ask_to_exit(raw: Any, grace: float) -> None:
    """What torch's own shutdown does first (done event, ``None`` on every index queue),
    then wait up to ``grace`` seconds for the workers to leave on their own."""
    with contextlib.suppress(Exception):
        raw._workers_done_event.set()
        for q in raw._index_queues:
            q.put(None)
    deadline = time.perf_counter() + grace
    for w in getattr(raw, "_workers", []) or []:
        w.join(timeout=max(0.0, deadline - time.perf_counter()))


def shutdown_workers(raw: Any, *, kill: bool = False, grace: float | None = None) -> None:
    """Stop the worker processes of a DataLoader iterator ``raw``.

    ``kill``: at once (after a crash or a timeout). ``grace``: politely, then killed
    after ``grace`` seconds (used when a Loader is garbage collected, where torch's own
    shutdown can wait 5 s per worker). Neither: torch's shutdown.
    """
    if grace is not None and not kill:
        _ask_to_exit(raw, grace)
        kill = True
    if kill:
        # NOTE: off torch's SIGCHLD list first (NOTE [worker deaths]; already so for the
        # engines' iterators), or killing them raises from the handler in our cleanup
        with contextlib.suppress(Exception):
            from torch.utils.data._utils import signal_handling

            if getattr(raw, "_worker_pids_set", False):
                signal_handling._remove_worker_pids(id(raw))
                raw._worker_pids_set = False
        for w in getattr(raw, "_workers", []) or []:
            if w.is_alive():
                w.kill()
    shutdown = getattr(raw, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def worker_crashed(exc: BaseException, raw: Any) -> bool:
    """Whether ``exc`` (raised while waiting for a batch) means a worker died or timed out."""
    msg = str(exc)
    if isinstance(exc, RuntimeError):
        return "DataLoader worker (pid" in msg or "DataLoader timed out" in msg
    if not isinstance(exc, (OSError, EOFError)) or not getattr(raw, "_workers", None):
        return False
    if msg.startswith("Caught "):
        return False  # a user's OSError, re-raised by torch from a worker
    # NOTE: a worker dying mid-send surfaces as ConnectionResetError / EOFError while the
    # main process rebuilds its tensors; give the OS a moment to report the death
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        if dead_workers(raw):
            return True
        time.sleep(0.02)
    return False


def dataloader_options(
    num_workers: int, *, persistent: bool, timeout: float, prefetch_factor: int | None, seed: int,
    seeding: WorkerSeeding, multiprocessing_context: Any,
) -> dict[str, Any]:
    """The DataLoader arguments both process engines share."""
    kwargs: dict[str, Any] = {
        # NOTE: a seeded generator, so torch's worker base seed never draws from the
        # global RNG of the training process
        "generator": make_generator(mix_seed(seed, 0x5EED)),
    }
    if num_workers > 0:
        if multiprocessing_context is None and sys.platform.startswith("linux"):
            multiprocessing_context = multiprocessing.get_context("fork")
        kwargs.update(
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent,
            multiprocessing_context=multiprocessing_context,
            timeout=timeout,  # waits on workers; the single-process path has nothing to wait on
            # NOTE [hang watchdog]
            worker_init_fn=StackDumps(seeding) if timeout > 0 else seeding,
        )
    return kwargs


class StockEngine:
    """A stock DataLoader as an engine: pass, shutdown and crash reports (NOTE [engine
    contract] in ``engine.py``); subclasses build the DataLoader and start a pass."""

    def __init__(self, dataloader: torch.utils.data.DataLoader, *, timeout: float) -> None:
        self.dataloader = dataloader
        self.persistent = bool(dataloader.persistent_workers)
        self.timeout = timeout
        init = dataloader.worker_init_fn
        self.stacks = init if isinstance(init, StackDumps) else None
        self._raw: Any = None

    def _begin(self) -> Iterator[Any]:
        with quiet_sigchld():  # NOTE [worker deaths]
            self._raw = iter(self.dataloader)
            poll_deaths(self._raw)
        return self._raw

    def stop(self, *, kill: bool = False) -> None:
        raw, self._raw = self._raw, None
        if raw is not None and (kill or not self.persistent):
            shutdown_workers(raw, kill=kill)
        if kill:
            self.dataloader._iterator = None

    def close(self, *, grace: float | None = None) -> None:
        self._raw = None
        raw = getattr(self.dataloader, "_iterator", None)
        if raw is not None:
            shutdown_workers(raw, grace=grace)
            self.dataloader._iterator = None

    def diagnose(self, exc: BaseException) -> str | None:
        raw = self._raw
        if raw is None or not worker_crashed(exc, raw):
            return None
        if "DataLoader timed out" in str(exc):
            return self._hung(raw)
        dead = dead_workers(raw)
        return f"worker process(es) died: {dead}" if dead else "a worker did not answer"


    def describe_task(self, task: int) -> str:
        """What task ``task`` of the pass (torch's send index) loads, in words."""
        return "its part of the dataset's stream"

    def _hung(self, raw: Any) -> str:
        """NOTE [hang watchdog]: the worker that owes the awaited batch, what it was sent
        and its stack (lines after the first)."""
        head = f"timed out after timeout={self.timeout} s waiting for a worker"
        task = getattr(raw, "_rcvd_idx", None)  # torch's iterator: the awaited task, its worker
        info = getattr(raw, "_task_info", {}).get(task) if isinstance(task, int) else None
        workers = getattr(raw, "_workers", None) or []
        if not isinstance(task, int) or not info or info[0] >= len(workers):
            return head
        wid = info[0]
        pid = workers[wid].pid
        head = (f"timed out after timeout={self.timeout} s waiting for worker {wid} (pid {pid}) "
                f"on {self.describe_task(task)}")
        stack = self.stacks.stack(pid) if self.stacks is not None and pid is not None else None
        if stack is None:
            return head
        return f"{head}\nworker {wid}'s Python stack (most recent call first):\n{stack}"


class KeyFeed:
    """The DataLoader's ``sampler``: each ``iter()`` yields the keys of the current pass.

    torch calls ``iter(sampler)`` more than once when it builds an iterator; every call
    gets the same key iterator, so nothing is drawn twice.
    """

    def __init__(self) -> None:
        self.keys: Iterator[BatchKey] = iter(())
        self.length = 0
        self.sent: collections.deque[BatchKey] = collections.deque(maxlen=KEYS_KEPT)
        self.count = 0  # keys handed out this pass

    def start(self, keys: Iterator[BatchKey]) -> None:
        """A new pass over ``keys``."""
        self.sent.clear()
        self.count = 0
        self.keys = self._remember(keys)

    def _remember(self, keys: Iterator[BatchKey]) -> Iterator[BatchKey]:
        for key in keys:
            self.sent.append(key)
            self.count += 1
            yield key

    def key(self, task: int) -> BatchKey | None:
        """The key handed out ``task``-th this pass, if still kept (NOTE [hang watchdog])."""
        back = self.count - task
        return self.sent[-back] if 0 < back <= len(self.sent) else None

    def __iter__(self) -> Iterator[BatchKey]:
        return self.keys

    def __len__(self) -> int:
        return self.length


class ProcessEngine(StockEngine):
    """``engine="process"``: a stock DataLoader over batch keys, one key per "sample"
    (``batch_size=None``), each loaded and collated in a worker by ``fetcher``."""

    def __init__(
        self, fetcher: BatchFetcher, *, num_workers: int, pin_memory: bool, persistent: bool,
        **options: Any,
    ) -> None:
        self._feed = KeyFeed()
        dataloader = torch.utils.data.DataLoader(
            fetcher, batch_size=None, sampler=self._feed, num_workers=num_workers,
            collate_fn=identity, pin_memory=pin_memory,
            **dataloader_options(num_workers, persistent=persistent, **options),
        )
        super().__init__(dataloader, timeout=options["timeout"])

    def start(self, work: Iterator[BatchKey]) -> Iterator[Fetched]:
        self._feed.start(work)
        return self._begin()

    def describe_task(self, task: int) -> str:
        key = self._feed.key(task)
        return f"dataset indices {short(key.indices)}" if key is not None else f"task {task} of the pass"
