"""NOTE [worker deaths] in process_engine.py: a worker's death surfaces from ``next()``,
never as an exception raised by a signal handler elsewhere in the main thread."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import psutil
import pytest
import torch.utils.data._utils.signal_handling as torch_signals
from loading_fixtures import worker_pids

import dataforge
from dataforge.loading.process_engine import DEATH_POLL_S, death_message

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and SIGCHLD")


@pytest.mark.parametrize("persistent", [False, True])
def test_a_killed_worker_is_reported_by_next_not_by_the_signal_handler(persistent: bool) -> None:
    loader = dataforge.build_loader(
        list(range(400)), batch_size=2, num_workers=2, engine="process",
        persistent_workers=persistent, shuffle=False,
    )
    try:
        it = iter(loader)
        next(it)
        victim = worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and psutil.Process(victim).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)  # the SIGCHLD arrives while "training" runs
        time.sleep(0.1)
        torch_signals._error_if_any_worker_fails()  # nothing of ours is on torch's list
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as info:
            for _ in range(400):
                next(it)
        assert time.monotonic() - t0 < 5 * DEATH_POLL_S + 2
        msg = str(info.value)
        assert f"(pid {victim}, killed by signal SIGKILL)" in msg
        # torch's handler's words, unless the worker died in the middle of a send (then the
        # main process saw the broken pipe first)
        assert (f"(RuntimeError: DataLoader worker (pid {victim}) is killed by signal: " in msg
                or re.search(r"\((ConnectionResetError|EOFError|BrokenPipeError): ", msg)), msg
    finally:
        loader.close()


def test_death_message_has_torchs_wording() -> None:
    assert death_message(7, -signal.SIGSEGV).startswith(
        "DataLoader worker (pid 7) is killed by signal: Segmentation fault")
    assert death_message(7, 3).startswith("DataLoader worker (pid 7) exited unexpectedly with exit code 3.")


def test_torchs_handler_is_back_after_the_workers_start() -> None:
    loader = dataforge.build_loader(list(range(8)), batch_size=2, num_workers=1, engine="process")
    try:
        list(loader)
        handler = signal.getsignal(signal.SIGCHLD)
        assert callable(handler) and handler.__module__ == torch_signals.__name__
    finally:
        loader.close()
