"""Pure padding math: shared-memory allocation, stacking, and padding of sequences.

These functions hold no configuration and no state; :class:`dataforge.PadCollate`
and :func:`dataforge.default_collate` call them. ``name`` arguments only feed
error messages (the key path of the field, e.g. ``batch[*]["input_ids"]``).

Example:
    >>> import torch
    >>> values, mask, lengths = pad_lists([[1, 2, 3], [4]], pad_value=0)
    >>> values.tolist(), mask.tolist(), lengths.tolist()
    ([[1, 2, 3], [4, 0, 0]], [[True, True, True], [True, False, False]], [3, 1])
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from itertools import chain
from numbers import Number
from operator import attrgetter
from typing import Any

import numpy as np
import torch

from dataforge._dist import in_worker
from dataforge._memory import POOL_MIN_BYTES, dense_strides, empty_strided_cpu

__all__ = [
    "empty",
    "in_worker",
    "pad_lists",
    "pad_tensors",
    "padded_length",
    "stack",
]

Shape = Sequence[int]
_dtype_of = attrgetter("dtype")
_TORCH_DTYPES = {"i": torch.int64, "b": torch.bool, "f": torch.float32}  # by dtype.kind


def empty(
    shape: Shape,
    dtype: torch.dtype,
    *,
    shared: bool = False,
    device: torch.device | str = "cpu",
    strides: Shape | None = None,
) -> torch.Tensor:
    """An uninitialised tensor, allocated straight in shared memory when ``shared``.

    NOTE [shared memory]: a batch built in a worker is sent to the main process
    through shared memory. Allocating it there from the start (as torch's own
    ``default_collate`` does) saves one copy of the whole batch. The private
    ``UntypedStorage._new_shared`` exists in torch >= 2.0; if it is missing or
    fails, ``share_memory_()`` gives the same result with one extra copy.

    ``strides`` (default: contiguous) must describe a dense layout of ``shape``, such
    as channels-last (see :func:`stack`).
    """
    shape = tuple(int(s) for s in shape)
    if strides is None:
        strides = _contiguous_strides(shape)
    strides = tuple(int(s) for s in strides)
    if torch.device(device).type != "cpu":
        return torch.empty_strided(shape, strides, dtype=dtype, device=device)
    if not shared:  # batch-sized: from the buffer pool (NOTE [buffer pool] in dataforge._memory)
        return empty_strided_cpu(shape, strides, dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    try:
        storage = torch.UntypedStorage._new_shared(nbytes)  # type: ignore[attr-defined]
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape, strides)
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - old/odd torch
        return torch.empty_strided(shape, strides, dtype=dtype).share_memory_()


def _contiguous_strides(shape: Shape) -> tuple[int, ...]:
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * max(int(shape[d + 1]), 1)
    return tuple(strides)


def _dense_layout(t: torch.Tensor) -> tuple[int, ...] | None:
    """``t``'s strides if they are a dense, non-contiguous permutation (channels-last), else None."""
    return None if t.is_contiguous() or t.dim() < 2 else dense_strides(t)


def stack(tensors: Sequence[torch.Tensor], *, shared: bool = False) -> torch.Tensor:
    """``torch.stack(tensors)``, written into shared memory when ``shared``.

    NOTE [stack keeps the layout]: when every tensor has the same dense non-contiguous
    layout (a channels-last image: ``(C, H, W)`` with strides ``(1, W*C, C)``, which is
    what decoding and the uint8 resize produce), the batch keeps it: ``(N, C, H, W)``
    channels-last, each sample one ``memcpy``. ``torch.stack`` would transpose every
    image into a contiguous batch instead: 43 us against 5 us per 224x224 image on one
    core (measured; see benchmarks/README.md). Values, shape and dtype are those of
    ``torch.stack``; use ``.reshape`` rather than ``.view`` to flatten such a batch, or
    ``.contiguous()`` when a contiguous one is needed. A batch of 1 MiB or more outside
    a worker process is allocated from the buffer pool (NOTE [buffer pool] in
    ``dataforge._memory``).
    """
    elem = tensors[0]
    if elem.device.type != "cpu" or any(t.requires_grad for t in tensors):
        return torch.stack(list(tensors), 0)  # (out= does not support autograd)
    layout = _dense_layout(elem)
    if layout is not None and any(t.stride() != layout or t.shape != elem.shape for t in tensors):
        layout = None
    dtype = elem.dtype
    for t in tensors:
        if t.dtype != dtype:
            dtype = torch.promote_types(dtype, t.dtype)
    shape = (len(tensors), *elem.shape)
    if layout is None and not shared and math.prod(shape) * dtype.itemsize < POOL_MIN_BYTES:
        return torch.stack(list(tensors), 0)  # small: malloc reuses its memory anyway
    strides = None if layout is None else (elem.numel(), *layout)
    out = empty(shape, dtype, shared=shared, strides=strides)
    return torch.stack(list(tensors), 0, out=out)


def padded_length(longest: int, pad_to_multiple_of: int | None = None) -> int:
    """``longest`` rounded up to a multiple of ``pad_to_multiple_of``.

    >>> padded_length(13, 8), padded_length(16, 8), padded_length(0, 8)
    (16, 16, 0)
    """
    if pad_to_multiple_of is None or pad_to_multiple_of <= 1:
        return longest
    return -(-longest // pad_to_multiple_of) * pad_to_multiple_of


def _check_pad_value(pad_value: Any, dtype: torch.dtype, name: str) -> None:
    integral = not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    if integral and isinstance(pad_value, float) and not float(pad_value).is_integer():
        raise ValueError(
            f"{name}: pad value {pad_value!r} does not fit the field's integer dtype "
            f"{dtype}; pass an integer pad value for this key (pad_values={{key: 0}})"
        )


def _numbers_to_array(seqs: Sequence[Sequence[Any]], name: str) -> np.ndarray:
    """Lists of Python numbers -> one flat int64 (all ints), bool (all bools) or float32 array.

    NOTE [list conversion]: ``array("q", list)`` is a C loop that refuses floats
    (``np.fromiter(..., int64)`` would truncate them silently), so it both converts
    and type-checks; floats then take the ``array("d")`` path. One ``array`` per
    sample joined as bytes is ~8x faster than ``torch.tensor`` on the same lists.
    """
    first = next((s[0] for s in seqs if len(s)), None)
    if first is None:
        return np.empty(0, dtype=np.int64)
    if isinstance(first, (bool, np.bool_)):
        arr = np.asarray(list(chain.from_iterable(seqs)))
        if arr.dtype == np.bool_:
            return arr
    try:
        return np.frombuffer(b"".join([array("q", s) for s in seqs]), dtype=np.int64)
    except TypeError:
        pass  # a float (or a non-number) somewhere: try floats
    except OverflowError as exc:
        raise ValueError(f"{name}: an integer does not fit in int64 ({exc})") from exc
    try:
        floats = np.frombuffer(b"".join([array("d", s) for s in seqs]), dtype=np.float64)
        return floats.astype(np.float32)
    except TypeError:
        pass
    for i, seq in enumerate(seqs):
        for j, x in enumerate(seq):
            if not isinstance(x, Number) or isinstance(x, complex):
                raise TypeError(
                    f"{name}: sample {i} holds a non-numeric value {x!r} "
                    f"({type(x).__name__}) at position {j}; only numeric fields can be "
                    "padded. Leave this key out of PadCollate(keys=...) or convert it first"
                )
    raise TypeError(f"{name}: values cannot be converted to numbers")  # pragma: no cover


def pad_lists(
    seqs: Sequence[Sequence[Any]],
    pad_value: float = 0,
    *,
    padding_side: str = "right",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    shared: bool = False,
    name: str = "batch[*]",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad lists of numbers into one ``(B, L)`` tensor, with mask and lengths.

    Ints give int64, bools give bool, anything with a float gives float32 (as
    ``torch.tensor`` would). Truncation keeps the first ``max_length`` items for
    right padding and the last ``max_length`` for left padding.

    Returns:
        ``(values, mask, lengths)``: values ``(B, L)``; mask ``(B, L)`` bool, True on
        real items; lengths ``(B,)`` int64, the number of real items per row.

    Example:
        >>> v, m, n = pad_lists([[1, 2, 3], [4]], -1, padding_side="left", max_length=2)
        >>> v.tolist(), n.tolist()
        ([[2, 3], [-1, 4]], [2, 1])
    """
    if max_length is not None:
        if padding_side == "right":
            seqs = [s if len(s) <= max_length else s[:max_length] for s in seqs]
        else:
            seqs = [s if len(s) <= max_length else s[len(s) - max_length :] for s in seqs]
    b = len(seqs)
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=b)
    values = _numbers_to_array(seqs, name)
    dtype = _TORCH_DTYPES[values.dtype.kind]
    _check_pad_value(pad_value, dtype, name)
    width = padded_length(int(lengths.max()) if b else 0, pad_to_multiple_of)
    mask, lengths_t = _layout(lengths, width, padding_side, shared)
    out = empty((b, width), dtype, shared=shared)
    out_np = out.numpy()
    if values.size == b * width:  # nothing to pad
        out_np.reshape(-1)[:] = values
    else:
        out_np.fill(pad_value)
        out_np[mask.numpy()] = values
    return out, mask, lengths_t


def _layout(
    lengths: np.ndarray, width: int, padding_side: str, shared: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, lengths)`` tensors of a ``(B, width)`` padded batch, computed in numpy.

    Row-major order of the mask's True positions is the order of the concatenated
    samples, for both padding sides: one boolean-mask assignment fills the batch.
    """
    b = lengths.shape[0]
    # int32 compares twice as fast as int64 (wider SIMD); lengths never reach 2**31
    positions = np.arange(width, dtype=np.int32)
    bounds = (lengths if padding_side == "right" else width - lengths).astype(np.int32)[:, None]
    compare = np.less if padding_side == "right" else np.greater_equal
    if not shared:  # numpy allocates, torch wraps: no copies
        return torch.from_numpy(compare(positions, bounds)), torch.from_numpy(lengths)
    mask = empty((b, width), torch.bool, shared=True)
    compare(positions, bounds, out=mask.numpy())
    lengths_t = empty((b,), torch.int64, shared=True)
    lengths_t.numpy()[:] = lengths
    return mask, lengths_t


def pad_tensors(
    tensors: Sequence[torch.Tensor],
    pad_value: float = 0,
    *,
    padding_side: str = "right",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    shared: bool = False,
    name: str = "batch[*]",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad tensors of equal rank to the largest size in every dimension.

    ``max_length`` (truncation) and ``pad_to_multiple_of`` act on the first
    dimension, the sequence dimension; the other dimensions are padded to their
    maximum. ``padding_side="left"`` aligns each sample to the end of every
    dimension (for images: bottom-right).

    Returns:
        ``(values, mask, lengths)``. For 1-D inputs: ``(B, L)``, ``(B, L)`` bool and
        ``(B,)`` int64. For rank ``r >= 2``: values ``(B, *max_shape)``, mask of the
        same shape (True on real elements) and lengths ``(B, r)`` int64, each
        sample's own shape.

    Example:
        >>> import torch
        >>> v, m, n = pad_tensors([torch.ones(1, 2), torch.ones(2, 1)])
        >>> tuple(v.shape), n.tolist(), m[0].tolist()
        ((2, 2, 2), [[1, 2], [2, 1]], [[True, True], [False, False]])
    """
    if not tensors:
        raise ValueError(f"{name}: nothing to pad (0 samples)")
    tensors = list(tensors)
    ndims = set(map(torch.Tensor.dim, tensors))
    ndim = tensors[0].dim()
    if len(ndims) > 1 or ndim == 0:
        for i, t in enumerate(tensors):
            if t.dim() == 0:
                raise ValueError(
                    f"{name}: sample {i} is a scalar (shape ()); only sequences and arrays can "
                    "be padded. Leave this key out of PadCollate(keys=...)"
                )
            if t.dim() != ndim:
                raise ValueError(
                    f"{name}: samples of a padded field must have the same number of "
                    f"dimensions: sample 0 has shape {tuple(tensors[0].shape)} but sample {i} "
                    f"has shape {tuple(t.shape)}"
                )
    if max_length is not None:
        if padding_side == "right":
            tensors = [t[:max_length] for t in tensors]
        else:
            tensors = [t[max(t.shape[0] - max_length, 0) :] for t in tensors]
    device = tensors[0].device
    dtypes = set(map(_dtype_of, tensors))
    dtype = tensors[0].dtype
    for other in dtypes:
        dtype = torch.promote_types(dtype, other)
    if len(dtypes) > 1:
        tensors = [t.to(dtype) for t in tensors]
    _check_pad_value(pad_value, dtype, name)
    shared = shared and device.type == "cpu"
    b = len(tensors)

    if ndim == 1 and device.type == "cpu":
        lengths = np.fromiter(map(torch.Tensor.numel, tensors), dtype=np.int64, count=b)
        width = padded_length(int(lengths.max()), pad_to_multiple_of)
        mask, lengths_t = _layout(lengths, width, padding_side, shared)
        flat = torch.cat(tensors)
        out = empty((b, width), dtype, shared=shared)
        if flat.numel() == b * width:
            out.view(-1).copy_(flat)
            return out, mask, lengths_t
        out.fill_(pad_value)
        try:  # numpy's boolean assignment is several times faster than masked_scatter_
            out.numpy()[mask.numpy()] = flat.detach().numpy()
        except (TypeError, RuntimeError):  # dtypes numpy lacks (bfloat16, ...)
            out.masked_scatter_(mask, flat)
        return out, mask, lengths_t
    if ndim == 1:  # accelerator tensors: stay on the device
        lengths_t = torch.tensor([t.shape[0] for t in tensors], dtype=torch.int64, device=device)
        width = padded_length(int(lengths_t.max()), pad_to_multiple_of)
        positions = torch.arange(width, device=device)
        if padding_side == "right":
            mask = positions < lengths_t[:, None]
        else:
            mask = positions >= (width - lengths_t)[:, None]
        out = torch.full((b, width), pad_value, dtype=dtype, device=device)
        out.masked_scatter_(mask, torch.cat(tensors))
        return out, mask, lengths_t

    shapes = [tuple(t.shape) for t in tensors]
    max_shape = [max(s[d] for s in shapes) for d in range(ndim)]
    max_shape[0] = padded_length(max_shape[0], pad_to_multiple_of)
    out = empty((b, *max_shape), dtype, shared=shared, device=device).fill_(pad_value)
    mask = empty((b, *max_shape), torch.bool, shared=shared, device=device).fill_(False)
    for i, t in enumerate(tensors):
        if padding_side == "right":
            region = tuple(slice(0, n) for n in t.shape)
        else:
            region = tuple(slice(m - n, m) for n, m in zip(t.shape, max_shape))
        out[i][region] = t
        mask[i][region] = True
    shapes_t = torch.tensor(shapes, dtype=torch.int64, device=device).reshape(b, ndim)
    if shared:
        shapes_t = shapes_t.share_memory_()
    return out, mask, shapes_t
