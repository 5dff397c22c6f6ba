"""Worker script of test_s3.py's torchrun test, run by ``torch.distributed.run`` (gloo, CPU).

Usage: torchrun --nproc_per_node=2 torchrun_s3_main.py PATTERN ENDPOINT CACHE_DIR OUT_DIR

Each rank reads ``s3://`` shards from the test's LoopbackS3 at ENDPOINT through a
DataLoader with 2 workers, with one ``cache_dir`` shared by both ranks: first split by
shard, then split by sample (every consumer reads every shard, from the cache), and
writes ``OUT_DIR/rank<r>.json``: ``{"by_shard": [keys], "by_sample": [keys]}``.
"""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

import dataforge


def main() -> None:
    pattern, endpoint, cache_dir, out_dir = sys.argv[1:5]
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
    dist.init_process_group("gloo")
    result = {}
    for split in ("shard", "sample"):
        ds = dataforge.from_shards(pattern, storage_options=options, cache_dir=cache_dir, split=split)
        loader = DataLoader(ds, batch_size=None, num_workers=2, timeout=60)
        result[f"by_{split}"] = [s["__key__"] for s in loader]
        dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
