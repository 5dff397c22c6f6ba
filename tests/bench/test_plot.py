from __future__ import annotations

from typing import Any

import pytest

from dataforge.bench.plot import plot_throughput


def _result(rates: dict[str, float], limit: dict[str, float], **extra: Any) -> dict[str, Any]:
    arms: list[dict[str, Any]] = [
        {"arm": a, "workers": w, "status": "ok", "samples_per_s": r * (1 + w), "pipeline": "dataforge"}
        for a, r in rates.items() for w in (0, 2)]
    arms.append({"arm": "torchdata-nodes", "workers": 0, "status": "absent",
                 "reason": "torchdata is not installed", "pipeline": "dataforge"})
    return {"benchmark": "image", "unit": "samples/s", "env": {"cores": 2, "date": "d", "cpu": "c"},
            "config": {"device": "cpu", "num_samples": 8, "quick": True},
            "limit": {"by_workers": {str(w): {p: v * (1 + w) for p, v in limit.items()} for w in (0, 2)}},
            "arms": arms, **extra}


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures plot_throughput saves, kept for inspection."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved: list[Any] = []
    real = Figure.savefig

    def keep(self: Any, *args: Any, **kwargs: Any) -> None:
        saved.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_plot_writes_png(tmp_path, figures):
    result = _result({"stock": 100.0, "dataforge-thread": 250.0}, {"stock": 120.0, "dataforge": 300.0})
    path = plot_throughput(result, tmp_path / "sub" / "image.png")
    assert path == tmp_path / "sub" / "image.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_absent_arms_are_named_not_drawn(tmp_path, figures):
    """torchdata had a legend entry and no bar (in stock's colour); now a note under the plot."""
    plot_throughput(_result({"stock": 100.0, "dataforge-thread": 250.0}, {"dataforge": 300.0}),
                    tmp_path / "image.png")
    fig = figures[-1]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "torchdata-nodes" not in legend and {"stock", "dataforge-thread"} <= set(legend)
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "not run: torchdata-nodes (absent: torchdata is not installed)" in notes
    colors = {p.get_facecolor() for p in fig.axes[0].patches}
    assert len(colors) == 2


def test_log_axis_has_readable_ticks(tmp_path, figures):
    """A 70x gap (text: stock vs pre-tokenized) gets a log axis labelled at 1-2-5 steps."""
    plot_throughput(_result({"stock": 800.0, "dataforge": 57_000.0}, {"dataforge": 80_000.0}),
                    tmp_path / "text.png")
    ax = figures[-1].axes[0]
    assert ax.get_yscale() == "log"
    figures[-1].canvas.draw()
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels()
              if t.get_text() and lo <= t.get_position()[1] <= hi]
    assert len(labels) >= 6, labels  # matplotlib's default gave two (10^3, 10^4)
    assert "1,000" in labels and "2,000" in labels and "50,000" in labels


def test_mis_measured_ceiling_is_not_drawn(tmp_path, figures):
    result = _result({"dataforge-thread": 250.0}, {"dataforge": 300.0}, ceiling={
        "pipeline": "dataforge", "by_workers": {"2": 100.0}, "fraction_of_limit": {"2": 0.1}})
    plot_throughput(result, tmp_path / "image.png")
    fig = figures[-1]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not any("ceiling" in t for t in legend)
    assert "parallel ceiling not drawn at workers=2" in " ".join(t.get_text() for t in fig.texts)
