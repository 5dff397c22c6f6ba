"""The collate benchmark runs, measures every arm and reports ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dataforge.bench import collate as bench

ROOT = Path(__file__).resolve().parents[2]


def test_make_batch_is_seeded_and_lognormal_around_150() -> None:
    a, b = bench.make_batch(), bench.make_batch()
    assert a == b and len(a) == 64
    mean = sum(len(s["input_ids"]) for s in a) / len(a)
    assert 110 < mean < 190


def test_quick_run_without_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "hf_collator", lambda: (None, "transformers not installed"))
    result = bench.run(quick=True, seconds=0.06, repeats=3)
    json.dumps(result)
    assert result["absent"] == {"hf": "transformers not installed"}
    for form in ("lists", "tensors"):
        arms = result["forms"][form]["arms"]
        assert set(arms) == {"dataforge", "pad_sequence"}
        assert all(len(a["repeats"]) == 3 and a["batches_per_s"] > 0 for a in arms.values())
        assert set(result["forms"][form]["ratios"]) == {"dataforge_vs_pad_sequence"}
    table = bench.format_table(result)
    assert "pad_sequence" in table and "hf: absent" in table


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_script_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "collate.py"), "--quick", "--seconds", "0.3",
         "--out", str(out)],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "collate.json").read_text())["benchmarks"]["collate"]
    assert set(result["forms"]["lists"]["arms"]) == {"dataforge", "hf", "pad_sequence"}
    assert "dataforge_vs_hf" in result["forms"]["lists"]["ratios"]
    assert "hf" in proc.stdout
