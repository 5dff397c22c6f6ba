"""The doctor's parts on made-up figures: verdict, stragglers, trace, memory, rebuild rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dataforge
from dataforge.doctor import memory
from dataforge.doctor.diagnosis import DATA_BOUND, diagnose
from dataforge.doctor.ranks import MARGIN, stragglers
from dataforge.doctor.run import RunResult, make_step, run_pipeline
from dataforge.doctor.trace import trace_events, write_trace
from dataforge.doctor.trials import GAIN, Rebuilder, Trial, advised


def _stats(stages: dict[str, float], *, workers: int = 2, batches: int = 100, wall: float = 10.0) -> dict:
    per = {k: {"seconds": v / workers, "count": batches * 8 // workers} for k, v in stages.items()}
    return {
        "batches": batches, "samples": batches * 8, "wall_s": wall, "num_workers": workers,
        "stages": {k: {"seconds": v, "count": batches * 8} for k, v in stages.items()},
        "workers": {str(w): {"stages": per, "batches": batches // workers, "samples": batches * 8 // workers}
                    for w in range(workers)},
        "timeline": [],
    }


def _run(wait_fraction: float, stats: dict, seconds: float = 10.0, batches: int = 100) -> RunResult:
    return RunResult(seconds=seconds, batches=batches, samples=batches * 8,
                     wait_s=wait_fraction * seconds, time_to_first_batch_s=0.1, stats=stats)


def test_verdict_names_the_costliest_stage_on_its_resource() -> None:
    # 2 workers: read 12 s -> 60 ms per batch; h2d 4 s on the consumer side -> 40 ms per batch
    d = diagnose(_run(0.6, _stats({"read": 12.0, "decode": 4.0, "collate": 1.0, "h2d": 4.0})))
    assert d.data_bound and d.bound == "read"
    assert d.per_batch_ms["read"] == pytest.approx(60.0)
    assert d.per_batch_ms["h2d"] == pytest.approx(40.0)
    assert d.busy == pytest.approx(17.0 / 20.0)
    assert any("read costs 60.0 ms per batch on 2 workers" in e for e in d.evidence)
    # the consumer-side copy wins when it is the slowest per batch
    d = diagnose(_run(0.6, _stats({"read": 4.0, "h2d": 8.0})))
    assert d.bound == "h2d"


def test_a_run_that_barely_waits_is_step_bound() -> None:
    d = diagnose(_run(DATA_BOUND / 2, _stats({"read": 6.0})))
    assert not d.data_bound and d.bound == "step" and d.next_stage == "read"
    assert any("keeps up" in e for e in d.evidence)


def test_a_stage_the_dataset_named_is_a_worker_stage_and_wait_is_not() -> None:
    # 2 workers: augment 16 s -> 80 ms per batch; the consumer's wait is no pipeline stage
    d = diagnose(_run(0.6, _stats({"read": 4.0, "augment": 16.0, "pin": 1.0, "wait": 50.0})))
    assert d.bound == "augment" and set(d.per_batch_ms) == {"read", "augment", "pin"}
    assert any("augment costs 80.0 ms per batch on 2 workers" in e for e in d.evidence)
    assert d.busy == pytest.approx(21.0 / 20.0)


def test_no_stage_timings_says_so() -> None:
    d = diagnose(_run(0.5, {}))
    assert d.bound == "unknown" and any("n/a" in e for e in d.evidence)


def test_a_slow_worker_is_named() -> None:
    stats = _stats({"read": 4.0})
    stats["workers"]["1"]["stages"] = {"read": {"seconds": 8.0, "count": 400}}
    d = diagnose(_run(0.5, stats))
    assert any(e.startswith("worker 1 is slow") for e in d.evidence)


def _summary(rank: int, wait: float, read_ms: float) -> dict:
    return {"rank": rank, "wait_fraction": wait, "samples_per_s": 100.0, "bound": "read",
            "ms_per_sample": {"read": read_ms, "collate": 0.1}}


def test_stragglers_exceed_the_median_by_the_margin() -> None:
    ranks = [_summary(0, 0.05, 1.0), _summary(1, 0.07, 1.1), _summary(2, 0.40, 4.0), _summary(3, 0.06, 1.0)]
    out = stragglers(ranks)
    assert [s["rank"] for s in out] == [2]
    assert out[0]["stage"] == "read" and out[0]["excess_ms"] == pytest.approx(3.0)
    # just inside the margin: no straggler
    median = 0.065
    ranks[2]["wait_fraction"] = median + MARGIN - 0.01
    assert stragglers(ranks) == []
    assert stragglers([_summary(0, 0.9, 5.0)]) == []


def test_trace_has_a_lane_per_worker_and_the_consumer(tmp_path: Path) -> None:
    stats = {"timeline": [
        {"worker": "0", "start": 10.0, "end": 10.05, "stages": {"read": 0.03, "collate": 0.01}},
        {"worker": "1", "start": 10.01, "end": 10.06, "stages": {"read": 0.04}},
    ]}
    run = RunResult(seconds=0.1, batches=1, samples=8, wait_s=0.05, time_to_first_batch_s=0.05,
                    consumer=[(10.0, 10.05, 10.06), (10.06, 10.07, 10.08)], stats=stats)
    events = trace_events(run, rank=3)
    lanes = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert lanes == {"consumer (wait, step)", "worker 0", "worker 1"}
    assert {e["pid"] for e in events} == {3}
    read0 = next(e for e in events if e["name"] == "read" and e["tid"] == 1)
    assert read0["ts"] == 0.0 and read0["dur"] == pytest.approx(30000.0)
    collate0 = next(e for e in events if e["name"] == "collate")
    assert collate0["ts"] == pytest.approx(30000.0)  # laid out after read (NOTE [trace lanes])
    waits = [e for e in events if e["name"] == "wait"]
    assert [w["dur"] for w in waits] == pytest.approx([50000.0, 10000.0])
    doc = json.loads(write_trace(tmp_path / "t.json", events).read_text())
    assert len(doc["traceEvents"]) == len(events)


def test_memory_summary_keeps_processes_seen_at_both_ends() -> None:
    a = memory.MemorySample(0.0, {"main": 100, "worker pid 7": 50, "worker pid 8": 10})
    b = memory.MemorySample(1.0, {"main": 130, "worker pid 7": 40})
    assert memory.summarize([a, b]) == {
        "main": {"first": 100, "last": 130, "growth": 30},
        "worker pid 7": {"first": 50, "last": 40, "growth": -10},
    }
    assert memory.summarize([]) == {}


def test_advice_is_only_what_measured_better() -> None:
    t = [Trial({"num_workers": 4}, "", effect=0.8), Trial({"engine": "process"}, "", effect=GAIN / 2),
         Trial({"pin_memory": True}, "", effect=None, error="boom"), Trial({"bucketing": True}, "", effect=1.5)]
    assert [x.label for x in advised(t, data_bound=True)] == ["bucketing=True", "num_workers=4"]
    # step-bound: a change that keeps the speed (fewer workers) is advice too
    fewer = Trial({"num_workers": 1}, "", effect=-GAIN / 2)
    assert advised([fewer], data_bound=False) == [fewer]


def test_rebuild_rules() -> None:
    def knobs(num_workers: int = 0, transform_on_device: bool = False) -> object:
        return None

    r = Rebuilder(knobs)
    assert r.accepts == {"num_workers", "transform_on_device"}
    assert r.defaults == {"num_workers": 0, "transform_on_device": False}

    def forwards(**kw: object) -> object:
        return None

    assert Rebuilder(forwards).accepts == {"num_workers", "engine", "pin_memory"}
    with pytest.raises(TypeError, match="needs an argument 'path'"):
        Rebuilder(lambda path: None)
    with pytest.raises(TypeError, match="loader_or_factory must be"):
        Rebuilder(3)
    with pytest.raises(TypeError, match="returned a int, not an iterable of batches"):
        Rebuilder(lambda: 3).baseline()
    # a stock DataLoader: measured, never rebuilt
    stock = Rebuilder(torch.utils.data.DataLoader(list(range(4))))
    assert stock.factory is None and "no trials" in (stock.note or "")


def test_a_loader_is_rebuilt_from_its_public_arguments() -> None:
    loader = dataforge.build_loader(torch.arange(20), batch_size=4, shuffle=True, seed=5,
                                    num_workers=0, drop_last=True)
    rebuilt = Rebuilder(loader).build(num_workers=1, engine="thread")
    try:
        assert (rebuilt.num_workers, rebuilt.engine) == (1, "thread")
        assert [b.tolist() for b in rebuilt] == [b.tolist() for b in loader]
    finally:
        rebuilt.close()
        loader.close()


def test_run_checks_its_arguments_and_stops_on_time() -> None:
    with pytest.raises(ValueError, match="step_ms must be"):
        make_step(None, -1)
    with pytest.raises(TypeError, match="step must be a callable"):
        make_step(3, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds must be a positive number"):
        run_pipeline([torch.zeros(2)], 0, make_step(None, 0))
    with pytest.raises(ValueError, match="yields no batch"):
        run_pipeline([], 0.1, make_step(None, 0))
    steps: list[int] = []
    r = run_pipeline([torch.zeros(4)] * 3, 0.05, lambda b: steps.append(len(b)))
    assert r.seconds >= 0.05 and r.samples == 4 * r.batches and len(steps) == r.batches + 1
    with pytest.raises(ValueError, match="max_trials must be"):
        dataforge.doctor([torch.zeros(2)], seconds=0.1, max_trials=-1)
    with pytest.raises(ValueError, match="trial_seconds must be"):
        dataforge.doctor([torch.zeros(2)], seconds=0.1, trial_seconds=0)


def test_trials_follow_the_verdict_and_the_factory_arguments() -> None:
    from dataforge.doctor.diagnosis import Diagnosis
    from dataforge.doctor.trials import candidates

    def make(num_workers: int = 2, engine: str = "process", pin_memory: bool = False,
             transform_on_device: bool = False, crop_decode: bool = False, bucketing: bool = False) -> None:
        return None

    r = Rebuilder(make)

    def tried(bound: str, data_bound: bool = True) -> list[dict]:
        d = Diagnosis(data_bound=data_bound, bound=bound if data_bound else "step", next_stage=bound, busy=0.9)
        return [t.change for t in candidates(d, r, object(), {})]

    assert tried("transform") == [{"transform_on_device": True}, {"num_workers": 4}, {"bucketing": True},
                                  {"engine": "thread"}]
    assert tried("decode")[0] == {"crop_decode": True}
    assert {"pin_memory": True} in tried("h2d")
    assert tried("read", data_bound=False) == [{"num_workers": 1}]
    # a factory without the knobs gets only what it takes
    narrow = Rebuilder(lambda num_workers=0: None)
    d = Diagnosis(data_bound=True, bound="transform", next_stage="transform")
    assert [t.change for t in candidates(d, narrow, object(), {})] == [{"num_workers": 2}]
