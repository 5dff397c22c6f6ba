from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from dataforge.bench import feeding
from dataforge.bench.common import BenchError

TINY = {"quick": True, "seconds": 0.01, "repeats": 1, "num_batches": 2, "size": 8, "batch_size": 2}


def test_cpu_run_reports_no_gpu_and_no_fake_ratios(tmp_path) -> None:
    out = tmp_path / "r.json"
    r = feeding.run(device="cpu", out=str(out), **TINY)
    assert json.loads(out.read_text())["benchmark"] == "feeding"
    assert r["env"]["device"] == "cpu" and r["targets"]["met"] is None
    assert all(v is None for v in r["ratios"].values())  # no copy on a CPU: no ratio
    assert set(r["copy"]) == {"raw_pinned", "stock_to", "prefetcher", "prefetcher_pinned"}
    assert all(r["copy"][k]["gb_per_s"] > 0 for k in r["copy"])
    assert {"compute_only", "stock_to", "prefetcher"} == set(r["overlap"])
    table = feeding.format_table(r)
    assert "NO GPU" in table and "prefetcher" in table


def test_bad_options() -> None:
    with pytest.raises(BenchError, match="data"):
        feeding.run(data="x", **TINY)
    with pytest.raises(BenchError, match="unknown"):
        feeding.run(bogus=1, **TINY)
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="CUDA"):
            feeding.run(device="cuda", **TINY)


def test_script_runs(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    argv = ["feeding.py", "--quick", "--seconds", "0.01", "--repeats", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "feeding.py"), run_name="__main__")
    assert exc.value.code == 0
    assert "raw_pinned" in capsys.readouterr().out and (out / "feeding.json").exists()


@pytest.mark.gpu
def test_cuda_run() -> None:
    r = feeding.run(device="cuda", **TINY)
    assert r["gpu_present"] and r["ratios"]["prefetcher_vs_raw"] > 0
    assert isinstance(r["targets"]["met"], bool)
