"""Map-style datasets and their composition ops.

A :class:`MapDataset` is a plain ``torch.utils.data.Dataset``: it has a length
and returns item ``i``. Subclasses implement ``__len__`` and ``_get(index)``
(and may override ``_get_batch(indices)`` for a faster batched fetch); the base
class owns index checking, the batched ``__getitems__`` a ``DataLoader`` calls,
``labels``, ``set_epoch`` and the ops. Every op returns a NEW lazy dataset that
wraps its source; nothing is mutated.

NOTE [labels travel]: ``.labels`` is a read-only numpy int64 array (or None),
computed without decoding any item. ``subset``, ``split``, ``concat``, ``map``
and ``cache`` carry it along, so samplers (class-balanced, stratified splits)
work at any depth of the pipeline. ``map`` assumes ``fn`` does not change the
label; wrap with ``from_sequence(ds.map(fn), labels=...)`` if it does.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from dataforge._rng import accepts_generator, make_generator, sample_seed, seeded_rng
from dataforge.datasets.labels import as_labels, split_indices

T_co = TypeVar("T_co", covariant=True)


def _check_index(index: Any, length: int) -> int:
    if isinstance(index, bool):
        raise TypeError(f"index must be an int, got bool {index!r}")
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(
            f"index must be an int, got {type(index).__name__} {index!r}; "
            "use .subset(indices) to select several items"
        ) from None
    j = i + length if i < 0 else i
    if not 0 <= j < length:
        raise IndexError(f"index {i} is out of range for a dataset of length {length}")
    return j


def _readonly(labels: np.ndarray | None) -> np.ndarray | None:
    if labels is not None and labels.flags.writeable:
        labels = labels.view()
        labels.setflags(write=False)
    return labels


class MapDataset(Dataset[T_co]):
    """Base class of dataforge map-style datasets.

    Subclasses implement ``__len__`` and ``_get(index)`` (``index`` already
    checked and non-negative); they may override ``_get_batch`` and ``labels``.

    Example:
        >>> import dataforge
        >>> ds = dataforge.from_sequence(["a", "b", "c", "d"], labels=[0, 1, 0, 1])
        >>> up = ds.map(str.upper).subset([3, 0])
        >>> up[0], up[-1], up.labels.tolist()
        ('D', 'A', [1, 0])
        >>> up.__getitems__([0, 1])
        ['D', 'A']
    """

    _epoch: int = 0

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def _get(self, index: int) -> T_co:
        raise NotImplementedError(f"{type(self).__name__} must implement _get(index)")

    def _get_batch(self, indices: list[int]) -> list[T_co]:
        """Fetch several checked indices; override for a faster batched read."""
        return [self._get(i) for i in indices]

    def _children(self) -> list[Any]:
        """The datasets this one wraps (``set_epoch`` is forwarded to them)."""
        return []

    def __getitem__(self, index: int) -> T_co:  # type: ignore[override]
        return self._get(_check_index(index, len(self)))

    def __getitems__(self, indices: Sequence[int]) -> list[T_co]:
        """Batched fetch: the ``DataLoader`` calls this once per batch."""
        n = len(self)
        return self._get_batch([_check_index(i, n) for i in indices])

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(len(self)):
            yield self._get(i)

    @property
    def labels(self) -> np.ndarray | None:
        """Class id of every item (read-only int64 array), or None when unlabeled."""
        return None

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (mixed into per-sample seeds) here and in wrapped datasets.

        With ``persistent_workers=True`` the workers hold their own copy of the
        dataset; call this before the loader's workers start (or pass the epoch
        through the sampler) for it to reach them.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._epoch = int(epoch)
        for child in self._children():
            if hasattr(child, "set_epoch"):
                child.set_epoch(int(epoch))

    # ---- ops -------------------------------------------------------------
    def map(self, fn: Callable[[Any], Any], *, seed: int | None = None) -> MapDataset[Any]:
        """Apply ``fn`` to every item, lazily.

        Args:
            fn: the function (picklable if workers are spawned, not forked).
            seed: when given, random augmentations reproduce per ``(seed, epoch,
                index)``, whatever the number of workers or the engine. An ``fn``
                with a ``generator`` parameter (dataforge's transforms, ``Compose``)
                is called with ``generator=`` a ``torch.Generator`` seeded from them
                and must draw from it; any other ``fn`` runs with the torch, numpy
                and ``random`` global RNGs seeded from them, one call at a time
                across threads (NOTE [global RNGs under threads] in ``dataforge._rng``).

        ``fn`` is assumed to keep the label: ``.labels`` passes through. A batch
        (``__getitems__``) goes to ``fn.call_batch(items)`` (with ``generators=``, one per
        item, when seeded) where ``fn`` has one, as the image presets do (NOTE [one
        native call per batch] in ``dataforge/_crops.cpp``): it must return what the
        single calls would.
        """
        return _Mapped(self, fn, seed)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> MapDataset[T_co]:
        """The items at ``indices`` (negative indices allowed), in that order."""
        return _Subset(self, indices)

    def split(
        self, fractions: Sequence[float], *, seed: int = 0, stratify: bool = False
    ) -> list[MapDataset[T_co]]:
        """Split into disjoint random parts with the given fractions (summing to 1).

        Deterministic for a ``seed``. With ``stratify=True`` every class is split
        in the same proportions (it needs ``.labels``), and each class appears in
        every part with a positive fraction when it has enough items. Items keep
        their source order inside each part.

        Example:
            >>> import dataforge
            >>> ds = dataforge.from_sequence(list(range(10)), labels=[0] * 5 + [1] * 5)
            >>> train, val = ds.split([0.8, 0.2], seed=0, stratify=True)
            >>> len(train), len(val), sorted(val.labels.tolist())
            (8, 2, [0, 1])
        """
        labels = self.labels if stratify else None
        if stratify and labels is None:
            raise ValueError(
                f"split(stratify=True) needs labels, but this {type(self).__name__} has none; "
                "pass stratify=False or build it with labels (from_sequence(seq, labels=...))"
            )
        parts = split_indices(len(self), fractions, seed=seed, labels=labels)
        return [_Subset(self, p) for p in parts]

    def cache(self) -> MapDataset[T_co]:
        """Memoize items in memory (per process: each worker fills its own cache)."""
        return _Cached(self)

    def __add__(self, other: Dataset[Any]) -> MapDataset[Any]:  # type: ignore[override]
        return concat([self, other])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(len={len(self)})"


class _Wrapper(MapDataset[Any]):
    def __init__(self, source: MapDataset[Any]) -> None:
        self.source = source
        self._epoch = source.epoch

    def __len__(self) -> int:
        return len(self.source)

    def _children(self) -> list[Any]:
        return [self.source]

    @property
    def labels(self) -> np.ndarray | None:
        return self.source.labels


class _Mapped(_Wrapper):
    def __init__(self, source: MapDataset[Any], fn: Callable[[Any], Any], seed: int | None) -> None:
        if not callable(fn):
            raise TypeError(f"map(fn) needs a callable, got {type(fn).__name__} {fn!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"map(seed=...) must be an int or None, got {seed!r}")
        super().__init__(source)
        self.fn, self.seed = fn, seed
        self._pass_generator = seed is not None and accepts_generator(fn, via_kwargs=False)

    def _apply(self, item: Any, index: int) -> Any:
        if self.seed is None:
            return self.fn(item)
        if self._pass_generator:  # its own stream: no global seeding, no lock
            return self.fn(item, generator=self._generator(index))  # type: ignore[call-arg]
        with seeded_rng(self._seed_of(index)):
            return self.fn(item)

    def _seed_of(self, index: int) -> int:
        """The seed of item ``index`` in this epoch (``seed`` given)."""
        return sample_seed(int(self.seed), self._epoch, index)  # type: ignore[arg-type]

    def _generator(self, index: int) -> torch.Generator:
        return make_generator(self._seed_of(index))

    def _get(self, index: int) -> Any:
        return self._apply(self.source._get(index), index)

    def _get_batch(self, indices: list[int]) -> list[Any]:
        items = self.source._get_batch(indices)
        call_batch = getattr(self.fn, "call_batch", None)
        if call_batch is not None and len(items) > 1 and (self.seed is None or self._pass_generator):
            if self.seed is None:
                return list(call_batch(items))
            return list(call_batch(items, generators=[self._generator(i) for i in indices]))
        return [self._apply(x, i) for x, i in builtins.zip(items, indices)]

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"{self.source!r}.map({name}, seed={self.seed})"


class _Subset(_Wrapper):
    def __init__(self, source: MapDataset[Any], indices: Any) -> None:
        super().__init__(source)
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError(
                f"subset(indices) needs a 1-D sequence of ints, got dtype {idx.dtype} "
                f"with shape {idx.shape}"
            )
        n = len(source)
        idx = idx.astype(np.int64)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(
                f"subset(indices): index {int(idx[bad][0])} is out of range for a dataset "
                f"of length {n}"
            )
        idx = np.where(idx < 0, idx + n, idx)
        idx.setflags(write=False)
        self.indices = idx

    def __len__(self) -> int:
        return len(self.indices)

    def _get(self, index: int) -> Any:
        return self.source._get(int(self.indices[index]))

    def _get_batch(self, indices: list[int]) -> list[Any]:
        return self.source._get_batch(self.indices[indices].tolist())

    @property
    def labels(self) -> np.ndarray | None:
        labels = self.source.labels
        return None if labels is None else _readonly(labels[self.indices])

    def __repr__(self) -> str:
        return f"{self.source!r}.subset(len={len(self)})"


class _Cached(_Wrapper):
    def __init__(self, source: MapDataset[Any]) -> None:
        super().__init__(source)
        self._memo: dict[int, Any] = {}

    def _get(self, index: int) -> Any:
        if index not in self._memo:
            self._memo[index] = self.source._get(index)
        return self._memo[index]

    def _get_batch(self, indices: list[int]) -> list[Any]:
        missing = [i for i in dict.fromkeys(indices) if i not in self._memo]
        if missing:
            self._memo.update(builtins.zip(missing, self.source._get_batch(missing)))
        return [self._memo[i] for i in indices]

    # NOTE [per-process cache]: the memo is not pickled, so spawned workers start empty.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memo"] = {}
        return state

    def __repr__(self) -> str:
        return f"{self.source!r}.cache()"


class _Sequence(MapDataset[Any]):
    def __init__(self, seq: Any, labels: Any = None) -> None:
        if isinstance(seq, IterableDataset):
            raise TypeError(
                "from_sequence(seq) needs an indexable sequence, got an IterableDataset; "
                "iterate it or use dataforge.IterDataset ops instead"
            )
        if isinstance(seq, (str, bytes, dict)) or not (
            hasattr(seq, "__getitem__") and hasattr(seq, "__len__")
        ):
            raise TypeError(
                f"from_sequence(seq) needs an indexable sequence with a length (list, numpy "
                f"array, tensor, Dataset), got {type(seq).__name__}"
            )
        if isinstance(seq, (torch.Tensor, np.ndarray)) and seq.ndim == 0:
            raise TypeError("from_sequence(seq) needs at least one dimension, got a 0-d array")
        self.seq = seq
        n = len(seq)
        if labels is None:
            inner = getattr(seq, "labels", None)
            self._labels = _readonly(inner) if isinstance(inner, np.ndarray) else None
        else:
            self._labels = as_labels(labels, n)

    def __len__(self) -> int:
        return len(self.seq)

    def _children(self) -> list[Any]:
        return [self.seq] if isinstance(self.seq, Dataset) else []

    def _get(self, index: int) -> Any:
        if isinstance(self.seq, MapDataset):
            return self.seq._get(index)
        return self.seq[index]

    def _get_batch(self, indices: list[int]) -> list[Any]:
        seq = self.seq
        if isinstance(seq, MapDataset):
            return seq._get_batch(indices)
        if isinstance(seq, (torch.Tensor, np.ndarray)):
            return list(seq[np.asarray(indices, dtype=np.int64)]) if indices else []
        getitems = getattr(seq, "__getitems__", None)
        if getitems is not None:
            return list(getitems(indices))
        return [seq[i] for i in indices]

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    def __repr__(self) -> str:
        return f"from_sequence({type(self.seq).__name__}, len={len(self)})"


def from_sequence(seq: Any, labels: Any = None) -> MapDataset[Any]:
    """A map-style dataset over any indexable with a length.

    Args:
        seq: a list, tuple, numpy array, tensor (items along dim 0), a
            ``StringStorage`` or another map-style ``Dataset``.
        labels: optional class ids, one int per item. Defaults to ``seq.labels``
            when ``seq`` has them.

    Example:
        >>> import torch, dataforge
        >>> ds = dataforge.from_sequence(torch.arange(6).reshape(3, 2), labels=[1, 0, 1])
        >>> ds[1], ds.labels.tolist()
        (tensor([2, 3]), [1, 0, 1])
    """
    return _Sequence(seq, labels)


def _as_map(ds: Any, name: str) -> MapDataset[Any]:
    if isinstance(ds, MapDataset):
        return ds
    if isinstance(ds, (IterableDataset, str, bytes)) or not (
        hasattr(ds, "__getitem__") and hasattr(ds, "__len__")
    ):
        raise TypeError(f"{name} must be map-style datasets, got {type(ds).__name__}")
    return _Sequence(ds)


class _Concat(MapDataset[Any]):
    def __init__(self, datasets: Sequence[Any]) -> None:
        if isinstance(datasets, (Dataset, str)) or not isinstance(datasets, Sequence):
            raise TypeError(
                f"concat(datasets) takes a list of datasets, got {type(datasets).__name__}; "
                "write concat([a, b])"
            )
        if len(datasets) == 0:
            raise ValueError("concat(datasets) needs at least one dataset, got an empty list")
        self.datasets = [_as_map(d, "concat(datasets) items") for d in datasets]
        self.cumulative = np.cumsum([len(d) for d in self.datasets]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def _children(self) -> list[Any]:
        return list(self.datasets)

    def _locate(self, index: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.cumulative, index, side="right"))
        start = int(self.cumulative[k - 1]) if k else 0
        return k, index - start

    def _get(self, index: int) -> Any:
        k, j = self._locate(index)
        return self.datasets[k]._get(j)

    def _get_batch(self, indices: list[int]) -> list[Any]:
        idx = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.cumulative, idx, side="right")
        starts = np.concatenate([[0], self.cumulative])[which]
        out: list[Any] = [None] * len(indices)
        for k in np.unique(which).tolist():
            pos = np.flatnonzero(which == k)
            items = self.datasets[k]._get_batch((idx[pos] - starts[pos]).tolist())
            for p, item in builtins.zip(pos.tolist(), items):
                out[p] = item
        return out

    @property
    def labels(self) -> np.ndarray | None:
        parts = [d.labels for d in self.datasets]
        if any(p is None for p in parts):
            return None
        return _readonly(np.concatenate(cast(list[np.ndarray], parts)).astype(np.int64))

    def __repr__(self) -> str:
        return f"concat({len(self.datasets)} datasets, len={len(self)})"


class _Zip(MapDataset[tuple[Any, ...]]):
    def __init__(self, datasets: Sequence[Any]) -> None:
        if not datasets:
            raise ValueError("zip(*datasets) needs at least one dataset, got none")
        self.datasets = [_as_map(d, "zip(*datasets) arguments") for d in datasets]
        lengths = [len(d) for d in self.datasets]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"zip(*datasets) needs datasets of equal length, got lengths {lengths}; "
                "use .subset(range(n)) to cut them to a common length"
            )

    def __len__(self) -> int:
        return len(self.datasets[0])

    def _children(self) -> list[Any]:
        return list(self.datasets)

    def _get(self, index: int) -> tuple[Any, ...]:
        return tuple(d._get(index) for d in self.datasets)

    def _get_batch(self, indices: list[int]) -> list[tuple[Any, ...]]:
        columns = [d._get_batch(indices) for d in self.datasets]
        return list(builtins.zip(*columns))

    def __repr__(self) -> str:
        return f"zip({len(self.datasets)} datasets, len={len(self)})"


def concat(datasets: Sequence[Dataset[Any]]) -> MapDataset[Any]:
    """Chain map-style datasets end to end.

    ``.labels`` is the concatenation when every part has labels, else None.

    Example:
        >>> import dataforge
        >>> ds = dataforge.concat([dataforge.from_sequence(["a", "b"]), dataforge.from_sequence([1])])
        >>> [ds[i] for i in range(len(ds))]
        ['a', 'b', 1]
    """
    return _Concat(datasets)


def zip(*datasets: Dataset[Any]) -> MapDataset[tuple[Any, ...]]:  # noqa: A001 - public name
    """Pair items of equal-length map-style datasets: item ``i`` is a tuple.

    The result has no ``.labels`` (which part would own them is ambiguous).

    Example:
        >>> import dataforge
        >>> ds = dataforge.zip(dataforge.from_sequence([1, 2]), dataforge.from_sequence(["x", "y"]))
        >>> ds[1]
        (2, 'y')
    """
    return _Zip(datasets)
