"""``dataforge.doctor``: why is my GPU waiting, and what do I change.

Runs a pipeline for a bounded time with a simulated or real training step, then
reports throughput, data wait, time to the first batch, per-worker memory (PSS),
the stage that bounds the pipeline with its evidence, and advice that it verified
by trying each change in a short trial run. Optionally writes a Chrome trace and a
PNG. Under ``torch.distributed`` it gathers every rank's figures and names the
stragglers. The command ``dataforge doctor pkg.module:make_loader`` does the same
from a shell (``dataforge.doctor.command``).

NOTE [callable module]: ``dataforge.doctor`` is both this package and its main
function. Python binds a package's name on its parent to the module as soon as any
of its submodules is imported, which would shadow a function of the same name, so
the module itself is made callable: ``dataforge.doctor(loader)`` calls
:func:`doctor` whichever of the two the attribute holds.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from dataforge.doctor import ranks as _ranks
from dataforge.doctor.diagnosis import Diagnosis, diagnose
from dataforge.doctor.memory import available as _memory_available
from dataforge.doctor.picture import draw
from dataforge.doctor.report import Report
from dataforge.doctor.run import RunResult, Step, make_step, run_pipeline
from dataforge.doctor.trace import trace_events, write_trace
from dataforge.doctor.trials import Rebuilder, Trial, advised, candidates, close_loader, run_trials

__all__ = ["Diagnosis", "Report", "RunResult", "Trial", "doctor"]


def _per_rank(path: str | Path, rank: int, world: int) -> Path:
    path = Path(path)
    return path if world < 2 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def doctor(
    loader_or_factory: Any,
    *,
    seconds: float = 10.0,
    step_ms: float = 0.0,
    step: Step | None = None,
    trials: bool = True,
    trial_seconds: float | None = None,
    max_trials: int = 4,
    png: str | Path | None = None,
    trace: str | Path | None = None,
) -> Report:
    """Run a pipeline for a bounded time, diagnose it, and verify advice by trial runs.

    Args:
        loader_or_factory: a factory ``f(**overrides) -> loader`` (the doctor calls it
            with no argument, then with one override per trial), a ``dataforge.Loader``
            (rebuilt from its public attributes for the trials), or any iterable of
            batches (diagnosed only): NOTE [rebuild rule] in ``trials.py``.
        seconds: steady-state seconds of the main run (after the first batch).
        step_ms: the simulated training step: a sleep of this many ms per batch
            (0: no step, so the run measures the pipeline's own top speed and the wait
            reads near 100%). Use your model's step time to see whether it would starve.
        step: a real step ``step(batch)`` instead of the sleep (synchronize the device
            inside it, or the step's time is not measured).
        trials: try the changes the verdict suggests.
        trial_seconds: steady-state seconds of each trial (default ``max(1, seconds / 3)``).
        max_trials: at most this many trials.
        png: write the picture here (needs matplotlib: the ``bench`` extra).
        trace: write a Chrome trace / Perfetto JSON here. Under ``torch.distributed``
            with several ranks, each rank writes ``<stem>.rank<r><suffix>``.

    Returns:
        the :class:`Report`; ``print(report)`` shows it as text.

    Raises:
        ValueError: a bad ``seconds``, ``step_ms``, ``trial_seconds`` or ``max_trials``,
            or a pipeline that yields no batch.
        TypeError: ``loader_or_factory`` is not a loader or a factory.

    Example:
        >>> import torch, dataforge
        >>> def make(num_workers=0, **kw):
        ...     return dataforge.build_loader(torch.arange(64.0), batch_size=8,
        ...                                   num_workers=num_workers, **kw)
        >>> report = dataforge.doctor(make, seconds=0.2, step_ms=1, trials=False)
        >>> report.run.samples > 0
        True
    """
    _check_seconds("seconds", seconds)
    if trial_seconds is not None:
        _check_seconds("trial_seconds", trial_seconds)
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 0:
        raise ValueError(f"max_trials must be an int >= 0, got {max_trials!r}")
    step_fn = make_step(step, step_ms)
    step_words = (f"{getattr(step, '__name__', type(step).__name__)}(batch)" if step is not None
                  else f"sleep {step_ms:g} ms per batch" if step_ms > 0 else "none (pipeline alone)")
    rebuild = Rebuilder(loader_or_factory)
    loader = rebuild.baseline()
    try:
        run = run_pipeline(loader, seconds, step_fn)
        pipeline = repr(loader)
    finally:
        if rebuild.owns(loader):
            close_loader(loader)
    diag = diagnose(run)
    from dataforge._dist import resolve_replicas

    world, rank = resolve_replicas()
    rep = Report(pipeline=pipeline, step=step_words, run=run, diagnosis=diag, rank=rank)
    if not _memory_available():
        rep.notes.append("memory n/a: PSS needs psutil on Linux (pip install psutil)")
    if trials and max_trials > 0:
        tried = candidates(diag, rebuild, loader, run.stats)[:max_trials]
        rep.trial_seconds = trial_seconds if trial_seconds is not None else max(1.0, seconds / 3)
        rep.trials = run_trials(tried, rebuild, run, rep.trial_seconds, step_fn)
        rep.advice = advised(rep.trials, diag.data_bound)
        if rebuild.note:
            rep.notes.append(rebuild.note)
        elif not tried:
            rep.notes.append("no trials: no change applies to this verdict and this factory's arguments")
    summaries = _ranks.gather(_ranks.summary(run, diag, rank))
    if summaries is not None:
        rep.ranks = summaries
        rep.stragglers = _ranks.stragglers(summaries)
    if trace is not None:
        rep.files["trace"] = str(write_trace(_per_rank(trace, rank, world), trace_events(run, rank)))
    if png is not None:
        drawn = draw(run, _per_rank(png, rank, world), title=pipeline)
        if drawn is None:
            rep.notes.append(f"no picture: {png} needs matplotlib (pip install 'dataforge[bench]')")
        else:
            rep.files["picture"] = str(drawn)
    return rep


class _CallableModule(types.ModuleType):
    """NOTE [callable module]: ``dataforge.doctor(...)`` works on the module too."""

    def __call__(self, *args: Any, **kwargs: Any) -> Report:
        return doctor(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
