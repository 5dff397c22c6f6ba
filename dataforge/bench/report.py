"""Benchmark results: the JSON schema, its validation, ratios and the terminal table.

JSON document written by ``dataforge bench`` for each benchmark it runs
(``<out>/<benchmark>.json``; ``<out>/index.json`` records which command wrote
which file, see :mod:`dataforge.cli`)::

    {
      "schema_version": 1,
      "command": "dataforge bench all --quick",     # how it was produced
      "env": {...},                                  # common.env_info(): cpu, cores, versions, gpu
      "benchmarks": {"image": RESULT},               # the one benchmark of this file
      "seconds_by_benchmark": {"image": float},      # its wall time
      "total_seconds": float                         # the same: wall time of this benchmark
    }

Every ``RESULT`` has ``"status"``: ``"ok"``, ``"not available"`` (its module is
not installed / written yet) or ``"failed"`` (with ``"reason"``, one line).
An ``ok`` result from any benchmark module has an ``"env"``. The throughput
benchmarks (``image``, ``text``) also have::

    "benchmark": "image",
    "unit": "samples/s",
    "config": {"data": str, "num_samples": int, "batch_size": int, "workers": [int],
               "seconds": float, "repeats": int, "device": str, "quick": bool, ...},
    "limit": {"method": str,                       # what was timed, in words
              "per_sample_ms": {PIPELINE: float},  # CPU ms, single process, 1 thread
              "cores_in_use": {"<workers>": int},  # the multiplier per workers count
              "by_workers": {"<workers>": {PIPELINE: samples/s}}},
    "ceiling": {"method": str, "pipeline": str,      # image only: NOTE [parallel ceiling]
                "by_workers": {"<workers>": samples/s},  # for workers counts using > 1 core
                "fraction_of_limit": {"<workers>": float},
                "error": str | None},               # why it is missing, if it failed
    "plot": str | None,                            # the PNG, when an out folder was given
    "arms": [{
        "arm": str, "label": str, "pipeline": str, "workers": int,
        "status": "ok" | "absent" | "failed", "reason": str | None, "repeats": int,
        # only when status == "ok":
        "samples_per_s": float,            # median over repeats, steady state
        "samples_per_s_runs": [float],     # one per repeat
        "time_to_first_batch_s": float,    # median; warm-up excluded from the rate
        "cpu_s_per_sample": float | None,  # this process + children, in the window
        "peak_mem_mb": float, "mem_kind": "pss" | "rss",  # largest sample, process + children
        "window_s": float, "samples_measured": int,
        "ratio_to_stock": float | None,    # vs the "stock" arm at the same workers
        "fraction_of_limit": float | None, # vs limit.by_workers[workers][pipeline]
        "fraction_of_ceiling": float | None,  # image, ceiling's pipeline; None: an arm beat it
        # text arms add: "tokens_per_s", "padding_efficiency" (real / padded tokens),
        #   "first_epoch_s", "first_epoch_samples_per_s", "first_epoch_tokens_per_s"
    }]

Example:
    >>> doc = {"schema_version": 1, "command": "x", "env": {}, "benchmarks": {
    ...     "collate": {"status": "not available", "reason": "module missing"}}}
    >>> validate_document(doc)
"""

from __future__ import annotations

import math
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "not available", "failed")
ARM_STATUSES = ("ok", "absent", "failed")

_ARM_OK_FIELDS: dict[str, type | tuple[type, ...]] = {
    "samples_per_s": (int, float),
    "samples_per_s_runs": list,
    "time_to_first_batch_s": (int, float),
    "peak_mem_mb": (int, float),
    "mem_kind": str,
    "window_s": (int, float),
    "samples_measured": int,
}
_TEXT_FIELDS = ("tokens_per_s", "padding_efficiency")


class SchemaError(ValueError):
    """A result document does not follow the schema; the message lists every problem."""


def _need(problems: list[str], d: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        problems.append(f"{where}: missing {key!r}")
        return None
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        problems.append(f"{where}.{key}: expected {types}, got bool")
    elif not isinstance(v, types):
        problems.append(f"{where}.{key}: expected {types}, got {type(v).__name__}")
    return v


def _check_arm(problems: list[str], arm: Any, where: str, text: bool) -> None:
    for key, types in (("arm", str), ("label", str), ("pipeline", str), ("workers", int),
                       ("status", str), ("repeats", int)):
        _need(problems, arm, key, types, where)
    if not isinstance(arm, dict):
        return
    if arm.get("status") not in ARM_STATUSES:
        problems.append(f"{where}.status: expected one of {ARM_STATUSES}, got {arm.get('status')!r}")
    if arm.get("status") != "ok":
        if not arm.get("reason"):
            problems.append(f"{where}: status {arm.get('status')!r} needs a 'reason'")
        return
    for key, kinds in _ARM_OK_FIELDS.items():
        v = _need(problems, arm, key, kinds, where)
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{where}.{key}: not finite ({v})")
    for key in ("ratio_to_stock", "fraction_of_limit", "cpu_s_per_sample"):
        if key not in arm:
            problems.append(f"{where}: missing {key!r}")
        elif arm[key] is not None:
            _need(problems, arm, key, (int, float), where)
    if text:
        for key in _TEXT_FIELDS:
            _need(problems, arm, key, (int, float), where)


def validate_result(result: Any, name: str = "result") -> None:
    """Raise :class:`SchemaError` if one benchmark's result breaks the schema."""
    problems: list[str] = []
    status = _need(problems, result, "status", str, name)
    if status is not None and status not in STATUSES:
        problems.append(f"{name}.status: expected one of {STATUSES}, got {status!r}")
    if status == "ok":
        _need(problems, result, "env", dict, name)
        if isinstance(result, dict) and "arms" in result:  # a throughput benchmark
            _need(problems, result, "benchmark", str, name)
            _need(problems, result, "unit", str, name)
            _need(problems, result, "config", dict, name)
            limit = _need(problems, result, "limit", dict, name)
            if isinstance(limit, dict):
                _need(problems, limit, "method", str, f"{name}.limit")
                _need(problems, limit, "per_sample_ms", dict, f"{name}.limit")
                _need(problems, limit, "by_workers", dict, f"{name}.limit")
            arms = _need(problems, result, "arms", list, name)
            text = result.get("benchmark") == "text"
            for i, arm in enumerate(arms or []):
                _check_arm(problems, arm, f"{name}.arms[{i}]", text)
    elif status is not None:
        _need(problems, result, "reason", str, name)
    if problems:
        raise SchemaError("; ".join(problems))


def validate_document(doc: Any) -> None:
    """Raise :class:`SchemaError` if a ``<benchmark>.json`` document breaks the schema."""
    problems: list[str] = []
    v = _need(problems, doc, "schema_version", int, "document")
    if v is not None and v != SCHEMA_VERSION:
        problems.append(f"document.schema_version: expected {SCHEMA_VERSION}, got {v!r}")
    _need(problems, doc, "command", str, "document")
    _need(problems, doc, "env", dict, "document")
    benches = _need(problems, doc, "benchmarks", dict, "document")
    for name, result in (benches or {}).items():
        try:
            validate_result(result, f"benchmarks.{name}")
        except SchemaError as exc:
            problems.append(str(exc))
    if problems:
        raise SchemaError("; ".join(problems))


def add_ratios(arms: list[dict[str, Any]], by_workers: dict[str, dict[str, float]],
               key: str = "samples_per_s", baseline: str = "stock") -> None:
    """Fill ``ratio_to_stock`` and ``fraction_of_limit`` of every ``ok`` arm, in place."""
    base = {a["workers"]: a[key] for a in arms if a["arm"] == baseline and a["status"] == "ok"}
    for a in arms:
        if a["status"] != "ok":
            continue
        b = base.get(a["workers"])
        a["ratio_to_stock"] = a[key] / b if b else None
        lim = by_workers.get(str(a["workers"]), {}).get(a["pipeline"])
        a["fraction_of_limit"] = a["samples_per_s"] / lim if lim else None


# NOTE [ceiling above the arms]: the parallel ceiling is an upper bound (the limit's
# work with no loader at all). An arm measured above it by more than this margin shows
# the ceiling mis-measured at that workers count (a short --quick window, a busy
# machine while its processes ran), so no fraction of it is reported or drawn there.
CEILING_MARGIN = 1.05


def ceiling_exceeded(arms: list[dict[str, Any]], ceiling: dict[str, float],
                     pipeline: str) -> dict[str, str]:
    """``{workers: arm}`` for each workers count whose ceiling an ``ok`` arm of
    ``pipeline`` beat by more than ``CEILING_MARGIN`` (NOTE [ceiling above the arms])."""
    out: dict[str, str] = {}
    for a in arms:
        w = str(a["workers"])
        if (a["status"] == "ok" and a["pipeline"] == pipeline and w in ceiling
                and a["samples_per_s"] > CEILING_MARGIN * ceiling[w]):
            out[w] = a["arm"]
    return out


def trusted_ceiling(result: dict[str, Any]) -> dict[str, float]:
    """The ceiling values of ``result`` that no arm beat: the ones worth reporting."""
    ceiling = result.get("ceiling") or {}
    values = ceiling.get("by_workers") or {}
    bad = ceiling_exceeded(result.get("arms", []), values, ceiling.get("pipeline", "dataforge"))
    return {w: v for w, v in values.items() if w not in bad}


def add_ceiling_fractions(arms: list[dict[str, Any]], ceiling: dict[str, float], pipeline: str) -> None:
    """Fill ``fraction_of_ceiling`` of the ``ok`` arms of ``pipeline`` that have a ceiling
    no arm beat (NOTE [ceiling above the arms]); ``None`` where an arm beat it."""
    bad = ceiling_exceeded(arms, ceiling, pipeline)
    for a in arms:
        w = str(a["workers"])
        if a["status"] == "ok" and a["pipeline"] == pipeline and w in ceiling:
            a["fraction_of_ceiling"] = None if w in bad else a["samples_per_s"] / ceiling[w]


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    return format(v, spec)


def format_throughput_table(result: dict[str, Any]) -> str:
    """The terminal table of an ``image`` or ``text`` result."""
    text = result.get("benchmark") == "text"
    cols = ["arm", "workers", "samples/s", "x stock", "of limit", "1st batch s", "CPU ms/sample", "peak MB"]
    ceiling = result.get("ceiling") or {}
    trusted = trusted_ceiling(result)
    show_ceiling = bool(trusted)
    if show_ceiling:
        cols[5:5] = ["of ceiling"]
    if text:
        cols[3:3] = ["tokens/s", "pad eff", "epoch1 s"]
    rows = []
    for a in result["arms"]:
        if a["status"] != "ok":
            rows.append([a["arm"], str(a["workers"]), f"{a['status']}: {a['reason']}"])
            continue
        row = [
            a["arm"], str(a["workers"]), _fmt(a["samples_per_s"], ",.0f"),
            _fmt(a.get("ratio_to_stock"), ".2f"),
            "-" if a.get("fraction_of_limit") is None else f"{a['fraction_of_limit']:.0%}",
            _fmt(a["time_to_first_batch_s"], ".2f"),
            _fmt(None if a.get("cpu_s_per_sample") is None else a["cpu_s_per_sample"] * 1e3, ".2f"),
            _fmt(a["peak_mem_mb"], ",.0f"),
        ]
        if show_ceiling:
            row[5:5] = ["-" if a.get("fraction_of_ceiling") is None else f"{a['fraction_of_ceiling']:.0%}"]
        if text:
            row[3:3] = [_fmt(a.get("tokens_per_s"), ",.0f"), _fmt(a.get("padding_efficiency"), ".3f"),
                        _fmt(a.get("first_epoch_s"), ".2f")]
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows if len(r) == len(cols) or i < 2)) if rows
              else len(c) for i, c in enumerate(cols)]  # arm and workers line up on every row
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) if len(r) == len(cols)
                     else "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2]]))
    cfg, env, lim = result["config"], result["env"], result["limit"]
    head = (f"{result['benchmark']}: {cfg.get('num_samples')} samples from {cfg.get('data')}, "
            f"batch {cfg.get('batch_size')}, device {cfg.get('device')}, "
            f"{cfg.get('seconds')} s x {cfg.get('repeats')} repeats (median); "
            f"{env.get('cores')} cores, {env.get('cpu')}")
    limits = ", ".join(
        f"workers={w}: " + " / ".join(f"{p} {v:,.0f}" for p, v in d.items())
        for w, d in lim["by_workers"].items())
    foot = [f"limit ({result['unit']}; {lim['method']}): {limits}"]
    if ceiling.get("error"):
        foot.append(f"parallel ceiling: not measured ({ceiling['error']})")
    elif ceiling.get("by_workers"):
        beaten = ceiling_exceeded(result["arms"], ceiling["by_workers"], ceiling["pipeline"])
        foot.append(f"parallel ceiling ({ceiling['pipeline']}, {result['unit']}): " + ", ".join(
            f"workers={w}: {v:,.0f} ({ceiling['fraction_of_limit'][w]:.0%} of the limit)"
            + (f", not used: {beaten[w]} ran faster, so it was mis-measured (a short window or a "
               "busy machine; rerun with longer --seconds)" if w in beaten else "")
            for w, v in ceiling["by_workers"].items()))
    return "\n".join([head, *lines, *foot])
