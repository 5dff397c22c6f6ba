from __future__ import annotations

import pytest

from dataforge.bench.plot import plot_throughput


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    arms = [{"arm": a, "workers": w, "status": "ok", "samples_per_s": r}
            for a, r in (("stock", 100.0), ("dataforge-thread", 250.0)) for w in (0, 2)]
    arms.append({"arm": "torchdata-nodes", "workers": 0, "status": "absent"})
    result = {"benchmark": "image", "unit": "samples/s", "env": {"cores": 2}, "config": {"device": "cpu"},
              "limit": {"by_workers": {"0": {"stock": 120.0, "dataforge": 300.0},
                                       "2": {"stock": 240.0, "dataforge": 600.0}}},
              "arms": arms}
    path = plot_throughput(result, tmp_path / "sub" / "image.png")
    assert path == tmp_path / "sub" / "image.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
