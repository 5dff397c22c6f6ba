"""Worker for test_torchrun.py: run under ``torch.distributed.run --nproc_per_node=N``.

Each rank takes its world size and rank from torch.distributed (gloo, CPU), draws
epoch 1 of a ClassBalancedSampler and a BucketBatchSampler and writes what it got
to ``<outdir>/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch.distributed as dist

from dataforge.samplers import BucketBatchSampler, ClassBalancedSampler

LABELS = np.random.default_rng(0).choice(4, size=1001, p=[0.6, 0.25, 0.1, 0.05])
LENGTHS = np.maximum(1, np.random.default_rng(1).lognormal(3.0, 0.7, 1001).round()).astype(int)


def main(outdir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cbs = ClassBalancedSampler(LABELS, strategy="sqrt", seed=11)  # replicas from torch.distributed
    cbs.set_epoch(1)
    bucket = BucketBatchSampler(LENGTHS, max_tokens=1024, seed=11)
    bucket.set_epoch(1)
    batches = list(bucket)
    result = {
        "rank": rank,
        "world": world,
        "sampler_replicas": [cbs.num_replicas, cbs.rank],
        "indices": list(cbs),
        "len": len(cbs),
        "batches": batches,
        "num_batches": len(batches),
    }
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
