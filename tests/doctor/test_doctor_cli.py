"""``dataforge doctor TARGET``: the report, the trace, the picture, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dataforge.cli import main

PIPELINES = Path(__file__).with_name("doctor_pipelines.py")


def test_cli_prints_the_report_and_writes_trace_png_json(tmp_path: Path, capsys) -> None:
    trace, png, doc = tmp_path / "t.json", tmp_path / "d.png", tmp_path / "r.json"
    rc = main(["doctor", f"{PIPELINES}:heavy_collate", "--seconds", "1", "--step-ms", "2",
               "--no-trials", "--trace", str(trace), "--png", str(png), "--json", str(doc)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "bounding stage   collate" in out and "throughput" in out and "data wait" in out
    events = json.loads(trace.read_text())["traceEvents"]
    lanes = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"consumer (wait, step)", "worker 0", "worker 1"} <= lanes
    assert any(e["name"] == "collate" and e["ph"] == "X" for e in events)
    assert json.loads(doc.read_text())["bound"] == "collate"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no picture" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["nowhere_module:make"], "no module 'nowhere_module'"),
    (["make_loader"], "TARGET must look like pkg.module:make_loader"),
    (["recipes/configs/image.json"], "expose no loader factory"),
    ([f"{PIPELINES}:nothing"], "has no attribute 'nothing'"),
    ([f"{PIPELINES}:Sleepy"], "returned a Sleepy, not an iterable of batches"),
    ([f"{PIPELINES}:slow_read", "--seconds", "0"], "--seconds must be a positive number"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(["doctor", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
