"""The doctor's report: its figures as data, and as text for a terminal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dataforge.doctor import memory
from dataforge.doctor.diagnosis import Diagnosis
from dataforge.doctor.run import RunResult
from dataforge.doctor.trials import Trial


@dataclass
class Report:
    """What ``dataforge.doctor`` found.

    Attributes:
        pipeline: the loader's ``repr``.
        step: the step in words ("sleep 10 ms per batch", "fit_step").
        run: the measured run as it is.
        diagnosis: the verdict (bounding stage, evidence).
        trials: every change tried, with its measured effect.
        advice: the trials worth following, best first (NOTE [verified advice]).
        notes: what could not be done and why (no psutil, no factory, ...).
        rank: this process's rank (0 outside ``torch.distributed``).
        ranks: every rank's summary, when gathered.
        stragglers: the straggling ranks (NOTE [straggler margin]).
        files: the files written (trace, picture).
    """

    pipeline: str
    step: str
    run: RunResult
    diagnosis: Diagnosis
    trials: list[Trial] = field(default_factory=list)
    advice: list[Trial] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rank: int = 0
    ranks: list[dict[str, Any]] | None = None
    stragglers: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    trial_seconds: float = 0.0

    @property
    def top(self) -> Trial | None:
        """The best verified change, if any."""
        return self.advice[0] if self.advice else None

    def memory_summary(self) -> dict[str, dict[str, int]]:
        return memory.summarize(self.run.memory)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data."""
        r, d = self.run, self.diagnosis
        return {
            "pipeline": self.pipeline, "step": self.step, "rank": self.rank,
            "samples_per_s": r.samples_per_s, "batches_per_s": r.batches_per_s,
            "wait_fraction": r.wait_fraction, "time_to_first_batch_s": r.time_to_first_batch_s,
            "seconds": r.seconds, "memory_pss": self.memory_summary(),
            "data_bound": d.data_bound, "bound": d.bound, "next_stage": d.next_stage,
            "per_batch_ms": d.per_batch_ms, "busy": d.busy, "evidence": d.evidence,
            "trials": [vars(t) for t in self.trials], "advice": [t.label for t in self.advice],
            "notes": self.notes, "ranks": self.ranks, "stragglers": self.stragglers,
            "files": self.files,
        }

    def __str__(self) -> str:
        return format_report(self)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _pct(x: float) -> str:
    return f"{100 * x:+.0f}%"


def format_report(rep: Report) -> str:
    """The report as text (see the example in docs/doctor.md)."""
    r, d = rep.run, rep.diagnosis
    lines = [
        f"dataforge doctor: {rep.pipeline}",
        f"  step: {rep.step}; measured {r.seconds:.1f} s after the first batch ({r.batches} batches)",
        "",
        f"throughput       {r.samples_per_s:,.1f} samples/s ({r.batches_per_s:,.2f} batches/s)",
        f"data wait        {100 * r.wait_fraction:.0f}% of the time "
        + ("-> DATA-BOUND: the step waits for the input pipeline" if d.data_bound
           else "-> the step is the bound, not the data"),
        f"first batch      {r.time_to_first_batch_s:.2f} s after iter() (worker start-up included)",
    ]
    mem = rep.memory_summary()
    if mem:
        parts = [f"{label} {_mib(m['last'])} ({round(m['growth'] / 2**20):+d} MiB)"
                 for label, m in mem.items()]
        lines.append("memory (PSS)     " + "; ".join(parts) + "  (growth since the first batch)")
    else:
        lines.append("memory (PSS)     n/a (needs psutil on Linux: pip install psutil)")
    if d.per_batch_ms:
        costs = sorted(d.per_batch_ms.items(), key=lambda kv: -kv[1])
        lines.append("stage cost       " + ", ".join(f"{k} {v:.1f}" for k, v in costs)
                     + " ms per batch on its resource")
    bound = d.bound if d.bound != "step" else f"step (next in line: {d.next_stage or 'n/a'})"
    lines += ["", f"bounding stage   {bound}"]
    lines += [f"  - {e}" for e in d.evidence]
    lines.append("")
    if rep.trials:
        lines.append(f"advice (each measured in its own {rep.trial_seconds:.1f} s trial; "
                     f"baseline {r.samples_per_s:,.1f} samples/s):")
        for i, t in enumerate(rep.advice, 1):
            lines.append(f"  {i}. {t.label:<28} {t.samples_per_s:,.1f} samples/s ({_pct(t.effect or 0.0)})"
                         f"  [{t.why}]")
        if not rep.advice:
            lines.append("  none of the changes tried helped")
        rest = [t for t in rep.trials if t not in rep.advice]
        for t in rest:
            if t.error is not None:
                lines.append(f"  tried {t.label}: failed ({t.error})")
            else:
                lines.append(f"  tried {t.label}: {t.samples_per_s:,.1f} samples/s "
                             f"({_pct(t.effect or 0.0)}), not advised")
    else:
        lines.append("advice: no trials run")
    lines += [f"note: {n}" for n in rep.notes]
    if rep.ranks is not None:
        lines += ["", f"ranks ({len(rep.ranks)}):"]
        for s in rep.ranks:
            lines.append(f"  rank {s['rank']}: wait {100 * s['wait_fraction']:.0f}%, "
                         f"{s['samples_per_s']:,.1f} samples/s, bound: {s['bound']}")
        if rep.stragglers:
            for s in rep.stragglers:
                stage = (f"; its slow stage: {s['stage']} (+{s['excess_ms']:.2f} ms per sample "
                         "against the other ranks)") if s["stage"] else ""
                lines.append(f"  STRAGGLER rank {s['rank']}: waits {100 * s['wait_fraction']:.0f}% "
                             f"against a median of {100 * s['median']:.0f}%{stage}")
        else:
            lines.append("  no straggler (no rank waits 10 points above the median)")
    for what, path in rep.files.items():
        lines.append(f"{what}: {path}")
    return "\n".join(lines)
