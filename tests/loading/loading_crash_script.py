"""Run one reliability scenario in a fresh process; print one JSON line.

Used by test_loader_reliability.py through ``subprocess.run(..., timeout=...)`` so
that a hang fails the test instead of hanging CI.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import psutil  # noqa: E402
from loading_fixtures import Crashing, worker_pids  # noqa: E402

import dataforge  # noqa: E402


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(pids: list[int], limit: float = 5.0) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if not _alive(pids):
            return time.perf_counter() - t0
        time.sleep(0.05)
    return None


def crash(how: str, engine: str, persistent: bool) -> dict:
    timeout = 1 if how == "hang" else 0
    # the worker dies only once its pid is read
    gate = os.path.join(tempfile.mkdtemp(prefix="dataforge-crash-"), "go")
    loader = dataforge.build_loader(
        Crashing(how, at=9, gate=gate), batch_size=2, num_workers=2, engine=engine,
        persistent_workers=persistent, timeout=timeout,
    )
    it = iter(loader)
    next(it)
    pids = worker_pids()
    open(gate, "w").close()
    t0 = time.perf_counter()
    result = {"error": None, "type": None}
    try:
        for _ in it:
            pass
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result = {"error": str(exc), "type": type(exc).__name__}
    result["seconds"] = time.perf_counter() - t0
    del it
    loader.close()
    result["gone_after"] = _wait_gone(pids)
    result["pids"] = pids
    return result


def early_break(engine: str, persistent: bool) -> dict:
    loader = dataforge.build_loader(
        list(range(64)), batch_size=2, num_workers=2, engine=engine, persistent_workers=persistent
    )
    for i, _ in enumerate(loader):
        if i == 1:
            break
    for i, _ in enumerate(loader):  # a second, broken-off epoch
        if i == 2:
            pids = worker_pids()
            break
    threads_before = len([t for t in __import__("threading").enumerate() if t.name.startswith("dataforge")])
    t0 = time.perf_counter()
    del loader
    gc.collect()
    gone = _wait_gone(pids)
    return {
        "pids": pids,
        "gone_after": gone,
        "seconds": time.perf_counter() - t0,
        "threads_before": threads_before,
        "threads_after": _dataforge_threads_after(),
    }


def in_a_cycle() -> dict:
    """The loader is garbage in a reference cycle of the user's: collected by gc, not refcount."""

    class Holder:
        pass

    h = Holder()
    h.me = h
    h.loader = dataforge.build_loader(list(range(64)), batch_size=2, num_workers=2)
    for i, _ in enumerate(h.loader):
        if i == 1:
            pids = worker_pids()
            break
    t0 = time.perf_counter()
    del h
    gc.collect()
    gone = _wait_gone(pids)
    return {"pids": pids, "gone_after": gone, "seconds": time.perf_counter() - t0}


def _dataforge_threads_after(limit: float = 5.0) -> int:
    import threading

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        n = len([t for t in threading.enumerate() if t.name.startswith("dataforge")])
        if n == 0:
            return 0
        time.sleep(0.05)
    return n


if __name__ == "__main__":
    # each argument is "scenario:engine:persistent"; one JSON line per scenario
    for spec in sys.argv[1:]:
        scenario, engine, persistent = spec.split(":")
        if scenario == "break":
            out = early_break(engine, persistent == "1")
        elif scenario == "cycle":
            out = in_a_cycle()
        else:
            out = crash(scenario, engine, persistent == "1")
        print(json.dumps({"spec": spec, **out}), flush=True)
