"""Copy-on-read-safe storage of many strings (paths, texts) in two numpy buffers.

NOTE [copy-on-read]: a DataLoader worker forked from the main process shares the
parent's memory pages until something writes to them. Reading a Python ``str``
out of a Python ``list`` writes to it (its reference count changes), so each
worker slowly copies every page that holds a string it touched: with a million
paths, every worker ends up with its own private copy (pytorch issue 13246).
:class:`StringStorage` keeps all strings as UTF-8 bytes in ONE ``uint8`` array
plus ONE ``int64`` offsets array. Reading item ``i`` only reads those arrays and
builds a fresh ``str``, so the shared pages stay shared and worker memory stays
flat. It also pickles as two flat buffers (cheap for spawn-started workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np


class StringStorage(Sequence[str]):
    """An immutable sequence of strings held in numpy buffers.

    Args:
        strings: the strings to store (any iterable of ``str``).
        prefix: a string put in front of every item on read (for example a root
            folder), stored once instead of once per item.

    Example:
        >>> s = StringStorage(["cat/1.jpg", "dog/2.jpg"], prefix="/data/")
        >>> len(s), s[1], s[-1] == s[1]
        (2, '/data/dog/2.jpg', True)
        >>> s.nbytes  # 18 bytes of text + 3 int64 offsets
        42
    """

    __slots__ = ("_data", "_offsets", "_prefix")

    def __init__(self, strings: Iterable[str] = (), *, prefix: str = "") -> None:
        if isinstance(strings, (str, bytes)):
            raise TypeError(
                f"strings must be an iterable of str, got a single {type(strings).__name__} "
                f"{strings[:40]!r}; wrap it in a list"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__} {prefix!r}")
        encoded: list[bytes] = []
        for i, s in enumerate(strings):
            if not isinstance(s, str):
                raise TypeError(
                    f"strings must contain only str, got {type(s).__name__} {s!r} at position {i}; "
                    "convert it with str() (or os.fspath() for paths) first"
                )
            encoded.append(s.encode("utf-8", "surrogatepass"))
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        blob = b"".join(encoded)
        self._data = np.frombuffer(blob, dtype=np.uint8) if blob else np.zeros(0, dtype=np.uint8)
        self._offsets = offsets
        self._prefix = prefix

    @classmethod
    def _from_buffers(cls, data: np.ndarray, offsets: np.ndarray, prefix: str) -> StringStorage:
        obj = cls.__new__(cls)
        obj._data, obj._offsets, obj._prefix = data, offsets, prefix
        return obj

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def nbytes(self) -> int:
        """Bytes used by the two buffers."""
        return int(self._data.nbytes + self._offsets.nbytes)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def get_bytes(self, index: int) -> bytes:
        """The stored UTF-8 bytes of item ``index`` (without the prefix)."""
        i = self._normalize(index)
        return self._data[self._offsets[i] : self._offsets[i + 1]].tobytes()

    def _normalize(self, index: Any) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for a StringStorage of length {n}")
        return i

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> StringStorage: ...

    def __getitem__(self, index: int | slice) -> str | StringStorage:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        i = self._normalize(index)
        raw = self._data[self._offsets[i] : self._offsets[i + 1]].tobytes()
        return self._prefix + raw.decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def take(self, indices: Sequence[int] | np.ndarray) -> StringStorage:
        """A new storage holding the items at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices out of range for a StringStorage of length {n}")
        starts, ends = self._offsets[idx], self._offsets[idx + 1]
        lengths = ends - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if len(idx):
            # gather every byte range in one vectorised step
            pos = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, lengths)
            data = self._data[pos]
        else:
            data = np.zeros(0, dtype=np.uint8)
        return StringStorage._from_buffers(data, offsets, self._prefix)

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StringStorage):
            return NotImplemented
        return (
            self._prefix == other._prefix
            and np.array_equal(self._offsets, other._offsets)
            and np.array_equal(self._data, other._data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(self[i]) for i in range(min(len(self), 3)))
        more = ", ..." if len(self) > 3 else ""
        return f"StringStorage([{head}{more}], len={len(self)}, nbytes={self.nbytes})"

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self._data, "offsets": self._offsets, "prefix": self._prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data, self._offsets, self._prefix = state["data"], state["offsets"], state["prefix"]
