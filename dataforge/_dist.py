"""Who this process is: distributed rank and world size, loader worker id.

The one home of worker and rank identity, shared by samplers (rank splitting),
iterable datasets (rank x worker sharding), the loader (worker seeds, error
messages) and the thread engine (thread workers), so that all agree on who is who.
"""

from __future__ import annotations

import os
import threading

import torch.distributed as dist
import torch.utils.data

_thread_local = threading.local()


def resolve_replicas(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """Return ``(num_replicas, rank)``.

    Explicit arguments win; otherwise they come from ``torch.distributed`` when it
    is initialised, else ``(1, 0)``.

    Raises:
        ValueError: when a value is not a valid int or ``rank`` is out of range.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(
            f"rank must be an int in [0, num_replicas={num_replicas}), got {rank!r}; "
            "pass rank= and num_replicas= together or initialise torch.distributed"
        )
    return num_replicas, rank


def env_rank() -> int:
    """The rank from ``RANK`` (torchrun) or ``SLURM_PROCID``, else 0."""
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def loader_rank() -> int:
    """The rank mixed into worker seeds: ``torch.distributed``'s, else the environment's
    (torchrun before ``init_process_group``: ``RANK`` still tells ranks apart)."""
    world, rank = resolve_replicas()
    return rank if world > 1 else env_rank()


def worker_info() -> tuple[int, int]:
    """Return ``(worker_id, num_workers)`` of the current DataLoader worker process, or of
    the iterable thread engine's worker thread (NOTE [iterable threads] in
    ``loading/iterable_threads.py``); ``(0, 1)`` elsewhere."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return getattr(_thread_local, "iter_worker", (0, 1))
    return info.id, info.num_workers


def replayed_consumer() -> tuple[int, int, int, int] | None:
    """``(num_replicas, rank, worker, num_workers)`` of the old consumer an iterable pipeline
    is being replayed as in this thread (NOTE [elastic shards] in
    ``datasets/elastic.py``), else None."""
    return getattr(_thread_local, "replayed", None)


def set_replayed_consumer(ident: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """Replay as ``ident`` in this thread from now on (None: as itself); the previous value."""
    before = replayed_consumer()
    _thread_local.replayed = ident
    return before


def set_iter_worker(worker_id: int, num_workers: int) -> None:
    """Mark the calling thread as worker ``worker_id`` of ``num_workers`` that shard an
    iterable dataset (NOTE [iterable threads])."""
    _thread_local.iter_worker = (worker_id, num_workers)


def in_worker() -> bool:
    """True inside a ``DataLoader`` worker process (collated outputs then go to shared memory)."""
    return torch.utils.data.get_worker_info() is not None


def set_thread_worker_id(worker_id: int) -> None:
    """Mark the calling thread as thread-engine worker ``worker_id``."""
    _thread_local.worker_id = worker_id


def current_worker_id() -> int:
    """The worker id of the caller: a process worker, a thread-engine worker, or 0 (main)."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        return int(info.id)
    return int(getattr(_thread_local, "worker_id", 0))
