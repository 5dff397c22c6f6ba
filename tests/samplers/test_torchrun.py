"""A real 2-process torchrun (gloo, CPU) run of the samplers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_torchrun_two_ranks(tmp_path):
    sys.path.insert(0, str(HERE))
    import torchrun_samplers_main as main_mod

    from dataforge.samplers import BucketBatchSampler, ClassBalancedSampler

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(HERE / "torchrun_samplers_main.py"), str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sampler_replicas"] for r in ranks] == [[2, 0], [2, 1]]
    assert all(r["world"] == 2 for r in ranks)

    ref_sampler = ClassBalancedSampler(main_mod.LABELS, strategy="sqrt", seed=11, num_replicas=1, rank=0)
    ref_sampler.set_epoch(1)
    ref = list(ref_sampler)
    per = ranks[0]["len"]
    assert ranks[1]["len"] == per == len(ranks[0]["indices"]) == len(ranks[1]["indices"])
    assert per == -(-len(ref) // 2)
    padding = ref[: 2 * per - len(ref)]
    assert Counter(ranks[0]["indices"] + ranks[1]["indices"]) == Counter(ref) + Counter(padding)

    ref_bucket = BucketBatchSampler(main_mod.LENGTHS, max_tokens=1024, seed=11, num_replicas=1, rank=0)
    ref_bucket.set_epoch(1)
    ref_batches = list(ref_bucket)
    assert ranks[0]["num_batches"] == ranks[1]["num_batches"] == -(-len(ref_batches) // 2)
    got = sorted(map(tuple, ranks[0]["batches"] + ranks[1]["batches"]))
    pad_batches = ref_batches[: 2 * ranks[0]["num_batches"] - len(ref_batches)]
    assert got == sorted(map(tuple, ref_batches + pad_batches))
