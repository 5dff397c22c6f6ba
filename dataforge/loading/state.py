"""The loader's resume state: a plain JSON dict, every field checked before it is used.

NOTE [loader state]: a versioned JSON dict whose keys are the constants below:
``VERSION``, ``EPOCH``, ``BATCHES_YIELDED``, ``NUM_REPLICAS`` (the world size it was
saved under), the fields that must match the loader it is loaded into
(``CHECKED_FIELDS``: seed, dataset length, batch size, drop_last, shuffle) and
``SAMPLER_STATE``, the order's own ``state_dict()`` nested as is. Global progress
lives in ``sampler_state``: the loader's own order is an ``EpochSampler``
(``OrderSampler`` in ``plan.py``), and so are dataforge's samplers, whose
``position`` counts the epoch's global order consumed by all ranks; so every rank
returns the same dict at the same step, and it loads under another world size,
``num_workers`` or engine (NOTE [elastic resume] in ``plan.py``).
``batches_yielded`` counts the batches of ``epoch`` each rank has received
(batches dropped because every sample was skipped count too); only a sampler
without ``state_dict`` is resumed from it, by replay, which is exact only under
the same world size (another one is refused). A map-style loader stores a state
taken after the last batch of an epoch as ``(epoch + 1, 0)``. ``sampler_state`` is
taken right after the indices of those batches were drawn. A loader over an iterable dataset
adds ``ITERABLE_FIELDS``: ``num_workers``, ``worker_batches`` (batches taken from
each worker), ``next_worker`` and ``dataset_errors`` (NOTE [iterable resume] and
NOTE [iterable error counts] in ``iterable_engine.py``), and ``rank``: its progress is
this rank's own workers' streams, not global, so it loads only on the rank and under
the world size that saved it. A key the loader does not
know is refused, so a state of another kind of loader is never half-loaded.
A version-1 state (no ``num_replicas``, the loader's own order as a batch count) is
converted by ``upgrade_state``. ``DATASET_STATE`` holds the dataset's own state.

NOTE [exactly once]: what elastic resume guarantees when the epoch does not divide
across ranks. Ranks consume the global order in whole batches and its padding (NOTE
[epoch semantics] in ``samplers/base.py``) sits in the last batch, so a state saved
before the epoch's end covers real items only. The run that finishes the epoch splits
the rest over its ranks, every rank the same count, padding it as ``DistributedSampler``
does: it repeats the first ``(-rest) % world_size`` items of the epoch's order. Across
the interrupted and the resuming runs every item of the epoch is delivered, none lost,
and the only repeats are that padding: fewer than the final world size, the bound an
uninterrupted run has (items are samples, or batches for a batch sampler). With a
sampler's ``drop_last=True`` the rest's tail is dropped instead (at most
``world_size - 1`` items lost, none repeated), as in an uninterrupted run.

NOTE [dataset state]: a dataset with ``state_dict``/``load_state_dict`` has its state
nested under ``DATASET_STATE`` as the dataset returns it: the loader's state is plain
JSON when the dataset's is (the loader does not refuse a dataset whose state holds a
tensor, such as torch's RNG state, as torchdata does not). Map-style: the main process's
``dataset.state_dict()`` when the loader's state is taken, loaded back into the dataset
as the next pass begins, whatever its epoch (process workers are restarted so their
copies start from it); the position stays the plan's. Iterable: every worker iterates its own copy, so the
field is a list, one entry per worker: the copy's state right after the last batch the
consumer took from it, or at the start of its stream (each worker reports it first),
``None`` where the copy starts as the main process's dataset does. On resume each copy
loads its entry before ``iter()`` and is not fast-forwarded by the loader (its state
says where it stands, as in torchdata); ``WORKERS_ENDED`` marks the workers whose
stream had ended, which do not iterate again in that epoch. A state taken after a
stream's end must load as the start of the next pass: persistent workers (and the main
process with ``num_workers=0``) start the next epoch from it. dataforge's
``IterDataset`` is the exception: it resumes by replay and its state counts the items
read (NOTE [resume by replay]), which ``worker_batches`` already holds; nesting it too
would skip those items twice, so the loader fast-forwards it and does not nest it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

STATE_VERSION = 2

VERSION = "version"
EPOCH = "epoch"
BATCHES_YIELDED = "batches_yielded"
SEED = "seed"
DATASET_LEN = "dataset_len"
BATCH_SIZE = "batch_size"
DROP_LAST = "drop_last"
SHUFFLE = "shuffle"
SAMPLER_STATE = "sampler_state"
NUM_WORKERS = "num_workers"
WORKER_BATCHES = "worker_batches"
NEXT_WORKER = "next_worker"
DATASET_ERRORS = "dataset_errors"
NUM_REPLICAS = "num_replicas"
DATASET_STATE = "dataset_state"
WORKERS_ENDED = "workers_ended"
RANK = "rank"
ELASTIC_BASE = "elastic_base"  # NOTE [elastic shards] in datasets/elastic.py

# fields that must match the loader the state is loaded into
CHECKED_FIELDS = (DATASET_LEN, SEED, BATCH_SIZE, DROP_LAST, SHUFFLE)
# what an iterable dataset's loader adds
ITERABLE_FIELDS = (NUM_WORKERS, WORKER_BATCHES, NEXT_WORKER, DATASET_ERRORS)
MAP_KEYS = frozenset(
    (VERSION, EPOCH, BATCHES_YIELDED, NUM_REPLICAS, SAMPLER_STATE, DATASET_STATE, *CHECKED_FIELDS)
)
ITERABLE_KEYS = MAP_KEYS | frozenset((*ITERABLE_FIELDS, WORKERS_ENDED, RANK, ELASTIC_BASE))
# fields a state may lack: older states, and states of loaders without them
_OPTIONAL = frozenset(
    (SAMPLER_STATE, VERSION, DATASET_ERRORS, NUM_REPLICAS, DATASET_STATE, WORKERS_ENDED, RANK,
     ELASTIC_BASE)
)
# how to make each checked field match: only fixes that exist
_FIXES = {
    DATASET_LEN: "load the state into a loader over the dataset it was saved with",
    SEED: "build the loader with seed={saved!r}",
    BATCH_SIZE: "build the loader with batch_size={saved!r}",
    DROP_LAST: "build the loader with drop_last={saved!r}",
    SHUFFLE: "build the loader with shuffle={saved!r}",
}


def is_stateful(obj: Any) -> bool:
    """Whether ``obj`` has callable ``state_dict`` and ``load_state_dict`` (a sampler, a dataset)."""
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def check_json(value: Any, what: str) -> None:
    """Raise a ``TypeError`` naming ``what`` when ``value`` is not JSON-serialisable."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what}'s state_dict() is not JSON-serialisable ({exc}); the loader's state is "
            "plain JSON (NOTE [loader state]): make it return plain ints, floats, strings, "
            "lists and dicts"
        ) from exc


def make_state(
    *, epoch: int, batches_yielded: int, sampler_state: dict[str, Any] | None, fields: dict[str, Any],
    dataset_state: Any = None,
) -> dict[str, Any]:
    """The state dict of a loader whose ``CHECKED_FIELDS`` and ``NUM_REPLICAS`` values are
    ``fields``; ``dataset_state``: the dataset's own state (NOTE [dataset state])."""
    check_json(sampler_state, "the sampler")
    return {
        VERSION: STATE_VERSION, EPOCH: epoch, BATCHES_YIELDED: batches_yielded,
        NUM_REPLICAS: fields[NUM_REPLICAS], **{k: fields[k] for k in CHECKED_FIELDS},
        SAMPLER_STATE: sampler_state, DATASET_STATE: dataset_state,
    }


def nonneg_int(state: dict[str, Any], field: str) -> int:
    """``state[field]``, which must be a non-negative int (a ``ValueError`` naming it else)."""
    value = state[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"loader state field {field!r} must be a non-negative int, got {value!r}")
    return value


def _check_keys(state: Any, keys: frozenset[str]) -> None:
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from Loader.state_dict(), got {type(state).__name__}")
    required = keys - _OPTIONAL
    missing = sorted(required - state.keys())
    if missing:
        raise ValueError(
            f"loader state is missing field(s) {missing}; pass a dict returned by Loader.state_dict()"
        )
    unknown = sorted(set(state) - keys)
    if unknown:
        kind = "an iterable dataset's" if keys == ITERABLE_KEYS else "a map-style dataset's"
        raise ValueError(
            f"loader state has field(s) {unknown} that {kind} loader does not have; pass a dict "
            "from Loader.state_dict() of a loader over the same kind of dataset"
        )
    version = state.get(VERSION, STATE_VERSION)
    if version != STATE_VERSION:
        raise ValueError(
            f"loader state field 'version' is {version!r}; this dataforge reads version "
            f"{STATE_VERSION} (and converts version 1)"
        )
    if NUM_REPLICAS not in state:
        raise ValueError(
            f"loader state is missing field(s) {[NUM_REPLICAS]}; pass a dict returned by Loader.state_dict()"
        )


def upgrade_state(
    state: Any, num_replicas: int, order_state: Callable[[int], dict[str, Any] | None]
) -> Any:
    """``state`` in the current version. A version-1 state had no ``num_replicas``: it is
    taken as saved under ``num_replicas`` (the current world size), and a ``None``
    ``sampler_state`` becomes ``order_state(batches_yielded)`` (the loader's own order,
    which version 1 did not split across ranks; ``None`` for a replayed user sampler)."""
    if not isinstance(state, dict) or state.get(VERSION) != 1:
        return state
    out = {**state, VERSION: STATE_VERSION, NUM_REPLICAS: num_replicas}
    k = state.get(BATCHES_YIELDED)
    if state.get(SAMPLER_STATE) is None and isinstance(k, int) and not isinstance(k, bool) and k >= 0:
        out[SAMPLER_STATE] = order_state(k)
    return out


def validate_state(
    state: Any, current: dict[str, Any], num_batches: int | None, *, keys: frozenset[str] = MAP_KEYS
) -> tuple[int, int, dict[str, Any] | None, int]:
    """Check ``state`` against the loader's ``current`` fields and its ``num_batches`` per
    epoch (``None``: unknown; checked only under the saved world size);
    return ``(epoch, k, sampler_state, num_replicas)``.

    Raises:
        TypeError: ``state`` is not a dict.
        ValueError: a field is missing, unknown (not in ``keys``) or malformed, a field of
            ``CHECKED_FIELDS`` differs (the message names the field, the saved and the
            current value), or ``batches_yielded`` is past the end of an epoch.
    """
    _check_keys(state, keys)
    for field in CHECKED_FIELDS:
        if state[field] != current[field]:
            raise ValueError(
                f"loader state does not fit this loader: {field} was {state[field]!r} when saved "
                f"but is {current[field]!r} now; {_FIXES[field].format(saved=state[field])} "
                "or start without the state"
            )
    epoch = nonneg_int(state, EPOCH)
    k = nonneg_int(state, BATCHES_YIELDED)
    replicas = nonneg_int(state, NUM_REPLICAS)
    if replicas < 1:
        raise ValueError(f"loader state field {NUM_REPLICAS!r} must be >= 1, got {replicas}")
    if num_batches is not None and k > num_batches and replicas == current[NUM_REPLICAS]:
        raise ValueError(
            f"loader state field 'batches_yielded' is {k}, past the {num_batches} batches of an "
            "epoch of this loader; pass a dict from Loader.state_dict() of the same loader"
        )
    sampler_state = state.get(SAMPLER_STATE)
    if sampler_state is not None and not isinstance(sampler_state, dict):
        raise ValueError(f"loader state field 'sampler_state' must be a dict or None, got {sampler_state!r}")
    return epoch, k, sampler_state, replicas
