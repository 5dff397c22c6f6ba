"""Worker seeding and identity: the global RNGs (``random``, numpy, torch) of a worker
process, and what ``torch.utils.data.get_worker_info()`` shows inside it.

NOTE [worker seeds]: torch seeds ``random`` and torch in each worker but leaves
numpy with the parent's state, so every forked worker draws the same numpy
numbers. :func:`seed_worker` seeds all three from
``mix_seed(seed, rank, epoch, worker_id)``: distinct per worker, per rank and per
epoch, and the same in two runs with the same seed. Per-sample augmentations
should still derive their randomness from ``(seed, epoch, index)`` (see
``dataforge._rng``) so that they do not depend on the number of workers; these
global streams are for third-party code that insists on the global RNG.

NOTE [worker_init_fn after seeding]: a loader's worker is seeded once when it
starts, for the epoch it starts in, and then the user's ``worker_init_fn`` runs,
so what that function seeds stays seeded (as in a stock ``DataLoader``). A
persistent worker is reseeded for each new epoch only when there is no
``worker_init_fn``; with one, the global streams are the user's and continue
across epochs, as they would under torch.

NOTE [worker info shows the user's dataset]: the loader's DataLoader runs over an
internal dataset (batch keys or a resumable stream), so inside a worker torch's
``get_worker_info().dataset`` would be that wrapper and ``.seed`` the seed torch
drew, not the one in force. The worker's ``WorkerInfo`` is therefore set to show
the worker's copy of the user's dataset and the seed given to the RNGs, so that
``info.dataset`` reaches the dataset (per-worker file handles, sharding) and
``info.seed == torch.initial_seed()``. torch freezes ``WorkerInfo`` after
creating it; the fields are written with ``object.__setattr__`` and torch itself
does not read them back (its fetcher holds its own reference to the dataset).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.utils.data

from dataforge._dist import env_rank
from dataforge._rng import mix_seed
from dataforge.loading.policies import with_context

# the epoch this worker process's RNGs were last seeded for (None: not a loader worker)
_seeded_epoch: list[int | None] = [None]


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
    epoch (NOTE [worker_init_fn after seeding]).

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


def _show(info: Any, **fields: Any) -> None:
    for name, value in fields.items():  # NOTE [worker info shows the user's dataset]
        object.__setattr__(info, name, value)


class WorkerSeeding:
    """A loader's worker seeding: its ``worker_init_fn`` and its per-epoch reseed.

    Args:
        seed: the loader's seed.
        rank: the distributed rank mixed into the seeds.
        user_fn: the user's ``worker_init_fn``, run after the seeding.

    ``epoch`` is set by the loader before workers start. In a worker, the internal
    dataset torch runs over must have a ``dataset`` attribute: the user's dataset.
    """

    def __init__(self, seed: int, rank: int, user_fn: Callable[[int], Any] | None) -> None:
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.user_fn = user_fn

    def _seed(self, info: Any, epoch: int) -> None:
        s = seed_worker(int(info.id), seed=self.seed, epoch=epoch, rank=self.rank)
        _seeded_epoch[0] = epoch
        _show(info, seed=s)

    def __call__(self, worker_id: int) -> None:
        """The ``worker_init_fn`` (NOTE [worker_init_fn after seeding])."""
        info = torch.utils.data.get_worker_info()
        if info is not None:
            _show(info, dataset=getattr(info.dataset, "dataset", info.dataset))
            self._seed(info, self.epoch)
        if self.user_fn is not None:
            try:
                self.user_fn(worker_id)
            except Exception as exc:
                raise with_context(exc, f"worker_init_fn of worker {worker_id}") from exc

    def enter_epoch(self, epoch: int) -> None:
        """Reseed a persistent worker process that meets a new epoch (nothing elsewhere)."""
        if _seeded_epoch[0] is None or _seeded_epoch[0] == epoch or self.user_fn is not None:
            return
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self._seed(info, epoch)
