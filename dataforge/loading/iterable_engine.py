"""``Loader`` over an iterable dataset (``torch.utils.data.IterableDataset``).

NOTE [iterable loader]: there are no indices, so there is no batch plan: a stock
``DataLoader(batch_size=...)`` runs over the dataset and the dataset shards
itself over the workers (dataforge sources read ``get_worker_info()``). Hence
no ``shuffle``/``sampler``/``batch_sampler`` (use ``ds.shuffle(buffer_size)``),
no ``on_error`` policy other than ``"raise"`` (the policies need indices; see
``from_shards(on_error=...)``), and no ``engine="thread"`` (threads would share
one iterator, which cannot be sharded without a lock). Workers are never
persistent: each pass starts fresh workers that receive the epoch explicitly.

NOTE [iterable resume]: each worker's stream is deterministic given the epoch,
and torch takes batches from the workers round-robin (worker ``i % n`` first),
skipping a worker once its stream has ended. Every batch is tagged in its worker
with the worker id (by the collate wrapper), so the state records how many
batches the consumer got from each worker and which worker comes next. On
resume worker ``w`` drops its first ``count[w] * batch_size`` samples (exact:
every batch but a worker's last is full, and a worker whose last batch was
taken has nothing left), and the workers before the next one in the cycle
first emit one dummy batch, dropped in the main process, so the cycle resumes
where it stopped. This is exact for uneven worker streams too. A state taken
after the last batch, before the iterator noticed the end, resumes into an empty
rest of that epoch (the loader cannot know the stream has ended).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.data

from dataforge._rng import make_generator, mix_seed
from dataforge.loading.auto import auto_num_workers, auto_pin_memory, resolve_device
from dataforge.loading.errors import current_worker_id
from dataforge.loading.iterator import LoaderIterator
from dataforge.loading.loader import ENGINES, Loader, _check_int, _default_collate
from dataforge.loading.prefetch import Transform, _normalize_keys, _normalize_transforms
from dataforge.loading.process_engine import WorkerInit
from dataforge.loading.seeding import env_rank
from dataforge.loading.state import make_state, validate_state
from dataforge.loading.stats import LoaderStats, batch_len

_SHUFFLE_HINT = "; shuffle an iterable dataset on the dataset itself: ds.shuffle(buffer_size)"


class _Dummy:
    """A sample of the dummy batch that re-aligns the worker cycle on resume."""


class ResumableSource(torch.utils.data.IterableDataset):
    """The DataLoader's dataset: sets the epoch, then drops the samples already consumed
    (see NOTE [iterable resume]). Its fields are set before each pass, so fresh workers
    copy them."""

    def __init__(self, dataset: Any, batch_size: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.epoch = 0
        self.skips: list[int] = [0]
        self.dummies = 0

    def __iter__(self) -> Iterator[Any]:
        w = current_worker_id()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        if w < self.dummies:
            yield from (_Dummy() for _ in range(self.batch_size))
        it = iter(self.dataset)
        skip = self.skips[w] if w < len(self.skips) else 0
        yield from (itertools.islice(it, skip, None) if skip else it)


class TaggedCollate:
    """Collate in the worker and tag the batch: ``(worker id, is dummy, batch)``."""

    def __init__(self, collate: Callable[[Any], Any], batched: bool) -> None:
        self.collate = collate
        self.batched = batched

    def __call__(self, data: Any) -> tuple[int, bool, Any]:
        first = data[0] if self.batched and len(data) else data
        if isinstance(first, _Dummy):
            return current_worker_id(), True, None
        return current_worker_id(), False, self.collate(data)


def _pairs(raw: Iterator[Any], start: int, batched: bool) -> Iterator[tuple[Any, Any]]:
    # module-level: must not reference the Loader (see LoaderKeys in plan.py)
    b = start
    for worker, dummy, batch in raw:
        if dummy:
            continue
        yield (b, batch_len(batch) if batched else 1, [], int(worker)), batch
        b += 1


class IterableLoader(Loader):
    """A :class:`Loader` over an iterable dataset (see NOTE [iterable loader]).

    ``Loader(...)`` and ``build_loader(...)`` return one when ``dataset`` is a
    ``torch.utils.data.IterableDataset``; same arguments, same surface.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = None,
        *,
        sampler: Any = None,
        batch_sampler: Any = None,
        shuffle: bool = False,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        prefetch_factor: int | None = None,
        persistent_workers: bool | None = None,
        device: str | torch.device | None = None,
        batch_transforms: Transform | Sequence[Transform] | None = None,
        transform_keys: Any = "auto",
        seed: int = 0,
        drop_last: bool = False,
        timeout: float = 0,
        on_error: str = "raise",
        engine: str = "process",
        worker_init_fn: Callable[[int], Any] | None = None,
        multiprocessing_context: Any = None,
        depth: int = 2,
    ) -> None:
        name = type(dataset).__name__
        for arg, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
            if value is not None and value is not False:
                raise ValueError(
                    f"{arg}={value!r} is not supported for the iterable dataset {name}: it has no "
                    f"indices to order{_SHUFFLE_HINT} and leave {arg} at its default"
                )
        if on_error != "raise":
            raise ValueError(
                f"on_error={on_error!r} needs dataset indices (skip / substitute an index), which the "
                f"iterable dataset {name} has not; keep on_error='raise' and let the source tolerate "
                "bad records, e.g. dataforge.from_shards(..., on_error='skip')"
            )
        if engine == "thread":
            raise ValueError(
                f"engine='thread' does not support the iterable dataset {name}: threads would share "
                "one iterator, which cannot be sharded over workers without a lock; use "
                "engine='process' (num_workers=0 loads in the calling thread)"
            )
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if persistent_workers:
            raise ValueError(
                f"persistent_workers=True is not supported for the iterable dataset {name}: each "
                "pass needs fresh workers that see the epoch and the resume position; leave "
                "persistent_workers=None"
            )
        _check_int("batch_size", batch_size, 1, none_ok=True)
        _check_int("prefetch_factor", prefetch_factor, 1, none_ok=True)
        _check_int("depth", depth, 1)
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        for fn_name, fn in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{fn_name} must be callable or None, got {fn!r}")
        if num_workers == "auto":
            num_workers = auto_num_workers(None, batch_size or 1)  # NOTE: nothing to probe
        elif isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int or 'auto', got {num_workers!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = self.batch_sampler = None
        self.shuffle = False
        self.seed, self.drop_last, self.timeout = seed, drop_last, timeout
        self.on_error, self.engine, self.num_workers = on_error, engine, num_workers
        self.device = resolve_device(device)
        if self.device is not None and self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; pass device='cpu' or None")
        self.pin_memory = auto_pin_memory(pin_memory, self.device)
        self.persistent_workers = False
        self.prefetch_factor, self.depth = prefetch_factor, depth
        self._transforms = _normalize_transforms(batch_transforms)
        self._keys = _normalize_keys(transform_keys)
        self._transfer = None
        batched = batch_size is not None
        collate = collate_fn
        if collate is None:
            collate = _default_collate() if batched else torch.utils.data.default_convert
        self.collate_fn = collate
        self._batched = batched
        self._nw = max(1, num_workers)
        self._source = ResumableSource(dataset, batch_size or 1)
        self._worker_init = WorkerInit(seed, env_rank(), worker_init_fn)
        kwargs: dict[str, Any] = {}
        if num_workers > 0:
            if multiprocessing_context is None and sys.platform.startswith("linux"):
                multiprocessing_context = multiprocessing.get_context("fork")
            kwargs.update(
                prefetch_factor=prefetch_factor, multiprocessing_context=multiprocessing_context,
                timeout=timeout, worker_init_fn=self._worker_init,
            )
        self._dataloader = self._stock = torch.utils.data.DataLoader(
            self._source, batch_size=batch_size, drop_last=drop_last, num_workers=num_workers,
            collate_fn=TaggedCollate(collate, batched), pin_memory=self.pin_memory,
            generator=make_generator(mix_seed(seed, 0x5EED)), **kwargs,
        )
        self._stats = LoaderStats()
        self._epoch = 0
        self._yielded = 0
        self._counts = [0] * self._nw
        self._next_worker = 0
        self._iter_resume: tuple[list[int], int] | None = None
        self._resume = None
        self._active = None

    def __len__(self) -> int:
        if not hasattr(self.dataset, "__len__"):
            raise TypeError(
                f"the iterable dataset {type(self.dataset).__name__} has no len(), so the Loader has "
                "none; count batches while iterating, or define __len__ on the dataset"
            )
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        self._close_active()
        self._stats.start()
        t_iter = time.perf_counter()
        counts, nxt = self._iter_resume if self._iter_resume is not None else ([0] * self._nw, 0)
        self._iter_resume = None
        self._counts, self._next_worker, self._yielded = list(counts), nxt, sum(counts)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self._epoch)
        self._worker_init.epoch = self._epoch
        bs = self.batch_size or 1
        src = self._source
        src.epoch, src.skips, src.dummies = self._epoch, [c * bs for c in counts], nxt
        raw = iter(self._stock)
        source = self._device_path(_pairs(raw, self._yielded, self._batched))
        it = LoaderIterator(self, raw, source)
        self._active = weakref.ref(it)
        self._stats.record(time.perf_counter() - t_iter, 0, batch=False)
        return it

    def _receive(self, meta: tuple[int, int, list[Any], int]) -> None:
        batch_no, _, _, worker = meta
        self._yielded = batch_no + 1
        self._counts[worker] += 1
        self._next_worker = (worker + 1) % self._nw

    def _end_epoch(self) -> None:
        self._active = None
        self._epoch += 1
        self._yielded = 0
        self._counts = [0] * self._nw
        self._next_worker = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (forwarded to the dataset, in the workers too)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        if epoch != self._epoch:
            self._epoch, self._yielded, self._next_worker = epoch, 0, 0
            self._counts = [0] * self._nw
            self._iter_resume = None
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    # -- state ---------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "dataset_len": len(self.dataset) if hasattr(self.dataset, "__len__") else None,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "shuffle": False,
        }

    def state_dict(self) -> dict[str, Any]:
        """The consumer's position: NOTE [loader state] plus ``num_workers``,
        ``worker_batches`` (batches taken from each worker) and ``next_worker``."""
        counts, nxt = (
            self._iter_resume if self._iter_resume is not None else (self._counts, self._next_worker)
        )
        state = make_state(
            epoch=self._epoch, batches_yielded=sum(counts), sampler_state=None, **self._fields()
        )
        state.update(num_workers=self.num_workers, worker_batches=list(counts), next_worker=nxt)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``: the next ``iter()`` yields exactly the batches that followed it."""
        epoch, k, _ = validate_state(state, self._fields())
        if state.get("num_workers") != self.num_workers:
            raise ValueError(
                f"loader state does not fit this loader: num_workers was {state.get('num_workers')!r} "
                f"when saved but is {self.num_workers!r} now (an iterable dataset is sharded by "
                "worker); build the loader with the saved num_workers or start without the state"
            )
        counts, nxt = state.get("worker_batches"), state.get("next_worker")
        if (
            not isinstance(counts, list) or len(counts) != self._nw or sum(counts) != k
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
        ):
            raise ValueError(
                f"loader state field 'worker_batches' must be {self._nw} non-negative ints summing "
                f"to batches_yielded={k}, got {counts!r}; pass a dict from Loader.state_dict()"
            )
        if isinstance(nxt, bool) or not isinstance(nxt, int) or not 0 <= nxt < self._nw:
            raise ValueError(
                f"loader state field 'next_worker' must be an int in [0, {self._nw}), got {nxt!r}"
            )
        self._close_active()
        self._epoch, self._yielded = epoch, k
        self._iter_resume = (list(counts), nxt)

    def __repr__(self) -> str:
        return (
            f"Loader(dataset={type(self.dataset).__name__}(iterable), batch_size={self.batch_size}, "
            f"engine={self.engine!r}, num_workers={self.num_workers}, device={self.device})"
        )
