"""A stock-``DataLoader``-shaped factory over ``dataforge.build_loader``, for the vendored suites.

``DataLoader(...)`` and ``StatefulDataLoader(...)`` take the arguments of
``torch.utils.data.DataLoader`` / ``torchdata.stateful_dataloader.StatefulDataLoader``
with their stock defaults and build a ``dataforge.Loader`` with the same meaning.

NOTE [compat adapter]: the adapter translates only what has an exact dataforge
equivalent; it never emulates a missing feature. Stock defaults that differ from
dataforge's are passed explicitly (``batch_size=1``, ``num_workers=0``,
``pin_memory=False``, ``persistent_workers=False``), and ``engine="process"``
(stock's worker processes). Arguments dataforge has no parameter for
(``generator``, ``pin_memory_device``, ``in_order``) are forwarded under their
stock names whenever the caller sets them, so dataforge either accepts them or
raises, and the test that uses them fails visibly. The one argument dropped is
torchdata's ``snapshot_every_n_steps``: it tunes how often torchdata copies
worker state and has no effect on what a resumed run yields; dataforge's state
is computed from the batch plan, which is exact at every step (as
``snapshot_every_n_steps=1``), so there is nothing to translate.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.data

import dataforge

_UNSET: Any = object()
REFERENCE_ENV = "DATAFORGE_COMPAT_REFERENCE"


#: The loader class and default collate under test (torch's own in the reference run).
LOADER_CLASS: Any = dataforge.Loader
DEFAULT_COLLATE: Callable[[Any], Any] = dataforge.default_collate
if os.environ.get(REFERENCE_ENV) == "stock":
    LOADER_CLASS = torch.utils.data.DataLoader
    DEFAULT_COLLATE = torch.utils.data.default_collate


def DataLoader(  # noqa: N802 - the stock class name, so vendored tests read unchanged
    dataset: Any,
    batch_size: int | None = _UNSET,
    shuffle: bool | None = None,
    sampler: Any = None,
    batch_sampler: Any = None,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
    drop_last: bool = False,
    timeout: float = 0,
    worker_init_fn: Callable[[int], Any] | None = None,
    multiprocessing_context: Any = None,
    generator: torch.Generator | None = None,
    *,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    pin_memory_device: str = "",
    in_order: bool = True,
) -> dataforge.Loader:
    """Build ``dataforge.build_loader`` with the arguments of a stock ``DataLoader``.

    Args:
        dataset ... in_order: as ``torch.utils.data.DataLoader`` (same defaults). Stock
            ``batch_size`` defaults to 1, or to "none given" beside a ``batch_sampler``.

    Returns:
        The ``dataforge.Loader`` (``engine="process"``).
    """
    if os.environ.get(REFERENCE_ENV) == "stock":
        # NOTE [compat reference run]: the same tests over torch's own DataLoader, to
        # check the harness: what fails here is the test's or torch's, not dataforge's
        stock: dict[str, Any] = {} if batch_size is _UNSET else {"batch_size": batch_size}
        return torch.utils.data.DataLoader(  # type: ignore[return-value]
            dataset, shuffle=shuffle, sampler=sampler, batch_sampler=batch_sampler,
            num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
            drop_last=drop_last, timeout=timeout, worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context, generator=generator,
            prefetch_factor=prefetch_factor, persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device, in_order=in_order, **stock,
        )
    if batch_size is _UNSET:
        batch_size = None if batch_sampler is not None else 1
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle": False if shuffle is None else shuffle,
        "sampler": sampler,
        "batch_sampler": batch_sampler,
        "num_workers": num_workers,
        "collate_fn": collate_fn,
        "pin_memory": pin_memory,
        "drop_last": drop_last,
        "timeout": timeout,
        "worker_init_fn": worker_init_fn,
        "multiprocessing_context": multiprocessing_context,
        "prefetch_factor": prefetch_factor,
        "persistent_workers": persistent_workers,
        "engine": "process",
    }
    # NOTE [compat adapter]: forwarded only when set, so an unsupported one fails loudly
    if generator is not None:
        kwargs["generator"] = generator
    if pin_memory_device:
        kwargs["pin_memory_device"] = pin_memory_device
    if not in_order:
        kwargs["in_order"] = in_order
    return dataforge.build_loader(dataset, **kwargs)


def StatefulDataLoader(  # noqa: N802 - torchdata's class name
    dataset: Any, *args: Any, snapshot_every_n_steps: int | None = 1, **kwargs: Any
) -> dataforge.Loader:
    """Build a loader with the arguments of torchdata's ``StatefulDataLoader``.

    ``snapshot_every_n_steps`` is validated and dropped (see NOTE [compat adapter]).
    """
    if snapshot_every_n_steps is not None and (
        not isinstance(snapshot_every_n_steps, int) or snapshot_every_n_steps < 0
    ):
        raise ValueError(f"snapshot_every_n_steps must be an int >= 0, got {snapshot_every_n_steps!r}")
    return DataLoader(dataset, *args, **kwargs)


def worker_pids(timeout: float = 0.0) -> list[int]:
    """Pids of this process's live child processes (the loader's workers in these tests).

    Stock tests read ``iterator._workers``; dataforge has no such attribute, so the
    vendored tests find the workers as the children of the test process.
    """
    import psutil

    children = psutil.Process().children(recursive=False)
    if timeout:
        psutil.wait_procs(children, timeout=timeout)
    return [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ta = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
        tb = b if isinstance(b, torch.Tensor) else torch.as_tensor(b)
        if ta.is_nested or tb.is_nested:
            return bool(ta.is_nested and tb.is_nested and all(
                _equal(x, y) for x, y in zip(ta.unbind(), tb.unbind(), strict=True)))
        if ta.shape != tb.shape and ta.numel() == tb.numel() == 1:
            ta, tb = ta.reshape(()), tb.reshape(())
        if ta.shape != tb.shape:
            return False
        if ta.is_floating_point() or tb.is_floating_point():
            return bool(torch.allclose(ta.double(), tb.double(), equal_nan=True))
        return bool(torch.equal(ta.to(tb.dtype), tb))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-7) or a == b
    return bool(a == b)


class CompatTestCase:
    """The few ``torch.testing._internal`` ``TestCase`` helpers the vendored tests use.

    Mixed into ``unittest.TestCase``: ``assertEqual`` compares tensors, numbers and nested
    containers by value as torch's does (a tensor equals a list or scalar of the same
    values), ``assertNotWarn`` checks that a call emits no warning, and ``subTest`` fails
    the test at its first failing case.
    """

    def assertEqual(self, first: Any, second: Any, msg: Any = None) -> None:  # noqa: N802
        if not _equal(first, second):
            raise AssertionError(msg or f"{_short(first)} != {_short(second)}")

    def assertNotEqual(self, first: Any, second: Any, msg: Any = None) -> None:  # noqa: N802
        if _equal(first, second):
            raise AssertionError(msg or f"{_short(first)} == {_short(second)}")

    @contextlib.contextmanager
    def subTest(self, msg: Any = None, **params: Any) -> Iterator[None]:  # noqa: N802
        """Run the block as part of the test: a failing case fails the whole test (so the
        test's ``compat.marks`` apply to it) and its message names the case."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"[case {msg or ''}{params}] {exc}") from exc

    def assertNotWarn(self, fn: Callable[[], Any], msg: str = "") -> None:  # noqa: N802
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
        if caught:
            raise AssertionError(f"{msg}: {[str(w.message) for w in caught]}")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) < 300 else text[:300] + "..."


__all__: Sequence[str] = [
    "DEFAULT_COLLATE", "LOADER_CLASS", "REFERENCE_ENV", "CompatTestCase", "DataLoader",
    "StatefulDataLoader", "worker_pids",
]
