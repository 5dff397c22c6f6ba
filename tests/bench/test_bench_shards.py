"""dataforge bench shards: a tiny run through the loopback S3 server, its JSON, absent arms with reasons."""

from __future__ import annotations

import json

import pytest

from dataforge.bench import ALL, BENCHMARKS
from dataforge.bench import shards as bench_shards
from dataforge.bench.common import BenchError
from dataforge.cli import main

pytest.importorskip("moto")
pytest.importorskip("s3fs")


def test_tiny_run_writes_valid_json_and_absent_arms_carry_reasons(tmp_path, monkeypatch, capsys):
    pytest.importorskip("webdataset")
    # litdata's optimize() starts its own processes (seconds): a test double reports it absent
    real = bench_shards.absent_reason
    monkeypatch.setattr(bench_shards, "absent_reason",
                        lambda lib: "left out of this test" if lib == "litdata" else real(lib))
    monkeypatch.setitem(bench_shards._ARMS, "mosaicml-streaming", ("no_such_module_for_this_test", None))
    out = tmp_path / "out"
    argv = ["bench", "shards", "--quick", "--workers", "0", "--num-images", "6", "--num-docs", "20", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "shards.json").read_text())
    result = doc["benchmarks"]["shards"]
    assert result["status"] == "ok" and result["config"]["workers"] == 0 and result["config"]["repeats"] == 1
    rows = {(r["library"], r["data"]): r for r in result["rows"]}
    assert set(rows) == {(lib, d) for lib in bench_shards.LIBRARIES for d in ("images", "text")}
    for (lib, data), r in rows.items():
        assert r["samples"] == (6 if data == "images" else 20)
        if lib in ("dataforge", "webdataset"):
            assert r["status"] == "ok", r
            assert r["write_s"] > 0 and r["epoch1_samples_per_s"] > 0 and r["epoch2_samples_per_s"] > 0
            assert r["shards"] >= 1 and r["bytes"] > 0 and r["note"]
            assert r["runs"]["epoch2_samples_per_s"] == [r["epoch2_samples_per_s"]]  # one repeat with --quick
        else:
            assert r["status"] == "absent"
    assert rows[("litdata", "text")]["reason"] == "left out of this test"
    assert rows[("mosaicml-streaming", "images")]["reason"] == (
        "mosaicml-streaming is not installed (pip install mosaicml-streaming)")
    table = capsys.readouterr().out
    assert "dataforge            images" in table and "absent: left out of this test" in table


def test_absent_reasons(monkeypatch):
    monkeypatch.setitem(bench_shards._ARMS, "litdata", ("json", None))  # importable, no arm
    assert bench_shards.absent_reason("litdata") == "litdata is installed but dataforge bench shards has no arm for it yet"
    monkeypatch.setitem(bench_shards._ARMS, "litdata", ("no_such_module_for_this_test", None))
    assert bench_shards.absent_reason("litdata") == "litdata is not installed (pip install litdata)"
    assert bench_shards.absent_reason("dataforge") is None


def test_registration_and_refused_options(capsys):
    assert "shards" in BENCHMARKS and "shards" not in ALL  # bench all --quick stays short
    with pytest.raises(BenchError, match="unknown options for the shards benchmark: \\['seconds_per_arm'\\]"):
        bench_shards.run(quick=True, seconds_per_arm=1)
    assert main(["bench", "shards", "--image-size", "64"]) == 2
    assert "--image-size" in capsys.readouterr().err
