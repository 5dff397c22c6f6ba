"""The consumer's position in a ``Loader``'s pass over an iterable dataset: batches taken
from each worker, the worker next in the cycle, the error counts and each worker's
dataset state (NOTE [iterable resume] and NOTE [iterable error counts] in
``iterable_engine.py``, NOTE [dataset state] in ``state.py``)."""

from __future__ import annotations

import copy
import math
from typing import Any

from dataforge.loading.fetch import BatchMeta
from dataforge.loading.iterable_engine import (
    END_NO,
    ShardPlan,
    add_counts,
    error_sources,
    int_dict,
    own_state,
)
from dataforge.loading.state import (
    DATASET_ERRORS,
    DATASET_STATE,
    ITERABLE_KEYS,
    NEXT_WORKER,
    NUM_REPLICAS,
    NUM_WORKERS,
    RANK,
    WORKER_BATCHES,
    WORKERS_ENDED,
    make_state,
    upgrade_state,
    validate_state,
)

_Resume = tuple[list[int], int, list[Any] | None, list[bool] | None]


class IterProgress:
    """The consumer's position in an iterable epoch: batches taken from each worker,
    the worker next in the cycle, the dataset's error counts and each worker's dataset
    state (NOTE [iterable resume], NOTE [iterable error counts], NOTE [dataset state]).

    ``persistent``: the workers keep their dataset copies from pass to pass.
    """

    def __init__(
        self, dataset: Any, batch_size: int | None, drop_last: bool, num_workers: int,
        persistent: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.nw = max(1, num_workers)
        self.counts = [0] * self.nw
        self.next_worker = 0
        self._resume: _Resume | None = None
        self.error_keys = [k for d in error_sources(dataset) for k in d.errors]
        self.errors_done: dict[str, int] = {}
        self.worker_errors: list[dict[str, int]] = [{} for _ in range(self.nw)]
        self.stateful = own_state(dataset)
        self.keeps_copies = persistent or num_workers == 0  # a pass starts where the last ended
        self.dataset_states: list[Any] = [None] * self.nw
        self.ended = [False] * self.nw
        self._in_pass = False

    @property
    def yielded(self) -> int:
        return sum(self.counts)

    def num_batches(self) -> int | None:
        if not hasattr(self.dataset, "__len__"):
            return None
        n = len(self.dataset)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def begin(self, epoch: int) -> ShardPlan:
        if self._resume is None:
            self.fold_errors()  # a fresh start of the epoch: earlier passes are final
            if self._in_pass:
                self._carry_over()
        counts, nxt, states, ended = (
            self._resume if self._resume is not None else ([0] * self.nw, 0, None, None)
        )
        self._resume = None
        self._in_pass = True
        self.counts, self.next_worker = list(counts), nxt
        if states is not None:
            self.dataset_states, self.ended = list(states), list(ended or [False] * self.nw)
        bs = self.batch_size or 1
        # a worker whose copy loads a state is not fast-forwarded (NOTE [dataset state])
        skips = [0 if states is not None and states[w] is not None else c * bs for w, c in enumerate(counts)]
        load = states is not None and (any(x is not None for x in states) or any(self.ended))
        if not load:
            return ShardPlan(epoch, skips, nxt, sum(counts))
        return ShardPlan(epoch, skips, nxt, sum(counts), list(self.dataset_states), list(self.ended))

    def receive(self, meta: BatchMeta) -> None:
        if meta.errors is not None:
            self.worker_errors[meta.worker] = meta.errors
        if meta.dataset_state is not None:
            self.dataset_states[meta.worker] = meta.dataset_state
        if meta.batch_no == END_NO:
            self.ended[meta.worker] = True
        if meta.batch_no < 0:  # a report: error counts and dataset state only
            return
        self.counts[meta.worker] += 1
        self.next_worker = (meta.worker + 1) % self.nw

    def _carry_over(self) -> None:
        """Between passes: a copy that persists and whose stream ended starts the next pass
        from its state; any other starts as the main process's dataset (``None``: taken
        from it when the state is)."""
        self.dataset_states = [
            s if e and self.keeps_copies else None for s, e in zip(self.dataset_states, self.ended)
        ]
        self.ended = [False] * self.nw

    def restart(self) -> None:
        self.fold_errors()
        if self._in_pass:
            self._carry_over()
        self._in_pass = False
        self.counts = [0] * self.nw
        self.next_worker = 0
        self._resume = None

    def position(self) -> _Resume:
        if self._resume is not None:
            return self._resume
        return list(self.counts), self.next_worker, list(self.dataset_states), list(self.ended)

    def state(self, epoch: int, fields: dict[str, Any]) -> dict[str, Any]:
        """NOTE [loader state] plus ``num_workers``, ``worker_batches`` (batches taken from
        each worker), ``next_worker``, ``dataset_errors`` (``{"done": totals of the
        finished passes, "workers": each worker's counts this epoch}``), ``workers_ended``
        and, for a dataset with its own state, ``dataset_state`` (NOTE [dataset state])."""
        counts, nxt, states, ended = self.position()
        if self.stateful and self.num_workers == 0 and states is not None and states[0] is None:
            # before its first report, the main process's copy is the dataset itself; a
            # worker's copy starts as the main process's dataset does (None: no load)
            states = [copy.deepcopy(self.dataset.state_dict())]
        state = make_state(
            epoch=epoch, batches_yielded=sum(counts), sampler_state=None, fields=fields,
            dataset_state=states if self.stateful else None,
        )
        state.update({
            NUM_WORKERS: self.num_workers, WORKER_BATCHES: counts, NEXT_WORKER: nxt, RANK: fields[RANK],
        })
        state[DATASET_ERRORS] = {
            "done": dict(self.errors_done), "workers": [dict(c) for c in self.worker_errors],
        }
        state[WORKERS_ENDED] = list(ended or [False] * self.nw)
        return state

    def load(self, state: Any, fields: dict[str, Any]) -> int:
        """Resume from a loader ``state`` (checked against ``fields``); return its epoch."""
        state = upgrade_state(state, fields[NUM_REPLICAS], lambda k: None)
        epoch, k, _, replicas = validate_state(state, fields, self.num_batches(), keys=ITERABLE_KEYS)
        if replicas != fields[NUM_REPLICAS]:
            raise ValueError(
                f"loader state does not fit this loader: it was saved under world size {replicas} "
                f"and the world size is {fields[NUM_REPLICAS]} now; an iterable dataset's loader "
                "resumes only under the saved world size (it counts each worker's stream); "
                "resume with the saved world size or start the epoch without the state"
            )
        if state.get(RANK, fields[RANK]) != fields[RANK]:
            raise ValueError(
                f"loader state does not fit this loader: it was saved by rank {state[RANK]!r} and "
                f"this is rank {fields[RANK]}; an iterable dataset's loader state holds its own "
                f"rank's streams, so load on rank {fields[RANK]} the state that rank saved"
            )
        if state[NUM_WORKERS] != self.num_workers:
            raise ValueError(
                f"loader state does not fit this loader: num_workers was {state[NUM_WORKERS]!r} "
                f"when saved but is {self.num_workers!r} now (an iterable dataset is sharded by "
                "worker); build the loader with the saved num_workers or start without the state"
            )
        counts, nxt = state[WORKER_BATCHES], state[NEXT_WORKER]
        if (
            not isinstance(counts, list) or len(counts) != self.nw or sum(counts) != k
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
        ):
            raise ValueError(
                f"loader state field 'worker_batches' must be {self.nw} non-negative ints summing "
                f"to batches_yielded={k}, got {counts!r}; pass a dict from Loader.state_dict()"
            )
        if isinstance(nxt, bool) or not isinstance(nxt, int) or not 0 <= nxt < self.nw:
            raise ValueError(
                f"loader state field 'next_worker' must be an int in [0, {self.nw}), got {nxt!r}"
            )
        self._load_errors(state.get(DATASET_ERRORS, {"done": {}, "workers": [{}] * self.nw}))
        states, ended = self._load_dataset_state(state.get(DATASET_STATE), state.get(WORKERS_ENDED))
        self._resume = (list(counts), nxt, states, ended)
        return epoch

    def _load_dataset_state(self, states: Any, ended: Any) -> tuple[list[Any] | None, list[bool] | None]:
        if states is None:
            return None, None
        if not self.stateful:
            raise ValueError(
                "loader state field 'dataset_state' holds the dataset's own state but "
                f"{type(self.dataset).__name__} does not take one (no state_dict/load_state_dict, "
                "or a dataforge IterDataset, resumed by replay: NOTE [dataset state]); build the "
                "loader over the dataset it was saved with"
            )
        if not isinstance(states, list) or len(states) != self.nw:
            raise ValueError(
                f"loader state field 'dataset_state' must be a list of {self.nw} per-worker states "
                f"(or None), got {states!r}; pass a dict from Loader.state_dict()"
            )
        ended = [False] * self.nw if ended is None else ended
        if not isinstance(ended, list) or len(ended) != self.nw or not all(isinstance(e, bool) for e in ended):
            raise ValueError(
                f"loader state field 'workers_ended' must be a list of {self.nw} bools, got "
                f"{ended!r}; pass a dict from Loader.state_dict()"
            )
        return list(states), list(ended)

    def _load_errors(self, errors: Any) -> None:
        if (
            not isinstance(errors, dict) or not int_dict(errors.get("done"))
            or not isinstance(errors.get("workers"), list) or len(errors["workers"]) != self.nw
            or not all(int_dict(c) for c in errors["workers"])
        ):
            raise ValueError(
                "loader state field 'dataset_errors' must be {'done': {name: int}, 'workers': "
                f"[{self.nw} such dicts]}}, got {errors!r}; pass a dict from Loader.state_dict()"
            )
        self.errors_done = dict(errors["done"])
        self.worker_errors = [dict(c) for c in errors["workers"]]

    def fold_errors(self) -> None:
        for counts in self.worker_errors:
            add_counts(self.errors_done, counts)
        self.worker_errors = [{} for _ in range(self.nw)]

    def errors(self) -> dict[str, int]:
        out = dict.fromkeys(self.error_keys, 0)
        for counts in (self.errors_done, *self.worker_errors):
            add_counts(out, counts)
        return out
