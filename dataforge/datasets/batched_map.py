"""An iterable pipeline's ``map`` over a transform that makes a group of items in one call.

The ``call_batch`` protocol: ``fn.call_batch(items)`` returns what ``[fn(x) for x in
items]`` would (the image presets: NOTE [one native call per batch] in
``dataforge/_crops.cpp``). Map-style datasets hand it a whole batch from
``__getitems__``; an iterable pipeline, whose ``map`` sees one item at a time, goes
through :func:`map_items` (``IterDataset.map`` and the elastic replay's trailing maps).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

MAP_CHUNK = 32  # items per fn.call_batch call (NOTE [batched map])


def map_items(fn: Callable[[Any], T], items: Iterator[Any]) -> Iterator[T]:
    """``fn`` over ``items``, in order, one call per item or, where ``fn`` has a
    ``call_batch``, :data:`MAP_CHUNK` items per call.

    NOTE [batched map]: a transform with ``call_batch`` (the image presets: NOTE [one
    native call per batch] in ``dataforge/_crops.cpp``) makes a group of items in two
    native calls instead of GIL hand-offs per item, so an iterable ``map`` hands it the
    next :data:`MAP_CHUNK` items at once; the outputs are the single calls' (same order,
    same draws from the same RNG), up to that many items read ahead. When a group
    raises, it is redone one call per item, so the items before the bad one are still
    yielded and the error comes at its own item, as without grouping.
    """
    call_batch = getattr(fn, "call_batch", None)
    if call_batch is None:
        for x in items:
            yield fn(x)
        return
    while chunk := list(itertools.islice(items, MAP_CHUNK)):
        try:
            outs = list(call_batch(chunk))
        except Exception:  # noqa: BLE001 - redone item by item: the error at its item
            outs = None
        if outs is not None:
            yield from outs
        else:
            for x in chunk:
                yield fn(x)
