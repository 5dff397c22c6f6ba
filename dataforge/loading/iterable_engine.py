"""The engine of a ``Loader`` over an iterable dataset (its bookkeeping: ``iterable_progress.py``).

NOTE [iterable loader]: there are no indices, so there is no batch plan: a stock
``DataLoader(batch_size=...)`` runs over the dataset and the dataset shards
itself over the workers (dataforge sources read ``get_worker_info()``). Hence
no ``shuffle``/``sampler``/``batch_sampler`` (use ``ds.shuffle(buffer_size)``),
no ``on_error`` policy other than ``"raise"`` (the policies need indices; see
``from_shards(on_error=...)``); ``engine="thread"`` runs the same workers as threads
over an ``IterDataset`` (NOTE [iterable threads] in ``iterable_threads.py``). Each pass's
:class:`ShardPlan` (epoch, samples to skip per worker, dummy batches) is written
into a small shared-memory tensor that every worker reads when its stream
starts, so persistent workers continue from epoch to epoch and ``set_epoch``
reaches them as it reaches fresh ones.

NOTE [iterable resume]: each worker's stream is deterministic given the epoch,
and torch takes batches from the workers round-robin (worker ``i % n`` first),
skipping a worker once its stream has ended. Every batch is tagged in its worker
with the worker id (by the collate wrapper), so the state records how many
batches the consumer got from each worker and which worker comes next. On
resume worker ``w`` drops its first ``count[w] * batch_size`` samples (exact:
every batch but a worker's last is full, and a worker whose last batch was
taken has nothing left), and the workers before the next one in the cycle
first emit one dummy batch, dropped in the main process, so the cycle resumes
where it stopped. This is exact for uneven worker streams too. A state taken
after the last batch, before the iterator noticed the end, resumes into an empty
rest of that epoch (the loader cannot know the stream has ended).

NOTE [iterable error counts]: a source that tolerates bad records counts them in an
``errors`` dict (``from_shards(on_error="skip")``), but a worker's copy counts
only in that worker. So each pass finds the counters in the dataset (through
``_sources()``, ``datasets`` and ``dataset``: ``.map()``, ``mix()``...), and the collate
wrapper attaches to every batch a small dict, what they grew by in this worker since
the pass started (with ``num_workers=0``: in the calling process); the main process
keeps the latest dict per worker. A source may skip a bad shard after its worker's
last batch, so a worker whose dataset has counters ends its stream with
``batch_size`` end markers: the batch holding one carries the final counts (and only
its real samples, none with ``drop_last``); batches of markers alone are not yielded.
Markers come last, so the order of real batches and NOTE [iterable resume] hold.

``Loader.errors`` sums them, CUMULATIVE over the loader's life: one per skip in every
pass (two epochs over data with one bad shard give 1, then 2; so does reading it
twice in an epoch, or a pass abandoned and started again). ``reset_stats()`` leaves
them. The state holds the totals of finished passes and each worker's count this
epoch; that count covers the worker's stream from the start of the epoch, including
what a resumed worker re-reads to skip the consumed part: ``load_state_dict`` restores
the totals, and the resumed workers replace (never add to) their saved counts. A
state without the field loads with the totals of earlier epochs at zero.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.data

from dataforge._dist import current_worker_id
from dataforge.datasets.elastic import elastic_items
from dataforge.datasets.iterable import IterDataset
from dataforge.loading.fetch import BatchMeta, Fetched
from dataforge.loading.process_engine import StockEngine, dataloader_options
from dataforge.loading.seeding import WorkerSeeding
from dataforge.loading.stages import Recorder, new_recorder, recording, timed, timed_items
from dataforge.loading.state import is_stateful
from dataforge.loading.stats import batch_len


class _Dummy:
    """A sample of the dummy batch that re-aligns the worker cycle on resume."""


class _End:
    """A sample after a worker's stream: its batch carries the final error counts."""


class _Exhausted:
    """The sentinel ``next(stream, _Exhausted)`` returns at a stream's end."""


class _Start:
    """A sample before a worker's stream: its batch carries the dataset's state at the
    stream's start (NOTE [dataset state] in ``state.py``)."""


# kinds of the batches a worker sends (see TaggedCollate); _LAST: real samples, then the end
_BATCH, _DUMMY, _END, _START, _LAST = 0, 1, 2, 3, 4
# BatchMeta.batch_no of the reports that carry no batch (read by iterable_progress.py)
END_NO, START_NO = -1, -2
_MAX_WALK = 1000  # objects visited to find a pipeline's error counters


def int_dict(value: Any) -> bool:
    """Whether ``value`` is a ``{str: non-negative int}`` dict (an error-counter dict)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    )


def error_sources(dataset: Any) -> list[Any]:
    """The datasets in ``dataset``'s pipeline with an ``errors`` dict of int counters
    (see NOTE [iterable error counts]), each once; at most ``_MAX_WALK`` objects are visited."""
    found: list[Any] = []
    seen: set[int] = set()
    todo = [dataset]
    while todo and len(seen) < _MAX_WALK:
        d = todo.pop(0)
        if id(d) in seen:
            continue
        seen.add(id(d))
        if int_dict(getattr(d, "errors", None)) and d.errors:
            found.append(d)
        sources = getattr(d, "sources", None)
        if callable(sources):
            todo.extend(sources())
        subs = getattr(d, "datasets", None)
        if isinstance(subs, (list, tuple)):
            todo.extend(subs)
        sub = getattr(d, "dataset", None)
        if sub is not None:
            todo.append(sub)
    return found


def own_state(dataset: Any) -> bool:
    """Whether the loader nests ``dataset``'s state and leaves the position to it (NOTE
    [dataset state]): it is stateful and not a replayed ``IterDataset``."""
    return is_stateful(dataset) and not isinstance(dataset, IterDataset)


def add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


@dataclass(frozen=True)
class ShardPlan:
    """The work of one pass over an iterable dataset (NOTE [iterable resume]).

    Attributes:
        epoch: the epoch every worker's stream is set to.
        skips: samples worker ``w`` drops from the start of its stream.
        dummies: workers ``0 .. dummies - 1`` first send one dummy batch.
        start: the number of the first batch of the pass.
        states: per worker, the dataset state its copy loads first (``None``: none), or
            ``None`` for no worker (NOTE [dataset state]).
        ended: per worker, whether its stream had ended (it does not iterate again).
        elastic: ``(units, rank, num_replicas)``: each worker's stream is its share of
            the units an earlier world left (NOTE [elastic shards] in
            ``datasets/elastic.py``); ``None``: the dataset's own stream.
    """

    epoch: int
    skips: list[int]
    dummies: int
    start: int
    states: list[Any] | None = None
    ended: list[bool] | None = None
    elastic: tuple[list[dict[str, Any]], int, int] | None = None


class ResumableSource(torch.utils.data.IterableDataset):
    """The DataLoader's dataset: sets the epoch, then drops the samples already consumed
    (see NOTE [iterable resume]). The pass's plan lives in shared memory, read by each
    worker when its stream starts, so persistent workers see every new pass."""

    def __init__(self, dataset: Any, batch_size: int, num_workers: int, seeding: WorkerSeeding) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seeding = seeding
        # [epoch, dummies, elastic (0/1), skip of worker 0, skip of worker 1, ...]
        self.plan = torch.zeros(3 + max(1, num_workers), dtype=torch.int64).share_memory_()
        self.num_workers = max(1, num_workers)
        # the pass's ShardPlan.elastic, set before the workers start (IterableEngine.start);
        # a worker reads it only while the shared plan says the pass is elastic
        self.elastic: tuple[list[dict[str, Any]], int, int] | None = None
        self.stateful = own_state(dataset)
        # (state, ended) per worker, loaded by each copy before its stream; it reaches the
        # copies with them (set before the workers start, see IterableEngine.start)
        self.pending: list[tuple[Any, bool]] | None = None
        self._counters: list[Any] = []  # set per pass, in the process that iterates
        self._base: list[dict[str, int]] = []
        self._rec: Recorder | None = None  # the stage times of the batch being gathered

    def recorder(self) -> Recorder | None:
        """The recorder of the batch whose samples are being drawn (NOTE [stage timing])."""
        if self._rec is None:
            self._rec = new_recorder()
        return self._rec

    def take_timing(self) -> Recorder | None:
        """The recorder of the batch just gathered; the next sample starts another."""
        rec, self._rec = self._rec, None
        return rec

    def set_plan(self, plan: ShardPlan) -> None:
        values = [plan.epoch, plan.dummies, int(plan.elastic is not None), *plan.skips]
        self.plan[: len(values)] = torch.tensor(values, dtype=torch.int64)

    def _open(self, w: int, epoch: int, elastic: bool) -> Iterator[Any] | None:
        """This worker's stream of ``epoch`` (``None``: it had ended), its copy of the dataset
        first loading its pending state, once (NOTE [dataset state] in ``state.py``)."""
        pending, self.pending = self.pending, None
        state, ended = pending[w] if pending is not None and w < len(pending) else (None, False)
        it = None
        if state is not None:
            # a dataset that is its own iterator loads its state after iter() (torchdata's
            # order); any other before the iter() that gives its stream
            it = iter(self.dataset)
            self.dataset.load_state_dict(copy.deepcopy(state))
            if it is not self.dataset:
                it = None
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.seeding.enter_epoch(epoch)
        if ended:
            return None
        if elastic and self.elastic is not None:  # NOTE [elastic shards] in datasets/elastic.py
            units, rank, world = self.elastic
            n = self.num_workers
            return elastic_items(self.dataset, units, rank * n + w, world * n)
        return iter(self.dataset) if it is None else it

    def __iter__(self) -> Iterator[Any]:
        w = current_worker_id()
        epoch, dummies, elastic, *skips = self.plan.tolist()
        self._counters = error_sources(self.dataset)
        self._base = [dict(c.errors) for c in self._counters]
        it = self._open(w, epoch, bool(elastic))  # before the start report: it reports the stream
        if self.stateful:
            yield from (_Start() for _ in range(self.batch_size))
        if w < dummies:
            yield from (_Dummy() for _ in range(self.batch_size))
        if it is not None:
            # NOTE: pulled with next() only: iter() again would restart a dataset that is
            # its own iterator and resets in __iter__
            stream = iter(functools.partial(next, it, _Exhausted), _Exhausted)
            skip = skips[w] if w < len(skips) else 0
            items = itertools.islice(stream, skip, None) if skip else stream
            yield from timed_items(items, self.recorder)  # NOTE [stage timing] in stages.py
        if self._counters or self.stateful:
            yield from (_End() for _ in range(self.batch_size))

    def dataset_state(self) -> Any:
        """The dataset's own state in this process (a copy), ``None`` if it has none to nest."""
        return copy.deepcopy(self.dataset.state_dict()) if self.stateful else None

    def error_counts(self) -> dict[str, int] | None:
        """What the dataset's counters grew by since this pass started (``None``: no
        counters); see NOTE [iterable error counts]."""
        if not self._counters:
            return None
        out: dict[str, int] = {}
        for src, base in zip(self._counters, self._base):
            for k, v in src.errors.items():
                out[k] = out.get(k, 0) + v - base.get(k, 0)
        return out


class TaggedCollate:
    """Collate in the worker and tag the batch: ``(worker id, kind, error counts, dataset
    state, batch)`` with kind ``_BATCH``, ``_LAST`` (a batch that ends the stream),
    ``_DUMMY`` (no batch), ``_START`` or ``_END`` (reports, no batch); see NOTE [iterable
    resume], NOTE [iterable error counts] and NOTE [dataset state] in ``state.py``.

    ``source`` is the worker's own copy of the :class:`ResumableSource` (torch pickles
    the dataset and the collate function together when it starts a worker).
    """

    def __init__(
        self, collate: Callable[[Any], Any], batched: bool, drop_last: bool, source: ResumableSource
    ) -> None:
        self.collate = collate
        self.batched = batched
        self.drop_last = drop_last
        self.source = source

    def __call__(self, data: Any) -> tuple[int, int, dict[str, int] | None, Any, Any, Any]:
        rec = self.source.take_timing()
        with recording(rec), timed("collate"):
            w, kind, errors, state, batch = self._tag(data)
        return w, kind, errors, state, batch, rec.finish() if rec is not None else None

    def _tag(self, data: Any) -> tuple[int, int, dict[str, int] | None, Any, Any]:
        w = current_worker_id()
        batched = self.batched and len(data) > 0
        first, last = (data[0], data[-1]) if batched else (data, data)
        if isinstance(first, _Dummy):
            return w, _DUMMY, None, None, None
        state = self.source.dataset_state()
        if isinstance(first, _Start):
            return w, _START, None, state, None
        errors = self.source.error_counts()
        if isinstance(last, _End):
            real = [x for x in data if not isinstance(x, _End)] if batched else []
            if not real or self.drop_last:  # a partial batch: torch would drop it too
                return w, _END, errors, state, None
            return w, _LAST, errors, state, self.collate(real)
        return w, _BATCH, errors, state, self.collate(data)


def fetched_batches(raw: Iterator[Any], start: int, batched: bool) -> Iterator[Fetched]:
    # module-level: must not reference the Loader (the engine keeps it alive)
    b = start
    for worker, kind, errors, state, batch, timing in raw:
        if kind == _DUMMY:
            continue
        if kind in (_START, _END):  # a report: error counts and dataset state only
            no = START_NO if kind == _START else END_NO
            yield Fetched(None, BatchMeta(no, 0, [], int(worker), errors, state))
            continue
        if kind == _LAST:  # the batch ends the stream: reported first, received together
            yield Fetched(None, BatchMeta(END_NO, 0, [], int(worker), None, state))
        n = batch_len(batch) if batched else 1
        yield Fetched(batch, BatchMeta(b, n, [], int(worker), errors, state, timing))
        b += 1


class IterableEngine(StockEngine):
    """Worker processes of a stock DataLoader over an iterable dataset (NOTE [iterable
    loader]); its work is a :class:`ShardPlan`."""

    def __init__(
        self, dataset: Any, *, batch_size: int | None, drop_last: bool, collate_fn: Callable[[Any], Any],
        num_workers: int, pin_memory: bool, persistent: bool, seeding: WorkerSeeding, **options: Any,
    ) -> None:
        self.batched = batch_size is not None
        self.source = ResumableSource(dataset, batch_size or 1, num_workers, seeding)
        dataloader = torch.utils.data.DataLoader(
            self.source, batch_size=batch_size, drop_last=drop_last, num_workers=num_workers,
            collate_fn=TaggedCollate(collate_fn, self.batched, drop_last, self.source),
            pin_memory=pin_memory,
            **dataloader_options(num_workers, persistent=persistent, seeding=seeding, **options),
        )
        super().__init__(dataloader, timeout=options["timeout"])

    def start(self, work: ShardPlan) -> Iterator[Fetched]:
        self.source.set_plan(work)
        if work.elastic is not None:
            # the units reach the workers' copies as they start (NOTE [elastic shards])
            self.close()
            self.source.elastic = work.elastic
        if work.states is None:
            return fetched_batches(self._begin(), work.start, self.batched)
        # NOTE: the states reach the workers' copies as they start, so a resumed pass
        # starts fresh workers; with none the main process's dataset loads them lazily
        self.close()
        self.source.pending = list(zip(work.states, work.ended or [False] * len(work.states)))
        raw = self._begin()
        if self.dataloader.num_workers > 0:
            self.source.pending = None
        return fetched_batches(raw, work.start, self.batched)
