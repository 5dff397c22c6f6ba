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

NOTE [iterable error counts]: a source that tolerates bad records counts them in an
``errors`` dict (``from_shards(on_error="skip"|"warn")``), but a worker's copy counts
only in that worker. So each pass finds the counters in the dataset (through
``_sources()``, ``datasets`` and ``dataset``: ``.map()``, ``mix()``...), and the collate
wrapper attaches to every batch a small dict, what they grew by in this worker since
the pass started (with ``num_workers=0``: in the calling process); the main process
keeps the latest dict per worker. A source may skip a bad shard after its worker's
last batch, so a worker whose dataset has counters ends its stream with
``batch_size`` end markers: the batch holding one carries the final counts (and only
its real samples, none with ``drop_last``); batches of markers alone are not yielded.
Markers come last, so the order of real batches and NOTE [iterable resume] hold.

``Loader.errors`` sums them, CUMULATIVE over the loader's life: one per skip in every
pass (two epochs over data with one bad shard give 1, then 2; so does reading it
twice in an epoch, or a pass abandoned and started again). ``reset_stats()`` leaves
them. The state holds the totals of finished passes and each worker's count this
epoch; that count covers the worker's stream from the start of the epoch, including
what a resumed worker re-reads to skip the consumed part: ``load_state_dict`` restores
the totals, and the resumed workers replace (never add to) their saved counts. A
state without the field (older dataforge) loses the totals of earlier epochs.
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


class _End:
    """A sample after a worker's stream: its batch carries the final error counts."""


# kinds of the batches a worker sends (see TaggedCollate)
_BATCH, _DUMMY, _END = 0, 1, 2
_MAX_WALK = 1000  # objects visited to find a pipeline's error counters


def _int_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    )


def error_sources(dataset: Any) -> list[Any]:
    """The datasets in ``dataset``'s pipeline with an ``errors`` dict of int counters
    (see NOTE [iterable error counts]), each once; at most ``_MAX_WALK`` objects are visited."""
    from dataforge.datasets.iterable import IterDataset  # NOTE: lazily, as builders.py

    found: list[Any] = []
    seen: set[int] = set()
    todo = [dataset]
    while todo and len(seen) < _MAX_WALK:
        d = todo.pop(0)
        if id(d) in seen:
            continue
        seen.add(id(d))
        if _int_dict(getattr(d, "errors", None)) and d.errors:
            found.append(d)
        if isinstance(d, IterDataset):
            todo.extend(d._sources())
        subs = getattr(d, "datasets", None)
        if isinstance(subs, (list, tuple)):
            todo.extend(subs)
        sub = getattr(d, "dataset", None)
        if sub is not None:
            todo.append(sub)
    return found


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


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
        self._counters: list[Any] = []  # set per pass, in the process that iterates
        self._base: list[dict[str, int]] = []

    def __iter__(self) -> Iterator[Any]:
        w = current_worker_id()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self._counters = error_sources(self.dataset)
        self._base = [dict(c.errors) for c in self._counters]
        if w < self.dummies:
            yield from (_Dummy() for _ in range(self.batch_size))
        it = iter(self.dataset)
        skip = self.skips[w] if w < len(self.skips) else 0
        yield from (itertools.islice(it, skip, None) if skip else it)
        if self._counters:
            yield from (_End() for _ in range(self.batch_size))

    def error_counts(self) -> dict[str, int] | None:
        """What the dataset's counters grew by since this pass started (``None``: no
        counters); see NOTE [iterable error counts]."""
        if not self._counters:
            return None
        out: dict[str, int] = {}
        for src, base in zip(self._counters, self._base):
            for k, v in src.errors.items():
                out[k] = out.get(k, 0) + v - base.get(k, 0)
        return out


class TaggedCollate:
    """Collate in the worker and tag the batch: ``(worker id, kind, error counts, batch)``
    with kind ``_BATCH``, ``_DUMMY`` (no batch) or ``_END`` (counts only); see NOTE
    [iterable resume] and NOTE [iterable error counts]."""

    def __init__(
        self, collate: Callable[[Any], Any], batched: bool, drop_last: bool, source: ResumableSource
    ) -> None:
        self.collate = collate
        self.batched = batched
        self.drop_last = drop_last
        self.source = source  # the worker's copy in a worker: only used without one

    def __call__(self, data: Any) -> tuple[int, int, dict[str, int] | None, Any]:
        w = current_worker_id()
        batched = self.batched and len(data) > 0
        first, last = (data[0], data[-1]) if batched else (data, data)
        if isinstance(first, _Dummy):
            return w, _DUMMY, None, None
        info = torch.utils.data.get_worker_info()
        src = info.dataset if info is not None else self.source
        errors = src.error_counts() if isinstance(src, ResumableSource) else None
        if isinstance(last, _End):
            real = [x for x in data if not isinstance(x, _End)] if batched else []
            if not real or self.drop_last:  # a partial batch: torch would drop it too
                return w, _END, errors, None
            data = real
        return w, _BATCH, errors, self.collate(data)


def _pairs(raw: Iterator[Any], start: int, batched: bool) -> Iterator[tuple[Any, Any]]:
    # module-level: must not reference the Loader (see LoaderKeys in plan.py)
    # meta: (batch number, samples, failures, worker, error counts); batch number -1 and
    # batch None for an end-of-stream batch, which only reports its error counts
    b = start
    for worker, kind, errors, batch in raw:
        if kind == _DUMMY:
            continue
        if kind == _END:
            yield (-1, 0, [], int(worker), errors), None
            continue
        yield (b, batch_len(batch) if batched else 1, [], int(worker), errors), batch
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
            collate_fn=TaggedCollate(collate, batched, drop_last, self._source), pin_memory=self.pin_memory,
            generator=make_generator(mix_seed(seed, 0x5EED)), **kwargs,
        )
        self._stats = LoaderStats()
        self._epoch = 0
        self._yielded = 0
        self._counts = [0] * self._nw
        self._next_worker = 0
        self._iter_resume: tuple[list[int], int] | None = None
        self._resume = None
        # NOTE [iterable error counts]: finished passes + each worker's count this epoch
        self._error_keys = [k for d in error_sources(dataset) for k in d.errors]
        self._errors_done: dict[str, int] = {}
        self._worker_errors: list[dict[str, int]] = [{} for _ in range(self._nw)]
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
        if self._iter_resume is None:
            self._fold_errors()  # a fresh start of the epoch: earlier passes are final
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

    def _receive(self, meta: tuple[Any, ...]) -> None:
        batch_no, _, _, worker, errors = meta
        if errors is not None:
            self._worker_errors[worker] = errors
        if batch_no < 0:  # an end-of-stream batch: error counts only
            return
        self._yielded = batch_no + 1
        self._counts[worker] += 1
        self._next_worker = (worker + 1) % self._nw

    def _end_epoch(self) -> None:
        self._active = None
        self._fold_errors()
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
            self._fold_errors()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    # -- error counts (NOTE [iterable error counts]) ----------------------------------

    def _fold_errors(self) -> None:
        for counts in self._worker_errors:
            _add(self._errors_done, counts)
        self._worker_errors = [{} for _ in range(self._nw)]

    @property
    def errors(self) -> dict[str, int]:
        """Records the dataset skipped, summed over the workers, e.g. ``{"skipped_shards": 1,
        "skipped_lines": 3}`` for ``from_shards(on_error="skip"|"warn")``; ``{}`` when the
        dataset keeps no ``errors`` counters. Cumulative over the loader's life (every pass,
        every epoch), restored by ``load_state_dict``; see NOTE [iterable error counts]."""
        out = dict.fromkeys(self._error_keys, 0)
        for counts in (self._errors_done, *self._worker_errors):
            _add(out, counts)
        return out

    def stats(self) -> dict[str, Any]:
        """``Loader.stats()`` plus ``dataset_errors``: :attr:`errors` (cumulative over the
        loader's life; ``reset_stats()`` does not reset it)."""
        out = super().stats()
        out["dataset_errors"] = self.errors
        return out

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
        ``worker_batches`` (batches taken from each worker), ``next_worker`` and
        ``dataset_errors`` (``{"done": totals of the finished passes, "workers": each
        worker's counts this epoch}``, see NOTE [iterable error counts])."""
        counts, nxt = (
            self._iter_resume if self._iter_resume is not None else (self._counts, self._next_worker)
        )
        state = make_state(
            epoch=self._epoch, batches_yielded=sum(counts), sampler_state=None, **self._fields()
        )
        state.update(num_workers=self.num_workers, worker_batches=list(counts), next_worker=nxt)
        state["dataset_errors"] = {
            "done": dict(self._errors_done), "workers": [dict(c) for c in self._worker_errors],
        }
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
        errors = state.get("dataset_errors", {"done": {}, "workers": [{}] * self._nw})
        if (
            not isinstance(errors, dict) or not _int_dict(errors.get("done"))
            or not isinstance(errors.get("workers"), list) or len(errors["workers"]) != self._nw
            or not all(_int_dict(c) for c in errors["workers"])
        ):
            raise ValueError(
                "loader state field 'dataset_errors' must be {'done': {name: int}, 'workers': "
                f"[{self._nw} such dicts]}}, got {errors!r}; pass a dict from Loader.state_dict()"
            )
        self._close_active()
        self._epoch, self._yielded = epoch, k
        self._iter_resume = (list(counts), nxt)
        self._errors_done = dict(errors["done"])
        self._worker_errors = [dict(c) for c in errors["workers"]]

    def __repr__(self) -> str:
        return (
            f"Loader(dataset={type(self.dataset).__name__}(iterable), batch_size={self.batch_size}, "
            f"engine={self.engine!r}, num_workers={self.num_workers}, device={self.device})"
        )
