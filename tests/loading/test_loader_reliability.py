"""Worker crashes, hangs and early exits, each in a subprocess with a hard timeout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "loading_crash_script.py")


SCENARIOS = [  # the thread hang last: its hung daemon thread cannot be stopped
    "break:process:1", "break:process:0", "break:thread:0", "cycle:process:1",
    "segv:process:1", "kill:process:1", "hang:process:0", "hang:thread:0",
]


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    # NOTE: one fresh interpreter runs every scenario (torch is imported once); the hard
    # timeout turns any hang into a failure instead of a stuck CI job
    proc = subprocess.run(
        [sys.executable, SCRIPT, *SCENARIOS], capture_output=True, text=True, timeout=150,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(SCRIPT))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for line in proc.stdout.strip().splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            out[item["spec"]] = item
    return out


def _get(results: dict[str, dict], spec: str) -> dict:
    out = results[spec]
    for pid in out.get("pids", []):  # no orphans once the scenario's process is gone
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    return out


@pytest.mark.parametrize("how", ["segv", "kill"])
def test_worker_death_gives_a_clear_error_naming_the_worker(results, how: str) -> None:
    out = _get(results, f"{how}:process:1")
    assert out["type"] == "RuntimeError"
    assert out["seconds"] < 10, out
    err = out["error"]
    # NOTE [worker deaths]: from next(), never from torch's SIGCHLD handler in the loop body
    signame = "SIGSEGV" if how == "segv" else "SIGKILL"
    assert re.search(rf"worker process\(es\) died: worker \d \(pid \d+, killed by signal {signame}\)", err), err
    assert out["gone_after"] is not None, "workers still alive 5 s after the error"


def test_hung_getitem_times_out(results) -> None:
    out = _get(results, "hang:process:0")
    assert out["type"] == "RuntimeError" and "timed out" in out["error"], out
    assert out["seconds"] < 5, out
    assert out["gone_after"] is not None


def test_hung_getitem_times_out_in_the_thread_engine(results) -> None:
    out = _get(results, "hang:thread:0")
    assert out["type"] == "RuntimeError" and "timed out" in out["error"], out
    assert out["seconds"] < 5, out


@pytest.mark.parametrize(("engine", "persistent"), [("process", "1"), ("process", "0"), ("thread", "0")])
def test_breaking_early_and_deleting_ends_workers(results, engine: str, persistent: str) -> None:
    out = _get(results, f"break:{engine}:{persistent}")
    if engine == "process":
        assert len(out["pids"]) == 2
        assert out["gone_after"] is not None and out["seconds"] < 5, out
    assert out["threads_after"] == 0, out


def test_a_loader_collected_in_a_reference_cycle_ends_its_workers(results) -> None:
    out = _get(results, "cycle:process:1")
    assert len(out["pids"]) == 2 and out["gone_after"] is not None and out["seconds"] < 5, out


EXIT_WHILE_BUSY = """
import time, torch, dataforge

class Busy:
    def __len__(self): return 64
    def __getitem__(self, i):
        x = torch.ones(100)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < (0.01 if i < 4 else 1.0):
            x = x * 1.0001  # frees the previous tensor, which releases and retakes the GIL
        return x

loader = dataforge.build_loader(Busy(), batch_size=2, num_workers=2, engine="thread")
it = iter(loader); next(it); next(it)
del it
loader.close(); del loader
print("exiting", flush=True)
"""


def test_exiting_while_fetch_threads_finish_a_batch_does_not_abort() -> None:
    # NOTE [threads at exit]: the pool object is gone but its threads are still in torch ops
    # when the interpreter shuts down; without the exit join this aborted every time
    # ("terminate called without an active exception", exit status -6)
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_WHILE_BUSY], capture_output=True, text=True, timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(SCRIPT))),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "exiting"
