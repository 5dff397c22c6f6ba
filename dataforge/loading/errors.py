"""Per-sample error policies and the batch fetcher that runs in each worker.

The loader never hands plain indices to its workers. It hands a
:class:`BatchKey` (epoch, batch number, indices) to :class:`BatchFetcher`, which
fetches the samples, applies the error policy, collates and returns a
:class:`Fetched` batch that carries its failures back to the main process with
the data (so failures are collected across worker processes without a side
channel).

NOTE [error policies]:

- ``"raise"``: the original exception type is re-raised with the dataset index,
  the worker id and the epoch prefixed to the message (a new instance of the
  same type built from one string, chained ``from`` the original; a
  ``RuntimeError`` naming the type when the type cannot be built that way).
- ``"skip"``: the sample is dropped; its batch is one sample shorter. A batch whose
  samples all failed is dropped.
- ``"substitute"``: the sample is replaced by the next index (mod ``len``) that
  loads, so batch sizes stay fixed and the choice is deterministic.

Only per-sample errors are subject to the policy; an error in the collate
function always raises (with the batch number, its indices and the worker id).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch.utils.data

from dataforge.loading.seeding import seed_worker
from dataforge.loading.stats import Failure

ON_ERROR = ("raise", "skip", "substitute")

_thread_local = threading.local()


def set_thread_worker_id(worker_id: int) -> None:
    """Mark the calling thread as thread-engine worker ``worker_id``."""
    _thread_local.worker_id = worker_id


def current_worker_id() -> int:
    """The worker id of the caller: a process worker, a thread-engine worker, or 0 (main)."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        return int(info.id)
    return int(getattr(_thread_local, "worker_id", 0))


def with_context(exc: BaseException, context: str) -> BaseException:
    """A new exception of ``exc``'s type whose message is ``f"{context}: {exc}"``."""
    msg = f"{context}: {exc}"
    try:
        new = type(exc)(msg)
        if msg not in str(new) and repr(msg) not in str(new):
            raise TypeError("message lost")
    except Exception:
        new = RuntimeError(f"{type(exc).__name__}: {msg}")
    new.__cause__ = exc
    return new


class BatchKey:
    """What a worker is asked to load: ``indices`` as batch ``batch_no`` of ``epoch``."""

    __slots__ = ("batch_no", "epoch", "indices")

    def __init__(self, epoch: int, batch_no: int, indices: list[int]) -> None:
        self.epoch = epoch
        self.batch_no = batch_no
        self.indices = indices

    def __repr__(self) -> str:
        return f"BatchKey(epoch={self.epoch}, batch_no={self.batch_no}, indices={self.indices})"


class Fetched:
    """A loaded batch with its metadata; ``batch`` is ``None`` when every sample was skipped."""

    __slots__ = ("batch", "batch_no", "epoch", "failures", "num_samples", "worker")

    def __init__(
        self,
        batch: Any,
        batch_no: int,
        epoch: int,
        num_samples: int,
        failures: list[Failure],
        worker: int,
    ) -> None:
        self.batch = batch
        self.batch_no = batch_no
        self.epoch = epoch
        self.num_samples = num_samples
        self.failures = failures
        self.worker = worker

    def pin_memory(self) -> Fetched:
        """Called by the DataLoader's pin-memory thread: pins the batch only."""
        from dataforge.loading.prefetch import pin_batch

        return Fetched(
            pin_batch(self.batch),
            self.batch_no,
            self.epoch,
            self.num_samples,
            self.failures,
            self.worker,
        )


def _first(samples: list[Any]) -> Any:
    from torch.utils.data import default_convert

    return default_convert(samples[0])


class BatchFetcher(torch.utils.data.Dataset):
    """Map-style view of a dataset indexed by :class:`BatchKey`, returning :class:`Fetched`.

    Args:
        dataset: the user's map-style dataset (``__getitem__``, optional ``__getitems__``
            and ``set_epoch``).
        collate_fn: turns a list of samples into a batch; ``None`` yields single,
            un-collated samples (``batch_size=None``).
        on_error: ``"raise"``, ``"skip"`` or ``"substitute"`` (see NOTE [error policies]).
        seed: base seed for :func:`seed_worker` at each epoch change in a worker process.
        rank: distributed rank mixed into worker seeds.
        pin: pin the batch after collating (the thread engine's pinning).
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[list[Any]], Any] | None,
        on_error: str = "raise",
        *,
        seed: int = 0,
        rank: int = 0,
        pin: bool = False,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be one of {ON_ERROR}, got {on_error!r}; "
                "use 'skip' or 'substitute' to tolerate bad samples"
            )
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.on_error = on_error
        self.seed = seed
        self.rank = rank
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
        """Forward ``epoch`` to the dataset (and, in a worker process, reseed the worker)."""
        with self._lock:
            if self._epoch_seen == epoch:
                return
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            info = torch.utils.data.get_worker_info()
            if info is not None:
                seed_worker(info.id, seed=self.seed, epoch=epoch, rank=self.rank)
            self._epoch_seen = epoch

    def _load_one(self, index: int) -> Any:
        return self.dataset[index]

    def _context(self, index: int, epoch: int) -> str:
        return f"dataset index {index} (worker {current_worker_id()}, epoch {epoch})"

    def _fetch_samples(self, key: BatchKey) -> tuple[list[Any], list[Failure]]:
        indices = key.indices
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None and len(indices) > 1:
            try:
                return list(getitems(list(indices))), []
            except Exception:
                pass  # NOTE: fall back to one-by-one to find (and name) the bad index
        samples: list[Any] = []
        failures: list[Failure] = []
        n = len(self.dataset)
        for index in indices:
            try:
                samples.append(self._load_one(index))
                continue
            except Exception as exc:
                if self.on_error == "raise":
                    raise with_context(exc, self._context(index, key.epoch)) from exc
                failures.append(Failure(int(index), type(exc).__name__, str(exc)))
            if self.on_error == "substitute":
                samples.append(self._substitute(index, n, key.epoch))
        return samples, failures

    def _substitute(self, index: int, n: int, epoch: int) -> Any:
        last: BaseException | None = None
        for step in range(1, n):
            try:
                return self._load_one((index + step) % n)
            except Exception as exc:
                last = exc
        raise RuntimeError(
            f"on_error='substitute': no index of the dataset loads in place of "
            f"{self._context(index, epoch)}; every sample failed (last: {last!r})"
        ) from last

    def __getitem__(self, key: BatchKey) -> Fetched:  # type: ignore[override]
        if not isinstance(key, BatchKey):
            raise TypeError(
                f"BatchFetcher is indexed by BatchKey, got {type(key).__name__}; "
                "index the wrapped dataset directly"
            )
        self.set_epoch(key.epoch)
        samples, failures = self._fetch_samples(key)
        worker = current_worker_id()
        if not samples:
            return Fetched(None, key.batch_no, key.epoch, 0, failures, worker)
        try:
            batch = _first(samples) if self.collate_fn is None else self.collate_fn(samples)
        except Exception as exc:
            ctx = (
                f"collate of batch {key.batch_no} (epoch {key.epoch}, dataset indices "
                f"{_short(key.indices)}, worker {worker})"
            )
            raise with_context(exc, ctx) from exc
        if self.pin:
            from dataforge.loading.prefetch import pin_batch

            batch = pin_batch(batch)
        return Fetched(batch, key.batch_no, key.epoch, len(samples), failures, worker)


def _short(indices: Sequence[int], limit: int = 8) -> str:
    if len(indices) <= limit:
        return str(list(indices))
    return f"[{', '.join(map(str, indices[:limit]))}, ... ({len(indices)} in all)]"



def identity(x: Any) -> Any:
    """The DataLoader-level collate: batches are already collated by :class:`BatchFetcher`."""
    return x
