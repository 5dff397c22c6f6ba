"""Small in-test datasets for tests/loading (kept tiny: worker start-up dominates)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from dataforge._rng import sample_seed


class Noisy(Dataset):
    """Sample i of epoch e: its index, a small tensor and noise drawn from (seed, e, i)."""

    def __init__(self, n: int = 20, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
        return {"index": i, "x": torch.full((3,), float(i)), "noise": torch.rand(2, generator=g)}


class Failing(Dataset):
    """Raises ``exc_type`` for indices in ``bad``; returns the index as a tensor otherwise."""

    def __init__(self, n: int = 12, bad: tuple[int, ...] = (3,), exc_type: type = ValueError) -> None:
        self.n = n
        self.bad = set(bad)
        self.exc_type = exc_type

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self.bad:
            raise self.exc_type(f"sample {i} is broken")
        return torch.tensor(i)


class GlobalDraws(Dataset):
    """Returns the worker id and first draws of the global random, numpy and torch RNGs."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple:
        info = torch.utils.data.get_worker_info()
        wid = -1 if info is None else info.id
        return (wid, random.random(), float(np.random.rand()), float(torch.rand(1)))


class Crashing(Dataset):
    """Kills its own worker (``how``: 'segv', 'kill', 'hang') at index ``at``; with
    ``gate`` (a path), only once that file exists (at most 30 s later), so that the
    caller can look at the workers before one dies."""

    def __init__(self, how: str, at: int = 5, n: int = 16, gate: str | None = None) -> None:
        self.how = how
        self.at = at
        self.n = n
        self.gate = gate

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        in_worker = torch.utils.data.get_worker_info() is not None
        in_thread = threading.current_thread().name.startswith("dataforge-fetch-")
        if i == self.at and (in_worker or (in_thread and self.how == "hang")):
            t0 = time.monotonic()
            while self.gate is not None and not os.path.exists(self.gate) and time.monotonic() - t0 < 30:
                time.sleep(0.01)
            if self.how == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.how == "hang":
                time.sleep(600)
        return torch.tensor(i)


def worker_pids() -> list[int]:
    """Pids of this process's loader workers: forked workers share its command line
    (multiprocessing's resource tracker does not); a worker that already died counts."""
    import psutil

    me = psutil.Process()
    pids = []
    for c in me.children():
        try:
            if c.cmdline() == me.cmdline():
                pids.append(c.pid)
        except psutil.ZombieProcess:
            pids.append(c.pid)
        except psutil.NoSuchProcess:
            pass
    return pids
