from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from dataforge.bench.common import BenchError, usable_cores
from dataforge.bench.runner import (
    Arm,
    _cpu_delta,
    _cpu_snapshot,
    check_workers,
    cores_in_use,
    measure,
    memory_mb,
    resolve_device,
    run_arms,
    timed_window,
)


def _list_arm(name="list", batches=4, log=None, fail=False):
    def make(workers):
        if log is not None:
            log.append((name, workers))
        if fail:
            raise RuntimeError("boom\nsecond line")
        return [[0] * 8 for _ in range(batches)]

    return Arm(name, f"{name} arm", make, lambda b: {"samples": len(b), "tokens": 2 * len(b)})


def test_measure_counts_and_restarts_passes():
    stats = measure(_list_arm(batches=3), 0, seconds=0.05, warmup=0.0, min_warmup_batches=1)
    assert stats.window_s >= 0.05
    assert stats.counters["samples"] > 0 and stats.counters["tokens"] == 2 * stats.counters["samples"]
    assert stats.passes > 1  # 3 batches cannot fill 50 ms: new passes started
    assert stats.samples_per_s == pytest.approx(stats.counters["samples"] / stats.window_s)
    assert stats.first_batch_s >= 0 and stats.peak_mem_mb > 0 and stats.mem_kind in ("pss", "rss")


def test_measure_empty_arm_is_a_clear_error():
    with pytest.raises(BenchError, match="produced no batch"):
        measure(_list_arm(batches=0), 0, seconds=0.01, warmup=0.0)


def test_measure_rejects_bad_seconds():
    with pytest.raises(BenchError, match="seconds"):
        measure(_list_arm(), 0, seconds=0)


def test_run_arms_interleaves_rotates_and_isolates_failures():
    log: list[tuple[str, int]] = []
    arms = [_list_arm("a", log=log), _list_arm("b", log=log), _list_arm("bad", log=log, fail=True),
            Arm("gone", "absent arm", lambda w: [], lambda b: {}, absent="not installed")]
    out = run_arms(arms, [0, 1], seconds=0.01, repeats=2, warmup=0.0)
    assert [(s.arm.name, s.workers) for s in out] == [(a.name, w) for w in (0, 1) for a in arms]
    # repeat 1: a, b, bad at each workers count; then rotated; "bad" is not retried.
    assert log[:6] == [("a", 0), ("b", 0), ("bad", 0), ("a", 1), ("b", 1), ("bad", 1)]
    assert log[6:8] == [("b", 0), ("a", 0)]
    by = {(s.arm.name, s.workers): s.to_dict() for s in out}
    assert by[("a", 0)]["status"] == "ok" and by[("a", 0)]["repeats"] == 2
    assert len(by[("a", 0)]["samples_per_s_runs"]) == 2
    assert by[("bad", 1)] | {} == {**by[("bad", 1)], "status": "failed", "reason": "RuntimeError: boom"}
    assert by[("gone", 0)]["status"] == "absent" and by[("gone", 0)]["reason"] == "not installed"
    assert "samples_per_s" not in by[("gone", 0)]


def test_run_arms_on_repeat_hook():
    seen: list[int] = []
    run_arms([_list_arm()], [0], seconds=0.01, repeats=2, warmup=0.0, on_repeat=seen.append)
    assert seen == [0, 1]
    with pytest.raises(BenchError, match="repeats"):
        run_arms([_list_arm()], [0], seconds=0.01, repeats=0)


def test_timed_window_adds_up_what_the_calls_did_and_syncs_around_each():
    log: list[str] = []

    def call() -> int:
        log.append("call")
        time.sleep(0.004)
        return 3

    w = timed_window(call, 0.02, sync=lambda: log.append("sync"))
    calls = log.count("call")
    assert calls >= 2 and w.done == 3 * calls and isinstance(w.done, int)
    assert log == ["sync"] + ["call", "sync"] * calls  # a sync before the window, after each call
    assert w.wall_s >= 0.02 and 0 <= w.cpu_s < w.wall_s  # sleeping takes no CPU
    once = timed_window(lambda: 1, 0.0)  # at least one call, even with nothing to fill
    assert once.done == 1 and once.wall_s >= 0


def test_cpu_delta_accounts_for_live_and_reaped_children():
    a = (1.0, 0.0, {10: 0.5, 11: 0.3})
    b = (2.0, 0.9, {10: 1.5})  # 11 was reaped with 0.9 s in total, 0.3 s of it before `a`
    assert _cpu_delta(a, b) == pytest.approx(1.0 + (0.9 - 0.3) + 1.0)


def _burn(seconds: float, done, release) -> None:
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass
    done.set()
    release.wait(30)


def test_cpu_snapshot_sees_child_processes():
    pytest.importorskip("psutil")
    ctx = mp.get_context("fork")
    done, release = ctx.Event(), ctx.Event()
    a = _cpu_snapshot()
    p = ctx.Process(target=_burn, args=(0.3, done, release))
    p.start()
    try:
        assert done.wait(30)
        assert _cpu_delta(a, _cpu_snapshot()) >= 0.25  # the live child's CPU time
    finally:
        release.set()
        p.join(30)
    assert _cpu_delta(a, _cpu_snapshot()) >= 0.25  # still counted once it is reaped


def test_memory_mb():
    mb, kind = memory_mb()
    assert mb > 1 and kind in ("pss", "rss")


def test_check_workers():
    assert check_workers(None, [0, 2, 2]) == [0, 2]
    assert check_workers([1, 1, 3], [0]) == [1, 3]
    for bad in ([-1], [1.5], [True], []):
        with pytest.raises(BenchError, match="--workers"):
            check_workers(bad, [0])


def test_cores_in_use():
    cores = usable_cores()
    assert cores_in_use(1) == 1
    assert cores_in_use(10_000) == cores
    assert cores_in_use(0, main_threads=1) == 1
    assert cores_in_use(0) == max(1, min(cores, torch.get_num_threads()))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BenchError, match="cpu, cuda or auto"):
        resolve_device("mps")
    with pytest.raises(BenchError, match="cpu, cuda or auto"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="no CUDA device"):
            resolve_device("cuda")


def test_cpu_seconds_per_call_counts_cpu_not_waiting():
    from dataforge.bench.runner import cpu_seconds_per_call

    def busy() -> None:
        t = time.thread_time()
        while time.thread_time() - t < 0.004:
            pass

    threads = torch.get_num_threads()
    assert cpu_seconds_per_call(lambda: time.sleep(0.01), min_seconds=0.01) < 0.003
    assert 0.0035 < cpu_seconds_per_call(busy, repeats=2, min_seconds=0.02) < 0.02
    assert torch.get_num_threads() == threads  # restored


def test_memory_sampler_tracks_peak_and_its_own_cpu():
    from dataforge.bench.runner import _MemorySampler

    with _MemorySampler(0.01) as mem:
        time.sleep(0.15)
    assert mem.peak > 1 and mem.kind in ("pss", "rss")
    assert mem.cpu_s > 0  # what measure() subtracts from the arm's CPU seconds
