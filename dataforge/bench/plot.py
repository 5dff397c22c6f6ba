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
import textwrap
from pathlib import Path
from typing import Any


def _caption(result: dict[str, Any]) -> str:
    """What made the plot: date, data, sizes, windows (the same run as the JSON beside it)."""
    cfg, env = result.get("config", {}), result.get("env", {})
    data = "demo data" if cfg.get("demo_data") else (cfg.get("data") or "demo data")
    return (f"{env.get('date', '')}  {cfg.get('num_samples', '?')} samples from {data}, batch "
            f"{cfg.get('batch_size')}, {cfg.get('seconds')} s x {cfg.get('repeats')} repeats"
            f"{' (--quick)' if cfg.get('quick') else ''}; {env.get('cpu', '')}")


def plot_throughput(result: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Draw grouped bars (one group per workers count, one bar per arm that ran) with the
    measured limit of each pipeline as a dashed horizontal line over its group.

    Arms that did not run (absent or failed) get no bar and no legend entry: a line
    under the plot names them and why (the table has the same). A log axis carries
    labelled ticks at 1, 2 and 5 of every decade.

    Returns the written path, or ``None`` when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    from dataforge.bench.report import trusted_ceiling

    arms = [a for a in result["arms"] if a["status"] == "ok"]
    names = list(dict.fromkeys(a["arm"] for a in arms))
    workers = sorted({a["workers"] for a in result["arms"]})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(workers) * max(len(names), 1) * 0.6), 4.6))
    _bars(ax, arms, names, workers, plt.get_cmap("tab10"))
    by_workers = result["limit"]["by_workers"]
    _limit_lines(ax, by_workers, workers)
    ceiling = trusted_ceiling(result)  # NOTE [ceiling above the arms] in dataforge.bench.report
    _ceiling_lines(ax, ceiling, workers)
    values = [a["samples_per_s"] for a in arms if a["samples_per_s"] > 0]
    values += [v for d in by_workers.values() for v in d.values() if v]
    if values and max(values) > 20 * min(values):
        _log_axis(ax, values)  # a 50x gap would flatten the small bars to nothing
    ax.set_xticks(range(len(workers)))
    ax.set_xticklabels([f"{w} workers" for w in workers])
    ax.set_ylabel(result.get("unit", "samples/s") + (" (log scale)" if ax.get_yscale() == "log" else ""))
    env = result.get("env", {})
    ax.set_title(f"dataforge bench {result.get('benchmark', '')}: {env.get('cores')} cores, "
                 f"device {result.get('config', {}).get('device')}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _notes(fig, _note_lines(result, names, ceiling))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _bars(ax: Any, arms: list[dict[str, Any]], names: list[str], workers: list[int], cmap: Any) -> None:
    """One bar per arm that ran in each workers group, labelled with its value."""
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, w in enumerate(workers):
            for a in arms:
                if a["arm"] == name and a["workers"] == w:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(a["samples_per_s"])
        bars = ax.bar(xs, ys, width=width * 0.95, label=name, color=cmap(j % 10))
        ax.bar_label(bars, labels=[f"{y:,.0f}" for y in ys], fontsize=7, padding=1)


def _limit_lines(ax: Any, by_workers: dict[str, dict[str, float]], workers: list[int]) -> None:
    """Each pipeline's limit as a black line over each workers group, one style per pipeline."""
    styles: list[Any] = ["--", ":", "-."]
    pipelines = list(dict.fromkeys(p for d in by_workers.values() for p in d))
    for k, pipe in enumerate(pipelines):
        for i, w in enumerate(workers):
            v = by_workers.get(str(w), {}).get(pipe)
            if v:
                ax.hlines(v, i - 0.45, i + 0.45, colors="black", linestyles=styles[k % len(styles)],
                          label=f"limit ({pipe} pipeline)" if i == 0 else "_nolegend_")


def _ceiling_lines(ax: Any, ceiling: dict[str, float], workers: list[int]) -> None:
    """The trusted parallel ceiling as a grey line over its workers groups, one legend entry."""
    for i, w in enumerate(workers):  # NOTE [parallel ceiling] in dataforge.bench.ceiling
        v = ceiling.get(str(w))
        if v:
            ax.hlines(v, i - 0.45, i + 0.45, colors="dimgray", linestyles="-", linewidth=1.2,
                      label="parallel ceiling (dataforge)" if not any(
                          ceiling.get(str(u)) for u in workers[:i]) else "_nolegend_")


def _log_axis(ax: Any, values: list[float]) -> None:
    """A log y axis labelled at 1, 2 and 5 of every decade, with room above and below."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(min(values) / 2, max(values) * 2.5)
    ax.grid(axis="y", which="major", alpha=0.3)


def _note_lines(result: dict[str, Any], names: list[str], ceiling: dict[str, float]) -> list[str]:
    """The notes under the plot: the caption, the arms that did not run, a ceiling not drawn."""
    missing = {a["arm"]: f"{a['arm']} ({a['status']}: {a.get('reason') or 'no reason given'})"
               for a in result["arms"] if a["status"] != "ok" and a["arm"] not in names}
    notes = [_caption(result)]
    if missing:
        notes.append("not run: " + "; ".join(missing.values()))
    beaten = sorted(set((result.get("ceiling") or {}).get("by_workers") or {}) - set(ceiling), key=int)
    if beaten:
        notes.append(f"parallel ceiling not drawn at workers={','.join(beaten)}: an arm ran faster, "
                     "so it was mis-measured (see the table)")
    return notes


def _notes(fig: Any, notes: list[str]) -> None:
    """``notes`` wrapped to the figure's width under the axes, the figure grown to hold them."""
    chars = int(fig.get_figwidth() * 17)  # about what a line of 7-point text holds
    lines = [line for n in notes
             for line in textwrap.wrap(n, chars, subsequent_indent="  ", break_on_hyphens=False)]
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="dimgray", va="bottom")
    fig.set_figheight(fig.get_figheight() + 0.14 * len(lines))
    fig.tight_layout(rect=(0, 0.16 * len(lines) / fig.get_figheight() + 0.01, 1, 1))
