"""The consumer's position in a ``Loader``'s pass over an iterable dataset: batches taken
from each worker, the worker next in the cycle, the error counts and each worker's
dataset state (NOTE [iterable resume] and NOTE [iterable error counts] in
``iterable_engine.py``, NOTE [dataset state] in ``state.py``)."""

from __future__ import annotations

import copy
import math
from typing import Any

from dataforge.datasets.elastic import UNIT_KEYS, check_units
from dataforge.datasets.iterable import IterDataset
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
    ELASTIC_BASE,
    EPOCH,
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
# ShardPlan.elastic: (units, rank, num_replicas), NOTE [elastic shards] in datasets/elastic.py
_Elastic = tuple[list[dict[str, Any]], int, int]


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
        self.elastic: _Elastic | None = None  # this pass's
        self._resume_elastic: _Elastic | None = None

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
        self.elastic = self._resume_elastic if self._resume is not None else None
        self._resume, self._resume_elastic = None, None
        self._in_pass = True
        self.counts, self.next_worker = list(counts), nxt
        if states is not None:
            self.dataset_states, self.ended = list(states), list(ended or [False] * self.nw)
        bs = self.batch_size or 1
        # a worker whose copy loads a state is not fast-forwarded (NOTE [dataset state])
        skips = [0 if states is not None and states[w] is not None else c * bs for w, c in enumerate(counts)]
        load = states is not None and (any(x is not None for x in states) or any(self.ended))
        if not load:
            return ShardPlan(epoch, skips, nxt, sum(counts), elastic=self.elastic)
        return ShardPlan(
            epoch, skips, nxt, sum(counts), list(self.dataset_states), list(self.ended), self.elastic
        )

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
        self._resume, self._resume_elastic, self.elastic = None, None, None

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
        elastic = self._resume_elastic if self._resume is not None else self.elastic
        state[ELASTIC_BASE] = copy.deepcopy(elastic[0]) if elastic is not None else None
        return state

    def load(self, state: Any, fields: dict[str, Any]) -> int:
        """Resume from a loader ``state`` (checked against ``fields``); return its epoch.

        ``state`` is one rank's dict, or the list of the dicts every rank of the saving
        world took at the same step. One dict resumes its own rank under the saved world
        size and ``num_workers``, or any world when it was saved by a world of one rank;
        the list resumes under any world size, ``num_workers`` and engine (NOTE [elastic
        shards] in ``datasets/iterable.py``)."""
        many = isinstance(state, list)
        states = [self._check_one(s, fields) for s in (state if many else [state])]
        if not states:
            raise ValueError("loader state is an empty list; pass Loader.state_dict() of every rank")
        world = states[0][NUM_REPLICAS]
        if many:
            self._check_all(states, world)
        own = [s for s in states if s[RANK] == fields[RANK]]
        if (
            world == fields[NUM_REPLICAS] and states[0][NUM_WORKERS] == self.num_workers
            and (many or own)
        ):
            return self._load_own(own[0], fields)
        if many or world == 1:
            return self._load_elastic(states, fields)
        if world == fields[NUM_REPLICAS] and states[0][NUM_WORKERS] == self.num_workers:
            raise ValueError(
                f"loader state does not fit this loader: it was saved by rank {states[0][RANK]!r} and "
                f"this is rank {fields[RANK]}; an iterable dataset's loader state holds its own "
                f"rank's streams, so load on rank {fields[RANK]} the state that rank saved, or "
                "pass the list of every rank's state"
            )
        raise ValueError(
            f"loader state does not fit this loader: it was saved under world size {world} with "
            f"num_workers={states[0][NUM_WORKERS]} and the world size is {fields[NUM_REPLICAS]} "
            f"with num_workers={self.num_workers} now; one rank's state holds only that rank's "
            f"streams, so pass the list of all {world} ranks' states (gathered when saving, e.g. "
            "states = [None] * world; torch.distributed.all_gather_object(states, "
            "loader.state_dict())), or resume with the saved world size and num_workers"
        )

    def _check_one(self, state: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """``state`` in the current version, its fields checked on their own."""
        state = upgrade_state(state, fields[NUM_REPLICAS], lambda k: None)
        _, k, _, replicas = validate_state(state, fields, self.num_batches(), keys=ITERABLE_KEYS)
        workers = state[NUM_WORKERS]
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"loader state field 'num_workers' must be a non-negative int, got {workers!r}")
        nw = max(1, workers)
        counts, nxt = state[WORKER_BATCHES], state[NEXT_WORKER]
        if (
            not isinstance(counts, list) or len(counts) != nw or sum(counts) != k
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts)
        ):
            raise ValueError(
                f"loader state field 'worker_batches' must be {nw} non-negative ints summing "
                f"to batches_yielded={k}, got {counts!r}; pass a dict from Loader.state_dict()"
            )
        if isinstance(nxt, bool) or not isinstance(nxt, int) or not 0 <= nxt < nw:
            raise ValueError(f"loader state field 'next_worker' must be an int in [0, {nw}), got {nxt!r}")
        # a state without the field (older ones) is taken as this rank's
        rank = state.get(RANK, fields[RANK] if fields[RANK] < replicas else None)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < replicas:
            raise ValueError(
                f"loader state field 'rank' must be an int in [0, {replicas}), got {rank!r}; pass a "
                "dict from Loader.state_dict()"
            )
        if state.get(ELASTIC_BASE) is not None:
            check_units(state[ELASTIC_BASE], f"loader state field {ELASTIC_BASE!r}")
        return {**state, RANK: rank}

    @staticmethod
    def _check_all(states: list[dict[str, Any]], world: int) -> None:
        """The list holds one state of every rank of one world, taken at one step."""
        ranks = sorted(s[RANK] for s in states)
        if ranks != list(range(world)) or any(s[NUM_REPLICAS] != world for s in states):
            raise ValueError(
                f"loader states must be one per rank of the saving world (ranks 0..{world - 1} "
                f"of world size {world}), got ranks {ranks} of world sizes "
                f"{sorted({s[NUM_REPLICAS] for s in states})}; pass every rank's Loader.state_dict()"
            )
        for field in (EPOCH, NUM_WORKERS, ELASTIC_BASE):
            values = [s.get(field) for s in states]
            if any(v != values[0] for v in values):
                raise ValueError(
                    f"loader states of the ranks differ in field {field!r} ({values!r}); pass the "
                    "states every rank took at the same step of the same run"
                )

    def _load_own(self, state: dict[str, Any], fields: dict[str, Any]) -> int:
        """Resume this rank's own streams under the saved world (NOTE [iterable resume])."""
        self._load_errors(state.get(DATASET_ERRORS, {"done": {}, "workers": [{}] * self.nw}))
        states, ended = self._load_dataset_state(state.get(DATASET_STATE), state.get(WORKERS_ENDED))
        self._resume = (list(state[WORKER_BATCHES]), state[NEXT_WORKER], states, ended)
        base = state.get(ELASTIC_BASE)
        self._resume_elastic = (base, fields[RANK], fields[NUM_REPLICAS]) if base is not None else None
        return int(state[EPOCH])

    def _load_elastic(self, states: list[dict[str, Any]], fields: dict[str, Any]) -> int:
        """Resume what every old consumer left, split over this world (NOTE [elastic shards])."""
        if not isinstance(self.dataset, IterDataset) or self.stateful:
            raise ValueError(
                f"a loader over {type(self.dataset).__name__} resumes only under the saved world size "
                "and num_workers: resuming under another world replays the old ranks' and workers' "
                "streams, which only a dataforge IterDataset (from_shards, from_iterable and their "
                "ops) can do; resume with the saved world or start the epoch without the state"
            )
        if any(s.get(DATASET_STATE) is not None for s in states):
            raise ValueError(
                "loader state field 'dataset_state' is set, but this loader's dataset is resumed by "
                "replay; pass a dict from Loader.state_dict() of a loader over the same dataset"
            )
        bs = self.batch_size or 1
        units = [
            dict(zip(UNIT_KEYS, (
                s[NUM_REPLICAS], s[RANK], max(1, s[NUM_WORKERS]), w, c * bs, s.get(ELASTIC_BASE),
            )))
            for s in sorted(states, key=lambda s: s[RANK])
            for w, c in enumerate(s[WORKER_BATCHES])
        ]
        # error totals: the saving rank of the same number's earlier passes (the replayed
        # streams count their errors again from the start of the epoch)
        same = [s for s in states if s[RANK] == fields[RANK]]
        done = same[0].get(DATASET_ERRORS, {}).get("done", {}) if same else {}
        self._load_errors({"done": done if int_dict(done) else {}, "workers": [{}] * self.nw})
        self._resume = ([0] * self.nw, 0, None, None)
        self._resume_elastic = (units, fields[RANK], fields[NUM_REPLICAS])
        return int(states[0][EPOCH])

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
