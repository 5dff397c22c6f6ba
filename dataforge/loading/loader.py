"""``build_loader`` and ``Loader``: batches from a map-style dataset, resumable and observable.

NOTE [batch plan]: the loader decides which indices form batch ``b`` of epoch
``e`` in the main process, and workers (processes or threads) only load them.
Without a user sampler the order is ``range(n)`` or, with ``shuffle=True``, a
``torch.randperm`` seeded by ``mix_seed(seed, epoch)``: a pure function of
``(seed, epoch)``, so resuming at batch ``k`` slices the order without loading
anything. A user sampler or batch sampler with ``state_dict``/``load_state_dict``
is resumed from its own state, taken right after the indices of batch ``k`` were
drawn. One without is replayed: ``set_epoch(epoch)``, then the indices of the
first ``k`` batches are drawn and discarded (costs index generation only; no
sample is loaded), which is exact when its order depends only on the epoch.

NOTE [epochs]: ``set_epoch(e)`` is forwarded to the sampler and to the dataset
(in the main process and, through the batch keys, in every worker: persistent
workers included). An epoch that runs to its end advances the loader to the
next epoch, so a loop that never calls ``set_epoch`` still reshuffles. Calling
``set_epoch`` with the epoch the loader is already at keeps a position loaded
by ``load_state_dict``; another epoch starts that epoch from its first batch.

NOTE [engines]: ``engine="process"`` runs a stock ``DataLoader`` over the batch
keys (``batch_size=None``; collation happens in the worker, so one batch crosses
the process boundary as a few large tensors). ``engine="thread"`` runs the same
``BatchFetcher`` in threads (see ``thread_engine.py``). Both take keys from the
same plan, so they yield identical batches for the same seed.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.data

from dataforge._dist import resolve_replicas
from dataforge.loading.auto import auto_num_workers, auto_pin_memory, resolve_device
from dataforge.loading.errors import (
    ON_ERROR,
    BatchFetcher,
    BatchKey,
)
from dataforge.loading.iterator import LoaderIterator
from dataforge.loading.plan import BatchPlan, LoaderKeys, make_keys
from dataforge.loading.prefetch import (
    Transform,
    _normalize_keys,
    _normalize_transforms,
    _Transfer,
    prefetch_pairs,
)
from dataforge.loading.process_engine import (
    WorkerInit,
    make_dataloader,
    shutdown_workers,
)
from dataforge.loading.seeding import env_rank
from dataforge.loading.state import make_state, validate_state
from dataforge.loading.stats import Failure, LoaderStats
from dataforge.loading.thread_engine import ThreadBatchIterator

logger = logging.getLogger("dataforge.loading")

ENGINES = ("process", "thread")


def _default_collate() -> Callable[[list[Any]], Any]:
    try:
        from dataforge.collate.default import default_collate
    except ImportError:  # the dataforge collate is optional for the loader
        from torch.utils.data import default_collate  # type: ignore[assignment]
    return default_collate


def _check_int(name: str, value: Any, minimum: int, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an int >= {minimum}{' or None' if none_ok else ''}, got {value!r}"
        )


class Loader:
    """An iterable of batches from a map-style dataset, resumable and observable.

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

    def __new__(cls, dataset: Any = None, *args: Any, **kwargs: Any) -> Loader:
        # NOTE: an iterable dataset gets the IterableLoader (see iterable_engine.py)
        if cls is Loader and isinstance(dataset, torch.utils.data.IterableDataset):
            from dataforge.loading.iterable_engine import IterableLoader

            return super().__new__(IterableLoader)
        return super().__new__(cls)

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
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(
                "dataset must be map-style (__getitem__ and __len__) or a "
                f"torch.utils.data.IterableDataset, got {type(dataset).__name__}"
            )
        _check_int("batch_size", batch_size, 1, none_ok=True)
        _check_int("prefetch_factor", prefetch_factor, 1, none_ok=True)
        _check_int("depth", depth, 1)
        if batch_sampler is not None and (batch_size is not None or sampler is not None or shuffle or drop_last):
            raise ValueError(
                "batch_sampler is mutually exclusive with batch_size, sampler, shuffle and "
                f"drop_last (got batch_size={batch_size!r}, sampler={sampler!r}, shuffle={shuffle!r}, "
                f"drop_last={drop_last!r}); leave those at their defaults"
            )
        if sampler is not None and shuffle:
            raise ValueError(
                "shuffle=True cannot be combined with a sampler (the sampler decides the order); "
                "pass shuffle=False or drop the sampler"
            )
        if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
            raise TypeError(f"shuffle and drop_last must be bools, got {shuffle!r} and {drop_last!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be one of {ON_ERROR}, got {on_error!r}; "
                "use 'skip' or 'substitute' to tolerate bad samples"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        for name, fn in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {fn!r}")
        if num_workers == "auto":
            num_workers = auto_num_workers(dataset, batch_size or 1)
        elif isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int or 'auto', got {num_workers!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.timeout = timeout
        self.on_error = on_error
        self.engine = engine
        self.num_workers = num_workers
        self.device = resolve_device(device)
        if self.device is not None and self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; pass device='cpu' or None")
        self.pin_memory = auto_pin_memory(pin_memory, self.device)
        if persistent_workers is None:
            persistent_workers = num_workers > 0 and engine == "process"
        self.persistent_workers = bool(persistent_workers) and num_workers > 0 and engine == "process"
        self.prefetch_factor = prefetch_factor
        self.depth = depth
        self._transforms = _normalize_transforms(batch_transforms)
        self._keys = _normalize_keys(transform_keys)
        self._transfer: _Transfer | None = None
        collate = collate_fn
        if collate is None and (batch_size is not None or batch_sampler is not None):
            collate = _default_collate()
        self.collate_fn = collate
        world, rank = resolve_replicas()
        if world > 1 and sampler is None and batch_sampler is None:
            warnings.warn(
                f"build_loader under torch.distributed (world size {world}) without a sampler: "
                "every rank would load the whole dataset; pass a rank-aware sampler such as "
                "dataforge.WeightedSampler / ClassBalancedSampler or DistributedSamplerWrapper",
                stacklevel=3,
            )
        if world == 1:
            rank = env_rank()  # torchrun before init_process_group: RANK still tells ranks apart
        self._plan = BatchPlan(len(dataset), batch_size, drop_last, shuffle, seed, sampler, batch_sampler)
        self._fetcher = BatchFetcher(
            dataset, collate, on_error, seed=seed, rank=rank,
            pin=self.pin_memory and engine == "thread",
        )
        self._worker_init = WorkerInit(seed, rank, worker_init_fn)
        self._dataloader: torch.utils.data.DataLoader | None = None
        if engine == "process":
            self._dataloader = make_dataloader(
                self._fetcher, LoaderKeys(self), num_workers=num_workers, pin_memory=self.pin_memory,
                timeout=timeout, seed=seed, prefetch_factor=prefetch_factor,
                persistent_workers=self.persistent_workers, worker_init_fn=self._worker_init,
                multiprocessing_context=multiprocessing_context,
            )
        self._stats = LoaderStats()
        self._epoch = 0
        self._yielded = 0
        self._sampler_state: dict[str, Any] | None = None
        self._sampler_states: dict[int, dict[str, Any]] = {}
        self._resume: tuple[int, dict[str, Any] | None] | None = None
        self._pending_keys: Iterator[BatchKey] | None = None
        self._active: weakref.ref[LoaderIterator] | None = None

    # -- iteration -----------------------------------------------------------------

    def __len__(self) -> int:
        n = self._plan.num_batches()
        if n is None:
            raise TypeError("the sampler has no len(), so the Loader has none")
        return n

    def _take_keys(self) -> Iterator[BatchKey]:
        # NOTE: torch calls iter(sampler) twice when it builds an iterator; both get the
        # same generator, so nothing is drawn twice
        keys = self._pending_keys
        if keys is None:
            raise RuntimeError("Loader keys requested outside Loader.__iter__; iterate the Loader itself")
        return keys

    def __iter__(self) -> Iterator[Any]:
        self._close_active()
        self._stats.start()  # NOTE: time to first batch includes worker start-up
        t_iter = time.perf_counter()
        epoch = self._epoch
        skip, sampler_state = self._resume if self._resume is not None else (0, None)
        self._resume = None
        self._yielded, self._sampler_state = skip, sampler_state
        self._sampler_states.clear()
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._worker_init.epoch = epoch
        keys = make_keys(self._plan, self._sampler_states, epoch, skip, sampler_state)
        raw: Any
        if self._dataloader is not None:
            self._pending_keys = keys
            raw = iter(self._dataloader)
        else:
            self._fetcher.set_epoch(epoch)
            raw = ThreadBatchIterator(
                self._fetcher.__getitem__, keys, self.num_workers,
                self.prefetch_factor or 2, self.timeout, init_fn=self._worker_init.user_fn,
            )
        source: Iterator[tuple[Any, Any]] = (
            ((f.batch_no, f.num_samples, f.failures, f.worker), f.batch) for f in raw
        )
        source = self._device_path(source)
        it = LoaderIterator(self, raw, source)
        self._active = weakref.ref(it)
        self._stats.record(time.perf_counter() - t_iter, 0, batch=False)  # worker start-up
        return it

    def _device_path(self, source: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
        if self.device is None and not self._transforms:
            return source
        if self._transfer is None:
            self._transfer = _Transfer(  # NOTE [consumer threads on CPU] in prefetch.py
                self.device or torch.device("cpu"), self._transforms, self._keys, self.pin_memory,
                cpu_threads=1 if self.num_workers > 0 else None,
            )
        return prefetch_pairs(source, self._transfer, self.depth)

    def _receive(self, meta: tuple[int, int, list[Failure], int]) -> None:
        batch_no, _, failures, worker = meta
        self._yielded = batch_no + 1
        if self._plan.stateful:
            self._sampler_state = self._sampler_states.pop(batch_no, self._sampler_state)
        for f in failures:
            f = Failure(*f)
            logger.warning(
                "dataforge.Loader on_error=%r: dataset index %d failed in worker %d (epoch %d): %s: %s",
                self.on_error, f.index, worker, self._epoch, f.exc_type, f.message,
            )
            self._stats.failures.append(f)

    def _close_active(self) -> None:
        it = self._active() if self._active is not None else None
        if it is not None:
            it.close()
        self._active = None

    def _end_epoch(self) -> None:
        self._active = None
        self._epoch += 1
        self._yielded = 0
        self._sampler_state = None
        self._sampler_states.clear()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (see NOTE [epochs])."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        if epoch != self._epoch:
            self._epoch = epoch
            self._yielded = 0
            self._resume = None
            self._sampler_state = None
        self._plan.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    # -- state ---------------------------------------------------------------------

    def _fields(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "dataset_len": len(self.dataset),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "shuffle": self.shuffle,
        }

    def state_dict(self) -> dict[str, Any]:
        """The position of the consumer as a JSON-serialisable dict (see ``state.py``)."""
        epoch, k, sampler_state = self._epoch, self._yielded, self._sampler_state
        if self._resume is not None:
            k, sampler_state = self._resume
        n = self._plan.num_batches()
        if n is not None and k >= n:
            epoch, k, sampler_state = epoch + 1, 0, None
        return make_state(epoch=epoch, batches_yielded=k, sampler_state=sampler_state, **self._fields())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``: the next ``iter()`` yields exactly the batches that followed it."""
        epoch, k, sampler_state = validate_state(state, self._fields())
        if sampler_state is not None and not self._plan.stateful:
            raise ValueError(
                "loader state has a sampler_state but this loader's sampler has no "
                "load_state_dict; build the loader with the same sampler as when saving"
            )
        self._close_active()
        self._epoch = epoch
        self._yielded = k
        self._resume = (k, sampler_state)
        self._plan.set_epoch(epoch)

    # -- reporting -----------------------------------------------------------------

    @property
    def failures(self) -> list[Failure]:
        """Samples that failed so far: ``(index, exc_type, message)`` each."""
        return list(self._stats.failures)

    def stats(self) -> dict[str, Any]:
        """Samples/s, batches/s, wait fraction, time to first batch, failures (since creation
        or ``reset_stats()``)."""
        out = self._stats.as_dict()
        out.update(num_workers=self.num_workers, engine=self.engine,
                   device=str(self.device) if self.device is not None else None)
        return out

    def reset_stats(self) -> None:
        self._stats.reset()

    # -- lifetime ------------------------------------------------------------------

    def close(self, *, grace: float | None = None) -> None:
        """Stop the current pass and every worker (persistent ones too); with ``grace``,
        workers still running after that many seconds are killed."""
        self._close_active()
        dl = self._dataloader
        if dl is not None and getattr(dl, "_iterator", None) is not None:
            shutdown_workers(dl._iterator, grace=grace)
            dl._iterator = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # NOTE: when a reference cycle is collected, torch's queues may be finalised before
        # us and its polite shutdown would wait 5 s per worker: ask, wait 1 s, then kill
        with contextlib.suppress(Exception):
            self.close(grace=1.0)

    def __repr__(self) -> str:
        return (
            f"Loader(dataset={type(self.dataset).__name__}(len={len(self.dataset)}), "
            f"batch_size={self.batch_size}, engine={self.engine!r}, num_workers={self.num_workers}, "
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
    seed: int = 0,
    drop_last: bool = False,
    timeout: float = 0,
    on_error: str = "raise",
    engine: str = "process",
    **kwargs: Any,
) -> Loader:
    """Build a :class:`Loader`: batches of ``dataset``, on ``device``, resumable, observable.

    Args:
        dataset: a map-style dataset (``set_epoch`` and ``__getitems__`` used when present), or
            an ``IterableDataset``: resumable too, but no shuffle/sampler (``ds.shuffle(n)``),
            ``on_error="raise"``, process engine only (NOTE [iterable loader], iterable_engine.py).
        batch_size: samples per batch; ``None`` (with no ``batch_sampler``) yields single
            samples, like ``DataLoader(batch_size=None)``.
        sampler: a sampler of indices (its ``set_epoch`` / ``state_dict`` are used).
        batch_sampler: a sampler of index lists (exclusive with batch_size/sampler/shuffle).
        shuffle: a seeded order per ``(seed, epoch)`` (see NOTE [batch plan]).
        collate_fn: list of samples -> batch; default ``dataforge.default_collate``
            (torch's when that is not available).
        num_workers: workers (processes or threads); ``"auto"``: see ``auto.py``.
        pin_memory: ``"auto"`` pins only when ``device`` is CUDA.
        prefetch_factor: batches in flight per worker (torch's default when ``None``).
        persistent_workers: keep worker processes between epochs (default: when
            ``num_workers > 0``).
        device: deliver batches on this device (see ``DevicePrefetcher``).
        batch_transforms: callable(s) applied to each batch on ``device``.
        transform_keys: what ``batch_transforms`` receive: ``"auto"``: a tensor batch,
            ``batch["image"]`` of a dict batch, ``batch[0]`` of a tuple batch; ``None``: the
            whole batch; or keys (see ``prefetch.py``).
        seed: seed of the shuffle, of worker RNGs and of per-sample randomness.
        drop_last: drop the last incomplete batch.
        timeout: seconds to wait for one batch from the workers (0: forever).
        on_error: ``"raise"``, ``"skip"`` or ``"substitute"`` (see ``errors.py``).
        engine: ``"process"`` (worker processes) or ``"thread"`` (a thread pool).
        **kwargs: ``transform_keys``, ``worker_init_fn`` (run in each worker process after
            its seeding), ``multiprocessing_context`` (default ``"fork"`` on Linux) and
            ``depth`` (batches in flight on the device path): see :class:`Loader`. With
            ``engine="thread"`` a ``worker_init_fn`` runs once in each thread (no seeding).

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
        batch_transforms=batch_transforms, seed=seed, drop_last=drop_last, timeout=timeout,
        on_error=on_error, engine=engine, **kwargs,
    )
