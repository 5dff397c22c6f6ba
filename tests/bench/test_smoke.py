"""`dataforge bench all --quick` end to end, with tiny sizes, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataforge.bench import ALL
from dataforge.bench.report import validate_document


@pytest.mark.slow
def test_bench_all_quick_tiny(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "out"
    env = {**os.environ, "DATAFORGE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "dataforge", "bench", "all", "--quick", "--seconds", "0.1",
           "--repeats", "1", "--warmup", "0", "--workers", "0", "--num-images", "16",
           "--num-docs", "100", "--image-size", "32", "--batch-size", "8", "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (out / "results.json").exists()  # one file per benchmark, none shared
    index = json.loads((out / "index.json").read_text())["files"]
    docs = {}
    for name in ALL:
        doc = json.loads((out / f"{name}.json").read_text())
        validate_document(doc)
        assert list(doc["benchmarks"]) == [name]
        assert doc["command"].startswith("dataforge bench all --quick")
        assert index[f"{name}.json"]["command"] == doc["command"]
        docs[name] = doc["benchmarks"][name]
    for name in ("image", "text"):
        r = docs[name]
        assert r["status"] == "ok"
        stock = [a for a in r["arms"] if a["arm"] == "stock"]
        assert stock and all(a["status"] == "ok" for a in stock)
        assert not [a for a in r["arms"] if a["status"] == "failed"], r["arms"]
        assert (out / f"{name}.png").is_file() or r.get("plot") is None
        if r.get("plot"):
            assert index[f"{name}.png"]["benchmark"] == name
    assert docs["image"]["config"]["num_samples"] == 16
    assert "== image ==" in p.stdout and "== text ==" in p.stdout
