"""benchmarks/gpu_check.sh on a machine without a GPU: the dry run and the CUDA-absent path.

The steps that need a GPU cannot run here; what can be checked is that the script
plans them within its time budget, skips cleanly without CUDA (exit 0, one clear
line, a summary), refuses bad settings, and that its summary reads the benchmark
results it will find on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
LIMIT_S = 8 * 60  # the whole run must fit in 8 minutes on a fresh GPU machine


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out"
    full = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT), "DATAFORGE_CACHE": str(tmp_path / "cache"), **env}
    p = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=240, env=full,
                       cwd=tmp_path)
    return p, out


def _summary():
    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "benchmarks" / "gpu_summary.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_plans_every_step_within_the_budget(tmp_path):
    p, out = _run(tmp_path, DRY_RUN="1")
    assert p.returncode == 0, p.stdout + p.stderr
    text = p.stdout
    assert "DRY RUN: nothing was installed or run" in text
    assert "pip install -e '.[all,dev]'" in text and "--no-index" in text
    assert re.search(r"pytest +\(limit \d+ s\) \S*python\S* -m pytest -m gpu", text)
    assert "-m dataforge bench feeding --device cuda" in text
    assert "-m dataforge bench image --device cuda --workers 4,8,16" in text
    limits = [int(s) for s in re.findall(r"\(limit (\d+) s\)", text)]
    budget = int(re.search(r"budget (\d+) s in all", text).group(1))
    assert len(limits) == 4 and sum(limits) <= budget < LIMIT_S
    assert (out / "gpu_check.log").read_text() == text  # everything printed is in the log
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "dry-run" and s["steps"] == [] and s["image"] is None
    assert not (out / "bench").exists()


def test_without_cuda_it_skips_cleanly_and_says_so(tmp_path):
    env = {"SKIP_INSTALL": "1"}
    if torch.cuda.is_available():  # on a GPU machine, ask for the CUDA-absent path
        env["NO_CUDA"] = "1"
    p, out = _run(tmp_path, **env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "install: skipped (SKIP_INSTALL=1)" in p.stdout
    skipped = [line for line in p.stdout.splitlines() if "SKIPPED: no CUDA" in line]
    assert len(skipped) == 1 and "nothing was measured" in skipped[0]
    assert f"torch {torch.__version__}" in p.stdout  # the machine was looked at
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "skipped" and s["reason"].startswith("no CUDA")
    assert [(x["step"], x["status"]) for x in s["steps"]] == [
        ("install", "skipped (SKIP_INSTALL=1)"), ("pytest", "skipped (no CUDA)"),
        ("feeding", "skipped (no CUDA)"), ("image", "skipped (no CUDA)")]
    assert s["machine"]["torch"] == torch.__version__
    assert sorted(f.name for f in out.iterdir()) == ["gpu_check.log", "summary.json"]
    assert "SKIPPED: no CUDA" in (out / "gpu_check.log").read_text()


@pytest.mark.slow
def test_rehearsal_on_the_cpu_runs_every_step_and_summarizes_real_results(tmp_path):
    """REHEARSE=1: the steps run with --device cpu (tiny sizes), through the same machinery."""
    p, out = _run(tmp_path, SKIP_INSTALL="1", REHEARSE="1", T_FEEDING="120", T_IMAGE="200",
                  PYTEST_ARGS="tests/transforms/test_gpu_decode.py", FEEDING_ARGS="--quick",
                  IMAGE_WORKERS="0", IMAGE_SECONDS="0.2",
                  IMAGE_ARGS="--num-images 16 --image-size 32 --batch-size 8 --warmup 0")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "REHEARSAL (REHEARSE=1)" in p.stdout and "all steps ok" in p.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "ok" and "rehearsal" in s["reason"]
    assert [(x["step"], x["status"]) for x in s["steps"]] == [
        ("install", "skipped (SKIP_INSTALL=1)"), ("pytest", "ok"), ("feeding", "ok"), ("image", "ok")]
    assert s["pytest_gpu"]["tests"] >= 3 and s["pytest_gpu"]["failures"] == 0
    assert s["feeding"]["status"] == "ok" and s["feeding"]["gpu_present"] is False
    row = s["image"]["by_workers"]["0"]
    assert row["samples_per_s"]["stock"] > 0 and row["engine_winner"] in (
        "dataforge-process", "dataforge-thread")
    assert "needs --device cuda" in row["not_ok"]["dataforge-gpu-decode"]
    for f in ("gpu_check.log", "pytest_gpu.xml", "bench/feeding.json", "bench/image.json",
              "bench/index.json"):
        assert (out / f).is_file(), f


@pytest.mark.parametrize(("name", "value"), [("T_IMAGE", "abc"), ("BUDGET_S", "0"), ("IMAGE_REPEATS", "-1")])
def test_bad_settings_are_refused_by_name(tmp_path, name, value):
    p, _ = _run(tmp_path, DRY_RUN="1", **{name: value})
    assert p.returncode == 2
    assert f"{name} must be a positive whole number" in p.stderr and value in p.stderr


# ----------------------------------------------------------------------- the summary


def _arm(name, workers, rate=None, status="ok", reason=None):
    a = {"arm": name, "workers": workers, "status": status, "reason": reason}
    if status == "ok":
        a["samples_per_s"] = rate
    return a


def test_summary_reads_the_image_feeding_and_pytest_results(tmp_path):
    mod = _summary()
    (tmp_path / "bench").mkdir()
    arms = [_arm("stock", 4, 1000.0), _arm("dataforge-process", 4, 1800.0),
            _arm("dataforge-thread", 4, 2400.0), _arm("dataforge-gpu-decode", 4, 6000.0),
            _arm("stock", 16, 3000.0), _arm("dataforge-process", 16, 5000.0),
            _arm("dataforge-thread", 16, 4000.0),
            _arm("dataforge-gpu-decode", 16, status="failed", reason="RuntimeError: x")]
    image = {"benchmarks": {"image": {"status": "ok", "config": {"workers": [4, 16]}, "arms": arms}}}
    feeding = {"benchmarks": {"feeding": {
        "status": "ok", "gpu_present": True, "config": {"step_ms": 2.5},
        "copy": {"raw_pinned": {"gb_per_s": 50.0}, "prefetcher": {"gb_per_s": 46.0}},
        "ratios": {"prefetcher_vs_raw": 0.92, "prefetcher_pinned_vs_raw": 0.97},
        "overlap": {"prefetcher": {"data_wait": 0.03}, "stock_to": {"data_wait": 0.4}},
        "targets": {"prefetcher_vs_raw": 0.9, "prefetcher_data_wait": 0.05, "met": True}}}}
    (tmp_path / "bench" / "image.json").write_text(json.dumps(image))
    (tmp_path / "bench" / "feeding.json").write_text(json.dumps(feeding))
    (tmp_path / "pytest_gpu.xml").write_text(
        '<testsuites><testsuite tests="9" failures="1" errors="0" skipped="2"/></testsuites>')
    steps = tmp_path / "steps.tsv"
    steps.write_text("pytest\tok\t20\tpython -m pytest -m gpu\nimage\ttimed out after 240 s\t240\tx\n")
    assert mod.main(["--out", str(tmp_path), "--steps", str(steps), "--status", "failed",
                     "--reason", "a step failed", "--seconds", "300"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["pytest_gpu"] == {"tests": 9, "failures": 1, "errors": 0, "skipped": 2}
    assert s["feeding"]["prefetcher_vs_raw"] == 0.92 and s["feeding"]["targets"]["met"] is True
    w4, w16 = s["image"]["by_workers"]["4"], s["image"]["by_workers"]["16"]
    assert w4["engine_winner"] == "dataforge-thread" and w4["engine_margin"] == pytest.approx(2400 / 1800)
    assert w4["best_cpu_arm"] == "dataforge-thread" and w4["gpu_decode_vs_best_cpu"] == pytest.approx(2.5)
    assert w4["x_stock"]["dataforge-process"] == pytest.approx(1.8)
    assert w16["engine_winner"] == "dataforge-process" and w16["engine_margin"] == pytest.approx(1.25)
    assert "gpu_decode_vs_best_cpu" not in w16 and w16["not_ok"] == {
        "dataforge-gpu-decode": "failed: RuntimeError: x"}
    text = mod.format_summary(s)
    assert "dataforge-thread wins by 1.33x" in text and "GPU decode: 2.50x the best CPU arm" in text
    assert "92.0% of raw pinned" in text and "step image    timed out after 240 s" in text


def test_summary_names_a_bad_steps_line_and_a_failed_benchmark(tmp_path):
    mod = _summary()
    bad = tmp_path / "steps.tsv"
    bad.write_text("pytest\tok\n")
    with pytest.raises(ValueError, match="line 1: expected 4 tab-separated fields"):
        mod.read_steps(str(bad))
    doc = {"benchmarks": {"image": {"status": "failed", "reason": "BenchError: no GPU"}}}
    assert mod.image_headline(doc) == {"status": "failed", "reason": "BenchError: no GPU"}
    assert mod.image_headline(None) is None and mod.feeding_headline(None) is None
