"""Copy-on-read: worker memory with paths in StringStorage vs a Python list.

A forked DataLoader worker shares its parent's pages until it writes to them.
Reading a ``str`` from a Python list writes its reference count, so each worker
gradually gets a private copy of every page of strings it touches (pytorch issue
13246). The numpy-backed storage that ImageFolder uses is only read, so the
pages stay shared. Each worker reports its USS growth from its start to the end
of one full, shuffled pass over 1,000,000 paths.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, get_worker_info

import dataforge
from dataforge.datasets.storage import StringStorage

psutil = pytest.importorskip("psutil")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="copy-on-read needs fork"),
]

N = 1_000_000
BATCH = 1000
EVERY = 25  # USS reads cost ~20 ms in a large process: sample every 25th batch of a worker
MB = 1024 * 1024
_BASE: dict[str, int] = {}


def _uss() -> int:
    return int(psutil.Process().memory_full_info().uss)


def _init(worker_id: int) -> None:
    _BASE["uss"] = _uss()
    _BASE["batches"] = 0


def _measure(batch: list[str]) -> tuple[int, int, int]:
    """Collate: report (items, worker id, USS growth or -1) instead of the strings.

    Batches go to the 2 workers round-robin, so each worker's last batch
    (number N / BATCH / 2, a multiple of EVERY) is measured.
    """
    info = get_worker_info()
    assert info is not None
    _BASE["batches"] += 1
    grown = _uss() - _BASE["uss"] if _BASE["batches"] % EVERY == 0 else -1
    return len(batch), info.id, grown


def _one_pass(seq: Any) -> tuple[int, dict[int, int]]:
    ds = dataforge.from_sequence(seq)
    loader = DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        num_workers=2,
        multiprocessing_context="fork",
        worker_init_fn=_init,
        collate_fn=_measure,
        timeout=120,
    )
    seen = 0
    growth: dict[int, int] = {}
    samples = 0
    for count, worker, grown in loader:
        seen += count
        if grown >= 0:
            samples += 1
            growth[worker] = max(growth.get(worker, 0), grown)
    assert samples == N // BATCH // EVERY  # every 25th batch of each worker, its last included
    return seen, growth


def test_worker_memory_stays_flat_with_numpy_storage() -> None:
    paths = [f"/datasets/imagenet/train/n{i % 1000:08d}/n{i % 1000:08d}_{i:08d}.JPEG" for i in range(N)]
    storage = StringStorage(paths)
    assert storage[123_456] == paths[123_456]

    seen, storage_growth = _one_pass(storage)
    assert seen == N and sorted(storage_growth) == [0, 1]
    seen, list_growth = _one_pass(paths)
    assert seen == N and sorted(list_growth) == [0, 1]

    fmt = ", ".join
    print(
        f"\nUSS growth per worker over one pass of {N:,} paths: "
        f"StringStorage [{fmt(f'{g / MB:.1f} MB' for g in storage_growth.values())}], "
        f"Python list [{fmt(f'{g / MB:.1f} MB' for g in list_growth.values())}]"
    )
    for worker, grown in storage_growth.items():
        assert grown < 50 * MB, f"worker {worker} grew {grown / MB:.1f} MB with StringStorage"
    assert min(list_growth.values()) > max(storage_growth.values())
    assert min(list_growth.values()) > 50 * MB  # the copy-on-read effect is real
