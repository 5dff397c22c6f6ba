"""Advice verified by trying it: rebuild the pipeline with one change, run it, compare.

NOTE [rebuild rule]: to try a change the doctor must build the pipeline again with
other arguments. It accepts

- a factory ``f(**overrides) -> loader``: called with no argument for the run as
  it is, and with one override per trial. A trial is tried only when ``f`` takes it:
  a named parameter, or ``**kwargs`` for the loader arguments ``num_workers``,
  ``engine``, ``pin_memory``. The pipeline knobs ``transform_on_device``,
  ``crop_decode`` and ``bucketing`` (move the per-sample transform to a batch
  transform on the device, decode only the crop, bucket padded text by length) are
  tried only when ``f`` names them, since only the factory knows how to apply them;
  their default in ``f``'s signature is taken as the current value;
- a ``dataforge.Loader``: rebuilt with ``Loader(**public arguments, **override)``
  from its public attributes (dataset, batch_size, sampler, batch_sampler,
  shuffle, collate_fn, num_workers, pin_memory, prefetch_factor, device, seed,
  drop_last, timeout, on_error, engine, depth). Arguments a Loader does not expose
  (batch_transforms, transform_keys, worker_init_fn, multiprocessing_context) are
  not re-applied: a loader that reports batch-transform time gets no trials and a
  note to pass a factory instead;
- any other iterable of batches: measured, diagnosed, never rebuilt (no trials).

NOTE [verified advice]: a change is advised only when its own trial, measured as
the baseline is (NOTE [steady state] in ``run.py``), beats the baseline's
samples/s by at least ``GAIN`` (5%), which is above the spread of back-to-back
runs on a busy machine. When the step is the bound, fewer workers is advised when
it keeps the throughput within ``GAIN``: the same speed for less CPU and memory.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dataforge.doctor.diagnosis import Diagnosis
from dataforge.doctor.run import RunResult, Step, run_pipeline

LOADER_KNOBS = ("num_workers", "engine", "pin_memory")
GAIN = 0.05
MAX_WORKERS = 32
_LOADER_ARGS = (
    "dataset", "batch_size", "sampler", "batch_sampler", "shuffle", "collate_fn", "num_workers",
    "pin_memory", "prefetch_factor", "device", "seed", "drop_last", "timeout", "on_error",
    "engine", "depth",
)


class NotALoader(TypeError):
    """A factory returned something that is not an iterable of batches."""


@dataclass
class Trial:
    """One change tried: its overrides, why, and what it measured.

    Attributes:
        change: the overrides, e.g. ``{"num_workers": 4}``.
        why: the reason it was tried.
        samples_per_s: steady-state throughput of the trial (``None`` if it failed).
        wait_fraction: the consumer's wait in the trial.
        effect: ``samples_per_s / baseline - 1`` (``None`` if it failed).
        error: the error that ended a failed trial.
    """

    change: dict[str, Any]
    why: str
    samples_per_s: float | None = None
    wait_fraction: float | None = None
    effect: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.change.items())


def close_loader(loader: Any) -> None:
    close = getattr(loader, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


class Rebuilder:
    """Builds the pipeline as it is and with overrides (NOTE [rebuild rule]).

    Args:
        loader_or_factory: a factory ``f(**overrides) -> loader``, a ``dataforge.Loader``,
            or any iterable of batches.

    Raises:
        TypeError: ``loader_or_factory`` is neither callable nor iterable.
    """

    def __init__(self, loader_or_factory: Any) -> None:
        from dataforge.loading.loader import Loader

        self.factory: Callable[..., Any] | None = None
        self.accepts: set[str] = set()
        self.defaults: dict[str, Any] = {}
        self.given: Any = None
        self.note: str | None = None
        if isinstance(loader_or_factory, Loader):
            self.given = loader_or_factory
            self.factory = self._from_loader
            self.accepts = set(LOADER_KNOBS)
        elif callable(loader_or_factory) and not hasattr(loader_or_factory, "__iter__"):
            self.factory = loader_or_factory
            self._read_signature(loader_or_factory)
        elif hasattr(loader_or_factory, "__iter__"):
            self.given = loader_or_factory
            self.note = (
                f"no trials: a {type(loader_or_factory).__name__} cannot be rebuilt with other "
                "arguments; pass a factory f(**overrides) -> loader (NOTE [rebuild rule])"
            )
        else:
            raise TypeError(
                "loader_or_factory must be a dataforge Loader, a factory f(**overrides) -> loader "
                f"or an iterable of batches, got {type(loader_or_factory).__name__}"
            )

    def _read_signature(self, factory: Callable[..., Any]) -> None:
        try:
            params = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: try loader knobs
            self.accepts = set(LOADER_KNOBS)
            return
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                self.accepts |= set(LOADER_KNOBS)
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                if p.default is p.empty:
                    raise TypeError(
                        f"the factory {getattr(factory, '__name__', factory)!r} needs an argument "
                        f"{p.name!r}: the doctor calls it with no argument, so give {p.name!r} a "
                        "default (or wrap it: lambda **kw: make_loader(my_args, **kw))"
                    )
                self.accepts.add(p.name)
                self.defaults[p.name] = p.default

    def _from_loader(self, **overrides: Any) -> Any:
        from dataforge.loading.loader import Loader

        base = self.given
        args = {name: getattr(base, name) for name in _LOADER_ARGS}
        dataset, batch_size = args.pop("dataset"), args.pop("batch_size")
        return Loader(dataset, batch_size, **{**args, **overrides})

    def baseline(self) -> Any:
        """The pipeline as it is (the given loader, or ``factory()``)."""
        return self.given if self.given is not None else self.build()

    def owns(self, loader: Any) -> bool:
        """True when the doctor built ``loader`` (and so closes it)."""
        return loader is not self.given

    def current(self, loader: Any) -> dict[str, Any]:
        """The current value of each knob the rebuild takes."""
        out = dict(self.defaults)
        for knob in LOADER_KNOBS:
            if hasattr(loader, knob):
                out[knob] = getattr(loader, knob)
        return out

    def build(self, **overrides: Any) -> Any:
        if self.factory is None:
            raise ValueError(self.note or "this pipeline cannot be rebuilt")
        loader = self.factory(**overrides)
        if not hasattr(loader, "__iter__"):
            name = getattr(self.factory, "__name__", type(self.factory).__name__)
            raise NotALoader(
                f"the factory {name!r} returned a {type(loader).__name__}, not an iterable of "
                "batches; it must return a loader (dataforge.build_loader(...) or a DataLoader)"
            )
        return loader


def candidates(diag: Diagnosis, rebuild: Rebuilder, loader: Any, stats: dict[str, Any]) -> list[Trial]:
    """The changes worth a trial for this verdict, most likely first."""
    if rebuild.factory is None:
        return []
    if rebuild.given is not None and (stats.get("stages") or {}).get("batch_transform", {}).get("count"):
        rebuild.note = (
            "no trials: this Loader has batch transforms, which cannot be re-applied from its public "
            "attributes; pass a factory f(**overrides) -> loader (NOTE [rebuild rule])"
        )
        return []
    cur = rebuild.current(loader)
    ok = rebuild.accepts
    n = cur.get("num_workers")
    out: list[Trial] = []
    if not diag.data_bound:
        if "num_workers" in ok and isinstance(n, int) and n >= 2:
            out.append(Trial({"num_workers": n // 2}, "the loader keeps up with the step: fewer "
                             "workers would save CPU and memory"))
        return out
    stage = diag.bound
    if "transform_on_device" in ok and stage == "transform" and not cur.get("transform_on_device"):
        out.append(Trial({"transform_on_device": True}, "the per-sample transform bounds the pipeline"))
    if "crop_decode" in ok and stage == "decode" and not cur.get("crop_decode"):
        out.append(Trial({"crop_decode": True}, "decoding bounds the pipeline"))
    if "num_workers" in ok and isinstance(n, int) and n < MAX_WORKERS:
        more = min(MAX_WORKERS, max(2, 2 * n))
        if diag.busy is not None and stage not in ("h2d", "batch_transform"):
            why = f"{stage} runs in the workers, which were busy {100 * min(diag.busy, 1.0):.0f}%"
        else:
            why = "more batches loaded in parallel"
        out.append(Trial({"num_workers": more}, why))
    if "bucketing" in ok and not cur.get("bucketing"):
        out.append(Trial({"bucketing": True}, "length bucketing cuts padding of text batches"))
    if "pin_memory" in ok and stage == "h2d" and cur.get("pin_memory") is False:
        out.append(Trial({"pin_memory": True}, "host-to-device copies bound the pipeline"))
    engine = cur.get("engine")
    if ("engine" in ok and engine in ("process", "thread") and isinstance(n, int) and n > 0
            and not getattr(loader, "iterable", False)):
        other = "thread" if engine == "process" else "process"
        why = ("threads share memory and start fast; I/O and C decoders release the GIL"
               if other == "thread" else "processes run Python-heavy stages without the GIL")
        out.append(Trial({"engine": other}, why))
    return out


def run_trials(
    trials: list[Trial], rebuild: Rebuilder, baseline: RunResult, seconds: float, step: Step,
) -> list[Trial]:
    """Run each trial for ``seconds`` of steady state and fill in its figures."""
    base = baseline.samples_per_s
    for trial in trials:
        loader = None
        try:
            loader = rebuild.build(**trial.change)
            result = run_pipeline(loader, seconds, step, memory_samples=0)
        except Exception as exc:  # a trial that fails is reported, not fatal
            trial.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        else:
            trial.samples_per_s = result.samples_per_s
            trial.wait_fraction = result.wait_fraction
            trial.effect = result.samples_per_s / base - 1 if base > 0 else None
        finally:
            if loader is not None:
                close_loader(loader)
    return trials


def advised(trials: list[Trial], data_bound: bool) -> list[Trial]:
    """The trials worth following, best first (NOTE [verified advice])."""
    if data_bound:
        good = [t for t in trials if t.effect is not None and t.effect >= GAIN]
    else:
        good = [t for t in trials if t.effect is not None and t.effect >= -GAIN]
    return sorted(good, key=lambda t: -(t.effect or 0.0))

