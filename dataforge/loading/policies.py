"""Per-sample error policies: what a bad sample does to its batch.

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
function always raises (with the batch number, its indices and the worker id),
and so does the error of a bulk item (a sampler that yields lists of indices
with ``batch_size=None``: the dataset gets the whole list, as under torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dataforge._dist import current_worker_id
from dataforge.loading.stats import Failure

ON_ERROR = ("raise", "skip", "substitute")


def check_on_error(on_error: Any) -> str:
    """``on_error`` if it names a policy; a ``ValueError`` naming the choices otherwise."""
    if on_error not in ON_ERROR:
        raise ValueError(
            f"on_error must be one of {ON_ERROR}, got {on_error!r}; "
            "use 'skip' or 'substitute' to tolerate bad samples"
        )
    return str(on_error)


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


def short(indices: Sequence[Any], limit: int = 8) -> str:
    """``indices`` as a list, shortened past ``limit`` items."""
    if len(indices) <= limit:
        return str(list(indices))
    return f"[{', '.join(map(str, indices[:limit]))}, ... ({len(indices)} in all)]"


def _context(index: Any, epoch: int) -> str:
    return f"dataset index {index} (worker {current_worker_id()}, epoch {epoch})"


def load_bulk(dataset: Any, indices: Any, epoch: int) -> Any:
    """``dataset[indices]`` for a bulk item; an error names the indices and always raises."""
    try:
        return dataset[indices]
    except Exception as exc:
        raise with_context(exc, _context(short(list(indices)), epoch)) from exc


def load_samples(
    dataset: Any, indices: list[int], on_error: str, epoch: int
) -> tuple[list[Any], list[Failure]]:
    """The samples at ``indices`` under the ``on_error`` policy, and the failures met.

    ``__getitems__`` loads the whole list at once when the dataset has it; if that
    fails, the samples are loaded one by one to find (and name) the bad index.
    """
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None and len(indices) > 1:
        try:
            return list(getitems(list(indices))), []
        except Exception:
            pass  # NOTE: fall back to one-by-one to find (and name) the bad index
    samples: list[Any] = []
    failures: list[Failure] = []
    for index in indices:
        try:
            samples.append(dataset[index])
            continue
        except Exception as exc:
            if on_error == "raise":
                raise with_context(exc, _context(index, epoch)) from exc
            failures.append(Failure(int(index), type(exc).__name__, str(exc)))
        if on_error == "substitute":
            samples.append(_substitute(dataset, index, epoch))
    return samples, failures


def _substitute(dataset: Any, index: int, epoch: int) -> Any:
    n = len(dataset)
    last: BaseException | None = None
    for step in range(1, n):
        try:
            return dataset[(index + step) % n]
        except Exception as exc:
            last = exc
    raise RuntimeError(
        f"on_error='substitute': no index of the dataset loads in place of "
        f"{_context(index, epoch)}; every sample failed (last: {last!r})"
    ) from last
