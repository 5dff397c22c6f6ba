"""``default_collate``: torch's default collate with a type registry and clear errors.

Same results as ``torch.utils.data.default_collate``: tensors, numpy arrays and
numpy scalars are stacked; Python ints give int64, floats float64 and bools a
bool tensor; strings, bytes and ``None`` stay lists; mappings, namedtuples and
sequences are collated field by field (tuple samples give a list, as in torch).
Differences: ``None`` is allowed, every error names the key path and the sample
indices, and types are dispatched through a registry that users extend. The values
are torch's; the memory layout may not be: tensors that share a dense
channels-last layout (decoded images) are stacked into a channels-last batch
(NOTE [stack keeps the layout] in :mod:`dataforge.collate.functional`).

Example:
    >>> import torch
    >>> from dataforge.collate.default import default_collate
    >>> out = default_collate([{"x": torch.zeros(2), "y": 1}, {"x": torch.ones(2), "y": 0}])
    >>> out["x"].shape, out["y"]
    (torch.Size([2, 2]), tensor([1, 0]))
"""

from __future__ import annotations

import collections.abc
import copy
import re
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dataforge.collate import functional as F

__all__ = ["CollateContext", "CollateFn", "DefaultCollate", "default_collate", "register_collate"]

ROOT = "batch[*]"
PAD_HINT = (
    "To batch fields of different lengths or sizes, pad them: "
    "DataLoader(..., collate_fn=dataforge.PadCollate()) returns the padded tensor "
    "with its mask and lengths"
)
_NUMPY_NON_NUMERIC = re.compile(r"[SaUO]")


def child_path(path: str, key: Any) -> str:
    """``batch[*]`` + ``"input_ids"`` -> ``batch[*]["input_ids"]``; ints -> ``batch[*][2]``."""
    return f'{path}["{key}"]' if isinstance(key, str) else f"{path}[{key!r}]"


def a_describe(x: Any) -> str:
    """``describe(x)`` with its article: "a dict", "an int"."""
    text = describe(x)
    return ("an " if text[0].lower() in "aeiou" else "a ") + text


def describe(x: Any) -> str:
    """A short description of a value's type (and shape) for error messages."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__} of shape {tuple(x.shape)}"
    return type(x).__name__


class CollateContext:
    """What a registered collate function receives besides its samples.

    Attributes:
        path: key path of the samples, e.g. ``batch[*]["image"]``, for error messages.
        shared: True inside a ``DataLoader`` worker: tensors should be allocated in
            shared memory (``stack`` does it).
    """

    __slots__ = ("_collate", "path", "shared")

    def __init__(self, collate: DefaultCollate, path: str, shared: bool) -> None:
        self._collate = collate
        self.path = path
        self.shared = shared

    def collate(self, samples: Sequence[Any], key: Any = None) -> Any:
        """Collate ``samples`` (one field of every sample) with the same registry.

        ``key`` extends the key path used in error messages.
        """
        path = self.path if key is None else child_path(self.path, key)
        return self._collate._dispatch(samples, path, self.shared)

    def stack(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack equal-shaped tensors (into shared memory inside a worker)."""
        return F.stack(tensors, shared=self.shared)


CollateFn = Callable[[list[Any], CollateContext], Any]


def _type_error(samples: Sequence[Any], i: int, path: str) -> TypeError:
    return TypeError(
        f"{path}: samples of one field must have the same type: sample 0 is "
        f"{a_describe(samples[0])} but sample {i} is {a_describe(samples[i])}"
    )


def _first_mismatch(samples: Sequence[Any], types: type | tuple[type, ...]) -> int:
    for i, x in enumerate(samples):
        if not isinstance(x, types):
            return i
    return -1


def collate_tensors(samples: list[Any], ctx: CollateContext) -> torch.Tensor:
    """Stack tensors of one shape; the error on a ragged field suggests ``PadCollate``."""
    # NOTE [unusual layouts first]: a nested tensor has no .shape (torch raises an internal
    # error), so every sample's layout is checked before any shape is read
    for i, t in enumerate(samples):
        if not isinstance(t, torch.Tensor):
            raise _type_error(samples, i, ctx.path)
        if t.is_nested or t.layout != torch.strided:
            raise TypeError(
                f"{ctx.path}: {'nested' if t.is_nested else str(t.layout)} tensors cannot "
                f"be collated by default_collate (sample {i}); register a function for them "
                "with default_collate.register(torch.Tensor) or write a collate_fn"
            )
    shape = samples[0].shape
    for i, t in enumerate(samples):
        if t.shape != shape:
            raise ValueError(
                f"{ctx.path}: cannot stack tensors of different shapes: sample 0 has shape "
                f"{tuple(shape)} but sample {i} has shape {tuple(t.shape)}. {PAD_HINT}"
            )
    return ctx.stack(samples)


def collate_numpy_arrays(samples: list[Any], ctx: CollateContext) -> torch.Tensor:
    """Numpy arrays -> one stacked tensor (string and object arrays are refused)."""
    i = _first_mismatch(samples, np.ndarray)
    if i >= 0:
        raise _type_error(samples, i, ctx.path)
    dtype = samples[0].dtype
    if _NUMPY_NON_NUMERIC.search(dtype.str) is not None:
        raise TypeError(
            f"{ctx.path}: numpy arrays of dtype {dtype} (strings or objects) cannot be "
            "turned into tensors; convert them to numbers first or keep them as lists"
        )
    shape = samples[0].shape
    for i, a in enumerate(samples):
        if a.shape != shape:
            raise ValueError(
                f"{ctx.path}: cannot stack arrays of different shapes: sample 0 has shape "
                f"{shape} but sample {i} has shape {a.shape}. {PAD_HINT}"
            )
    return collate_tensors([torch.as_tensor(a) for a in samples], ctx)


def _numbers(samples: list[Any], ctx: CollateContext, dtype: torch.dtype | None) -> torch.Tensor:
    # NOTE [fast numbers]: ``array("q"/"d", list)`` converts in C and refuses what
    # does not fit (a float among ints, a string), 4x faster than ``torch.tensor``
    # on a batch of labels. Anything it refuses, and bools (``torch.tensor`` gives
    # a bool tensor), take ``torch.tensor``, so the result is always torch's.
    code = "d" if dtype == torch.float64 else "q"
    if code == "d" or type(samples[0]) is not bool:
        try:
            buf = array(code, samples)
        except (TypeError, OverflowError):
            pass
        else:
            out = F.empty((len(samples),), torch.float64 if code == "d" else torch.int64,
                          shared=ctx.shared)
            out.numpy()[:] = np.frombuffer(buf, dtype=np.float64 if code == "d" else np.int64)
            return out
    try:
        out = torch.tensor(samples, dtype=dtype)
        # small tensors: moving them to shared memory here costs what the worker's
        # pickler would pay anyway, and every tensor of a worker batch is then shared
        return out.share_memory_() if ctx.shared else out
    except (TypeError, ValueError, RuntimeError) as exc:
        i = _first_mismatch(samples, (int, float, bool, np.number, np.bool_))
        if i >= 0:
            raise _type_error(samples, i, ctx.path) from exc
        raise TypeError(f"{ctx.path}: cannot make a tensor of these numbers: {exc}") from exc


def collate_ints(samples: list[Any], ctx: CollateContext) -> torch.Tensor:
    """Python ints -> int64 tensor (bools -> bool tensor), like ``torch.tensor``."""
    return _numbers(samples, ctx, None)


def collate_floats(samples: list[Any], ctx: CollateContext) -> torch.Tensor:
    """Python floats -> float64 tensor, as torch's default collate does."""
    return _numbers(samples, ctx, torch.float64)


def collate_numpy_scalars(samples: list[Any], ctx: CollateContext) -> torch.Tensor:
    """Numpy scalars -> a tensor of their dtype."""
    try:
        out = torch.as_tensor(np.asarray(samples))
        return out.share_memory_() if ctx.shared else out
    except (TypeError, ValueError, RuntimeError) as exc:
        i = _first_mismatch(samples, (np.number, np.bool_))
        raise _type_error(samples, max(i, 0), ctx.path) from exc


def collate_as_list(samples: list[Any], ctx: CollateContext) -> list[Any]:
    """Strings, bytes and ``None`` stay a plain list."""
    return list(samples)


_BUILTINS: dict[type, CollateFn] = {
    torch.Tensor: collate_tensors,
    np.ndarray: collate_numpy_arrays,
    np.bool_: collate_numpy_scalars,
    np.number: collate_numpy_scalars,
    float: collate_floats,
    int: collate_ints,  # bool is an int: torch.tensor gives a bool tensor
    str: collate_as_list,
    bytes: collate_as_list,
    type(None): collate_as_list,
}

_CONTAINER = object()  # cache marker: no registered function, collate as a container


class DefaultCollate:
    """A collate function with a type registry; ``default_collate`` is the shared one.

    Dispatch looks at the type of the first sample of each field: a function
    registered for that type (or the nearest base class) wins; otherwise
    mappings, namedtuples and sequences are collated field by field. Inside a
    ``DataLoader`` worker tensors are stacked straight into shared memory.

    Registered functions are called as ``fn(samples, ctx)``: ``samples`` is the
    list of that field's values, one per sample, and ``ctx`` a
    :class:`CollateContext` (``ctx.collate(values, key)`` recurses, ``ctx.stack``
    stacks into shared memory in a worker, ``ctx.path`` names the field).

    Args:
        registry: type -> function; ``None`` starts from the built-in functions.

    Example:
        >>> import torch
        >>> from dataforge.collate.default import DefaultCollate
        >>> class Box:
        ...     def __init__(self, xyxy):
        ...         self.xyxy = xyxy
        >>> collate = DefaultCollate()
        >>> @collate.register(Box)
        ... def _(samples, ctx):
        ...     return ctx.stack([torch.tensor(b.xyxy) for b in samples])
        >>> collate([{"box": Box([0, 0, 1, 1])}, {"box": Box([1, 1, 2, 2])}])["box"].shape
        torch.Size([2, 4])
    """

    def __init__(self, registry: Mapping[type, CollateFn] | None = None) -> None:
        if registry is not None and not isinstance(registry, Mapping):
            raise TypeError(
                f"registry must be a mapping type -> function, got {type(registry).__name__}"
            )
        self._registry: dict[type, CollateFn] = dict(_BUILTINS if registry is None else registry)
        for typ, fn in self._registry.items():
            self._check_entry(typ, fn)
        self._cache: dict[type, Any] = {}

    @staticmethod
    def _check_entry(typ: Any, fn: Any) -> None:
        if not isinstance(typ, type):
            raise TypeError(f"register: expected a class, got {typ!r}; pass e.g. MyType")
        if not callable(fn):
            raise TypeError(
                f"register({typ.__name__}, fn): fn must be callable as fn(samples, ctx), "
                f"got {fn!r}"
            )

    @property
    def registry(self) -> dict[type, CollateFn]:
        """A copy of the type -> function table."""
        return dict(self._registry)

    def register(self, typ: type, fn: CollateFn | None = None) -> Any:
        """Register ``fn(samples, ctx)`` for samples of type ``typ`` (and subclasses).

        Use as ``collate.register(MyType, fn)`` or as a decorator
        ``@collate.register(MyType)``. A later registration for the same type
        replaces the earlier one. Returns ``fn`` (or the decorator).
        """
        if fn is None:

            def decorator(f: CollateFn) -> CollateFn:
                self.register(typ, f)
                return f

            if not isinstance(typ, type):
                raise TypeError(f"register: expected a class, got {typ!r}; pass e.g. MyType")
            return decorator
        self._check_entry(typ, fn)
        self._registry[typ] = fn
        self._cache.clear()
        return fn

    def copy(self) -> DefaultCollate:
        """An independent collate with the same registry (to extend without side effects)."""
        return DefaultCollate(self._registry)

    def __call__(self, batch: Sequence[Any]) -> Any:
        return self.collate_at(batch, ROOT)

    def collate_at(self, batch: Sequence[Any], path: str) -> Any:
        """Collate ``batch``, naming its key path ``path`` in error messages."""
        return self._dispatch(batch, path, F.in_worker())

    def _lookup(self, cls: type, elem: Any) -> Any:
        fn = self._cache.get(cls)
        if fn is not None:
            return fn
        fn = _CONTAINER
        for base in cls.__mro__:
            if base in self._registry:
                fn = self._registry[base]
                break
        else:
            for typ, f in self._registry.items():  # abstract base classes
                if isinstance(elem, typ):
                    fn = f
                    break
        self._cache[cls] = fn
        return fn

    def _dispatch(self, batch: Sequence[Any], path: str, shared: bool) -> Any:
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
            raise TypeError(
                f"{path}: a batch must be a list of samples, got {type(batch).__name__}"
            )
        if len(batch) == 0:
            raise ValueError(
                f"{path}: the batch is empty (0 samples); collate needs at least one sample. "
                "Check the sampler / batch_size, or skip empty batches before collating"
            )
        elem = batch[0]
        fn = self._lookup(type(elem), elem)
        if fn is not _CONTAINER:
            return fn(batch if isinstance(batch, list) else list(batch),
                      CollateContext(self, path, shared))
        if isinstance(elem, Mapping):
            return self._mapping(batch, path, shared)
        if isinstance(elem, Sequence):
            return self._sequence(batch, path, shared)
        raise TypeError(
            f"{path}: default_collate does not know how to batch {type(elem).__name__} "
            "(expected tensors, numpy arrays, numbers, strings, None, dicts, tuples or lists). "
            f"Register a function: dataforge.default_collate.register({type(elem).__name__}, fn)"
        )

    def _mapping(self, batch: Sequence[Any], path: str, shared: bool) -> Any:
        elem = batch[0]
        keys = elem.keys()
        for i, d in enumerate(batch):
            if not isinstance(d, Mapping):
                raise _type_error(batch, i, path)
            if d.keys() != keys:
                missing = [k for k in keys if k not in d]
                extra = [k for k in d if k not in keys]
                raise ValueError(
                    f"{path}: samples must have the same keys: sample {i} "
                    + (f"is missing {missing} " if missing else "")
                    + ("and " if missing and extra else "")
                    + (f"has extra {extra} " if extra else "")
                    + f"compared with sample 0 (keys {list(keys)})"
                )
        out = {k: self._dispatch([d[k] for d in batch], child_path(path, k), shared) for k in keys}
        if type(elem) is dict:
            return out
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)
                clone.update(out)
                return clone
            return type(elem)(out)
        except TypeError:  # the mapping type cannot be rebuilt: plain dict, like torch
            return out

    def _sequence(self, batch: Sequence[Any], path: str, shared: bool) -> Any:
        elem = batch[0]
        size = len(elem)
        for i, s in enumerate(batch):
            if not isinstance(s, Sequence) or isinstance(s, (str, bytes)):
                raise _type_error(batch, i, path)
            if len(s) != size:
                raise ValueError(
                    f"{path}: sequences in a batch must have equal length to be collated "
                    f"position by position: sample 0 has length {size} but sample {i} has "
                    f"length {len(s)}. {PAD_HINT}"
                )
        columns = [
            self._dispatch(list(col), child_path(path, j), shared)
            for j, col in enumerate(zip(*batch))
        ]
        if isinstance(elem, tuple):
            if hasattr(elem, "_fields"):  # namedtuple
                return type(elem)(*columns)
            return columns  # torch returns a list for tuple samples
        if type(elem) is list:
            return columns
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for j, c in enumerate(columns):
                    clone[j] = c
                return clone
            return type(elem)(columns)
        except TypeError:
            return columns

    def __getstate__(self) -> dict[str, Any]:
        return {"_registry": self._registry}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._registry = state["_registry"]
        self._cache = {}

    def __reduce__(self) -> Any:
        # NOTE [pickling default_collate]: the shared instance unpickles to the
        # shared instance of the receiving process, with the sender's extra
        # registrations added, so that registrations made in the main script reach
        # `spawn` workers. Other instances pickle their registry by value.
        if self is default_collate:
            extra = {t: f for t, f in self._registry.items() if _BUILTINS.get(t) is not f}
            return (_restore_default, (extra,))
        return (DefaultCollate, (), self.__getstate__())

    def __repr__(self) -> str:
        names = ", ".join(t.__name__ for t in self._registry)
        return f"DefaultCollate(types=[{names}])"


def _restore_default(extra: dict[type, CollateFn]) -> DefaultCollate:
    for typ, fn in extra.items():
        if default_collate._registry.get(typ) is not fn:
            default_collate.register(typ, fn)
    return default_collate


default_collate = DefaultCollate()
"""The shared :class:`DefaultCollate`: ``collate_fn=dataforge.default_collate``."""


def register_collate(typ: type, fn: CollateFn) -> CollateFn:
    """Register ``fn(samples, ctx)`` for ``typ`` on the shared ``default_collate``.

    Also used by :class:`dataforge.PadCollate` and :class:`dataforge.SplitCollate`
    for the fields they stack.

    Example:
        >>> import torch
        >>> from dataforge.collate.default import default_collate, register_collate
        >>> class Point:
        ...     def __init__(self, x, y):
        ...         self.x, self.y = x, y
        >>> _ = register_collate(Point, lambda s, ctx: torch.tensor([[p.x, p.y] for p in s]))
        >>> default_collate([Point(1, 2), Point(3, 4)]).tolist()
        [[1, 2], [3, 4]]
    """
    return default_collate.register(typ, fn)
