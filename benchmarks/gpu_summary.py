"""The summary of a ``benchmarks/gpu_check.sh`` run: ``summary.json`` and its headline figures.

Reads what the run left in ``--out`` (``pytest_gpu.xml``, ``bench/feeding.json``,
``bench/image.json``) and the steps file the script kept, writes
``<out>/summary.json`` and prints the figures the GPU checks are about:

- ``pytest -m gpu``: tests, failures, errors, skipped;
- feeding: ``DevicePrefetcher`` against the raw pinned copy (target >= 90%), and its
  data wait with the simulated step (target < 5%);
- image: at each workers count, which dataforge engine wins and by how much, each arm
  against stock, and the GPU decode arm against the best CPU arm.

Needs only the standard library (torch, when importable, names the machine).

Example:
    $ python benchmarks/gpu_summary.py --out gpu_out --steps steps.tsv --status ok
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from typing import Any

ENGINES = ("dataforge-process", "dataforge-thread")
GPU_ARM = "dataforge-gpu-decode"


def read_steps(path: str | None) -> list[dict[str, Any]]:
    """The script's steps file: ``name, status, seconds, command`` per line, tab-separated."""
    steps: list[dict[str, Any]] = []
    if not path or not os.path.exists(path):
        return steps
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                raise ValueError(f"{path} line {n}: expected 4 tab-separated fields "
                                 f"(name, status, seconds, command), got {len(parts)}")
            name, status, secs, command = parts
            steps.append({"step": name, "status": status, "seconds": int(secs), "command": command})
    return steps


def _load(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def pytest_counts(path: str) -> dict[str, int] | None:
    """Totals of a JUnit XML file written by ``pytest --junitxml``."""
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def feeding_headline(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The feeding targets from the ``feeding.json`` of ``dataforge bench feeding``."""
    r = (doc or {}).get("benchmarks", {}).get("feeding")
    if not r or r.get("status") != "ok":
        return {"status": (r or {}).get("status", "missing"), "reason": (r or {}).get("reason")} if doc else None
    copy, overlap, targets = r["copy"], r["overlap"], r["targets"]
    return {
        "status": "ok",
        "gpu_present": r.get("gpu_present"),
        "raw_pinned_gb_per_s": copy["raw_pinned"]["gb_per_s"],
        "prefetcher_gb_per_s": copy["prefetcher"]["gb_per_s"],
        "prefetcher_vs_raw": r["ratios"].get("prefetcher_vs_raw"),
        "prefetcher_pinned_vs_raw": r["ratios"].get("prefetcher_pinned_vs_raw"),
        "step_ms": r["config"].get("step_ms"),
        "prefetcher_data_wait": overlap["prefetcher"]["data_wait"],
        "stock_to_data_wait": overlap["stock_to"]["data_wait"],
        "targets": targets,
    }


def image_headline(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per workers count: each arm's samples/s, the winning engine, the GPU decode ratio."""
    r = (doc or {}).get("benchmarks", {}).get("image")
    if not r or r.get("status") != "ok":
        return {"status": (r or {}).get("status", "missing"), "reason": (r or {}).get("reason")} if doc else None
    by_workers: dict[str, Any] = {}
    for w in r["config"]["workers"]:
        arms = {a["arm"]: a for a in r["arms"] if a["workers"] == w}
        rate = {n: a["samples_per_s"] for n, a in arms.items() if a["status"] == "ok"}
        row: dict[str, Any] = {"samples_per_s": rate,
                               "not_ok": {n: f"{a['status']}: {a['reason']}" for n, a in arms.items()
                                          if a["status"] != "ok"}}
        engines = {n: rate[n] for n in ENGINES if n in rate}
        if len(engines) == 2:
            (win, a), (lose, b) = sorted(engines.items(), key=lambda kv: -kv[1])
            row["engine_winner"] = win
            row["engine_margin"] = a / b if b else None
        cpu = {n: v for n, v in rate.items() if n != GPU_ARM}
        if cpu:
            best = max(cpu, key=lambda n: cpu[n])
            row["best_cpu_arm"] = best
            if GPU_ARM in rate:
                row["gpu_decode_vs_best_cpu"] = rate[GPU_ARM] / cpu[best]
        if rate.get("stock"):
            row["x_stock"] = {n: v / rate["stock"] for n, v in rate.items()}
        by_workers[str(w)] = row
    return {"status": "ok", "config": r["config"], "by_workers": by_workers}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - the summary is written all the same
        info["torch"] = f"not importable ({type(exc).__name__})"
        return info
    info.update(torch=torch.__version__, cuda=torch.version.cuda,
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


def summarize(out: str, steps: list[dict[str, Any]], status: str, reason: str = "",
              seconds: int | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "reason": reason or None,
        "seconds": seconds,
        "machine": machine(),
        "steps": steps,
        "pytest_gpu": pytest_counts(os.path.join(out, "pytest_gpu.xml")),
        "feeding": feeding_headline(_load(os.path.join(out, "bench", "feeding.json"))),
        "image": image_headline(_load(os.path.join(out, "bench", "image.json"))),
    }


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def format_summary(s: dict[str, Any]) -> str:
    m = s["machine"]
    lines = [f"summary: {s['status']}" + (f" ({s['reason']})" if s["reason"] else "")
             + f"; GPU {m.get('gpu')}, torch {m.get('torch')}, {m.get('cores')} cores"]
    for st in s["steps"]:
        lines.append(f"  step {st['step']:<8} {st['status']} ({st['seconds']} s)")
    if s["pytest_gpu"]:
        p = s["pytest_gpu"]
        lines.append(f"  pytest -m gpu: {p['tests']} tests, {p['failures']} failures, "
                     f"{p['errors']} errors, {p['skipped']} skipped")
    f = s["feeding"]
    if f and f["status"] == "ok":
        t = f["targets"]
        lines.append(f"  feeding: prefetcher {f['prefetcher_gb_per_s']:.2f} GB/s = "
                     f"{_pct(f['prefetcher_vs_raw'])} of raw pinned {f['raw_pinned_gb_per_s']:.2f} GB/s "
                     f"(target >= {_pct(t.get('prefetcher_vs_raw'))}); data wait {_pct(f['prefetcher_data_wait'])} "
                     f"with a {f['step_ms']} ms step (target < {_pct(t.get('prefetcher_data_wait'))}); "
                     f"targets met: {t.get('met')}")
    elif f:
        lines.append(f"  feeding: {f['status']}: {f.get('reason')}")
    im = s["image"]
    if im and im["status"] == "ok":
        for w, row in im["by_workers"].items():
            rates = ", ".join(f"{n} {v:,.0f}" for n, v in sorted(row["samples_per_s"].items(),
                                                                 key=lambda kv: -kv[1]))
            lines.append(f"  image workers={w}: {rates} samples/s")
            if "engine_winner" in row:
                lines.append(f"    engine: {row['engine_winner']} wins by {row['engine_margin']:.2f}x")
            if "gpu_decode_vs_best_cpu" in row:
                lines.append(f"    GPU decode: {row['gpu_decode_vs_best_cpu']:.2f}x the best CPU arm "
                             f"({row['best_cpu_arm']})")
            for n, why in row["not_ok"].items():
                lines.append(f"    {n}: {why}")
    elif im:
        lines.append(f"  image: {im['status']}: {im.get('reason')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the gpu_check.sh output folder")
    ap.add_argument("--steps", help="the steps file the script kept")
    ap.add_argument("--status", required=True, choices=["ok", "failed", "skipped", "dry-run"])
    ap.add_argument("--reason", default="")
    ap.add_argument("--seconds", type=int)
    args = ap.parse_args(argv)
    s = summarize(args.out, read_steps(args.steps), args.status, args.reason, args.seconds)
    path = os.path.join(args.out, "summary.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(s, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(format_summary(s))
    print(f"gpu_check: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
