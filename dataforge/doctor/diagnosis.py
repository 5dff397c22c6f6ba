"""The verdict: is the run data-bound, which stage bounds it, and the evidence.

NOTE [bounding stage]: each stage is charged on the resource that runs it. Worker
stages (fetch, read, decode, transform, collate, pin, and any other name a dataset
gives with ``dataforge.loading.stages.stage``) run on ``num_workers`` workers in
parallel, so their cost per batch is their summed seconds / batches / workers; the
consumer-side stages (h2d, batch_transform) run one batch at a time, so their cost
per batch is their seconds / batches. The bounding stage is the one with the
largest cost per batch: it sets the rate at which batches can come out. The run is
data-bound when the consumer waited at least ``DATA_BOUND`` (10%) of the steady-state
time; below that the step is the bound and a faster pipeline would not speed up
training.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from dataforge.doctor.run import RunResult

WORKER_STAGES = ("fetch", "read", "decode", "transform", "collate", "pin")  # pipeline order
CONSUMER_STAGES = ("h2d", "batch_transform")
WAIT = "wait"  # the consumer's wait, reported with the stages; not a stage of the pipeline
DATA_BOUND = 0.10
SATURATED = 0.80  # workers busy at least this share of the run: adding workers may help
SLOW_WORKER = 1.5  # a worker this many times slower per batch than the median is named


@dataclass
class Diagnosis:
    """The doctor's verdict on one run.

    Attributes:
        data_bound: the consumer waited at least ``DATA_BOUND`` of the time.
        bound: the bounding stage (NOTE [bounding stage]), ``"step"`` when not data-bound
            (the stage that would bound next is then in ``next_stage``), or ``"unknown"``
            when the loader reports no stage timings.
        next_stage: the costliest pipeline stage even when the step is the bound.
        per_batch_ms: cost per batch of each stage on its resource, in ms.
        share: each worker stage's share of the workers' time.
        busy: the workers' busy share of the run (``None`` when unknown).
        evidence: the figures behind the verdict, one sentence each.
    """

    data_bound: bool
    bound: str
    next_stage: str | None
    per_batch_ms: dict[str, float] = field(default_factory=dict)
    share: dict[str, float] = field(default_factory=dict)
    busy: float | None = None
    evidence: list[str] = field(default_factory=list)

    @property
    def saturated(self) -> bool:
        return self.busy is not None and self.busy >= SATURATED


def _seconds(stages: dict[str, Any], name: str) -> float:
    entry = stages.get(name)
    if isinstance(entry, dict):
        return float(entry.get("seconds", 0.0))
    return 0.0


def _count(stages: dict[str, Any], name: str) -> int:
    entry = stages.get(name)
    return int(entry.get("count", 0)) if isinstance(entry, dict) else 0


def worker_stages(stages: dict[str, Any]) -> list[str]:
    """The worker stages among ``stages``: the known ones in pipeline order, then the
    names a dataset gave its own (NOTE [bounding stage])."""
    known = [s for s in WORKER_STAGES if s in stages]
    other = (s for s in stages if s not in WORKER_STAGES and s not in CONSUMER_STAGES and s != WAIT)
    return known + sorted(other)


def _workers(stats: dict[str, Any]) -> int:
    n = stats.get("num_workers")
    if isinstance(n, int) and n > 0:
        return n
    return 1


def stage_costs(stats: dict[str, Any]) -> dict[str, float]:
    """Seconds per batch of each stage on its resource (NOTE [bounding stage])."""
    stages = stats.get("stages") or {}
    batches = max(1, int(stats.get("batches", 0)))
    n = _workers(stats)
    costs = {}
    for name in worker_stages(stages):
        if _seconds(stages, name) > 0:
            costs[name] = _seconds(stages, name) / batches / n
    for name in CONSUMER_STAGES:
        if _seconds(stages, name) > 0:
            costs[name] = _seconds(stages, name) / batches
    return costs


def _slow_workers(stats: dict[str, Any]) -> list[str]:
    per_batch = {}
    for wid, w in (stats.get("workers") or {}).items():
        b = int(w.get("batches", 0))
        if b > 0:
            st = w.get("stages") or {}
            busy = sum(_seconds(st, s) for s in worker_stages(st))
            per_batch[str(wid)] = busy / b
    if len(per_batch) < 2:
        return []
    median = statistics.median(per_batch.values())
    return [
        f"worker {wid} is slow: {1000 * v:.1f} ms per batch against a median of {1000 * median:.1f} ms"
        for wid, v in sorted(per_batch.items())
        if median > 0 and v > SLOW_WORKER * median
    ]


def diagnose(run: RunResult) -> Diagnosis:
    """The verdict on ``run`` (NOTE [bounding stage])."""
    stats = run.stats
    wait = run.wait_fraction
    data_bound = wait >= DATA_BOUND
    interval = 1000 * run.seconds / run.batches if run.batches else float("nan")
    evidence = [
        f"the consumer waited {100 * wait:.0f}% of the steady-state time "
        f"(a batch every {interval:.1f} ms)"
    ]
    costs = stage_costs(stats)
    if not costs:
        evidence.append(
            "stage timings n/a: the loader's stats() has no 'stages' (NOTE [bounding stage])"
        )
        return Diagnosis(data_bound, "unknown" if data_bound else "step", None, evidence=evidence)
    stages = stats.get("stages") or {}
    names = worker_stages(stages)
    worker_total = sum(_seconds(stages, s) for s in names)
    share = {s: _seconds(stages, s) / worker_total for s in names if worker_total > 0
             and _seconds(stages, s) > 0}
    n = _workers(stats)
    wall = float(stats.get("wall_s") or 0.0)
    busy = worker_total / (n * wall) if wall > 0 else None
    top = max(costs, key=lambda s: costs[s])
    per_sample = _seconds(stages, top) / max(1, _count(stages, top))
    where = f"{n} worker{'s' * (n != 1)}" if top in names else "the consumer side"
    line = f"{top} costs {1000 * costs[top]:.1f} ms per batch on {where}"
    if top in share:
        line += f" ({100 * share[top]:.0f}% of the workers' time, {1000 * per_sample:.2f} ms per call)"
    evidence.append(line)
    if busy is not None and top in names:
        who = ("the main process" if stats.get("num_workers") == 0
               else f"the {n} workers" if n > 1 else "the one worker")
        evidence.append(f"{who} {'were' if n != 1 else 'was'} busy {100 * min(busy, 1.0):.0f}% of the run")
    evidence.extend(_slow_workers(stats))
    if not data_bound:
        evidence.append("the loader keeps up with the step: a faster pipeline would not speed up training")
    return Diagnosis(
        data_bound=data_bound, bound=top if data_bound else "step", next_stage=top,
        per_batch_ms={k: 1000 * v for k, v in costs.items()}, share=share, busy=busy, evidence=evidence,
    )
