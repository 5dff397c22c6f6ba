"""A real 2-process torchrun run (gloo, CPU), each rank with a 2-worker DataLoader over tar shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest
from shard_files import write_tar_shards

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_torchrun_two_ranks_two_workers(tmp_path) -> None:
    shard_dir, out_dir = tmp_path / "shards", tmp_path / "out"
    shard_dir.mkdir()
    out_dir.mkdir()
    everything = {
        "by_shard": write_tar_shards(shard_dir, [5, 2, 7, 3, 4, 6], prefix="shard"),
        "by_sample": write_tar_shards(shard_dir, [4, 7, 2], prefix="few"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        os.path.join(HERE, "torchrun_shards_main.py"), str(shard_dir), str(out_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(2)]

    for case in ("by_shard", "by_sample"):
        expected = Counter(everything[case])
        runs = {eq: [ranks[r][f"{case}/{eq}"] for r in range(2)] for eq in ("None", "pad", "drop")}
        # equalize=None: disjoint and complete, every sample exactly once
        plain = [Counter(x["keys"]) for x in runs["None"]]
        assert not set(plain[0]) & set(plain[1]), case
        assert plain[0] + plain[1] == expected, case
        for eq in ("pad", "drop"):
            a, b = runs[eq]
            assert len(a["keys"]) == len(b["keys"]), (case, eq)
            assert a["batches"] == b["batches"] and a["all_batches"] == [a["batches"]] * 2, (case, eq)
            seen = Counter(a["keys"]) + Counter(b["keys"])
            if eq == "pad":
                assert set(seen) == set(expected), case  # nothing dropped
            else:
                assert max(seen.values()) == 1 and set(seen) <= set(expected), case
    # a dataset pickled under the process group keeps its rank once unpickled without
    # it (as in spawn-started workers); had it fallen back to world 1, both would see all
    moved = [set(ranks[r]["by_shard/unpickled"]["keys"]) for r in range(2)]
    assert not moved[0] & moved[1] and moved[0] | moved[1] == set(everything["by_shard"])
