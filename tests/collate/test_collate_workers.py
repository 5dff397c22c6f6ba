"""Collates inside DataLoader workers: shared-memory output, spawn start method."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataforge.collate import PadCollate, SplitCollate, default_collate


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


class SharedProbe:
    """Runs a collate and records, inside the worker, whether its tensors are shared."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, batch: list[Any]) -> dict[str, Any]:
        out = self.collate(batch)
        in_worker = torch.utils.data.get_worker_info() is not None
        return {"out": out, "in_worker": in_worker,
                "shared": [t.is_shared() for t in _tensors(out)]}


SAMPLES = [
    {"input_ids": list(range(1, n + 1)), "image": np.full((3, 2 + n % 3, 4), n, np.uint8),
     "x": torch.full((2,), float(n)), "label": n % 2}
    for n in range(1, 9)
]


@pytest.mark.parametrize(
    "collate",
    [default_collate, PadCollate(), SplitCollate(keys=["input_ids", "label"], inner=PadCollate())],
    ids=["default", "pad", "split"],
)
def test_outputs_are_allocated_in_shared_memory_in_a_worker(collate: Any) -> None:
    samples = SAMPLES if collate is not default_collate else [
        {k: v for k, v in s.items() if k in ("x", "label")} for s in SAMPLES]
    loader = DataLoader(samples, batch_size=4, num_workers=1, collate_fn=SharedProbe(collate),
                        multiprocessing_context="fork", timeout=60)
    for batch in loader:
        assert batch["in_worker"]
        assert batch["shared"] and all(batch["shared"]), batch["shared"]
    # in the main process nothing is moved to shared memory by the collate itself
    probe = SharedProbe(collate)(samples[:4])
    assert not probe["in_worker"] and not any(probe["shared"])


def test_worker_and_main_process_give_the_same_batch() -> None:
    collate = PadCollate(pad_to_multiple_of=4)
    loader = DataLoader(SAMPLES, batch_size=4, num_workers=1, collate_fn=collate,
                        multiprocessing_context="fork", timeout=60)
    for i, batch in enumerate(loader):
        ref = collate(SAMPLES[4 * i : 4 * i + 4])
        assert set(batch) == set(ref)
        for k in ref:
            assert torch.equal(batch[k], ref[k]), k


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_spawn_workers() -> None:
    """One loader, 2 spawned workers: the collate (Split -> Pad -> default) is pickled."""
    assert "spawn" in mp.get_all_start_methods()
    collate = SplitCollate(keys=["input_ids", "x", "label"], inner=PadCollate(pad_value=-1))
    loader = DataLoader(SAMPLES, batch_size=4, num_workers=2, collate_fn=collate,
                        multiprocessing_context="spawn", timeout=90)
    batches = list(loader)
    assert len(batches) == 2
    for i, got in enumerate(batches):
        ref = collate(SAMPLES[4 * i : 4 * i + 4])
        flat_ref, flat_got = _tensors(ref), _tensors(got)
        assert len(flat_ref) == len(flat_got) == 7  # (ids, mask, lengths) x 2 + labels
        assert all(torch.equal(a, b) for a, b in zip(flat_ref, flat_got))
