"""``SplitCollate``: a batch of ``(data, label)`` pairs or dicts -> a tuple of batched parts.

Example:
    >>> import torch
    >>> from dataforge.collate.split import SplitCollate
    >>> x, y = SplitCollate()([(torch.zeros(3), 1), (torch.ones(3), 0)])
    >>> x.shape, y
    (torch.Size([2, 3]), tensor([1, 0]))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dataforge.collate.default import ROOT, a_describe, child_path, default_collate

__all__ = ["SplitCollate"]


class SplitCollate:
    """Split each sample into parts and collate every part on its own.

    Tuple (or list) samples are split by position: ``(data, label)`` pairs give
    ``(batched_data, batched_labels)``. Dict samples are split by ``keys``, which
    is then required: ``keys=("image", "label")`` gives ``(images, labels)``.
    Each part is collated by ``inner``: ``default_collate`` by default, or e.g. a
    :class:`dataforge.PadCollate` to pad variable-length parts (a padded part then
    comes back as ``(values, mask, lengths)``, see ``PadCollate``).

    Args:
        keys: which parts to return, in order: dict keys for dict samples,
            positions for tuple samples. ``None`` (tuples only) keeps every position.
        inner: the collate applied to each part; ``None`` means
            ``dataforge.default_collate``.

    Example:
        >>> from dataforge.collate.pad import PadCollate
        >>> split = SplitCollate(keys=["input_ids", "label"], inner=PadCollate(return_lengths=False))
        >>> (ids, mask), labels = split([{"input_ids": [1, 2], "label": 0},
        ...                              {"input_ids": [3], "label": 1}])
        >>> ids.tolist(), mask.tolist(), labels.tolist()
        ([[1, 2], [3, 0]], [[True, True], [True, False]], [0, 1])
    """

    def __init__(
        self,
        keys: Iterable[str | int] | None = None,
        inner: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        if keys is not None:
            if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
                raise TypeError(
                    f"keys must be a list of dict keys or tuple positions, got {keys!r}; "
                    f"write keys=[{keys!r}] for a single part"
                )
            keys = tuple(keys)
            if not keys:
                raise ValueError("keys must name at least one part, got []; use keys=None to "
                                 "keep every position of tuple samples")
        if inner is not None and not callable(inner):
            raise TypeError(
                f"inner must be a collate function (callable on a list of samples) or None, "
                f"got {inner!r}"
            )
        self.keys: tuple[str | int, ...] | None = keys
        self.inner: Callable[[list[Any]], Any] = default_collate if inner is None else inner

    def __repr__(self) -> str:
        inner = "" if self.inner is default_collate else f", inner={self.inner!r}"
        return f"SplitCollate(keys={self.keys!r}{inner})"

    def __call__(self, batch: Sequence[Any]) -> tuple[Any, ...]:
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
            raise TypeError(f"{ROOT}: a batch must be a list of samples, got {type(batch).__name__}")
        if len(batch) == 0:
            raise ValueError(
                f"{ROOT}: the batch is empty (0 samples); collate needs at least one sample. "
                "Check the sampler / batch_size, or skip empty batches before collating"
            )
        elem = batch[0]
        if isinstance(elem, Mapping):
            keys = self._dict_keys(batch)
        elif isinstance(elem, (tuple, list)):
            keys = self._positions(batch)
        else:
            raise TypeError(
                f"{ROOT}: SplitCollate splits tuple or dict samples, but sample 0 is "
                f"{a_describe(elem)}; use default_collate for single-field samples"
            )
        return tuple(self._collate([s[k] for s in batch], child_path(ROOT, k)) for k in keys)

    def _collate(self, part: list[Any], path: str) -> Any:
        collate_at = getattr(self.inner, "collate_at", None)
        return collate_at(part, path) if collate_at is not None else self.inner(part)

    def _dict_keys(self, batch: Sequence[Any]) -> tuple[Any, ...]:
        if self.keys is None:
            raise ValueError(
                f"{ROOT}: dict samples need SplitCollate(keys=[...]) to choose the parts and "
                f"their order, e.g. keys={list(batch[0])[:2]!r}"
            )
        for i, s in enumerate(batch):
            if not isinstance(s, Mapping):
                raise TypeError(
                    f"{ROOT}: samples must all be of one kind: sample 0 is a dict but sample "
                    f"{i} is {a_describe(s)}"
                )
            for k in self.keys:
                if k not in s:
                    raise ValueError(
                        f"{child_path(ROOT, k)}: sample {i} has no key {k!r} "
                        f"(it has {list(s)}); fix SplitCollate(keys=...) or the dataset"
                    )
        return self.keys

    def _positions(self, batch: Sequence[Any]) -> tuple[Any, ...]:
        size = len(batch[0])
        for i, s in enumerate(batch):
            if not isinstance(s, (tuple, list)):
                raise TypeError(
                    f"{ROOT}: samples must all be of one kind: sample 0 is "
                    f"{a_describe(batch[0])} but sample {i} is {a_describe(s)}"
                )
            if len(s) != size:
                raise ValueError(
                    f"{ROOT}: samples must have the same number of parts: sample 0 has {size} "
                    f"but sample {i} has {len(s)}"
                )
        if self.keys is None:
            return tuple(range(size))
        for k in self.keys:
            if not isinstance(k, int) or isinstance(k, bool) or not -size <= k < size:
                raise ValueError(
                    f"{ROOT}: for tuple samples of {size} parts, keys must be positions in "
                    f"0..{size - 1}, got {k!r}"
                )
        return self.keys
