"""Where this process sits: distributed rank / world size and DataLoader worker.

Shared by samplers (rank splitting) and iterable datasets (rank x worker
sharding) so that both agree on who is who.
"""

from __future__ import annotations

import torch.distributed as dist
import torch.utils.data


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


def worker_info() -> tuple[int, int]:
    """Return ``(worker_id, num_workers)`` of the current DataLoader worker, ``(0, 1)`` in the main process."""
    info = torch.utils.data.get_worker_info()
    if info is None:
        return 0, 1
    return info.id, info.num_workers
