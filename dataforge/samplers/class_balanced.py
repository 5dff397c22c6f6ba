"""``ClassBalancedSampler``: exact per-class quotas each epoch, for any number of labels."""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from dataforge.samplers.base import EpochSampler, check_int
from dataforge.samplers.functional import CHUNK, counting_sort, index_dtype, largest_remainder
from dataforge.samplers.quota_stream import QuotaEpoch

STRATEGIES = ("oversample", "undersample", "sqrt")
_MAX_DIRECT_KEYS = 1 << 22  # class ids below this are grouped by a counting sort


def as_class_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validate class labels and return them as a 1-D non-negative integer array.

    Accepts a list, numpy array, tensor or an object with a ``.labels`` attribute
    (such as a dataset). Integer arrays are used as they are (no copy: int8 labels
    stay one byte each); floats must hold whole numbers; booleans count as 0 / 1.

    Raises:
        ValueError: empty, not 1-D, not integers (index and value named), negative.
    """
    if not isinstance(labels, (np.ndarray, torch.Tensor, list, tuple)) and hasattr(labels, "labels"):
        labels = labels.labels
    if isinstance(labels, torch.Tensor):
        arr = labels.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(labels)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a 1-D array-like of integer class ids: {e}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class id per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; a sampler needs at least one sample")
    kind = arr.dtype.kind
    if kind == "b":
        return arr.view(np.uint8)
    if kind == "f":
        bad = ~np.isfinite(arr)
        bad |= arr != np.floor(np.where(bad, 0, arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{name} must be integer class ids, got {name}[{i}]={arr[i].item()!r}; "
                "pass whole numbers (for example labels.astype(int) after checking them)"
            )
        arr = arr.astype(np.int64)
    elif kind not in "iu":
        raise ValueError(
            f"{name} must be integer class ids, got dtype {arr.dtype} ({name}[0]={arr[0]!r}); "
            "map class names to ids first, for example "
            "ids = {c: i for i, c in enumerate(sorted(set(labels)))}"
        )
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        i = int(np.argmin(arr))
        raise ValueError(f"{name} must be non-negative class ids, got {name}[{i}]={int(arr[i])}")
    return arr


def _work_buffer(like: np.ndarray) -> np.ndarray:
    """An uninitialised array like ``like`` in 4 KiB pages (a plain ``np.empty`` where
    anonymous private mappings are unavailable).

    NOTE [work buffer pages]: numpy asks for transparent huge pages on arrays above
    4 MiB, and a first touch of a 2 MiB page zeroes all of it, and when memory is
    fragmented first compacts it. An epoch may write a few hundred KiB of each class's
    region (an undersampled class's pass cut short): measured on a busy 2-core machine,
    first writes to 77 MB spread over 100 regions of a 400 MB array cost 1.2-1.6
    CPU-s with numpy's huge pages and 0.05-0.07 CPU-s in 4 KiB pages (all 400 MB:
    0.07-0.9 against 0.31-0.35 CPU-s).
    """
    flags = getattr(mmap, "MAP_PRIVATE", None), getattr(mmap, "MAP_ANONYMOUS", None)
    if flags[0] is None or flags[1] is None or like.nbytes == 0:
        return np.empty_like(like)
    buf = mmap.mmap(-1, like.nbytes, flags=flags[0] | flags[1])
    return np.frombuffer(buf, like.dtype, count=len(like))


class ClassBalancedSampler(EpochSampler[int]):
    """Sample indices so that every epoch holds an exact quota of each class.

    Each epoch the target total ``num_samples`` is split over the classes by
    largest remainder (ties broken at random per epoch, so no class is favoured);
    a class's quota is drawn without replacement as far as the class allows (whole
    passes over the class, each in a uniformly random order, then a uniform random
    subset), and the classes' positions in the epoch are those of a uniform shuffle.
    The epoch is generated lazily, chunk by chunk (NOTE [streamed quota epoch] in
    ``quota_stream.py``): memory is the class grouping plus one work copy of it (4
    bytes per label each below 2^31 labels) whatever ``num_samples`` is, and
    resuming mid-epoch skips whole chunks. So 100,000,000 labels oversampled to a
    2-billion-index epoch work.

    Args:
        labels: integer class id per sample (list, array, tensor, or an object
            with ``.labels``); ids need not be contiguous.
        strategy: target class shares: ``"oversample"`` (equal shares, default
            ``num_samples = num_classes * largest class``), ``"undersample"`` (equal
            shares, default ``num_classes * smallest class``), ``"sqrt"`` (shares
            proportional to ``sqrt(count)``, default ``len(labels)``), or a dict
            ``{class_id: weight}`` (shares proportional to weight, default
            ``len(labels)``; classes missing from the dict get weight 0 and are never
            drawn; a class id absent from ``labels`` is an error).
        num_samples: indices per epoch over all ranks (default: see ``strategy``).
        seed: base seed; the order depends only on ``(seed, epoch)``.
        num_replicas: ranks (default from ``torch.distributed``, else 1).
        rank: this rank (default from ``torch.distributed``, else 0).
        drop_last: drop the epoch's tail instead of padding so ranks get equal shares.

    Class ids above 2^22 are first remapped with ``np.unique`` (slower, 16 extra
    bytes per label while grouping).

    Example:
        >>> s = ClassBalancedSampler([0, 0, 0, 0, 1, 1, 2], strategy="oversample", seed=0)
        >>> len(s), s.class_quotas()
        (12, {0: 4, 1: 4, 2: 4})
        >>> sorted(s) == sorted([0, 1, 2, 3] + [4, 5] * 2 + [6] * 4)
        True
    """

    _epoch_chunk = 1 << 18  # positions per generated chunk of the global order
    _block = 1 << 16  # see QuotaEpoch: largest class drawn as whole passes
    _chunk_per_class = 64
    # items made Python ints per step: 8,192 ints and their list stay in cache while
    # they are iterated (about 25 ns per index against 35-39 at 65,536, isolated)
    _chunk = 1 << 13

    def __init__(
        self,
        labels: Any,
        *,
        strategy: str | Mapping[int, float] = "oversample",
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        arr = as_class_labels(labels)
        num_samples = check_int("num_samples", num_samples, minimum=1, allow_none=True)
        self.num_labels = len(arr)
        dtype = index_dtype(len(arr))
        max_id = int(arr.max())
        if max_id < _MAX_DIRECT_KEYS:
            self._keys = np.arange(max_id + 1, dtype=np.int64)  # key -> class id
            counts = np.zeros(max_id + 1, np.int64)
            for s in range(0, len(arr), CHUNK):
                counts += np.bincount(arr[s : s + CHUNK], minlength=max_id + 1)
            self._grouped, self._offsets = counting_sort(arr, max_id + 1, counts=counts, dtype=dtype)
        else:  # sparse huge ids: remap to dense keys first
            self._keys, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
            self._grouped = np.argsort(inverse, kind="stable").astype(dtype)
            del inverse
            self._offsets = np.concatenate(([0], np.cumsum(counts)))
        self._counts = counts
        present = counts > 0
        self.classes: np.ndarray = self._keys[present]
        self._weights, default = self._shares(strategy, counts, present)
        self.strategy = strategy
        self.num_samples = num_samples if num_samples is not None else default
        self._work: np.ndarray | None = None

    def _shares(
        self, strategy: Any, counts: np.ndarray, present: np.ndarray
    ) -> tuple[np.ndarray, int]:
        k = int(present.sum())
        if isinstance(strategy, str):
            if strategy == "oversample":
                return present.astype(np.float64), k * int(counts.max())
            if strategy == "undersample":
                return present.astype(np.float64), k * int(counts[present].min())
            if strategy == "sqrt":
                return np.sqrt(counts.astype(np.float64)), self.num_labels
        if not isinstance(strategy, Mapping):
            raise ValueError(
                f"strategy must be one of {STRATEGIES} or a dict {{class_id: weight}}, "
                f"got {strategy!r}"
            )
        weights = np.zeros(len(counts), np.float64)
        for cid, w in strategy.items():
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)):
                raise ValueError(f"strategy keys must be integer class ids, got {cid!r}")
            key = int(np.searchsorted(self._keys, int(cid)))
            if key >= len(self._keys) or int(self._keys[key]) != int(cid) or not present[key]:
                shown = self.classes[:20].tolist()
                raise ValueError(
                    f"strategy has a weight for class {cid!r}, which does not occur in labels "
                    f"(classes present: {shown}{' ...' if len(self.classes) > 20 else ''})"
                )
            if isinstance(w, bool) or not isinstance(w, (int, float, np.number)) or not (
                np.isfinite(w) and w >= 0
            ):
                raise ValueError(
                    f"strategy[{cid!r}] must be a finite weight >= 0, got {w!r}"
                )
            weights[key] = float(w)
        if not (weights > 0).any():
            raise ValueError(
                f"strategy gives every class weight 0 ({dict(strategy)!r}); "
                "give at least one present class a positive weight"
            )
        return weights, self.num_labels

    @property
    def class_counts(self) -> dict[int, int]:
        """Samples per present class id."""
        present = self._counts > 0
        return dict(zip(self.classes.tolist(), self._counts[present].tolist()))

    def _quotas(self, generator: np.random.Generator) -> np.ndarray:
        tie_break = generator.random(len(self._weights))
        return largest_remainder(self.num_samples, self._weights, tie_break)

    def class_quotas(self, epoch: int | None = None) -> dict[int, int]:
        """Indices of each class in ``epoch``'s order over all ranks (default: current epoch)."""
        quotas = self._quotas(self.generator(epoch))
        present = self._counts > 0
        return dict(zip(self.classes.tolist(), quotas[present].tolist()))

    def _global_len(self) -> int:
        return self.num_samples

    def epoch_chunks(self, epoch: int | None = None, start: int = 0) -> Iterator[np.ndarray]:
        """``epoch``'s global order (all ranks) from position ``start`` on, as arrays.

        Generated lazily (see NOTE [streamed quota epoch]): memory is the class
        grouping plus one work copy of it plus O(chunk), whatever the epoch's length.
        """
        e = self.epoch if epoch is None else check_int("epoch", epoch, minimum=0)
        quotas = self._quotas(self.generator(e))
        # one work buffer is reused by successive iterators; a concurrent one gets its own
        work, self._work = self._work, None
        if work is None:
            work = _work_buffer(self._grouped)
        try:
            # NOTE [chunk per class]: a chunk costs a numpy step per class it draws
            # from (a Python step for those not read in place, NOTE [small classes in
            # place]), so chunks hold at least _chunk_per_class positions per class
            chunk = max(self._epoch_chunk, self._chunk_per_class * int(np.count_nonzero(quotas)))
            epoch_order = QuotaEpoch(
                self._grouped, self._offsets, quotas, (self.seed, e), work,
                chunk=chunk, block=self._block,
            )
            yield from epoch_order.chunks(start)
        finally:
            self._work = work

    def _global_chunks(self, start: int) -> Iterator[np.ndarray]:
        return self.epoch_chunks(None, start)

    def _state_fields(self) -> dict[str, Any]:
        return {"num_labels": self.num_labels, "num_samples": self.num_samples}
