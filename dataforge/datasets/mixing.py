"""``mix``: interleave iterable datasets at random in proportion to weights."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from dataforge.datasets.iterable import IterDataset

_STOPS = ("first_exhausted", "all_exhausted", "never")


class _Mix(IterDataset[Any]):
    def __init__(
        self, datasets: Sequence[IterDataset[Any]], weights: Sequence[float], seed: int, stop: str
    ) -> None:
        self._datasets = tuple(datasets)
        self._weights = tuple(weights)
        self._seed = seed
        self._stop = stop
        self._epoch = self._datasets[0].epoch

    def _sources(self) -> Sequence[IterDataset[Any]]:
        return self._datasets

    def _iter(self) -> Iterator[Any]:
        rng = random.Random(self._consumer_seed(self._seed))
        # zero-weight sources are never drawn, so they never count as exhausted
        active = [i for i, w in enumerate(self._weights) if w > 0]
        iters: dict[int, Iterator[Any]] = {i: iter(self._datasets[i]) for i in active}
        fresh = dict.fromkeys(active, True)  # no item yet from the current iterator
        while active:
            cum = list(itertools.accumulate(self._weights[i] for i in active))
            j = bisect.bisect_right(cum, rng.random() * cum[-1])
            k = active[min(j, len(active) - 1)]
            try:
                x = next(iters[k])
            except StopIteration:
                if self._stop == "first_exhausted":
                    return
                if self._stop == "never" and not fresh[k]:
                    iters[k], fresh[k] = iter(self._datasets[k]), True
                else:  # all_exhausted, or a source that is empty even when restarted
                    active.remove(k)
                continue
            fresh[k] = False
            yield x


def mix(
    datasets: Sequence[IterDataset[Any]],
    weights: Sequence[float] | None = None,
    seed: int = 0,
    stop: Literal["first_exhausted", "all_exhausted", "never"] = "first_exhausted",
) -> IterDataset[Any]:
    """Interleave datasets, drawing the next source at random in proportion to ``weights``.

    Args:
        datasets: the IterDatasets to mix (at least one).
        weights: one non-negative finite weight per dataset, not all zero (need not
            sum to 1); default equal. A zero-weight dataset is never drawn.
        seed: seed of the choice generator (mixed with epoch, rank and worker).
        stop: ``"first_exhausted"`` ends when a drawn source has no item left;
            ``"all_exhausted"`` drops exhausted sources and ends when all are done;
            ``"never"`` restarts exhausted sources (an empty source is dropped).

    Example:
        >>> import dataforge
        >>> a = dataforge.IterDataset.from_iterable(["a"] * 3)
        >>> b = dataforge.IterDataset.from_iterable(["b"] * 3)
        >>> sorted(dataforge.mix([a, b], [1, 1], stop="all_exhausted"))
        ['a', 'a', 'a', 'b', 'b', 'b']
    """
    if isinstance(datasets, IterDataset) or not isinstance(datasets, Sequence) or not datasets:
        raise ValueError(f"datasets must be a non-empty list of IterDatasets, got {datasets!r}")
    for i, d in enumerate(datasets):
        if not isinstance(d, IterDataset):
            raise TypeError(
                f"datasets[{i}] must be a dataforge IterDataset, got {type(d).__name__}; "
                "wrap it with IterDataset.from_iterable(...)"
            )
    if weights is None:
        weights = [1.0] * len(datasets)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a list of numbers, got {weights!r}")
    if len(weights) != len(datasets):
        raise ValueError(
            f"weights must have one entry per dataset ({len(datasets)}), got {len(weights)}: {weights!r}"
        )
    try:
        ws = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise TypeError(f"weights must be numbers, got {weights!r}") from None
    if any(not math.isfinite(w) or w < 0 for w in ws):
        raise ValueError(f"weights must be finite and non-negative, got {weights!r}")
    if not any(w > 0 for w in ws):
        raise ValueError(f"weights must not all be zero, got {weights!r}; give at least one a positive weight")
    if stop not in _STOPS:
        raise ValueError(f"stop must be one of {_STOPS}, got {stop!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return _Mix(datasets, ws, seed, stop)
