"""The ``"auto"`` choices of :func:`dataforge.build_loader`: engine, worker count, pinning.

NOTE [auto engine]: ``engine="auto"`` (the default) resolves, in order:

1. an ``IterableDataset`` -> ``"process"``: it may shard itself with torch's
   ``get_worker_info()``, which a thread does not answer (``engine="thread"`` runs an
   ``IterDataset`` pipeline in threads: NOTE [iterable threads] in ``iterable_threads.py``).
2. no workers (``num_workers=0``) -> ``"process"``: both engines then load in the
   calling thread, so there is nothing to choose.
3. an option only worker processes honour -> ``"process"``: ``multiprocessing_context``,
   ``persistent_workers=True``, or a ``worker_init_fn`` (written for a fresh, seeded
   process: threads run it once each, unseeded, sharing the process).
4. ``"thread"`` when the per-sample work is known to run in C with the GIL released
   and to be thread-safe: a dataforge ``ImageFolder`` (not a subclass: its ``_get``
   may be anything) whose transform is none or dataforge's / torchvision's image
   transforms (containers judged by their children), or a dataforge wrapper of one
   (``subset``, ``split``, ``cache``, ``map`` with such an ``fn``; ``torch``'s
   ``Subset``). Decode (libjpeg-turbo), crop and resize (ATen, PIL) release the GIL,
   so threads run them in parallel without pickling batches across processes.
5. anything else -> ``"process"``: an arbitrary ``__getitem__`` may hold the GIL
   (threads would run it one at a time) or share state that is not thread-safe
   (an open file, an LMDB or HDF5 handle); processes are always correct.

The rule reads the dataset's structure only (no probe, nothing loaded), so it is
the same on every rank and run. ``Loader.engine_reason`` and ``stats()`` say which
rule decided. The measurements: ``benchmarks/auto_engine.py`` and the ``natural``
arm of ``dataforge bench image`` (benchmarks/README.md).

NOTE [auto num_workers]: the rule, in order:

1. ``cores`` = CPUs this process may run on (``os.sched_getaffinity``), divided by
   the processes sharing the machine under torchrun (``LOCAL_WORLD_SIZE``), at
   least 1.
2. One core is left to the main (training) process: ``workers = cores - 1``,
   capped at :data:`MAX_AUTO_WORKERS` (8). More workers rarely help and each one
   costs memory and start-up time.
3. Batch cost: when one sample, timed once in the main process, costs so little
   that a whole batch takes under :data:`CHEAP_BATCH_SECONDS` (2 ms), worker
   processes would cost more in inter-process copies than they save, so the
   answer is 0 (load in the main process). The probe reads ``dataset[0]`` once;
   an exception there is ignored (the real loading will report it).
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Any, NamedTuple

import torch

MAX_AUTO_WORKERS = 8
CHEAP_BATCH_SECONDS = 0.002


def usable_cores() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def local_world_size() -> int:
    """Processes per machine under torchrun (``LOCAL_WORLD_SIZE``), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def probe_batch_seconds(dataset: Any, batch_size: int) -> float | None:
    """Seconds one batch of ``batch_size`` would take to fetch, estimated from ``dataset[0]``."""
    try:
        if len(dataset) == 0:
            return None
        t0 = time.perf_counter()
        dataset[0]
        return (time.perf_counter() - t0) * max(1, batch_size)
    except Exception:  # the loader itself reports errors; the probe only estimates
        return None


def auto_num_workers(dataset: Any = None, batch_size: int = 1) -> int:
    """The worker count ``num_workers="auto"`` resolves to (see NOTE [auto num_workers]).

    Example:
        >>> n = auto_num_workers()
        >>> 0 <= n <= MAX_AUTO_WORKERS
        True
    """
    cores = max(1, usable_cores() // local_world_size())
    workers = min(MAX_AUTO_WORKERS, cores - 1)
    if workers > 0 and dataset is not None:
        cost = probe_batch_seconds(dataset, batch_size)
        if cost is not None and cost < CHEAP_BATCH_SECONDS:
            return 0
    return max(0, workers)


# NOTE [auto engine] rule 4: per-sample transforms whose work is image decode / crop /
# resize in C; dataforge's text (tokenizers) and albumentations adapters are not in it
_C_TRANSFORM_MODULES = (
    "dataforge.transforms.compose", "dataforge.transforms.decode", "dataforge.transforms.functional",
    "dataforge.transforms.image", "dataforge.transforms.presets", "torchvision.transforms",
)
_MAX_DEPTH = 16


class EngineChoice(NamedTuple):
    """The engine ``engine="auto"`` resolved to, and the rule that decided (NOTE [auto engine])."""

    engine: str
    reason: str


def c_image_transform(fn: Any, depth: int = 0) -> bool:
    """Whether ``fn`` is ``None`` or dataforge's / torchvision's image transforms, children
    (``transforms``, ``transform``, a torchvision ``Lambda``'s ``lambd``) included."""
    if fn is None:
        return True
    if depth > _MAX_DEPTH:
        return False
    module = fn.__module__ if inspect.isfunction(fn) else type(fn).__module__
    if not any(module == m or module.startswith(m + ".") for m in _C_TRANSFORM_MODULES):
        return False
    children = getattr(fn, "transforms", None)
    if isinstance(children, (list, tuple)) and not all(c_image_transform(c, depth + 1) for c in children):
        return False
    for name in ("transform", "lambd"):
        child = getattr(fn, name, None)  # a bound method (v2's Transform.transform) is no child
        if callable(child) and not inspect.ismethod(child) and not c_image_transform(child, depth + 1):
            return False
    return True


def _not_thread_friendly(dataset: Any, depth: int = 0) -> str | None:
    """Rule 4 of NOTE [auto engine]: ``None`` for an ``ImageFolder`` with C image transforms
    or a dataforge / torch wrapper of one, else what stands in the way."""
    from dataforge.datasets.image_folder import ImageFolder
    from dataforge.datasets.map_style import MapDataset

    name = type(dataset).__name__
    if depth > _MAX_DEPTH:
        return f"{name} nested too deep"
    if type(dataset) is ImageFolder:
        ok = c_image_transform(dataset.transform)
        return None if ok else f"ImageFolder's transform {type(dataset.transform).__name__}"
    if type(dataset) is torch.utils.data.Subset:
        return _not_thread_friendly(dataset.dataset, depth + 1)
    source = getattr(dataset, "source", None)
    if isinstance(dataset, MapDataset) and isinstance(source, MapDataset):
        fn = getattr(dataset, "fn", None)
        if not c_image_transform(fn):
            return f"the map fn {getattr(fn, '__name__', type(fn).__name__)}"
        return _not_thread_friendly(source, depth + 1)
    return f"the dataset {name}"


def auto_engine(dataset: Any, num_workers: int, *, persistent_workers: bool | None = None,
                worker_init_fn: Any = None, multiprocessing_context: Any = None) -> EngineChoice:
    """The engine ``engine="auto"`` resolves to, with the reason (see NOTE [auto engine]).

    Example:
        >>> import torch
        >>> auto_engine(torch.arange(8), 2)
        EngineChoice(engine='process', reason='auto: the dataset Tensor is not known to release the GIL')
    """
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return EngineChoice("process", "auto: an iterable dataset (it may shard by get_worker_info(), "
                            "which threads do not answer)")
    if num_workers == 0:
        return EngineChoice("process", "auto: num_workers=0 loads in the calling thread")
    for name, value in (("multiprocessing_context", multiprocessing_context),
                        ("worker_init_fn", worker_init_fn)):
        if value is not None:
            return EngineChoice("process", f"auto: {name} is given (worker processes only)")
    if persistent_workers:
        return EngineChoice("process", "auto: persistent_workers=True (worker processes only)")
    blocker = _not_thread_friendly(dataset)
    if blocker is None:
        return EngineChoice("thread", "auto: ImageFolder with C image transforms (decode and "
                                      "resize release the GIL)")
    return EngineChoice("process", f"auto: {blocker} is not known to release the GIL")


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``None`` stays ``None``; a string becomes a ``torch.device`` (``"cuda"`` -> ``cuda:<current>``)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be a torch.device or a string such as 'cuda' or 'cpu', got {device!r}"
        ) from exc
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def auto_pin_memory(pin_memory: bool | str, device: torch.device | None) -> bool:
    """``"auto"`` pins only when batches go to a CUDA device that exists."""
    if pin_memory == "auto":
        return device is not None and device.type == "cuda" and torch.cuda.is_available()
    if not isinstance(pin_memory, bool):
        raise TypeError(f"pin_memory must be True, False or 'auto', got {pin_memory!r}")
    return pin_memory
