"""Two gloo ranks, one slowed down: the doctor names it and its slow stage."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import doctor_pipelines as pl

        import dataforge

        read_s = 0.008 if rank == 1 else 0.0005  # rank 1 reads 16x slower

        def make(**kw: object) -> object:
            return pl._loader(pl.Sleepy(read_s=read_s), 2, "thread", **kw)

        report = dataforge.doctor(make, seconds=1.2, step_ms=12.0, trials=False)
        if rank == 0:
            Path(out).write_text(json.dumps({"stragglers": report.stragglers, "ranks": report.ranks,
                                             "text": str(report)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_name_the_slow_one(tmp_path: Path) -> None:
    out = tmp_path / "rank0.json"
    mp.spawn(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    doc = json.loads(out.read_text())
    assert [r["rank"] for r in doc["ranks"]] == [0, 1]
    assert [s["rank"] for s in doc["stragglers"]] == [1], doc["text"]
    assert doc["stragglers"][0]["stage"] == "read", doc["text"]
    assert "STRAGGLER rank 1" in doc["text"]
