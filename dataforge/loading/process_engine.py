"""Worker processes of ``engine="process"``: seeding, crash detection, shutdown.

The process engine is a stock ``torch.utils.data.DataLoader``; torch already
notices dead workers (a SIGCHLD handler and a liveness check) and timeouts.
This module turns those into errors that name the worker, and stops the rest
of the workers at once so that nothing hangs and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import torch.utils.data

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.errors import identity, with_context
from dataforge.loading.seeding import seed_worker


class WorkerInit:
    """Seeds a worker process (see ``seed_worker``), then runs the user's ``worker_init_fn``."""

    def __init__(self, seed: int, rank: int, user_fn: Callable[[int], Any] | None) -> None:
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        seed_worker(worker_id, seed=self.seed, epoch=self.epoch, rank=self.rank)
        if self.user_fn is not None:
            try:
                self.user_fn(worker_id)
            except Exception as exc:
                raise with_context(exc, f"worker_init_fn of worker {worker_id}") from exc


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
        # NOTE: unregister the workers from torch's SIGCHLD handler first, or killing them
        # raises "worker killed by signal" from the handler in the middle of our cleanup
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


def make_dataloader(
    fetcher: Any,
    keys: Any,
    *,
    num_workers: int,
    pin_memory: bool,
    timeout: float,
    seed: int,
    prefetch_factor: int | None,
    persistent_workers: bool,
    worker_init_fn: WorkerInit,
    multiprocessing_context: Any,
) -> torch.utils.data.DataLoader:
    """The stock DataLoader behind ``engine="process"``: one ``BatchKey`` per "sample"
    (``batch_size=None``), collated in the worker by ``fetcher``."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        if multiprocessing_context is None and sys.platform.startswith("linux"):
            multiprocessing_context = multiprocessing.get_context("fork")
        kwargs.update(
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            multiprocessing_context=multiprocessing_context,
            timeout=timeout,  # waits on workers; the single-process path has nothing to wait on
            worker_init_fn=worker_init_fn,
        )
    return torch.utils.data.DataLoader(
        fetcher,
        batch_size=None,
        sampler=keys,
        num_workers=num_workers,
        collate_fn=identity,
        pin_memory=pin_memory,
        # NOTE: a seeded generator, so torch's worker base seed never draws from the global
        # RNG of the training process
        generator=make_generator(mix_seed(seed, 0x5EED)),
        **kwargs,
    )


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
    try:
        while time.perf_counter() < deadline:
            if dead_workers(raw):
                return True
            time.sleep(0.02)
    except RuntimeError:  # torch's SIGCHLD handler reporting the death
        return True
    return False
