"""The loader's resume state: a plain JSON dict, checked before it is used.

NOTE [loader state]: ``{"version", "epoch", "batches_yielded", "seed",
"dataset_len", "batch_size", "drop_last", "shuffle", "sampler_state"}``.
``batches_yielded`` counts the batches of ``epoch`` the consumer has received
(batches dropped because every sample was skipped count too). A state taken
after the last batch of an epoch is stored as ``(epoch + 1, 0)``.
``sampler_state`` is the user sampler's own ``state_dict()`` taken right after
the indices of those batches were drawn (``None`` for the loader's own sampler
and for samplers without ``state_dict``, which are replayed instead).
"""

from __future__ import annotations

import json
from typing import Any

STATE_VERSION = 1

# fields that must match the loader the state is loaded into
CHECKED_FIELDS = ("dataset_len", "seed", "batch_size", "drop_last", "shuffle")
# how to make each of them match: only fixes that exist
_FIXES = {
    "dataset_len": "load the state into a loader over the dataset it was saved with",
    "seed": "build the loader with seed={saved!r}",
    "batch_size": "build the loader with batch_size={saved!r}",
    "drop_last": "build the loader with drop_last={saved!r}",
    "shuffle": "build the loader with shuffle={saved!r}",
}


def make_state(
    *,
    epoch: int,
    batches_yielded: int,
    seed: int,
    dataset_len: int,
    batch_size: int | None,
    drop_last: bool,
    shuffle: bool,
    sampler_state: dict[str, Any] | None,
) -> dict[str, Any]:
    state = {
        "version": STATE_VERSION,
        "epoch": epoch,
        "batches_yielded": batches_yielded,
        "seed": seed,
        "dataset_len": dataset_len,
        "batch_size": batch_size,
        "drop_last": drop_last,
        "shuffle": shuffle,
        "sampler_state": sampler_state,
    }
    try:
        json.dumps(state)
    except TypeError as exc:
        raise TypeError(
            f"the sampler's state_dict() is not JSON-serialisable ({exc}); "
            "make the sampler return plain ints, floats, strings, lists and dicts"
        ) from exc
    return state


def _nonneg_int(state: dict[str, Any], field: str) -> int:
    value = state[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"loader state field {field!r} must be a non-negative int, got {value!r}")
    return value


def validate_state(
    state: Any, current: dict[str, Any], num_batches: int | None
) -> tuple[int, int, dict[str, Any] | None]:
    """Check ``state`` against the loader's ``current`` fields and its ``num_batches`` per
    epoch (``None``: unknown); return ``(epoch, k, sampler_state)``.

    Raises:
        TypeError: ``state`` is not a dict.
        ValueError: a field is missing or malformed, a field of ``CHECKED_FIELDS``
            differs (the message names the field, the saved and the current value), or
            ``batches_yielded`` is past the end of an epoch.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from Loader.state_dict(), got {type(state).__name__}")
    missing = [f for f in ("epoch", "batches_yielded", *CHECKED_FIELDS) if f not in state]
    if missing:
        raise ValueError(
            f"loader state is missing field(s) {missing}; pass a dict returned by Loader.state_dict()"
        )
    version = state.get("version", STATE_VERSION)
    if version != STATE_VERSION:
        raise ValueError(f"loader state version {version!r} is not supported (expected {STATE_VERSION})")
    for field in CHECKED_FIELDS:
        if state[field] != current[field]:
            raise ValueError(
                f"loader state does not fit this loader: {field} was {state[field]!r} when saved "
                f"but is {current[field]!r} now; {_FIXES[field].format(saved=state[field])} "
                "or start without the state"
            )
    epoch = _nonneg_int(state, "epoch")
    k = _nonneg_int(state, "batches_yielded")
    if num_batches is not None and k > num_batches:
        raise ValueError(
            f"loader state field 'batches_yielded' is {k}, past the {num_batches} batches of an "
            "epoch of this loader; pass a dict from Loader.state_dict() of the same loader"
        )
    sampler_state = state.get("sampler_state")
    if sampler_state is not None and not isinstance(sampler_state, dict):
        raise ValueError(f"loader state field 'sampler_state' must be a dict or None, got {sampler_state!r}")
    return epoch, k, sampler_state
