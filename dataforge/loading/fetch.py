"""What runs in a worker: load the samples of one batch key, collate, report failures.

The loader never hands plain indices to its workers. It hands a :class:`BatchKey`
(epoch, batch number, indices) to :class:`BatchFetcher`, which fetches the
samples under the error policy (``policies.py``), collates and returns a
:class:`Fetched` batch whose :class:`BatchMeta` carries its failures back to the
main process with the data (so failures are collected across worker processes
without a side channel). Every engine yields :class:`Fetched` batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch.utils.data

from dataforge._dist import current_worker_id
from dataforge.loading.policies import check_on_error, load_bulk, load_samples, short, with_context
from dataforge.loading.seeding import WorkerSeeding
from dataforge.loading.stages import BatchTiming, new_recorder, recording, timed
from dataforge.loading.stats import Failure


@dataclass(frozen=True)
class BatchKey:
    """What a worker is asked to load: ``indices`` as batch ``batch_no`` of ``epoch``.

    ``bulk``: ``indices`` is one item of a sampler that yields lists (``batch_size=None``),
    loaded as ``dataset[indices]`` in one call.
    """

    epoch: int
    batch_no: int
    indices: list[Any]
    bulk: bool = False

    def describe(self) -> str:
        """The key in words, for error messages."""
        return f"batch {self.batch_no} of epoch {self.epoch} (dataset indices {short(self.indices)})"


class BatchMeta(NamedTuple):
    """What the loader learns with each batch.

    Attributes:
        batch_no: the batch's number in its epoch (negative: an iterable worker's report
            of its stream's start or end, which carries no batch).
        num_samples: samples in the batch.
        failures: samples that failed under ``on_error``.
        worker: the worker that loaded it.
        errors: an iterable dataset's error counters in that worker, or ``None``.
        dataset_state: an iterable dataset's own state in that worker after the batch
            (NOTE [dataset state] in ``state.py``), or ``None``.
        timing: what loading the batch took, per stage (NOTE [stage timing] in
            ``stages.py``), or ``None`` (a report, or stage timing off).
    """

    batch_no: int
    num_samples: int
    failures: list[Failure]
    worker: int
    errors: dict[str, int] | None = None
    dataset_state: Any = None
    timing: BatchTiming | None = None


@dataclass(frozen=True)
class Fetched:
    """A loaded batch and its metadata; ``batch`` is ``None`` when there is nothing to
    yield (every sample was skipped, or an end-of-stream report)."""

    batch: Any
    meta: BatchMeta

    def pin_memory(self) -> Fetched:
        """Called by the DataLoader's pin-memory thread: pins the batch only."""
        from dataforge.loading.prefetch import pin_batch

        return replace(self, batch=pin_batch(self.batch))


def identity(x: Any) -> Any:
    """The DataLoader-level collate: batches are already collated by :class:`BatchFetcher`."""
    return x


class BatchFetcher(torch.utils.data.Dataset):
    """Map-style view of a dataset indexed by :class:`BatchKey`, returning :class:`Fetched`.

    Args:
        dataset: the user's map-style dataset (``__getitem__``, optional ``__getitems__``
            and ``set_epoch``).
        collate_fn: a list of samples -> batch; with ``batched=False``, applied to each
            single sample (``default_convert`` by default, as in a stock ``DataLoader``).
        batched: whether keys hold batches (``batch_size`` or a ``batch_sampler``).
        on_error: ``"raise"``, ``"skip"`` or ``"substitute"`` (NOTE [error policies]).
        seeding: reseeds a persistent worker process at a new epoch.
        pin: pin the batch after collating (the thread engine's pinning).
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[Any], Any],
        *,
        batched: bool = True,
        on_error: str = "raise",
        seeding: WorkerSeeding | None = None,
        pin: bool = False,
    ) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batched = batched
        self.on_error = check_on_error(on_error)
        self.seeding = seeding
        self.pin = pin
        self._epoch_seen: int | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Forward ``epoch`` to the dataset once per epoch (and reseed a persistent worker)."""
        with self._lock:
            if self._epoch_seen == epoch:
                return
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            if self.seeding is not None:
                self.seeding.enter_epoch(epoch)
            self._epoch_seen = epoch

    def _collate(self, samples: list[Any], key: BatchKey) -> Any:
        try:
            return self.collate_fn(samples if self.batched else samples[0])
        except Exception as exc:
            ctx = (
                f"collate of batch {key.batch_no} (epoch {key.epoch}, dataset indices "
                f"{short(key.indices)}, worker {current_worker_id()})"
            )
            raise with_context(exc, ctx) from exc

    def __getitem__(self, key: BatchKey) -> Fetched:  # type: ignore[override]
        if not isinstance(key, BatchKey):
            raise TypeError(
                f"BatchFetcher is indexed by BatchKey, got {type(key).__name__}; "
                "index the wrapped dataset directly"
            )
        self.set_epoch(key.epoch)
        rec = new_recorder()  # NOTE [stage timing] in stages.py
        with recording(rec):
            batch, n, failures = self._load(key)
        worker = current_worker_id()
        timing = rec.finish() if rec is not None else None
        return Fetched(batch, BatchMeta(key.batch_no, n, failures, worker, timing=timing))

    def _load(self, key: BatchKey) -> tuple[Any, int, list[Failure]]:
        """The batch of ``key`` (``None`` when every sample was skipped), its number of
        samples and the failures met, each step timed as a stage."""
        failures: list[Failure] = []
        with timed("fetch", len(key.indices)):
            if key.bulk:
                samples = [load_bulk(self.dataset, key.indices, key.epoch)]
            else:
                samples, failures = load_samples(self.dataset, key.indices, self.on_error, key.epoch)
        if not samples:
            return None, 0, failures
        with timed("collate"):
            batch = self._collate(samples, key)
        if self.pin:
            from dataforge.loading.prefetch import pin_batch

            with timed("pin"):
                batch = pin_batch(batch)
        return batch, len(key.indices) if key.bulk else len(samples), failures
