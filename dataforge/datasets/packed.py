"""Packed token storage: a corpus tokenized once, kept as flat numpy arrays.

Tokenizing in ``__getitem__`` repeats the same work every epoch, one text at a
time. :func:`tokenize_dataset` tokenizes the whole corpus once, in batches
(one multi-threaded Rust call per ``batch_size`` texts), into

- ``ids``: all token ids end to end (int32, 4 bytes a token),
- ``offsets``: int64, item ``i`` is ``ids[offsets[i]:offsets[i + 1]]``,
- ``labels``: optional int64 class ids,

so later epochs only slice (and a collate pads). A handful of large numpy
arrays also survive ``fork`` without copy-on-read growth, unlike millions of
Python lists.

NOTE [packed items]: an item is ``{"input_ids": 1-D int64 tensor, "label": int}``
(``"label"`` only when there are labels). ``input_ids`` is a fresh int64 tensor
(int64 is what ``nn.Embedding`` and padding collates want); ``__getitems__``
gathers a whole batch with one numpy fancy-index and one dtype conversion, then
splits it, so the per-item cost is a tensor view.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataforge.datasets.labels import as_labels
from dataforge.datasets.map_style import MapDataset

__all__ = ["PackedTokenDataset", "tokenize_dataset"]

_FORMAT = 1


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.view()
    a.setflags(write=False)
    return a


class PackedTokenDataset(MapDataset[dict[str, Any]]):
    """Token ids of many texts in one flat array plus offsets (see module docstring).

    Args:
        ids: 1-D integer array of all token ids end to end (stored as int32 when
            the values fit, else int64).
        offsets: 1-D int64 array of ``len(dataset) + 1`` non-decreasing positions,
            starting at 0 and ending at ``len(ids)``.
        labels: optional class id per item.
        pad_id: the padding id of the tokenizer (metadata for collates; default 0).

    Example:
        >>> ds = PackedTokenDataset(ids=[5, 6, 7, 8], offsets=[0, 3, 4], labels=[1, 0])
        >>> ds[0]
        {'input_ids': tensor([5, 6, 7]), 'label': 1}
        >>> ds.lengths.tolist(), [x["input_ids"].tolist() for x in ds.__getitems__([1, 0])]
        ([3, 1], [[8], [5, 6, 7]])
    """

    def __init__(self, ids: Any, offsets: Any, labels: Any = None, *, pad_id: int = 0) -> None:
        ids_arr = np.asarray(ids)
        if ids_arr.size == 0:
            ids_arr = ids_arr.astype(np.int32).reshape(0)
        if ids_arr.ndim != 1 or ids_arr.dtype.kind not in "iu":
            raise TypeError(
                f"ids must be a 1-D integer array, got dtype {ids_arr.dtype} with shape {ids_arr.shape}"
            )
        if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() > np.iinfo(np.int64).max):
            raise ValueError("ids must be non-negative token ids")
        fits32 = not ids_arr.size or int(ids_arr.max()) <= np.iinfo(np.int32).max
        ids_arr = ids_arr.astype(np.int32 if fits32 else np.int64, copy=False)
        off = np.asarray(offsets)
        if off.ndim != 1 or off.size < 1 or off.dtype.kind not in "iu":
            raise TypeError(
                f"offsets must be a 1-D integer array of len(dataset) + 1 positions, got dtype "
                f"{off.dtype} with shape {off.shape}"
            )
        off = off.astype(np.int64, copy=False)
        if off[0] != 0 or off[-1] != len(ids_arr) or bool((np.diff(off) < 0).any()):
            raise ValueError(
                f"offsets must be non-decreasing, start at 0 and end at len(ids)={len(ids_arr)}, "
                f"got first={int(off[0])}, last={int(off[-1])}"
            )
        if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)) or pad_id < 0:
            raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")
        self.ids = _readonly(ids_arr)
        self.offsets = _readonly(off)
        self._lengths = _readonly(np.diff(off))
        self._labels = None if labels is None else as_labels(labels, len(off) - 1)
        self.pad_id = int(pad_id)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of tokens of every item (read-only int64), e.g. for ``BucketBatchSampler``."""
        return self._lengths

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    def _item(self, input_ids: torch.Tensor, index: int) -> dict[str, Any]:
        if self._labels is None:
            return {"input_ids": input_ids}
        return {"input_ids": input_ids, "label": int(self._labels[index])}

    def _get(self, index: int) -> dict[str, Any]:
        a, b = self.offsets[index], self.offsets[index + 1]
        return self._item(torch.from_numpy(self.ids[a:b].astype(np.int64)), index)

    def _get_batch(self, indices: list[int]) -> list[dict[str, Any]]:
        if not indices:
            return []
        idx = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[idx]
        lens = self.offsets[idx + 1] - starts
        # One gather for the whole batch: position k of item j is starts[j] + k.
        shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
        flat = self.ids[np.arange(int(lens.sum()), dtype=np.int64) + shift].astype(np.int64)
        parts = torch.from_numpy(flat).split(lens.tolist())
        return [self._item(t, i) for t, i in zip(parts, indices)]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``ids``, ``offsets`` (and ``labels``) to an uncompressed ``.npz``; returns its path."""
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "ids": self.ids,
            "offsets": self.offsets,
            "meta": np.asarray([_FORMAT, self.pad_id], dtype=np.int64),
        }
        if self._labels is not None:
            arrays["labels"] = self._labels
        np.savez(p, **arrays)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PackedTokenDataset:
        """Read a dataset written by :meth:`save` (no pickle involved)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"packed token file does not exist: {str(p)!r}")
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:
            raise ValueError(f"{str(p)!r} is not a packed token .npz file ({exc})") from exc
        missing = {"ids", "offsets", "meta"} - set(data)
        if missing:
            raise ValueError(
                f"{str(p)!r} is not a PackedTokenDataset file: missing arrays {sorted(missing)}; "
                "write it with PackedTokenDataset.save"
            )
        pad_id = int(data["meta"][1])
        return cls(data["ids"], data["offsets"], data.get("labels"), pad_id=pad_id)

    def __repr__(self) -> str:
        return f"PackedTokenDataset(len={len(self)}, num_tokens={self.num_tokens})"


def _texts_and_labels(
    ds: Any, start: int, stop: int, text_key: str, label_key: str | None
) -> tuple[list[str], list[Any] | None]:
    indices = list(range(start, stop))
    getitems = getattr(ds, "__getitems__", None)
    items = getitems(indices) if getitems is not None else [ds[i] for i in indices]
    texts: list[str] = []
    labels: list[Any] | None = [] if label_key is not None else None
    for i, item in zip(indices, items):
        if not isinstance(item, Mapping) or text_key not in item:
            raise TypeError(
                f"item {i} of the dataset must be a dict with a {text_key!r} entry, got "
                f"{type(item).__name__}; pass text_key= to name the text entry"
            )
        texts.append(item[text_key])
        if labels is not None:
            if label_key not in item:
                raise KeyError(
                    f"item {i} has no {label_key!r} entry; pass label_key=None for unlabeled text"
                )
            labels.append(item[label_key])
    return texts, labels


def tokenize_dataset(
    ds: Any,
    tokenizer: Any,
    *,
    text_key: str = "text",
    label_key: str | None = "label",
    max_length: int | None = None,
    batch_size: int = 1000,
) -> PackedTokenDataset:
    """Tokenize every text of a map-style dataset once, in batches, into packed storage.

    Args:
        ds: a map-style dataset whose items are dicts with ``text_key`` (and
            ``label_key``). When it has ``.texts`` (and ``.labels``), those are read
            directly, without building items.
        tokenizer: a :class:`~dataforge.transforms.text.Tokenize`, a
            ``tokenizers.Tokenizer``, a transformers fast tokenizer or a path to a
            ``tokenizer.json``.
        text_key: the text entry of an item.
        label_key: the label entry; ``None`` for unlabeled text. Labels are kept
            only when items have this entry (or ``ds.labels`` is set).
        max_length: truncate every text to this many ids (special tokens included).
        batch_size: texts per batched tokenizer call.

    Example:
        >>> from dataforge.transforms.text import Tokenize, train_tokenizer
        >>> rows = [{"text": "a b c", "label": 0}, {"text": "b c", "label": 1}] * 5
        >>> tok = Tokenize(train_tokenizer([r["text"] for r in rows], vocab_size=30))
        >>> packed = tokenize_dataset(rows, tok)
        >>> packed[1]["input_ids"].tolist() == tok("b c"), packed.labels[:2].tolist()
        (True, [0, 1])
    """
    from dataforge.transforms.text import Tokenize

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")) or isinstance(ds, (str, bytes)):
        raise TypeError(
            f"ds must be a map-style dataset of dicts (with __len__ and __getitem__), got "
            f"{type(ds).__name__}"
        )
    if not isinstance(tokenizer, Tokenize) or (max_length is not None and max_length != tokenizer.max_length):
        tokenizer = Tokenize(tokenizer, max_length=max_length)
    n = len(ds)
    texts_col = getattr(ds, "texts", None)
    use_cols = texts_col is not None and len(texts_col) == n
    ds_labels = getattr(ds, "labels", None) if label_key is not None else None
    if ds_labels is not None and len(ds_labels) != n:
        ds_labels = None
    # Labels: ds.labels when present (no item built), else the items' label_key entries.
    from_items = label_key is not None and ds_labels is None and not use_cols and n > 0
    if from_items:
        first = ds[0]
        from_items = isinstance(first, Mapping) and label_key in first
    id_chunks: list[np.ndarray] = []
    len_chunks: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    item_labels: list[Any] = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if use_cols:
            chunk = texts_col[start:stop]  # type: ignore[index]
            texts = chunk if isinstance(chunk, list) else list(chunk)
        else:
            texts, labels = _texts_and_labels(
                ds, start, stop, text_key, label_key if from_items else None
            )
            item_labels.extend(labels or ())
        encoded = tokenizer.encode_batch(texts)
        lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        id_chunks.append(
            np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(lens.sum()))
        )
        len_chunks.append(lens)
    ids = np.concatenate(id_chunks) if id_chunks else np.zeros(0, dtype=np.int32)
    offsets = np.cumsum(np.concatenate(len_chunks))
    labels_arr = ds_labels if ds_labels is not None else (item_labels if from_items else None)
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    return PackedTokenDataset(ids, offsets, labels_arr, pad_id=pad_id)
