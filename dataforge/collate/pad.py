"""``PadCollate``: pad variable-length fields and return their masks and lengths.

NOTE [output layout]:
- dict samples -> a dict; padded field ``k`` gives ``k`` (padded values),
  ``k + "_mask"`` (bool, True on real items; renamed by ``mask_names``) and
  ``k + "_lengths"`` (int64), placed right after ``k``.
- tuple / list-of-fields samples -> a tuple of the collated fields followed by
  one trailing dict ``{"mask": {i: ...}, "lengths": {i: ...}}`` keyed by the
  positions that were padded (the trailing dict is left out when both
  ``return_mask`` and ``return_lengths`` are False).
- bare samples (each sample a tensor, array or list of numbers) ->
  ``(values, mask, lengths)`` (without the parts that are turned off; the bare
  tensor when both are off).
- 1-D fields: values ``(B, L)``, mask ``(B, L)``, lengths ``(B,)``. Fields of rank
  ``r >= 2`` (e.g. CHW images of different sizes) are padded in every dimension:
  values ``(B, *max_shape)``, mask of the same shape, lengths ``(B, r)`` (each
  sample's own shape).

NOTE [which fields are padded]: with ``keys=None``, lists of numbers and 1-D
tensors / arrays are always padded (so the output keys do not depend on the
batch), fields of higher rank only when their shapes differ in the batch, and
everything else (numbers, strings, equal-shaped arrays) is stacked as by
``default_collate``. Nested dicts and tuples are searched the same way; ``keys``,
``pad_values`` and ``mask_names`` match a field by its own key (or tuple
position) at any depth. Give ``keys`` for a fixed layout. A list is a *sequence of numbers* when its items are
numbers; a tuple is always a record of fields (as in ``default_collate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np
import torch

from dataforge.collate import functional as F
from dataforge.collate.default import (
    ROOT,
    DefaultCollate,
    a_describe,
    child_path,
    default_collate,
)

__all__ = ["PadCollate"]

_NUMBER_TYPES = (int, float, bool, np.number, np.bool_)


def _is_number_list(x: Any) -> bool:
    return type(x) is list and (not x or isinstance(x[0], _NUMBER_TYPES))


def _is_record(x: Any) -> bool:
    """A container whose items are separate fields (dict, tuple, list of non-numbers)."""
    if isinstance(x, (Mapping, tuple)):
        return True
    return isinstance(x, list) and bool(x) and not isinstance(x[0], _NUMBER_TYPES)


def _is_sequence(x: Any) -> bool:
    return _is_number_list(x) or (isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim >= 1)


def _check_number(value: Any, what: str) -> None:
    if not isinstance(value, _NUMBER_TYPES) or isinstance(value, complex):
        raise TypeError(f"{what} must be a number (int, float or bool), got {value!r}")


def _check_positive_int(value: Any, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}; use None to "
                         + ("turn rounding off" if name == "pad_to_multiple_of" else
                            "keep every item"))


class PadCollate:
    """Collate samples with variable-length fields by padding them.

    Args:
        pad_value: value written in padded positions.
        keys: the fields to pad (dict keys, or positions of tuple samples); ``None``
            pads every sequence-like or ragged field (see NOTE [which fields are
            padded]). Other fields are stacked as by ``default_collate``.
        pad_values: per-key pad values overriding ``pad_value``, e.g.
            ``{"labels": -100}``.
        pad_to_multiple_of: round the padded length (first dimension) up to a
            multiple of this, e.g. 8 for tensor cores.
        max_length: truncate the first dimension to this many items: the first
            ``max_length`` for right padding, the last ``max_length`` for left
            padding. The padded length may then still be rounded up by
            ``pad_to_multiple_of``.
        padding_side: ``"right"`` (real items first) or ``"left"``.
        return_mask: add the bool mask of real items for each padded field.
        return_lengths: add the int64 lengths of each padded field.
        mask_names: rename masks of dict fields, e.g.
            ``{"input_ids": "attention_mask"}`` for HuggingFace models.

    Example:
        >>> from dataforge.collate.pad import PadCollate
        >>> collate = PadCollate(pad_to_multiple_of=4, mask_names={"input_ids": "attention_mask"})
        >>> out = collate([{"input_ids": [5, 6, 7], "label": 1}, {"input_ids": [8], "label": 0}])
        >>> list(out)
        ['input_ids', 'attention_mask', 'input_ids_lengths', 'label']
        >>> out["input_ids"].tolist(), out["input_ids_lengths"].tolist()
        ([[5, 6, 7, 0], [8, 0, 0, 0]], [3, 1])
    """

    def __init__(
        self,
        pad_value: float = 0,
        *,
        keys: Iterable[str | int] | None = None,
        pad_values: Mapping[str | int, float] | None = None,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        return_mask: bool = True,
        return_lengths: bool = True,
        mask_names: Mapping[str, str] | None = None,
    ) -> None:
        _check_number(pad_value, "pad_value")
        if keys is not None:
            if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
                raise TypeError(
                    f"keys must be a list of field names or positions, got {keys!r}; "
                    f"write keys=[{keys!r}] for a single field"
                )
            keys = tuple(keys)
            if not keys:
                raise ValueError("keys must name at least one field, got []; use keys=None "
                                 "to pad every variable-length field")
        if pad_values is not None:
            if not isinstance(pad_values, Mapping):
                raise TypeError(f"pad_values must be a dict key -> number, got {pad_values!r}")
            for k, v in pad_values.items():
                _check_number(v, f"pad_values[{k!r}]")
        _check_positive_int(pad_to_multiple_of, "pad_to_multiple_of")
        _check_positive_int(max_length, "max_length")
        if padding_side not in ("right", "left"):
            raise ValueError(f'padding_side must be "right" or "left", got {padding_side!r}')
        for name, flag in (("return_mask", return_mask), ("return_lengths", return_lengths)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if mask_names is not None:
            if not isinstance(mask_names, Mapping) or not all(
                isinstance(v, str) for v in mask_names.values()
            ):
                raise TypeError(
                    "mask_names must be a dict field -> mask name, e.g. "
                    f'{{"input_ids": "attention_mask"}}, got {mask_names!r}'
                )
            if len(set(mask_names.values())) != len(mask_names):
                raise ValueError(f"mask_names gives two fields the same mask name: {mask_names!r}")
        self.pad_value = pad_value
        self.keys: tuple[str | int, ...] | None = keys
        self.pad_values: dict[str | int, float] = dict(pad_values or {})
        self.pad_to_multiple_of = None if pad_to_multiple_of is None else int(pad_to_multiple_of)
        self.max_length = None if max_length is None else int(max_length)
        self.padding_side = padding_side
        self.return_mask = return_mask
        self.return_lengths = return_lengths
        self.mask_names: dict[str, str] = dict(mask_names or {})
        self.collate: DefaultCollate = default_collate

    def __repr__(self) -> str:
        args = [repr(self.pad_value)]
        for name in ("keys", "pad_values", "pad_to_multiple_of", "max_length", "mask_names"):
            value = getattr(self, name)
            if value:
                args.append(f"{name}={value!r}")
        if self.padding_side != "right":
            args.append(f"padding_side={self.padding_side!r}")
        return f"PadCollate({', '.join(args)})"

    def __call__(self, batch: Sequence[Any]) -> Any:
        return self.collate_at(batch, ROOT)

    def collate_at(self, batch: Sequence[Any], path: str) -> Any:
        """Collate ``batch``, naming its key path ``path`` in error messages."""
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
            raise TypeError(f"{path}: a batch must be a list of samples, got {type(batch).__name__}")
        if len(batch) == 0:
            raise ValueError(
                f"{path}: the batch is empty (0 samples); collate needs at least one sample. "
                "Check the sampler / batch_size, or skip empty batches before collating"
            )
        shared = F.in_worker()
        elem = batch[0]
        if _is_record(elem):
            return self._record(batch, path, shared, True)
        if self._wants_padding(batch, None):
            values, mask, lengths = self._pad(list(batch), None, path, shared)
            parts = [values]
            if self.return_mask:
                parts.append(mask)
            if self.return_lengths:
                parts.append(lengths)
            return parts[0] if len(parts) == 1 else tuple(parts)
        return self.collate._dispatch(batch, path, shared)

    # -- field selection -------------------------------------------------------------

    def _wants_padding(self, values: Sequence[Any], key: str | int | None) -> bool:
        if self.keys is not None and key is not None:
            return key in self.keys
        elem = values[0]
        if _is_number_list(elem):
            return True
        if isinstance(elem, (torch.Tensor, np.ndarray)):
            if elem.ndim == 1:
                return True
            if elem.ndim >= 2:
                shape = elem.shape
                return any(getattr(v, "shape", shape) != shape for v in values)
        return False

    # -- records -----------------------------------------------------------------------

    def _record(self, batch: Sequence[Any], path: str, shared: bool, top: bool) -> Any:
        elem = batch[0]
        is_map = isinstance(elem, Mapping)
        if len(set(map(type, batch))) > 1:  # NOTE: C-level loops, this runs per batch
            for i, s in enumerate(batch):
                if isinstance(s, Mapping) != is_map or not _is_record(s):
                    raise TypeError(
                        f"{path}: samples must all be of one kind: sample 0 is "
                        f"{a_describe(elem)} but sample {i} is {a_describe(s)}"
                    )
        if is_map:
            return self._mapping(batch, path, shared, top)
        return self._tuple(batch, path, shared, top)

    def _field(
        self, values: list[Any], key: str | int, path: str, shared: bool, pad: bool | None = None
    ) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
        """Collate one field: pad it, recurse into it, or stack it -> (out, mask, lengths)."""
        if pad is None:
            pad = self._wants_padding(values, key)
        if pad:
            return self._pad(values, key, path, shared)
        if _is_record(values[0]):
            return self._record(values, path, shared, False), None, None
        return self.collate._dispatch(values, path, shared), None, None

    def _mapping(self, batch: Sequence[Any], path: str, shared: bool, top: bool) -> dict[Any, Any]:
        keys = list(batch[0])
        size = len(keys)
        columns: dict[Any, list[Any]] = {}
        try:
            if set(map(len, batch)) != {size}:
                raise KeyError
            for k in keys:
                columns[k] = [d[k] for d in batch]
        except KeyError:
            for i, d in enumerate(batch):
                missing = [k for k in keys if k not in d]
                extra = [k for k in d if k not in keys]
                if missing or extra:
                    raise ValueError(
                        f"{path}: samples must have the same keys: sample {i} "
                        + (f"is missing {missing} " if missing else f"has extra {extra} ")
                        + f"compared with sample 0 (keys {keys})"
                    ) from None
            raise  # pragma: no cover - a mapping whose __getitem__ raised KeyError itself
        if self.keys is not None and top:
            absent = [k for k in self.keys if k not in keys]
            if absent:
                raise ValueError(
                    f"{path}: PadCollate(keys=...) names {absent}, which the samples do not "
                    f"have (keys {keys}); fix keys= or the dataset"
                )
        out: dict[Any, Any] = {}
        for k in keys:
            values, mask, lengths = self._field(columns[k], k, child_path(path, k), shared)
            out[k] = values
            if mask is not None:
                for name, extra_value, wanted in (
                    (self.mask_names.get(k, f"{k}_mask"), mask, self.return_mask),
                    (f"{k}_lengths", lengths, self.return_lengths),
                ):
                    if not wanted:
                        continue
                    if name in keys or name in out:
                        raise ValueError(
                            f"{path}: the output name {name!r} for field {k!r} collides with a "
                            f"field of the samples; drop that field from the samples (PadCollate "
                            "rebuilds masks) or choose another name with mask_names"
                        )
                    out[name] = extra_value
        return out

    def _tuple(self, batch: Sequence[Any], path: str, shared: bool, top: bool) -> tuple[Any, ...]:
        size = len(batch[0])
        for i, s in enumerate(batch):
            if len(s) != size:
                raise ValueError(
                    f"{path}: samples must have the same number of fields: sample 0 has {size} "
                    f"but sample {i} has {len(s)}"
                )
        if self.keys is not None and top:
            bad = [k for k in self.keys if not isinstance(k, int) or not -size <= k < size]
            if bad:
                raise ValueError(
                    f"{path}: PadCollate(keys=...) must list positions 0..{size - 1} for tuple "
                    f"samples, got {bad}"
                )
        fields: list[Any] = []
        masks: dict[int, torch.Tensor] = {}
        lengths: dict[int, torch.Tensor] = {}
        for j, column in enumerate(zip(*batch)):
            values = list(column)
            pad = None if self.keys is None else (j in self.keys or j - size in self.keys)
            out, mask, n = self._field(values, j, child_path(path, j), shared, pad)
            fields.append(out)
            if mask is not None and n is not None:
                masks[j] = mask
                lengths[j] = n
        extras: dict[str, dict[int, torch.Tensor]] = {}
        if self.return_mask:
            extras["mask"] = masks
        if self.return_lengths:
            extras["lengths"] = lengths
        return (*fields, extras) if extras else tuple(fields)

    # -- padding -----------------------------------------------------------------------

    def _pad(
        self, values: list[Any], key: str | int | None, path: str, shared: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad_value = self.pad_values.get(key, self.pad_value) if key is not None else self.pad_value
        kwargs = dict(
            padding_side=self.padding_side,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            shared=shared,
            name=path,
        )
        types = set(map(type, values))
        if types == {list} and _is_number_list(next((v for v in values if v), [])):
            return F.pad_lists(values, pad_value, **kwargs)  # type: ignore[arg-type]
        if types == {torch.Tensor}:
            return F.pad_tensors(values, pad_value, **kwargs)  # type: ignore[arg-type]
        tensors = []
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor):
                tensors.append(v)
                continue
            if not isinstance(v, (np.ndarray, list, tuple, Number)):
                raise TypeError(
                    f"{path}: sample {i} is {a_describe(v)}; only numeric fields (tensors, "
                    "numeric arrays, lists of numbers) can be padded. Leave this key out of "
                    "PadCollate(keys=...)"
                )
            try:
                arr = np.asarray(v)
                if arr.dtype.kind not in "biuf":
                    raise TypeError(f"dtype {arr.dtype}")
                if not (arr.flags.c_contiguous and arr.flags.writeable):
                    arr = arr.copy()
                tensors.append(torch.from_numpy(arr))
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"{path}: sample {i} ({a_describe(v)}) is not numeric or not rectangular "
                    f"({exc}); only numeric fields can be padded. Leave this key out of "
                    "PadCollate(keys=...)"
                ) from exc
        return F.pad_tensors(tensors, pad_value, **kwargs)  # type: ignore[arg-type]
