"""``build_loader`` and ``Loader``: batches from a dataset, resumable and observable.

NOTE [batch plan]: the loader decides which indices form batch ``b`` of epoch
``e`` in the main process, and workers (processes or threads) only load them.
Without a user sampler the order is ``range(n)`` or, with ``shuffle=True``, a
``torch.randperm`` seeded by ``mix_seed(seed, epoch)``: a pure function of
``(seed, epoch)``, so resuming at batch ``k`` slices the order without loading
anything; under ``torch.distributed`` it is split across ranks (NOTE [elastic
resume] in ``plan.py``). A user sampler or batch sampler with ``state_dict``/``load_state_dict``
is resumed from its own state, taken right after the indices of batch ``k`` were
drawn. One without is replayed: ``set_epoch(epoch)``, then the indices of the
first ``k`` batches are drawn and discarded (costs index generation only; no
sample is loaded), which is exact when its order depends only on the epoch.

NOTE [epochs]: ``set_epoch(e)`` is forwarded to the sampler and to the dataset
(in the main process and in every worker: persistent workers included). An
epoch that runs to its end advances the loader to the next epoch, so a loop
that never calls ``set_epoch`` still reshuffles. Calling ``set_epoch`` with the
epoch the loader is already at keeps a position loaded by ``load_state_dict``;
another epoch starts that epoch from its first batch.

NOTE [engines]: one ``Loader`` class for every dataset and engine. It validates
its arguments once, then picks an engine (NOTE [engine contract] in
``engine.py``) and the bookkeeping of the consumer's position: the batch plan
(``plan.py``) for a map-style dataset, the per-worker stream counts
(``iterable_progress.py``) for an ``IterableDataset``. Both map-style engines take
keys from the same plan, so they yield identical batches for the same seed.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import torch
import torch.utils.data

from dataforge._dist import loader_rank, resolve_replicas
from dataforge.loading.auto import auto_pin_memory, resolve_device
from dataforge.loading.engine import Engine
from dataforge.loading.fetch import BatchFetcher, BatchMeta
from dataforge.loading.iterable_engine import IterableEngine
from dataforge.loading.iterable_progress import IterProgress
from dataforge.loading.iterable_threads import IterableThreadEngine
from dataforge.loading.iterator import LoaderIterator, PassHooks
from dataforge.loading.options import (
    check_options,
    resolve_seed,
    resolve_workers,
)
from dataforge.loading.plan import BatchPlan, MapProgress
from dataforge.loading.prefetch import (
    TimedTransfer,
    Transfer,
    Transform,
    normalize_keys,
    normalize_transforms,
    prefetch_pairs,
)
from dataforge.loading.process_engine import ProcessEngine
from dataforge.loading.seeding import WorkerSeeding
from dataforge.loading.state import (
    BATCH_SIZE,
    DATASET_LEN,
    DATASET_STATE,
    DROP_LAST,
    NUM_REPLICAS,
    RANK,
    SEED,
    SHUFFLE,
)
from dataforge.loading.stats import Failure, LoaderStats
from dataforge.loading.thread_engine import ThreadEngine

logger = logging.getLogger("dataforge.loading")

T = TypeVar("T")

# NOTE [fixed after construction]: the batch plan and the resume state are built from
# these, so assigning one later is refused (as torch's DataLoader refuses it)
_FIXED = frozenset({"dataset", "batch_size", "sampler", "batch_sampler", "drop_last"})


def _default_collate(batched: bool) -> Callable[[Any], Any]:
    if not batched:  # one sample at a time: converted, as by a stock DataLoader
        return torch.utils.data.default_convert
    try:
        from dataforge.collate.default import default_collate
    except ImportError:  # the dataforge collate is optional for the loader
        from torch.utils.data import default_collate  # type: ignore[assignment]
    return default_collate


def _available_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` resolved; a CUDA device on a machine without CUDA is refused."""
    dev = resolve_device(device)
    if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; pass device='cpu' or None")
    return dev


class Loader(Generic[T]):
    """An iterable of batches from a dataset, resumable and observable.

    Built by :func:`build_loader` (same arguments). Iterating yields batches;
    ``state_dict()`` / ``load_state_dict()`` resume mid-epoch; ``stats()`` and
    ``failures`` report throughput, data wait and bad samples; ``close()`` ends the
    workers (also on ``del`` and at the end of a ``with`` block).

    Example:
        >>> import json, torch
        >>> loader = Loader(torch.arange(10), 4, shuffle=True, num_workers=0, seed=3)
        >>> it = iter(loader); first = next(it)
        >>> state = json.loads(json.dumps(loader.state_dict()))
        >>> resumed = Loader(torch.arange(10), 4, shuffle=True, num_workers=0, seed=3)
        >>> resumed.load_state_dict(state)
        >>> [b.tolist() for b in resumed] == [b.tolist() for b in it]
        True
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = None,
        *,
        sampler: Any = None,
        batch_sampler: Any = None,
        shuffle: bool = False,
        collate_fn: Callable[[Any], Any] | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        prefetch_factor: int | None = None,
        persistent_workers: bool | None = None,
        device: str | torch.device | None = None,
        batch_transforms: Transform | Sequence[Transform] | None = None,
        transform_keys: Any = "auto",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        timeout: float = 0,
        on_error: str = "raise",
        engine: str = "auto",
        worker_init_fn: Callable[[int], Any] | None = None,
        multiprocessing_context: Any = None,
        depth: int = 2,
    ) -> None:
        self.iterable = isinstance(dataset, torch.utils.data.IterableDataset)
        check_options(
            dataset, batch_size, sampler=sampler, batch_sampler=batch_sampler, shuffle=shuffle,
            drop_last=drop_last, prefetch_factor=prefetch_factor, depth=depth, timeout=timeout,
            on_error=on_error, engine=engine, collate_fn=collate_fn, worker_init_fn=worker_init_fn,
            num_workers=num_workers, multiprocessing_context=multiprocessing_context,
        )
        self.seed = resolve_seed(seed, generator)
        workers = resolve_workers(  # NOTE [auto engine] in auto.py
            num_workers, persistent_workers, dataset, batch_size, engine,
            worker_init_fn=worker_init_fn, multiprocessing_context=multiprocessing_context,
        )
        num_workers, self.persistent_workers = workers.num_workers, workers.persistent
        engine, self.engine_reason = workers.engine, workers.engine_reason
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler, self.shuffle = sampler, batch_sampler, shuffle
        self.timeout, self.on_error, self.engine, self.num_workers = timeout, on_error, engine, num_workers
        self.device = _available_device(device)
        self.pin_memory = auto_pin_memory(pin_memory, self.device)
        self.prefetch_factor, self.depth = prefetch_factor, depth
        self._transforms = normalize_transforms(batch_transforms)
        self._keys = normalize_keys(transform_keys)
        self._transfer: Transfer | None = None
        batched = batch_size is not None or batch_sampler is not None
        self.collate_fn = collate_fn if collate_fn is not None else _default_collate(batched)
        self._seeding = WorkerSeeding(self.seed, loader_rank(), worker_init_fn)
        self._replicas = resolve_replicas()  # NOTE [elastic resume] in plan.py
        self._progress: MapProgress | IterProgress
        self._engine: Engine = self._build(batched, multiprocessing_context)
        self._stats, self._epoch = LoaderStats(), 0
        self._len_asked: int | None = None
        self._active: weakref.ref[LoaderIterator] | None = None
        self._built = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIXED and getattr(self, "_built", False):
            raise ValueError(
                f"{name} cannot be changed after the Loader is built (NOTE [fixed after "
                f"construction]); build a new loader with the {name} you want"
            )
        super().__setattr__(name, value)

    def _build(self, batched: bool, multiprocessing_context: Any) -> Engine:
        """The engine, and the position bookkeeping, for this dataset (NOTE [engines])."""
        options = {
            "timeout": self.timeout, "prefetch_factor": self.prefetch_factor, "seed": self.seed,
            "multiprocessing_context": multiprocessing_context,
        }
        if self.iterable:
            self._progress = IterProgress(
                self.dataset, self.batch_size, self.drop_last, self.num_workers, self.persistent_workers
            )
            if self.engine == "thread" and self.num_workers > 0:  # NOTE [iterable threads]
                return IterableThreadEngine(
                    self.dataset, batch_size=self.batch_size, drop_last=self.drop_last,
                    collate_fn=self.collate_fn, num_workers=self.num_workers,
                    prefetch_factor=self.prefetch_factor, timeout=self.timeout, seeding=self._seeding,
                )
            return IterableEngine(
                self.dataset, batch_size=self.batch_size, drop_last=self.drop_last,
                collate_fn=self.collate_fn, num_workers=self.num_workers, pin_memory=self.pin_memory,
                persistent=self.persistent_workers, seeding=self._seeding, **options,
            )
        plan = BatchPlan(
            len(self.dataset), self.batch_size, self.drop_last, self.shuffle, self.seed,
            self.sampler, self.batch_sampler, self._replicas,
        )
        self._progress = MapProgress(plan, self.dataset)
        fetcher = BatchFetcher(
            self.dataset, self.collate_fn, batched=batched, on_error=self.on_error,
            seeding=self._seeding, pin=self.pin_memory and self.engine == "thread",
        )
        if self.engine == "thread":
            return ThreadEngine(
                fetcher, num_workers=self.num_workers, prefetch_factor=self.prefetch_factor,
                timeout=self.timeout, init_fn=self._seeding.user_fn,
            )
        return ProcessEngine(
            fetcher, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent=self.persistent_workers, seeding=self._seeding, **options,
        )

    # -- iteration -----------------------------------------------------------------

    def __len__(self) -> int:
        n = self._progress.num_batches()
        if n is None:
            if self.iterable:
                raise TypeError(
                    f"the iterable dataset {type(self.dataset).__name__} has no len(), so the Loader "
                    "has none; count batches while iterating, or define __len__ on the dataset"
                )
            raise TypeError("the sampler has no len(), so the Loader has none")
        if self.iterable:
            self._len_asked = n
        return n

    def __iter__(self) -> Iterator[T]:
        self._close_active()
        self._stats.start()  # NOTE: time to first batch includes worker start-up
        t_iter = time.perf_counter()
        epoch = self._epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._seeding.epoch = epoch
        fetched = self._engine.start(self._progress.begin(epoch))
        source = self._device_path((f.meta, f.batch) for f in fetched)
        hooks = PassHooks(self._stats, self._receive, self._finished, self._where)
        it = LoaderIterator(self._engine, source, hooks)
        self._active = weakref.ref(it)
        self._stats.record(time.perf_counter() - t_iter, 0, batch=False)  # worker start-up
        return it

    def _device_path(self, source: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        if self.device is None and not self._transforms:
            return source
        if self._transfer is None:
            self._transfer = TimedTransfer(  # NOTE [consumer threads on CPU] in prefetch.py
                self._stats.stages, self.device is not None,
                self.device or torch.device("cpu"), self._transforms, self._keys, self.pin_memory,
                cpu_threads=1 if self.num_workers > 0 else None,
            )
        return prefetch_pairs(source, self._transfer, self.depth)

    def _receive(self, meta: BatchMeta) -> None:
        self._progress.receive(meta)
        if meta.timing is not None:  # NOTE [stage statistics] in stats.py
            worker = "main" if self.num_workers == 0 else str(meta.worker)
            self._stats.stages.add_batch(worker, meta.timing, meta.num_samples)
        if self._len_asked is not None and meta.batch_no >= self._len_asked:
            warnings.warn(  # the words of torch's warning, which users search for
                f"Length of IterableDataset {self.dataset} was reported to be {self._len_asked} "
                f"(when accessing len(dataloader)), but {meta.batch_no + 1} samples have been "
                "fetched. For multiprocessing data-loading, this could be caused by not properly "
                "configuring the IterableDataset replica at each worker (shard it with "
                "torch.utils.data.get_worker_info(), or use dataforge.from_shards).",
                UserWarning, stacklevel=4,
            )
        for f in meta.failures:
            f = Failure(*f)
            logger.warning(
                "dataforge.Loader on_error=%r: dataset index %d failed in worker %d (epoch %d): %s: %s",
                self.on_error, f.index, meta.worker, self._epoch, f.exc_type, f.message,
            )
            self._stats.failures.append(f)

    def _where(self) -> str:
        return f"batch {self._progress.yielded} of epoch {self._epoch}"

    def _finished(self, it: LoaderIterator) -> None:
        if self._active is not None and self._active() is it:
            self._active = None
            self._epoch += 1
            self._progress.restart()

    def _close_active(self) -> None:
        it = self._active() if self._active is not None else None
        if it is not None:
            it.close()
        self._active = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (see NOTE [epochs])."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        if epoch != self._epoch:
            self._epoch = epoch
            self._progress.restart()
        if isinstance(self._progress, MapProgress):
            self._progress.plan.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    # -- state ---------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        return {
            SEED: self.seed,
            DATASET_LEN: len(self.dataset) if hasattr(self.dataset, "__len__") else None,
            BATCH_SIZE: self.batch_size,
            DROP_LAST: self.drop_last,
            SHUFFLE: self.shuffle,
            NUM_REPLICAS: self._replicas[0],
            RANK: self._replicas[1],
        }

    def state_dict(self) -> dict[str, Any]:
        """The position of the consumer as a JSON-serialisable dict (NOTE [loader state])."""
        return self._progress.state(self._epoch, self._fields())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``: the next ``iter()`` yields exactly the batches that followed it."""
        epoch = self._progress.load(state, self._fields())
        self._close_active()
        self._epoch = epoch
        if isinstance(self._progress, MapProgress):
            self._progress.plan.set_epoch(epoch)
            if state.get(DATASET_STATE) is not None:
                self._engine.close()  # NOTE [dataset state]: worker copies start from the loaded one

    # -- reporting -----------------------------------------------------------------

    @property
    def failures(self) -> list[Failure]:
        """Samples that failed so far: ``(index, exc_type, message)`` each."""
        return list(self._stats.failures)

    @property
    def errors(self) -> dict[str, int]:
        """Records an iterable dataset skipped, summed over the workers, e.g.
        ``{"skipped_shards": 1, "skipped_lines": 3}`` for ``from_shards(on_error="skip"|"warn")``;
        ``{}`` for a dataset without ``errors`` counters (and for map-style datasets, whose
        bad samples are in :attr:`failures`). Cumulative over the loader's life, restored by
        ``load_state_dict``; see NOTE [iterable error counts]."""
        return self._progress.errors() if isinstance(self._progress, IterProgress) else {}

    def stats(self) -> dict[str, Any]:
        """Samples/s, batches/s, wait fraction, time to first batch, failures, and the time
        per stage (``stages``), per worker (``workers``) and per batch (``timeline``: NOTE
        [stage statistics] in ``stats.py``), since creation or ``reset_stats()``; for an
        iterable dataset also ``dataset_errors`` (:attr:`errors`)."""
        out = self._stats.as_dict()
        out.update(num_workers=self.num_workers, engine=self.engine, engine_reason=self.engine_reason,
                   device=str(self.device) if self.device is not None else None)
        if self.iterable:
            out["dataset_errors"] = self.errors
        return out

    def reset_stats(self) -> None:
        self._stats.reset()

    # -- lifetime ------------------------------------------------------------------

    def close(self, *, grace: float | None = None) -> None:
        """Stop the current pass and every worker (persistent ones too); with ``grace``,
        workers still running after that many seconds are killed."""
        self._close_active()
        self._engine.close(grace=grace)

    def __enter__(self) -> Loader[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # NOTE: when a reference cycle is collected, torch's queues may be finalised before
        # us and its polite shutdown would wait 5 s per worker: ask, wait 1 s, then kill
        with contextlib.suppress(Exception):
            self.close(grace=1.0)

    def __repr__(self) -> str:
        size = "iterable" if self.iterable else f"len={len(self.dataset)}"
        return (
            f"Loader(dataset={type(self.dataset).__name__}({size}), batch_size={self.batch_size}, "
            f"engine={self.engine!r} ({self.engine_reason}), num_workers={self.num_workers}, "
            f"device={self.device}, on_error={self.on_error!r})"
        )
def build_loader(
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
    seed: int | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    timeout: float = 0,
    on_error: str = "raise",
    engine: str = "auto",
    **kwargs: Any,
) -> Loader[Any]:
    """Build a :class:`Loader`: batches of ``dataset``, on ``device``, resumable, observable.

    Args:
        dataset: a map-style dataset (``set_epoch`` and ``__getitems__`` used when present), or
            an ``IterableDataset``: resumable too, but no shuffle/sampler (``ds.shuffle(n)``),
            ``on_error="raise"`` (NOTE [iterable loader], iterable_engine.py); ``engine="thread"``
            for an ``IterDataset`` pipeline only (NOTE [iterable threads]).
        batch_size: samples per batch; ``None`` (with no ``batch_sampler``) yields single
            samples, like ``DataLoader(batch_size=None)``.
        sampler: a sampler of indices (its ``set_epoch`` / ``state_dict`` are used); with
            ``batch_size=None`` it may yield lists, each loaded by ``dataset[list]`` (NOTE
            [bulk items] in ``plan.py``).
        batch_sampler: a sampler of index lists (exclusive with batch_size/sampler/shuffle).
        shuffle: a seeded order per ``(seed, epoch)`` (see NOTE [batch plan]). Without a
            sampler, under ``torch.distributed`` the order is split across ranks as
            ``DistributedSampler`` splits it (NOTE [elastic resume] in ``plan.py``).
        collate_fn: list of samples -> batch; default ``dataforge.default_collate``
            (torch's when that is not available). With ``batch_size=None`` it gets each
            sample alone (default ``default_convert``), as in a stock ``DataLoader``.
        num_workers: workers (processes or threads); ``"auto"``: see ``auto.py``.
        pin_memory: ``"auto"`` pins only when ``device`` is CUDA.
        prefetch_factor: batches in flight per worker (torch's default when ``None``).
        persistent_workers: keep worker processes between epochs (default: when
            ``num_workers > 0`` and ``engine="process"``), iterable datasets included.
        device: deliver batches on this device (see ``DevicePrefetcher``).
        batch_transforms: callable(s) applied to each batch on ``device``.
        transform_keys: what ``batch_transforms`` receive: ``"auto"``: a tensor batch,
            ``batch["image"]`` of a dict batch, ``batch[0]`` of a tuple batch; ``None``: the
            whole batch; or keys (see ``prefetch.py``).
        seed: seed of the shuffle, of worker RNGs and of per-sample randomness (default 0).
        generator: a ``torch.Generator`` instead of ``seed``: the seed is drawn from it once,
            when the loader is built (exclusive with ``seed``).
        drop_last: drop the last incomplete batch (needs a ``batch_size``).
        timeout: seconds to wait for one batch from the workers (0: forever). A batch late
            past it ends the pass with an error that names the stuck worker, the dataset
            indices it was loading and its Python stack (NOTE [hang watchdog] in
            ``process_engine.py``).
        on_error: ``"raise"``, ``"skip"`` or ``"substitute"`` (NOTE [error policies] in ``policies.py``).
        engine: ``"auto"`` (NOTE [auto engine] in ``auto.py``: threads for an ``ImageFolder``
            with dataforge / torchvision image transforms, else processes),
            ``"process"`` (worker processes) or ``"thread"`` (a thread pool).
        **kwargs: ``transform_keys``, ``worker_init_fn`` (run in each worker process after
            its seeding: NOTE [worker_init_fn after seeding]), ``multiprocessing_context`` (default ``"fork"`` on Linux) and
            ``depth`` (batches in flight on the device path): see :class:`Loader`. With
            ``engine="thread"`` a ``worker_init_fn`` runs once in each thread (no seeding);
            ``engine="auto"`` picks processes when one is given.

    Example:
        >>> import torch, dataforge
        >>> loader = dataforge.build_loader(torch.arange(10), batch_size=4, shuffle=True,
        ...                                 num_workers=0, seed=1)
        >>> [b.tolist() for b in loader] == [b.tolist() for b in loader]  # epochs differ
        False
        >>> s = loader.state_dict(); (s["epoch"], s["batches_yielded"])
        (2, 0)
    """
    return Loader(
        dataset, batch_size, sampler=sampler, batch_sampler=batch_sampler, shuffle=shuffle,
        collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=prefetch_factor, persistent_workers=persistent_workers, device=device,
        batch_transforms=batch_transforms, seed=seed, generator=generator, drop_last=drop_last,
        timeout=timeout,
        on_error=on_error, engine=engine, **kwargs,
    )
