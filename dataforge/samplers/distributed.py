"""``DistributedSamplerWrapper``: shard any (batch) sampler across ranks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

from dataforge.samplers.base import EpochSampler

T = TypeVar("T")


class DistributedSamplerWrapper(EpochSampler[T]):
    """Give each rank a disjoint, equal-length share of any sampler's epoch.

    Once per epoch the wrapped sampler is iterated in full (after forwarding
    ``set_epoch`` to it when it has one) and this rank keeps positions
    ``rank, rank + R, ...`` of that order, padded by repeating its start
    (``drop_last=False``) or cut (``drop_last=True``) so all ranks get the same
    count. Items may be indices or lists (a batch sampler).

    NOTE [deterministic wrapped sampler]: every rank materialises the wrapped
    sampler independently, so it must yield the same order on every rank for the
    same epoch: seed it explicitly (``torch.Generator().manual_seed(s)`` plus
    ``set_epoch``, or a dataforge sampler with ``num_replicas=1``). A sampler drawing
    from the global RNG gives overlapping shards.

    Args:
        sampler: any iterable of indices or of batches; ``set_epoch`` is forwarded.
        num_replicas: ranks (default from ``torch.distributed``, else 1).
        rank: this rank (default from ``torch.distributed``, else 0).
        drop_last: drop the epoch's tail instead of padding so ranks get equal shares.

    Example:
        >>> from torch.utils.data import BatchSampler, SequentialSampler
        >>> batches = BatchSampler(SequentialSampler(range(7)), batch_size=2, drop_last=False)
        >>> list(DistributedSamplerWrapper(batches, num_replicas=2, rank=1))
        [[2, 3], [6]]
        >>> list(DistributedSamplerWrapper(range(5), num_replicas=2, rank=1))
        [1, 3, 0]
    """

    _chunk = 4096

    def __init__(
        self,
        sampler: Iterable[T],
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed=None, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        if not hasattr(sampler, "__iter__"):
            raise TypeError(
                f"sampler must be iterable (a Sampler, BatchSampler or list), "
                f"got {type(sampler).__name__}"
            )
        inner_replicas = getattr(sampler, "num_replicas", 1)
        if isinstance(sampler, EpochSampler) and inner_replicas != 1:
            raise ValueError(
                f"sampler is already split across num_replicas={inner_replicas}; build it with "
                "num_replicas=1, rank=0 before wrapping it, or use it without the wrapper"
            )
        self.sampler = sampler
        self._cache: tuple[int, list[Any]] | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)

    def _items(self) -> list[Any]:
        if self._cache is None or self._cache[0] != self.epoch:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            self._cache = (self.epoch, list(self.sampler))
        return self._cache[1]

    def _global_len(self) -> int:
        return len(self._items())

    def _global_chunks(self, start: int) -> Iterator[np.ndarray]:
        yield np.arange(start, len(self._items()), dtype=np.int64)

    def _to_items(self, chunk: np.ndarray) -> list[Any]:
        items = self._items()
        return [items[i] for i in chunk.tolist()]

    def _state_fields(self) -> dict[str, Any]:
        return {"num_items": len(self._items())}
