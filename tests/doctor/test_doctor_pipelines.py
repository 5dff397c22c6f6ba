"""The doctor on pipelines with a known bottleneck: it names the stage, and its top advice
improves the measured throughput in its own trial run (issue #20, "Done when")."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import doctor_pipelines as pl
import pytest

import dataforge
from dataforge.doctor.diagnosis import SATURATED

# NOTE: short runs; every bottleneck is a sleep of several ms per sample or batch, so a
# doubled worker count or a moved transform gains far more than the noise of a busy machine
RUN = {"seconds": 1.2, "step_ms": 2.0, "trial_seconds": 0.8, "max_trials": 3}


def _check(report: Any, stage: str) -> None:
    assert report.diagnosis.data_bound, str(report)
    assert report.diagnosis.bound == stage, str(report)
    top = report.top
    assert top is not None, str(report)
    assert top.samples_per_s > 1.3 * report.run.samples_per_s, str(report)


def test_slow_read_is_named_and_more_workers_help() -> None:
    report = dataforge.doctor(pl.slow_read, **RUN)
    _check(report, "read")
    assert "read" in str(report)


def test_expensive_transform_is_moved_to_the_device() -> None:
    report = dataforge.doctor(pl.slow_transform, **RUN)
    _check(report, "transform")
    assert report.top.change == {"transform_on_device": True}, str(report)


def test_heavy_collate_is_named() -> None:
    report = dataforge.doctor(pl.heavy_collate, **RUN)
    _check(report, "collate")


def test_one_worker_is_under_provisioned() -> None:
    report = dataforge.doctor(pl.one_worker, **RUN)
    _check(report, "fetch")
    assert report.diagnosis.busy is not None and report.diagnosis.busy >= SATURATED, str(report)
    assert report.top.change == {"num_workers": 2}, str(report)


def test_a_step_bound_run_says_so_and_tries_fewer_workers() -> None:
    report = dataforge.doctor(pl.slow_read, seconds=1.0, step_ms=60.0, trial_seconds=0.8)
    assert not report.diagnosis.data_bound and report.diagnosis.bound == "step", str(report)
    assert [t.change for t in report.trials] == [{"num_workers": 1}]
    assert "the step is the bound" in str(report)


@pytest.mark.parametrize("engine", ["process"])
def test_process_workers_report_stages_and_memory(engine: str) -> None:
    # A child process alive before the run (a server, another pool) is no worker.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        report = dataforge.doctor(lambda **kw: pl.slow_read(engine=engine, **kw), seconds=1.0,
                                  step_ms=2.0, trials=False)
    finally:
        bystander.kill()
        bystander.wait()
    assert report.diagnosis.bound == "read", str(report)
    workers = report.run.stats["workers"]
    assert set(workers) == {"0", "1"}
    mem = report.memory_summary()
    if mem:  # psutil present
        assert sum(label.startswith("worker pid") for label in mem) == 2, mem


def test_a_given_loader_is_rebuilt_for_trials_and_left_open() -> None:
    loader = dataforge.build_loader(pl.Sleepy(plain_s=0.004), batch_size=pl.BATCH, num_workers=1,
                                    engine="thread")
    try:
        report = dataforge.doctor(loader, seconds=0.8, step_ms=2.0, trial_seconds=0.6, max_trials=1)
        assert [t.change for t in report.trials] == [{"num_workers": 2}], str(report)
        assert report.trials[0].effect is not None and report.trials[0].effect > 0.3, str(report)
        assert len(next(iter(loader))) == pl.BATCH  # the doctor does not close what it was given
    finally:
        loader.close()
