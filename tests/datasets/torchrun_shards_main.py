"""Worker script of test_shards_torchrun.py, run by ``torch.distributed.run`` (gloo, CPU).

Usage: torchrun --nproc_per_node=2 torchrun_shards_main.py SHARD_DIR OUT_DIR

Each rank iterates tar shards through a DataLoader with 2 workers for several
(split case, equalize) settings and writes ``OUT_DIR/rank<r>.json``:
``{"<case>/<equalize>": {"keys": [...], "batches": n}}``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import dataforge

CASES = {
    "by_shard": "shard-{000..005}.tar",  # 6 shards >= 2 ranks x 2 workers
    "by_sample": "few-{000..002}.tar",  # 3 shards < 4 consumers
}


def get_key(sample: dict) -> str:
    return sample["__key__"]


def run(pattern: str, equalize: str | None) -> dict:
    ds = dataforge.from_shards(pattern, shuffle_shards=True, seed=7, equalize=equalize)
    ds.set_epoch(1)
    loader = DataLoader(
        ds.map(get_key), batch_size=3, num_workers=2, collate_fn=list, timeout=60
    )
    batches = list(loader)
    # a collective per batch would hang here if ranks disagreed on the count;
    # compare the counts explicitly instead so that the test fails, not hangs
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([len(batches)]))
    return {
        "keys": [k for b in batches for k in b],
        "batches": len(batches),
        "all_batches": [int(c) for c in counts],
    }


def main() -> None:
    shard_dir, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {}
    for case, name in CASES.items():
        for equalize in (None, "pad", "drop"):
            result[f"{case}/{equalize}"] = run(os.path.join(shard_dir, name), equalize)
    # Workers started with spawn / forkserver unpickle the dataset in a process
    # without the process group: the rank must travel inside the pickle. Checked
    # without the cost of spawning: pickle now, unpickle after the group is gone.
    blob = pickle.dumps(dataforge.from_shards(os.path.join(shard_dir, CASES["by_shard"])))
    dist.barrier()
    dist.destroy_process_group()
    result["by_shard/unpickled"] = {"keys": [s["__key__"] for s in pickle.loads(blob)]}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
