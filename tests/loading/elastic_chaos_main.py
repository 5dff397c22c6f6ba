"""The ranks of test_elastic_chaos.py: train-like loops under a real process group.

``torch.multiprocessing`` spawns ``world`` processes running :func:`run_rank`; each
joins a gloo process group (CPU), so the loader and the samplers take their world
size and rank from ``torch.distributed`` as in a real job. A ``"save"`` phase runs,
for every case, one uninterrupted epoch (the reference), then the interrupted one:
the loop breaks out at the case's step and saves ``loader.state_dict()``. A
``"resume"`` phase, started later in new processes and maybe another world size,
loads a saved state (rank ``r`` takes the copy of old rank ``r % old_world``: the
copies are one dict), finishes the epoch, runs the next one, and runs that next
epoch once more in a fresh loader. Each rank writes what it consumed, batch by
batch, to ``<out>/<phase>_<case>_rank<r>.json``. A ``"shards"`` case reads tar shards
through ``from_shards``: its loader's state is per rank (each rank counts its own
workers' streams), so the save phase also gathers every rank's state
(``all_gather_object``); under the saved world size and workers rank ``r`` loads old
rank ``r``'s own state, under another one every rank loads the gathered list (NOTE
[elastic shards] in datasets/elastic.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import dataforge
from dataforge.samplers import BucketBatchSampler, ClassBalancedSampler, WeightedSampler


class Ids(torch.utils.data.Dataset):
    """A map dataset whose sample ``i`` is its own id."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def make_sampler(kind: str, n: int) -> Any:
    """The sampler of a case (``None``: the loader's own order); replicas from torch.distributed."""
    if kind == "weighted":
        return WeightedSampler(torch.arange(1, n + 1).double(), n, seed=5)
    if kind == "balanced":
        return ClassBalancedSampler([i % 3 for i in range(n)], num_samples=n, seed=5)
    if kind in ("shuffle", "sequential"):
        return None
    raise ValueError(f"unknown case kind {kind!r}")


def shard_id(sample: dict[str, Any]) -> int:
    """The id of a tar sample ``s<shard>/<j>``: ``shard * 1000 + j``."""
    shard, j = sample["__key__"].split("/")
    return int(shard[1:]) * 1000 + int(j)


def make_loader(case: dict[str, Any], workers: int, engine: str) -> Any:
    if case["kind"] == "shards":
        ds = dataforge.from_shards(
            os.path.join(case["shards"], "shard-{000..005}.tar"), shuffle_shards=True, seed=7,
            equalize="pad",
        )
        return dataforge.build_loader(ds.map(shard_id), case["bs"], num_workers=workers, engine=engine)
    if case["kind"] == "bucket":  # batches of up to bs x 4 tokens, lengths 1..7
        lengths = [1 + (i * 5) % 7 for i in range(case["n"])]
        bucket = BucketBatchSampler(lengths, max_tokens=case["bs"] * 4, seed=5)
        return dataforge.build_loader(
            Ids(case["n"]), batch_sampler=bucket, seed=7, num_workers=workers, engine=engine
        )
    return dataforge.build_loader(
        Ids(case["n"]), case["bs"], shuffle=case["kind"] == "shuffle",
        sampler=make_sampler(case["kind"], case["n"]), seed=7, num_workers=workers, engine=engine,
    )


def _batches(loader: Any, stop: int | None = None) -> list[list[int]]:
    """The loop of a training step: each batch's ids, breaking out after ``stop`` batches."""
    got: list[list[int]] = []
    for step, batch in enumerate(loader):
        got.append(batch.tolist())
        if stop is not None and step + 1 == stop:
            break
    return got


def _plain(case: dict[str, Any], phase: int) -> Any:
    """A loader for a reference run: no workers, but the case's for an iterable dataset
    (whose split over the workers decides each stream)."""
    return make_loader(case, case["workers"][phase] if case["kind"] == "shards" else 0, "process")


def _save(case: dict[str, Any], rank: int, out: Path) -> dict[str, Any]:
    reference = _batches(_plain(case, 0))
    loader = make_loader(case, case["workers"][0], case["engine"][0])
    head = _batches(loader, case["stop"])
    state = loader.state_dict()
    loader.close()
    states: list[Any] = [None] * dist.get_world_size()
    if case["kind"] == "shards":
        dist.all_gather_object(states, state)
    return {"reference": reference, "head": head, "state": state, "states": states}


def _resume(case: dict[str, Any], rank: int, out: Path) -> dict[str, Any]:
    old_world = case["world"][0]
    saved = json.loads((out / f"save_{case['name']}_rank{rank % old_world}.json").read_text())
    loader = make_loader(case, case["workers"][1], case["engine"][1])
    same = old_world == dist.get_world_size() and case["workers"][0] == case["workers"][1]
    loader.load_state_dict(saved["state"] if case["kind"] != "shards" or same else saved["states"])
    tail = _batches(loader)
    end_state = loader.state_dict()
    following = _batches(loader)
    loader.close()
    fresh = _plain(case, 1)
    fresh.set_epoch(1)
    return {"tail": tail, "end_state": end_state, "next": following, "fresh_next": _batches(fresh)}


def run_rank(rank: int, world: int, phase: str, cases: list[dict[str, Any]], out: str) -> None:
    """One rank of a phase (the target of ``torch.multiprocessing.start_processes``)."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/store_{phase}", rank=rank, world_size=world
    )
    try:
        for case in cases:
            result = (_save if phase == "save" else _resume)(case, rank, Path(out))
            result["world"] = [dist.get_world_size(), dist.get_rank()]
            path = Path(out) / f"{phase}_{case['name']}_rank{rank}.json"
            path.write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
