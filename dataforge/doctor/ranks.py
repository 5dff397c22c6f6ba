"""Across ranks: gather every rank's figures and name the stragglers.

NOTE [straggler margin]: a rank is a straggler when its data-wait fraction exceeds
the median over all ranks by more than ``MARGIN`` = 0.10 (ten points of the
steady-state time: a rank waiting 35% where the median waits 20%). An absolute
margin, not a ratio: between 1% and 3% wait nothing is wrong, though one is three
times the other. In synchronous data-parallel training every rank waits for the
slowest at each all-reduce, so the straggler's extra wait is what the whole job
loses. Its slow stage is the one whose time per sample exceeds the median of the
other ranks by the most.
"""

from __future__ import annotations

import statistics
from typing import Any

from dataforge.doctor.diagnosis import CONSUMER_STAGES, Diagnosis, worker_stages
from dataforge.doctor.run import RunResult

MARGIN = 0.10


def summary(run: RunResult, diag: Diagnosis, rank: int) -> dict[str, Any]:
    """This rank's figures, as plain data for ``all_gather_object``."""
    stages = run.stats.get("stages") or {}
    samples = max(1, int(run.stats.get("samples") or 0))
    per_sample = {
        name: 1000 * float(stages[name].get("seconds", 0.0)) / samples
        for name in (*worker_stages(stages), *CONSUMER_STAGES)
        if isinstance(stages.get(name), dict)
    }
    return {
        "rank": rank, "wait_fraction": run.wait_fraction, "samples_per_s": run.samples_per_s,
        "bound": diag.bound, "ms_per_sample": per_sample,
    }


def gather(mine: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every rank's summary (rank order) under ``torch.distributed``, else ``None``.

    A collective: every rank must call it.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return sorted(out, key=lambda s: s["rank"])


def stragglers(summaries: list[dict[str, Any]], margin: float = MARGIN) -> list[dict[str, Any]]:
    """The ranks whose wait exceeds the median by more than ``margin`` (NOTE [straggler margin]).

    Returns:
        one dict per straggler: ``rank``, ``wait_fraction``, ``median``, ``stage`` (its slow
        stage, ``None`` when no stage timings) and ``excess_ms`` (that stage's ms per sample
        above the other ranks' median).
    """
    if len(summaries) < 2:
        return []
    median = statistics.median(s["wait_fraction"] for s in summaries)
    out = []
    for s in summaries:
        if s["wait_fraction"] - median <= margin:
            continue
        others = [o for o in summaries if o["rank"] != s["rank"]]
        excess = {}
        for name, ms in s["ms_per_sample"].items():
            theirs = [o["ms_per_sample"].get(name, 0.0) for o in others]
            excess[name] = ms - statistics.median(theirs)
        stage = max(excess, key=lambda k: excess[k]) if excess else None
        out.append({
            "rank": s["rank"], "wait_fraction": s["wait_fraction"], "median": median,
            "stage": stage, "excess_ms": excess.get(stage, 0.0) if stage else 0.0,
        })
    return out
