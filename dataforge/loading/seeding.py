"""Per-worker seeding of the global RNGs (``random``, numpy, torch).

NOTE [worker seeds]: torch seeds ``random`` and torch in each worker but leaves
numpy with the parent's state, so every forked worker draws the same numpy
numbers. :func:`seed_worker` seeds all three from
``mix_seed(seed, rank, epoch, worker_id)``: distinct per worker, per rank and per
epoch, and the same in two runs with the same seed. Per-sample augmentations
should still derive their randomness from ``(seed, epoch, index)`` (see
``dataforge._rng``) so that they do not depend on the number of workers; these
global streams are for third-party code that insists on the global RNG.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from dataforge._rng import mix_seed


def env_rank() -> int:
    """The rank from ``RANK`` (torchrun) or ``SLURM_PROCID``, else 0."""
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def worker_seed(seed: int, worker_id: int, *, epoch: int = 0, rank: int = 0) -> int:
    """The seed :func:`seed_worker` gives worker ``worker_id`` (a pure function)."""
    return mix_seed(seed, rank, epoch, worker_id)


def seed_worker(
    worker_id: int, *, seed: int | None = None, epoch: int = 0, rank: int | None = None
) -> int:
    """Seed ``random``, numpy and torch for one DataLoader worker; return the seed used.

    Usable directly as ``worker_init_fn`` of a stock ``DataLoader``: the base seed
    then comes from ``torch.initial_seed()`` inside the worker (which torch derives
    from the loader's ``generator``, so pass a seeded ``generator`` for runs that
    repeat). :func:`dataforge.build_loader` calls it with its own ``seed`` and the
    current epoch, again at each new epoch (persistent workers included).

    Args:
        worker_id: the worker's id (``0 .. num_workers - 1``).
        seed: base seed; ``None`` takes ``torch.initial_seed()``.
        epoch: the epoch, mixed in so that epochs draw different numbers.
        rank: the distributed rank; ``None`` reads ``RANK`` from the environment (else 0).

    Example:
        >>> import random
        >>> s = seed_worker(1, seed=0, epoch=2)
        >>> a = random.random()
        >>> _ = seed_worker(1, seed=0, epoch=2)
        >>> a == random.random()
        True
    """
    if isinstance(worker_id, bool) or not isinstance(worker_id, int) or worker_id < 0:
        raise ValueError(f"worker_id must be a non-negative int, got {worker_id!r}")
    if seed is None:
        seed = torch.initial_seed()
    if rank is None:
        rank = env_rank()
    s = worker_seed(int(seed), worker_id, epoch=int(epoch), rank=int(rank))
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s
