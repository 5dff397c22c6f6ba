"""The feeding report on a CPU: no transfer rate where nothing is transferred."""

from __future__ import annotations

import pytest
import torch

from dataforge.bench import feeding
from dataforge.bench.common import BenchError

TINY = {"quick": True, "seconds": 0.01, "repeats": 1, "num_batches": 2, "size": 8, "batch_size": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_cpu_report_labels_the_memcpy_and_shows_no_fake_gb_per_s() -> None:
    """It printed "prefetcher_pinned 147.68 GB/s" on a machine without a GPU."""
    r = feeding.run(device="cpu", **TINY)
    assert {k: a["copies"] for k, a in r["copy"].items()} == {
        "raw_pinned": True, "stock_to": False, "prefetcher": False, "prefetcher_pinned": False}
    assert r["copy"]["raw_pinned"]["measures"].startswith("CPU memcpy")
    table = feeding.format_table(r)
    copy_rows = table.split("copy arm", 1)[1].split("step loop", 1)[0].splitlines()[1:]
    rows = {line.split()[0]: line for line in copy_rows}
    assert set(rows) == set(r["copy"])
    assert "GB/s" in rows["raw_pinned"] and "CPU memcpy" in rows["raw_pinned"]
    for arm in ("stock_to", "prefetcher", "prefetcher_pinned"):
        assert "GB/s" not in rows[arm] and "batches/s" in rows[arm] and "no copy" in rows[arm]
        a = r["copy"][arm]
        assert a["batches_per_s"] == pytest.approx(a["gb_per_s"] * 1e9 / (2 * 3 * 8 * 8))


def test_options_are_checked_by_name() -> None:
    with pytest.raises(BenchError, match=r"unknown options for the feeding benchmark: \['bogus'\]"):
        feeding.run(device="cpu", bogus=1, **TINY)
    with pytest.raises(BenchError, match="takes no --data"):
        feeding.run(device="cpu", data="x", **TINY)


def test_loader_workers_and_overrides_reach_the_config() -> None:
    r = feeding.run(device="cpu", workers=1, **TINY)
    cfg = r["config"]
    assert (cfg["workers"], cfg["num_batches"], cfg["size"], cfg["batch_size"], cfg["repeats"]) == (1, 2, 8, 2, 1)
    assert all(len(a["runs"]) == 1 for a in r["copy"].values())
    assert set(r["overlap"]) == {"compute_only", "stock_to", "prefetcher"}
