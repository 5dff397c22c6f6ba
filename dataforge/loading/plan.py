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

NOTE [elastic resume]: the loader's own order (no sampler) is an ``OrderSampler``,
an ``EpochSampler`` over ``range(n)`` or its seeded permutation, split across the
ranks of ``torch.distributed`` as ``DistributedSampler`` splits it (positions
``rank, rank + R, ...``, padded by repeating the order's start). Its state, like
that of dataforge's samplers, is the global ``position`` consumed by all ranks,
taken right after the indices of a batch were drawn on every rank: loaded under
another world size the rest of the global order is split over the new ranks (each
gets the same count), so every sample of the epoch is delivered once across both
runs and the next epochs are those of a run started at the new size. The number
of workers and the engine never enter the plan. A sampler without ``state_dict``
is replayed by batch count, exact only under the saved world size; another one is
refused.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.fetch import BatchKey, BatchMeta
from dataforge.loading.state import (
    DATASET_STATE,
    NUM_REPLICAS,
    is_stateful,
    make_state,
    upgrade_state,
    validate_state,
)
from dataforge.samplers.base import EpochSampler


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


class OrderSampler(EpochSampler[int]):
    """The loader's own order: ``range(n)`` or, with ``shuffle``, a ``torch.randperm``
    seeded by ``mix_seed(seed, epoch)``, split across ranks (NOTE [elastic resume]).

    Example:
        >>> s = OrderSampler(5, shuffle=False, seed=0, num_replicas=2, rank=1)
        >>> list(s), s.state_dict()["position"]
        ([1, 3, 0], 6)
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, num_replicas: int, rank: int) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=False)
        self.n, self.shuffle = n, shuffle
        self._cache: tuple[int, np.ndarray] | None = None

    def _global_len(self) -> int:
        return self.n

    def _order(self) -> np.ndarray:
        if self._cache is None or self._cache[0] != self.epoch:
            if self.shuffle:
                gen = make_generator(mix_seed(self.seed or 0, self.epoch))
                order = torch.randperm(self.n, generator=gen).numpy()
            else:
                order = np.arange(self.n, dtype=np.int64)
            self._cache = (self.epoch, order)
        return self._cache[1]

    def _global_chunks(self, start: int) -> Iterator[np.ndarray]:
        yield self._order()[start:]

    def _state_fields(self) -> dict[str, Any]:
        return {"n": self.n, "shuffle": self.shuffle}


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
        replicas: tuple[int, int] = (1, 0),
    ) -> None:
        self.n = n
        self.batched = batch_size is not None
        self.bs = batch_size if batch_size is not None else 1
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_replicas = replicas[0]
        self.order: OrderSampler | None = None
        if sampler is None and batch_sampler is None:
            self.order = OrderSampler(n, shuffle=shuffle, seed=seed, num_replicas=replicas[0], rank=replicas[1])
        self.source: Any = batch_sampler if batch_sampler is not None else (
            sampler if sampler is not None else self.order
        )
        self.stateful = is_stateful(self.source)

    def num_batches(self) -> int | None:
        if self.batch_sampler is not None:
            return len(self.batch_sampler) if hasattr(self.batch_sampler, "__len__") else None
        n = len(self.source) if hasattr(self.source, "__len__") else None
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

    def order_state(self, batches: int) -> dict[str, Any] | None:
        """The state of the loader's own order after ``batches`` whole-order batches, as
        version 1 counted them (``None`` under a user sampler)."""
        if self.order is None:
            return None
        probe = OrderSampler(self.n, shuffle=self.shuffle, seed=self.seed, num_replicas=1, rank=0)
        state = probe.state_dict()
        state["position"] = min(batches * self.bs, self.n)
        return state

    def batches(
        self, epoch: int, skip: int, sampler_state: dict[str, Any] | None
    ) -> Iterator[tuple[list[Any], bool, dict[str, Any] | None]]:
        """``(indices, bulk, source state after drawing them)`` for batches ``skip, skip+1, ...``."""
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
    # DataLoader, which holds this generator, alive; the Loader must stay collectable).
    # One batch of look-ahead marks the last batch of the pass (``states[LAST]``), so a
    # state taken right after it is the next epoch's start.
    it = enumerate(plan.batches(epoch, skip, sampler_state), start=skip)
    nxt = next(it, None)
    while nxt is not None:
        b, (indices, bulk, state) = nxt
        if state is not None:
            states[b] = state
        nxt = next(it, None)
        if nxt is None:
            states[LAST] = {"batch": b}
        yield BatchKey(epoch, b, indices, bulk)


LAST = -1  # key of ``MapProgress._states`` holding the pass's last batch number


class MapProgress:
    """The consumer's position in a map-style epoch: batches received and the user
    sampler's state after the last of them (NOTE [loader state] in ``state.py``), and
    the dataset's own state (NOTE [dataset state])."""

    def __init__(self, plan: BatchPlan, dataset: Any = None) -> None:
        self.plan = plan
        self.dataset = dataset if is_stateful(dataset) else None
        self._dataset_state: Any = None  # loaded, for the dataset when the next pass begins
        self.yielded = 0
        self.sampler_state: dict[str, Any] | None = None
        self.at_end = False  # the last batch of the pass was received
        self.resized = False  # this epoch resumed from a state of another world size
        self._states: dict[int, dict[str, Any]] = {}
        self._resume: tuple[int, dict[str, Any] | None] | None = None

    def num_batches(self) -> int | None:
        return self.plan.num_batches()

    def begin(self, epoch: int) -> Iterator[BatchKey]:
        """The batch keys of this pass, from the resume position (or the epoch's start)."""
        skip, state = self._resume if self._resume is not None else (0, None)
        self._resume = None
        self.yielded, self.sampler_state, self.at_end = skip, state, False
        self._states.clear()
        keys = _keys(self.plan, self._states, epoch, skip, state)
        pending, self._dataset_state = self._dataset_state, None
        if pending is None or self.dataset is None:
            return keys
        # NOTE [dataset state]: the order draws its first batch before the dataset's state is
        # loaded (torchdata's order: a state holding torch's RNG then does not change a
        # sampler's draw), and both happen before the engine starts its workers
        first = next(keys, None)
        self.dataset.load_state_dict(pending)
        return itertools.chain(() if first is None else (first,), keys)

    def receive(self, meta: BatchMeta) -> None:
        self.yielded = meta.batch_no + 1
        if self.plan.stateful:
            self.sampler_state = self._states.pop(meta.batch_no, self.sampler_state)
        last = self._states.get(LAST)
        self.at_end = last is not None and last["batch"] == meta.batch_no

    def restart(self) -> None:
        """Forget the position: the next pass starts its epoch from the first batch."""
        self.yielded = 0
        self.sampler_state = None
        self.at_end = self.resized = False
        self._resume = None  # a loaded dataset state stays: it is no position in the epoch
        self._states.clear()

    def position(self) -> tuple[int, dict[str, Any] | None]:
        """``(batches received, sampler state)``, a loaded resume point included."""
        return self._resume if self._resume is not None else (self.yielded, self.sampler_state)

    def state(self, epoch: int, fields: dict[str, Any]) -> dict[str, Any]:
        """The loader state at this position (a position at the end: the next epoch's start)."""
        k, sampler_state = self.position()
        n = self.num_batches()
        # after a resume under another world size, k counts batches of two layouts
        if (self._resume is None and self.at_end) or (not self.resized and n is not None and k >= n):
            epoch, k, sampler_state = epoch + 1, 0, None
        dataset_state = self._dataset_state
        if dataset_state is None and self.dataset is not None:
            dataset_state = copy.deepcopy(self.dataset.state_dict())
        return make_state(
            epoch=epoch, batches_yielded=k, sampler_state=sampler_state, fields=fields,
            dataset_state=dataset_state,
        )

    def load(self, state: Any, fields: dict[str, Any]) -> int:
        """Resume from a loader ``state`` (checked against ``fields``); return its epoch."""
        state = upgrade_state(state, fields[NUM_REPLICAS], self.plan.order_state)
        epoch, k, sampler_state, replicas = validate_state(state, fields, self.num_batches())
        if sampler_state is not None and not self.plan.stateful:
            raise ValueError(
                "loader state has a sampler_state but this loader's sampler has no "
                "load_state_dict; build the loader with the same sampler as when saving"
            )
        if sampler_state is None and k > 0 and replicas != fields[NUM_REPLICAS]:
            raise ValueError(
                f"loader state was saved under world size {replicas} and the world size is "
                f"{fields[NUM_REPLICAS]} now, but the sampler {type(self.plan.source).__name__} "
                "has no state_dict/load_state_dict, so its position cannot be carried over exactly "
                "(NOTE [elastic resume]); resume with the saved world size, use a dataforge sampler "
                "(or give yours state_dict/load_state_dict with global progress), or start the epoch "
                "without the state"
            )
        dataset_state = state.get(DATASET_STATE)
        if dataset_state is not None and self.dataset is None:
            raise ValueError(
                "loader state field 'dataset_state' holds the dataset's own state but the "
                "dataset has no state_dict/load_state_dict to take it (NOTE [dataset state]); "
                "build the loader over the dataset it was saved with"
            )
        self._dataset_state = dataset_state
        self.yielded = k
        self._resume = (k, sampler_state)
        self.at_end = False
        self.resized = replicas != fields[NUM_REPLICAS]
        return epoch
