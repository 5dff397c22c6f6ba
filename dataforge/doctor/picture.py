"""The doctor's PNG: stage time per worker, and stage activity over the run.

matplotlib is optional (the ``bench`` extra): without it no picture is drawn and the
report says so.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from dataforge.doctor.diagnosis import WORKER_STAGES, worker_stages
from dataforge.doctor.run import RunResult
from dataforge.doctor.trace import lane_key

_BINS = 30


def _spread(bins: list[float], t0: float, width: float, a: float, b: float, amount: float) -> None:
    """Add ``amount`` seconds spent evenly over ``[a, b]`` to the time bins, as seconds per
    second of bin."""
    if b <= a:
        i = int((a - t0) / width)
        if 0 <= i < len(bins):
            bins[i] += amount / width
        return
    first, last = max(0, int((a - t0) / width)), min(len(bins) - 1, int((b - t0) / width))
    for i in range(first, last + 1):
        lo, hi = max(a, t0 + i * width), min(b, t0 + (i + 1) * width)
        if hi > lo:
            bins[i] += amount * (hi - lo) / (b - a) / width


def draw(run: RunResult, path: str | Path, title: str = "") -> Path | None:
    """Draw the picture of ``run`` into ``path``; ``None`` when matplotlib is missing.

    Left: seconds per stage for each worker, and the consumer's wait and step. Right:
    over time, the workers busy in each stage (stage seconds per second of run, from
    the timeline) and the consumer's wait fraction.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    workers: dict[str, Any] = run.stats.get("workers") or {}
    names = worker_stages({s: None for w in workers.values() for s in (w.get("stages") or {})})
    order = [*WORKER_STAGES, *(s for s in names if s not in WORKER_STAGES)]
    colors = {s: plt.get_cmap("tab20")(i % 20) for i, s in enumerate(order)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.6]})
    lanes = sorted(workers, key=lane_key)
    labels = [f"worker {w}" if w.isdigit() else "loader (main)" for w in lanes] + ["consumer"]
    for s in names:
        lefts = [0.0] * len(lanes)
        for i, w in enumerate(lanes):
            lefts[i] = sum(float((workers[w].get("stages") or {}).get(p, {}).get("seconds", 0.0))
                           for p in names[: names.index(s)])
        widths = [float((workers[w].get("stages") or {}).get(s, {}).get("seconds", 0.0)) for w in lanes]
        left.barh(range(len(lanes)), widths, left=lefts, color=colors[s], label=s)
    wait = sum(c[1] - c[0] for c in run.consumer)
    step = sum(c[2] - c[1] for c in run.consumer)
    left.barh([len(lanes)], [wait], color="0.3", label="consumer wait")
    left.barh([len(lanes)], [step], left=[wait], color="0.75", label="consumer step")
    left.set_yticks(range(len(labels)), labels)
    left.invert_yaxis()
    left.set_xlabel("seconds")
    left.set_title("time per stage")
    left.legend(fontsize=7, loc="lower right")

    timeline = run.stats.get("timeline") or []
    if run.consumer:
        t0, t1 = run.consumer[0][0], run.consumer[-1][2]
        width = max((t1 - t0) / _BINS, 1e-6)
        mids = [(i + 0.5) * width for i in range(_BINS)]
        busy = {s: [0.0] * _BINS for s in names}
        for e in timeline:
            for s, v in (e.get("stages") or {}).items():
                if s in busy:
                    _spread(busy[s], t0, width, float(e["start"]), float(e["end"]), float(v))
        if names:
            right.stackplot(mids, [busy[s] for s in names], labels=names,
                            colors=[colors[s] for s in names], alpha=0.85)
        waits = [0.0] * _BINS
        for a, b_, _ in run.consumer:
            _spread(waits, t0, width, a, b_, b_ - a)
        twin = right.twinx()
        twin.plot(mids, [min(w, 1.0) for w in waits], color="black", lw=1.5, label="consumer wait")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("consumer wait fraction")
        twin.legend(fontsize=7, loc="upper right")
    right.set_xlabel("seconds since the first wait")
    right.set_ylabel("workers busy in each stage")
    right.set_title("stages over time")
    if names:
        right.legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 150)[:2]), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
