"""PNG plot of a throughput result: samples/s by arm and workers, the limit (and the
image benchmark's parallel ceiling) as lines.

matplotlib is imported lazily (the ``bench`` extra) with the non-interactive
``Agg`` backend, so plotting works on a headless machine and ``import
dataforge`` never needs matplotlib.

Example:
    >>> plot_throughput(result, "bench_out/image.png")  # doctest: +SKIP
    PosixPath('bench_out/image.png')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_throughput(result: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Draw grouped bars (one group per workers count, one bar per arm) with the
    measured limit of each pipeline as a dashed horizontal line over its group.

    Returns the written path, or ``None`` when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    arms = [a for a in result["arms"] if a["status"] == "ok"]
    names = list(dict.fromkeys(a["arm"] for a in result["arms"]))
    workers = sorted({a["workers"] for a in result["arms"]})
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(workers) * max(len(names), 1) * 0.6), 4.2))
    cmap = plt.get_cmap("tab10")
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, w in enumerate(workers):
            for a in arms:
                if a["arm"] == name and a["workers"] == w:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(a["samples_per_s"])
        bars = ax.bar(xs, ys, width=width * 0.95, label=name, color=cmap(j % 10))
        ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7, padding=1)
    styles: list[Any] = ["--", ":", "-."]
    by_workers = result["limit"]["by_workers"]
    pipelines = list(dict.fromkeys(p for d in by_workers.values() for p in d))
    for k, pipe in enumerate(pipelines):
        for i, w in enumerate(workers):
            v = by_workers.get(str(w), {}).get(pipe)
            if v:
                ax.hlines(v, i - 0.45, i + 0.45, colors="black", linestyles=styles[k % len(styles)],
                          label=f"limit ({pipe} pipeline)" if i == 0 else "_nolegend_")
    ceiling = (result.get("ceiling") or {}).get("by_workers") or {}
    for i, w in enumerate(workers):  # NOTE [parallel ceiling] in dataforge.bench.ceiling
        v = ceiling.get(str(w))
        if v:
            ax.hlines(v, i - 0.45, i + 0.45, colors="dimgray", linestyles="-", linewidth=1.2,
                      label="parallel ceiling (dataforge)" if not any(
                          ceiling.get(str(u)) for u in workers[:i]) else "_nolegend_")
    values = [a["samples_per_s"] for a in arms if a["samples_per_s"] > 0]
    if values and max(values) > 20 * min(values):
        ax.set_yscale("log")  # a 50x gap would flatten the small bars to nothing
    ax.set_xticks(range(len(workers)))
    ax.set_xticklabels([f"{w} workers" for w in workers])
    ax.set_ylabel(result.get("unit", "samples/s"))
    env = result.get("env", {})
    ax.set_title(f"dataforge bench {result.get('benchmark', '')}: {env.get('cores')} cores, "
                 f"device {result.get('config', {}).get('device')}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
