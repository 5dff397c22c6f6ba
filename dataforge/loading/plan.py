"""The batch plan: which dataset indices form batch ``b`` of epoch ``e``, and the
consumer's position in it.

See NOTE [batch plan] in ``loader.py``. The plan runs in the main process; workers
only load what it decides, so both engines and any worker count yield the same
batches, and resuming at batch ``k`` needs no data.

NOTE [bulk items]: with ``batch_size=None`` a sampler may yield lists of indices;
as in a stock ``DataLoader``, each list is one item loaded by ``dataset[list]``
(bulk reads from a database or a contiguous chunk) and handed to ``collate_fn``
as is. With a ``batch_size``, a list from the sampler is refused with a pointer
to ``batch_sampler=`` (whose lists are batches, loaded through ``__getitems__``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.fetch import BatchKey, BatchMeta
from dataforge.loading.state import make_state, validate_state


def _stateful(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def _index(i: Any, *, batched: bool) -> tuple[Any, bool]:
    """``(index, bulk)`` for one item of a sampler (NOTE [bulk items])."""
    if type(i) is int:
        return i, False
    if isinstance(i, numbers.Integral) or (isinstance(i, torch.Tensor) and i.dim() == 0):
        return int(i), False
    if isinstance(i, (list, tuple, range)) or hasattr(i, "__array__"):
        if batched:
            raise TypeError(
                f"the sampler yielded a list of indices ({i!r}) but batch_size groups single "
                "indices; pass the sampler as batch_sampler= (its lists are batches) or use "
                "batch_size=None to load each list with dataset[list]"
            )
        return [int(j) for j in i], True
    raise TypeError(
        f"the sampler must yield int indices (or, with batch_size=None, lists of them), "
        f"got {type(i).__name__}: {i!r}"
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
        self.batched = batch_size is not None
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

    def _chunks(self, items: Iterator[Any]) -> Iterator[tuple[list[Any], bool]]:
        batch: list[int] = []
        for item in items:
            i, bulk = _index(item, batched=self.batched)
            if bulk:
                yield i, True
                continue
            batch.append(i)
            if len(batch) == self.bs:
                yield batch, False
                batch = []
        if batch and not self.drop_last:
            yield batch, False

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return torch.randperm(self.n, generator=make_generator(mix_seed(self.seed, epoch))).tolist()

    def batches(
        self, epoch: int, skip: int, sampler_state: dict[str, Any] | None
    ) -> Iterator[tuple[list[Any], bool, dict[str, Any] | None]]:
        """``(indices, bulk, source state after drawing them)`` for batches ``skip, skip+1, ...``."""
        if self.source is None:
            order = self._order(epoch)
            for start in range(skip * self.bs, len(order), self.bs):
                batch = order[start : start + self.bs]
                if len(batch) < self.bs and self.drop_last:
                    return
                yield batch, False, None
            return
        self.set_epoch(epoch)
        if self.stateful and sampler_state is not None:
            self.source.load_state_dict(sampler_state)
            skip = 0
        it = iter(self.source)
        batches = (
            ((list(map(int, b)), False) for b in it) if self.batch_sampler is not None else self._chunks(it)
        )
        for i, (b, bulk) in enumerate(batches):
            if i < skip:
                continue
            yield b, bulk, (self.source.state_dict() if self.stateful else None)


def _keys(
    plan: BatchPlan, states: dict[int, dict[str, Any]], epoch: int, skip: int,
    sampler_state: dict[str, Any] | None,
) -> Iterator[BatchKey]:
    # a module-level generator: it must not reference the Loader (workers keep the
    # DataLoader, which holds this generator, alive; the Loader must stay collectable)
    for b, (indices, bulk, state) in enumerate(plan.batches(epoch, skip, sampler_state), start=skip):
        if state is not None:
            states[b] = state
        yield BatchKey(epoch, b, indices, bulk)


class MapProgress:
    """The consumer's position in a map-style epoch: batches received and the user
    sampler's state after the last of them (NOTE [loader state] in ``state.py``)."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.yielded = 0
        self.sampler_state: dict[str, Any] | None = None
        self._states: dict[int, dict[str, Any]] = {}
        self._resume: tuple[int, dict[str, Any] | None] | None = None

    def num_batches(self) -> int | None:
        return self.plan.num_batches()

    def begin(self, epoch: int) -> Iterator[BatchKey]:
        """The batch keys of this pass, from the resume position (or the epoch's start)."""
        skip, state = self._resume if self._resume is not None else (0, None)
        self._resume = None
        self.yielded, self.sampler_state = skip, state
        self._states.clear()
        return _keys(self.plan, self._states, epoch, skip, state)

    def receive(self, meta: BatchMeta) -> None:
        self.yielded = meta.batch_no + 1
        if self.plan.stateful:
            self.sampler_state = self._states.pop(meta.batch_no, self.sampler_state)

    def restart(self) -> None:
        """Forget the position: the next pass starts its epoch from the first batch."""
        self.yielded = 0
        self.sampler_state = None
        self._resume = None
        self._states.clear()

    def position(self) -> tuple[int, dict[str, Any] | None]:
        """``(batches received, sampler state)``, a loaded resume point included."""
        return self._resume if self._resume is not None else (self.yielded, self.sampler_state)

    def state(self, epoch: int, fields: dict[str, Any]) -> dict[str, Any]:
        """The loader state at this position (a position at the end: the next epoch's start)."""
        k, sampler_state = self.position()
        n = self.num_batches()
        if n is not None and k >= n:
            epoch, k, sampler_state = epoch + 1, 0, None
        return make_state(epoch=epoch, batches_yielded=k, sampler_state=sampler_state, fields=fields)

    def load(self, state: Any, fields: dict[str, Any]) -> int:
        """Resume from a loader ``state`` (checked against ``fields``); return its epoch."""
        epoch, k, sampler_state = validate_state(state, fields, self.num_batches())
        if sampler_state is not None and not self.plan.stateful:
            raise ValueError(
                "loader state has a sampler_state but this loader's sampler has no "
                "load_state_dict; build the loader with the same sampler as when saving"
            )
        self.yielded = k
        self._resume = (k, sampler_state)
        return epoch
