"""A Chrome trace (chrome://tracing, https://ui.perfetto.dev) of a doctor run.

NOTE [trace lanes]: one process per rank, one lane (thread) per loader worker, from
the loader's ``stats()["timeline"]`` (one entry per batch: its worker, start, end
and seconds per stage), and one "consumer" lane from the doctor's own timing: the
wait for each batch, then the step. A worker's batch is a slice from its start to
its end; inside it the stages are laid out one after another in pipeline order
with their measured durations. The durations are measured; their order inside the
batch is schematic (a batch's samples interleave read, decode and transform).
Times are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, shared by processes),
in microseconds from the earliest event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataforge.doctor.diagnosis import CONSUMER_STAGES, WORKER_STAGES
from dataforge.doctor.run import RunResult

_ORDER = (*WORKER_STAGES, *CONSUMER_STAGES)


def lane_key(worker: str) -> tuple[int, int, str]:
    """Sort key of worker ids: ``"main"`` first, then ``"0"``, ``"1"``, ... by number."""
    return (1, int(worker), "") if worker.isdigit() else (0, 0, worker)


def trace_events(run: RunResult, rank: int = 0) -> list[dict[str, Any]]:
    """The trace events of ``run`` (NOTE [trace lanes])."""
    timeline = run.stats.get("timeline") or []
    starts = [c[0] for c in run.consumer] + [float(e["start"]) for e in timeline]
    if not starts:
        return []
    origin = min(starts)

    def us(t: float) -> float:
        return round((t - origin) * 1e6, 1)

    workers = sorted({str(e["worker"]) for e in timeline}, key=lane_key)
    tids = {w: i + 1 for i, w in enumerate(workers)}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": f"rank {rank}"}},
        {"name": "thread_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": "consumer (wait, step)"}},
    ]
    for w, tid in tids.items():
        name = "loader (main process)" if w == "main" else f"worker {w}"
        events.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": name}})
    for i, (t0, t1, t2) in enumerate(run.consumer):
        events.append({"name": "wait", "cat": "consumer", "ph": "X", "pid": rank, "tid": 0,
                       "ts": us(t0), "dur": us(t1) - us(t0), "args": {"batch": i}})
        events.append({"name": "step", "cat": "consumer", "ph": "X", "pid": rank, "tid": 0,
                       "ts": us(t1), "dur": us(t2) - us(t1), "args": {"batch": i}})
    for e in timeline:
        tid = tids[str(e["worker"])]
        start, end = float(e["start"]), float(e["end"])
        stages = {k: float(v) for k, v in (e.get("stages") or {}).items()}
        events.append({"name": "batch", "cat": "loader", "ph": "X", "pid": rank, "tid": tid,
                       "ts": us(start), "dur": us(end) - us(start),
                       "args": {k: round(v * 1000, 3) for k, v in stages.items()}})
        t = start
        for name in sorted(stages, key=lambda s: _ORDER.index(s) if s in _ORDER else len(_ORDER)):
            dur = min(stages[name], max(0.0, end - t))
            if dur <= 0:
                continue
            events.append({"name": name, "cat": "stage", "ph": "X", "pid": rank, "tid": tid,
                           "ts": us(t), "dur": us(t + dur) - us(t)})
            t += dur
    return events


def write_trace(path: str | Path, events: list[dict[str, Any]]) -> Path:
    """Write ``{"traceEvents": events}`` to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return path
