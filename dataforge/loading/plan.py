"""The batch plan: which dataset indices form batch ``b`` of epoch ``e``.

See NOTE [batch plan] in ``loader.py``. The plan runs in the main process; workers
only load what it decides, so both engines and any worker count yield the same
batches, and resuming at batch ``k`` needs no data.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.errors import BatchKey


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


class BatchPlan:
    """Which dataset indices form each batch of an epoch (see NOTE [batch plan])."""

    def __init__(
        self,
        n: int,
        batch_size: int | None,
        drop_last: bool,
        shuffle: bool,
        seed: int,
        sampler: Any,
        batch_sampler: Any,
    ) -> None:
        self.n = n
        self.bs = batch_size if batch_size is not None else 1
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.source = batch_sampler if batch_sampler is not None else sampler
        self.stateful = self.source is not None and _stateful(self.source)

    def num_batches(self) -> int | None:
        if self.batch_sampler is not None:
            return len(self.batch_sampler) if hasattr(self.batch_sampler, "__len__") else None
        n = self.n if self.sampler is None else (
            len(self.sampler) if hasattr(self.sampler, "__len__") else None
        )
        if n is None:
            return None
        return n // self.bs if self.drop_last else math.ceil(n / self.bs)

    def set_epoch(self, epoch: int) -> None:
        if self.source is not None and hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)

    def _chunks(self, indices: Iterator[int]) -> Iterator[list[int]]:
        batch: list[int] = []
        for i in indices:
            batch.append(int(i))
            if len(batch) == self.bs:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def batches(
        self, epoch: int, skip: int, sampler_state: dict[str, Any] | None
    ) -> Iterator[tuple[list[int], dict[str, Any] | None]]:
        """``(indices, source state after drawing them)`` for batches ``skip, skip+1, ...``."""
        if self.source is None:
            if self.shuffle:
                g = make_generator(mix_seed(self.seed, epoch))
                order = torch.randperm(self.n, generator=g).tolist()
            else:
                order = list(range(self.n))
            for b in self._chunks(iter(order[skip * self.bs :])):
                yield b, None
            return
        self.set_epoch(epoch)
        if self.stateful and sampler_state is not None:
            self.source.load_state_dict(sampler_state)
            skip = 0
        it = iter(self.source)
        batches = (
            (list(map(int, b)) for b in it) if self.batch_sampler is not None else self._chunks(it)
        )
        for i, b in enumerate(batches):
            if i < skip:
                continue
            yield b, (self.source.state_dict() if self.stateful else None)


class LoaderKeys:
    """The DataLoader's ``sampler``: each ``iter()`` yields the keys the loader prepared."""

    def __init__(self, loader: Any) -> None:
        self.loader = weakref.ref(loader)  # NOTE: no cycle, so `del loader` ends workers at once

    def _get(self) -> Any:
        loader = self.loader()
        if loader is None:
            raise RuntimeError("the Loader of this DataLoader was deleted")
        return loader

    def __iter__(self) -> Iterator[BatchKey]:
        return self._get()._take_keys()

    def __len__(self) -> int:
        return len(self._get())


def make_keys(
    plan: BatchPlan,
    sampler_states: dict[int, dict[str, Any]],
    epoch: int,
    skip: int,
    sampler_state: dict[str, Any] | None,
) -> Iterator[BatchKey]:
    # a module-level generator: it must not reference the Loader (see LoaderKeys)
    for b, (indices, state) in enumerate(plan.batches(epoch, skip, sampler_state), start=skip):
        if state is not None:
            sampler_states[b] = state
        yield BatchKey(epoch, b, indices)
