"""Validation of the ``Loader`` arguments: once, with one-line errors naming the fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.utils.data

from dataforge.datasets.iterable import IterDataset
from dataforge.loading.auto import auto_engine, auto_num_workers
from dataforge.loading.policies import check_on_error

ENGINES = ("auto", "process", "thread")

_SHUFFLE_HINT = "; shuffle an iterable dataset on the dataset itself: ds.shuffle(buffer_size)"


def check_int(name: str, value: Any, minimum: int, *, none_ok: bool = False) -> None:
    """A ``ValueError`` unless ``value`` is an int ``>= minimum`` (or ``None`` when allowed)."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an int >= {minimum}{' or None' if none_ok else ''}, got {value!r}"
        )


def _check_order(batch_size: Any, sampler: Any, batch_sampler: Any, shuffle: Any, drop_last: Any) -> None:
    if not isinstance(shuffle, bool) or not isinstance(drop_last, bool):
        raise TypeError(f"shuffle and drop_last must be bools, got {shuffle!r} and {drop_last!r}")
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
    if drop_last and batch_size is None:
        raise ValueError(
            "drop_last=True needs a batch_size (it drops the last incomplete batch); "
            "pass batch_size= or leave drop_last=False"
        )


def check_options(
    dataset: Any, batch_size: Any, *, sampler: Any, batch_sampler: Any, shuffle: Any, drop_last: Any,
    prefetch_factor: Any, depth: Any, timeout: Any, on_error: Any, engine: Any,
    collate_fn: Callable[..., Any] | None, worker_init_fn: Callable[..., Any] | None,
    num_workers: Any, multiprocessing_context: Any,
) -> None:
    """Check the arguments of a ``Loader``: those every loader shares, then an iterable
    dataset's own (:func:`check_iterable_options`)."""
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    if not iterable and not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            "dataset must be map-style (__getitem__ and __len__) or a "
            f"torch.utils.data.IterableDataset, got {type(dataset).__name__}"
        )
    check_int("batch_size", batch_size, 1, none_ok=True)
    check_int("prefetch_factor", prefetch_factor, 1, none_ok=True)
    check_int("depth", depth, 1)
    _check_order(batch_size, sampler, batch_sampler, shuffle, drop_last)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    check_on_error(on_error)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    for name, fn in (("collate_fn", collate_fn), ("worker_init_fn", worker_init_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {fn!r}")
    _check_context(multiprocessing_context, num_workers, engine)
    if iterable:
        check_iterable_options(dataset, sampler, batch_sampler, shuffle, on_error, engine)


def _check_context(multiprocessing_context: Any, num_workers: Any, engine: str) -> None:
    """A context needs worker processes: refused with ``num_workers=0`` or threads, as by torch."""
    if multiprocessing_context is None:
        return
    if num_workers == 0 or engine == "thread":
        raise ValueError(
            f"multiprocessing_context={multiprocessing_context!r} is only used by worker processes "
            f"(num_workers > 0 and engine='process'), got num_workers={num_workers!r} and "
            f"engine={engine!r}; drop multiprocessing_context or use worker processes"
        )


def check_iterable_options(
    dataset: Any, sampler: Any, batch_sampler: Any, shuffle: bool, on_error: str, engine: str
) -> None:
    """Refuse what an iterable dataset cannot do (NOTE [iterable loader])."""
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
    if engine == "thread" and not isinstance(dataset, IterDataset):
        raise ValueError(
            f"engine='thread' over an iterable dataset needs a dataforge pipeline (IterDataset: "
            f"from_shards, IterDataset.from_iterable), which shards itself over worker threads; "
            f"{name} can only shard over worker processes (torch's get_worker_info()), so use "
            "engine='process', or wrap it: IterDataset.from_iterable(...)"
        )


def resolve_seed(seed: Any, generator: Any) -> int:
    """The loader's seed: ``seed``, else one drawn from ``generator`` (as a stock DataLoader
    draws its base seed from it), else 0."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        if seed is not None:
            raise ValueError(
                f"pass seed= or generator=, not both (got seed={seed!r} and a generator); "
                "the loader's seed is drawn from the generator when there is no seed"
            )
        return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return seed


class Workers(NamedTuple):
    """What :func:`resolve_workers` decided: the worker count, whether worker processes
    persist, the engine and why (NOTE [auto engine])."""

    num_workers: int
    persistent: bool
    engine: str
    engine_reason: str


def resolve_workers(
    num_workers: Any, persistent_workers: bool | None, dataset: Any, batch_size: int | None,
    engine: str, *, worker_init_fn: Any = None, multiprocessing_context: Any = None,
) -> Workers:
    """``num_workers="auto"`` resolved (NOTE [auto num_workers]; an iterable dataset is not
    probed), then ``engine="auto"`` (NOTE [auto engine]); persistence only for worker
    processes (by default whenever there are some)."""
    if num_workers == "auto":
        probe = None if isinstance(dataset, torch.utils.data.IterableDataset) else dataset
        num_workers = auto_num_workers(probe, batch_size or 1)
    elif isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int or 'auto', got {num_workers!r}")
    if engine == "auto":
        engine, reason = auto_engine(
            dataset, num_workers, persistent_workers=persistent_workers,
            worker_init_fn=worker_init_fn, multiprocessing_context=multiprocessing_context,
        )
    else:
        reason = f"engine={engine!r} was passed"
    processes = num_workers > 0 and engine == "process"
    persistent = processes if persistent_workers is None else bool(persistent_workers) and processes
    return Workers(num_workers, persistent, engine, reason)
