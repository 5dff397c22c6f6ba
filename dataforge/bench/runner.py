"""Benchmark orchestration: interleaved arms, repeats, steady-state windows.

An *arm* is one way of producing batches (stock ``DataLoader``, dataforge's
``build_loader``, torchdata ``nodes``...). The runner measures every arm the
same way and reports medians:

- **time to first batch**: from building the loader to the first finished
  batch (worker start-up, first decode); reported apart, never mixed into the
  throughput.
- **warm-up**: batches after the first one until ``warmup`` seconds have passed
  (and at least ``min_warmup_batches``), excluded: prefetch queues filled while
  the first batch was waited for would otherwise inflate the rate.
- **steady state**: a window of ``seconds`` in which each finished batch is
  counted (``arm.consume(batch)`` must make the batch *done*: on the target
  device, normalized, synchronized on CUDA). Samples/s = samples / window time.
- **CPU seconds per sample** over the window: this process and all its children
  (live ones through psutil, reaped ones through ``os.times``).
- **peak memory**: PSS (proportional set size, so shared pages of forked workers
  are not counted twice) summed over this process and its children: the largest
  of a few samples per run (after warm-up, every ``max(1, seconds / 4)`` s in a
  background thread, at the end of the window); RSS where PSS is unavailable.

Benchmarks that time a call rather than a loader (collate, feeding, transforms)
time each arm with :func:`timed_window` (NOTE [timed window]) and interleave them
with :func:`~dataforge.bench.common.interleaved`.

NOTE [interleaving]: repeats are the outer loop and arms the inner one, with the
arm order rotated each repeat, so that a slow drift of the machine (another
job, thermal throttling, page cache) spreads over all arms instead of hitting
one. The reported value is the median over repeats.

Example:
    >>> arm = Arm("list", "a plain list", lambda workers: [[0] * 4] * 8,
    ...           lambda batch: {"samples": len(batch)})
    >>> runs = measure(arm, workers=0, seconds=0.05, warmup=0.0)
    >>> runs.counters["samples"] > 0
    True
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dataforge.bench.common import BenchError, median, rotated, rss_mb, usable_cores

Counters = dict[str, float]


@dataclass
class Arm:
    """One way of producing batches.

    Args:
        name: short id used in tables and JSON (``"stock"``, ``"dataforge-process"``).
        label: one-line description for humans.
        make: ``make(workers)`` builds a fresh iterable of batches (one call per
            measured run; iterating it again starts a new pass).
        consume: ``consume(batch)`` finishes a batch (device sync) and returns
            counters, at least ``{"samples": n}`` (text arms add ``"tokens"`` and
            ``"padded_tokens"``).
        absent: why the arm cannot run here (a missing optional package), or ``None``.
        pipeline: which per-sample pipeline the arm runs (selects its limit).
    """

    name: str
    label: str
    make: Callable[[int], Iterable[Any]]
    consume: Callable[[Any], Counters]
    absent: str | None = None
    pipeline: str = "dataforge"


@dataclass
class RunStats:
    """What one measured run of one arm produced."""

    first_batch_s: float
    window_s: float
    counters: Counters
    cpu_s: float
    peak_mem_mb: float
    mem_kind: str
    passes: int = 1

    @property
    def samples_per_s(self) -> float:
        return self.counters.get("samples", 0.0) / self.window_s if self.window_s > 0 else 0.0


@dataclass
class ArmSummary:
    """The medians over repeats of one arm at one workers count."""

    arm: Arm
    workers: int
    runs: list[RunStats] = field(default_factory=list)
    error: str | None = None

    def rate(self, key: str = "samples") -> float:
        return median([r.counters.get(key, 0.0) / r.window_s for r in self.runs if r.window_s > 0])

    def to_dict(self) -> dict[str, Any]:
        status = "absent" if self.arm.absent else ("failed" if self.error else "ok")
        d: dict[str, Any] = {
            "arm": self.arm.name,
            "label": self.arm.label,
            "pipeline": self.arm.pipeline,
            "workers": self.workers,
            "status": status,
            "reason": self.arm.absent or self.error,
            "repeats": len(self.runs),
        }
        if status != "ok" or not self.runs:
            return d
        samples = sum(r.counters.get("samples", 0.0) for r in self.runs)
        d.update(
            samples_per_s=self.rate("samples"),
            samples_per_s_runs=[r.samples_per_s for r in self.runs],
            time_to_first_batch_s=median([r.first_batch_s for r in self.runs]),
            cpu_s_per_sample=sum(r.cpu_s for r in self.runs) / samples if samples else None,
            peak_mem_mb=max(r.peak_mem_mb for r in self.runs),
            mem_kind=self.runs[0].mem_kind,
            window_s=median([r.window_s for r in self.runs]),
            samples_measured=int(samples),
        )
        return d


# --------------------------------------------------------------------------- CPU and memory


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the dev/bench environment
        return None
    return psutil


def _cpu_snapshot() -> tuple[float, float, dict[int, float]]:
    """(self CPU s, reaped-children CPU s, {live child pid: CPU s})."""
    t = os.times()
    live: dict[int, float] = {}
    ps = _psutil()
    if ps is not None:
        try:
            for child in ps.Process().children(recursive=True):
                try:
                    c = child.cpu_times()
                    live[child.pid] = c.user + c.system
                except (ps.NoSuchProcess, ps.AccessDenied, ps.ZombieProcess):
                    pass
        except ps.Error:  # pragma: no cover
            pass
    return t.user + t.system, t.children_user + t.children_system, live


def _cpu_delta(a: tuple[float, float, dict[int, float]], b: tuple[float, float, dict[int, float]]) -> float:
    self_s = b[0] - a[0]
    reaped = b[1] - a[1]  # whole lifetime of children reaped in between...
    gone_before = sum(v for pid, v in a[2].items() if pid not in b[2])  # ...minus their part before a
    live = sum(v - a[2].get(pid, 0.0) for pid, v in b[2].items())
    return max(self_s + reaped - gone_before + live, 0.0)


def memory_mb() -> tuple[float, str]:
    """Memory of this process plus its children in MiB, and ``"pss"`` or ``"rss"``."""
    ps = _psutil()
    if ps is None:
        return rss_mb(), "rss"
    procs = [ps.Process()]
    with contextlib.suppress(ps.Error):
        procs += procs[0].children(recursive=True)
    total, kind = 0.0, "pss"
    for p in procs:
        try:
            info = p.memory_full_info()
            pss = getattr(info, "pss", None)
            if pss is None:
                kind = "rss"
                pss = info.rss
            total += pss
        except (ps.NoSuchProcess, ps.ZombieProcess):
            continue
        except ps.AccessDenied:
            kind = "rss"
            try:
                total += p.memory_info().rss
            except ps.Error:
                continue
    return total / 2**20, kind


class _MemorySampler:
    """Samples ``memory_mb()`` every ``interval`` seconds in a daemon thread.

    NOTE [sampler cost]: reading PSS walks each process's page tables (tens of ms
    per process with torch loaded), charged to this process. ``cpu_s`` is the CPU
    time the background samples took, which ``measure`` subtracts from the arm's
    CPU seconds, so that an arm with more processes is not billed for being measured.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.peak = 0.0
        self.kind = "rss"
        self.cpu_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dataforge-bench-mem", daemon=True)

    def sample(self) -> None:
        mb, kind = memory_mb()
        with self._lock:
            if mb >= self.peak:
                self.peak, self.kind = mb, kind

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            t = time.thread_time()
            self.sample()
            with self._lock:
                self.cpu_s += time.thread_time() - t

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- measuring


def _add(total: Counters, c: Counters) -> None:
    for k, v in c.items():
        total[k] = total.get(k, 0.0) + float(v)


def measure(
    arm: Arm,
    workers: int,
    *,
    seconds: float,
    warmup: float = 0.5,
    min_warmup_batches: int | None = None,
    mem_interval: float | None = None,
) -> RunStats:
    """Measure one run of ``arm`` with ``workers``: first batch, warm-up, one window.

    When the iterable ends before the window does, a new pass starts and the
    window goes on (the restart is part of the measured cost).
    """
    if seconds <= 0 or not math.isfinite(seconds):
        raise BenchError(f"seconds must be a positive number, got {seconds!r}")
    if min_warmup_batches is None:
        min_warmup_batches = 2 * max(workers, 1)  # what a default prefetch queue holds
    if mem_interval is None:
        mem_interval = max(1.0, seconds / 4)  # a few samples per window; see NOTE [sampler cost]
    with _MemorySampler(mem_interval) as mem:
        t0 = time.perf_counter()
        src = _Batches(arm)
        src.start(workers)
        arm.consume(src.next())
        t_first = time.perf_counter()
        n_warm = 0
        while n_warm < min_warmup_batches or time.perf_counter() - t_first < warmup:
            arm.consume(src.next())
            n_warm += 1
        mem.sample()
        cpu_a, mem_cpu_a = _cpu_snapshot(), mem.cpu_s
        totals: Counters = {}
        t1 = time.perf_counter()
        while True:
            _add(totals, arm.consume(src.next()))
            t2 = time.perf_counter()
            if t2 - t1 >= seconds:
                break
        cpu_b, mem_cpu_b = _cpu_snapshot(), mem.cpu_s
        mem.sample()
    stats = RunStats(
        first_batch_s=t_first - t0,
        window_s=t2 - t1,
        counters=totals,
        cpu_s=max(_cpu_delta(cpu_a, cpu_b) - (mem_cpu_b - mem_cpu_a), 0.0),
        peak_mem_mb=mem.peak,
        mem_kind=mem.kind,
        passes=src.passes,
    )
    src.close()
    gc.collect()  # loaders in reference cycles: their workers must be gone before the next run
    return stats


class _Batches:
    """An arm's batches as one stream: a new pass starts when one ends."""

    def __init__(self, arm: Arm) -> None:
        self.arm = arm
        self.loader: Any = None
        self.it: Any = None
        self.passes = 0

    def start(self, workers: int) -> None:
        self.loader = self.arm.make(workers)
        self.it = iter(self.loader)
        self.passes = 1

    def next(self) -> Any:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            self.passes += 1
        try:
            return next(self.it)
        except StopIteration:
            raise BenchError(f"arm {self.arm.name!r} produced no batch; is the data empty?") from None

    def close(self) -> None:
        close = getattr(self.it, "close", None) or getattr(self.loader, "close", None)
        self.it = None
        if callable(close):
            with contextlib.suppress(Exception):  # best-effort shutdown
                close()
        self.loader = None


def run_arms(
    arms: Sequence[Arm],
    workers_list: Sequence[int],
    *,
    seconds: float,
    repeats: int,
    warmup: float = 0.5,
    progress: Callable[[str], None] | None = None,
    on_repeat: Callable[[int], None] | None = None,
) -> list[ArmSummary]:
    """Run every available arm at every workers count, ``repeats`` times, interleaved.

    ``on_repeat(r)`` runs at the start of each repeat (a benchmark measures its
    limit there, so the limit is interleaved with the arms too).

    An arm that raises is recorded as ``failed`` with the error (one line) and is
    not run again at that workers count; the other arms go on.
    """
    if repeats < 1:
        raise BenchError(f"--repeats must be a positive int, got {repeats!r}")
    summaries = {(a.name, w): ArmSummary(a, w) for w in workers_list for a in arms}
    live = [a for a in arms if not a.absent]
    for r in range(repeats):
        if on_repeat is not None:
            on_repeat(r)
        for w in workers_list:
            for arm in rotated(live, r):  # NOTE [interleaving]
                s = summaries[(arm.name, w)]
                if s.error:
                    continue
                if progress:
                    progress(f"repeat {r + 1}/{repeats}  workers={w}  {arm.name}")
                try:
                    s.runs.append(measure(arm, w, seconds=seconds, warmup=warmup))
                except BenchError:
                    raise
                except Exception as exc:  # an arm's failure is a result, not a crash
                    msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    s.error = msg
    return [summaries[(a.name, w)] for w in workers_list for a in arms]


def cpu_seconds_per_call(fn: Callable[[], Any], *, repeats: int = 1, min_seconds: float = 0.2) -> float:
    """CPU seconds of the calling thread per call of ``fn``, with torch on one thread.

    NOTE [limit in CPU time]: the limit is built from CPU time, not wall time, so
    that other load on the machine does not lower it (on an idle machine the two
    agree for single-threaded work). Only this thread's time is counted: work
    leaking into other threads would raise the limit, never flatter an arm.
    The first call (warm-up) is excluded; each round runs until ``min_seconds``
    of CPU time (or ten times that of wall time); the median round is returned.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        rounds = []
        for _ in range(max(repeats, 1)):
            n, c0, w0 = 0, time.thread_time(), time.perf_counter()
            while True:
                fn()
                n += 1
                dc = time.thread_time() - c0
                if dc >= min_seconds or time.perf_counter() - w0 >= 10 * min_seconds:
                    break
            rounds.append(dc / n)
        return median(rounds)
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class Window:
    """One timed window of calls: ``done`` (what the calls returned, added up), the wall
    seconds and this process's CPU seconds over it."""

    done: float
    wall_s: float
    cpu_s: float


def timed_window(call: Callable[[], float], seconds: float,
                 sync: Callable[[], None] | None = None) -> Window:
    """Call ``call`` (it returns how much it did: batches, samples) until ``seconds`` of wall
    time have passed, at least once; ``sync()`` before the window and after each call.

    NOTE [timed window]: the timed-call benchmarks (collate, feeding, transforms) time
    their arms with this one window: no warm-up inside it (the caller warms up), the
    wall clock read after each call and its ``sync`` (a CUDA synchronize, so that queued
    work is counted), the window ending with the first call past ``seconds``. The CPU
    time (``process_time``: all threads of this process) is read beside the wall clock,
    since a machine shared with other jobs disturbs it far less.
    """
    if sync is not None:
        sync()
    done: float = 0  # stays an int when the calls return ints (counts in the JSON)
    cpu0, t0 = time.process_time(), time.perf_counter()
    while True:
        done += call()
        if sync is not None:
            sync()
        wall = time.perf_counter() - t0
        if wall >= seconds:
            return Window(done, wall, time.process_time() - cpu0)


def check_workers(workers: Sequence[int] | None, default: Sequence[int]) -> list[int]:
    """The workers counts to sweep: ``workers`` (checked, duplicates dropped) or ``default``."""
    if workers is None:
        return list(dict.fromkeys(default))
    if not workers:
        raise BenchError("--workers must list at least one count, such as 0,2,4")
    for w in workers:
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise BenchError(f"--workers must be non-negative ints such as 0,2,4, got {w!r}")
    return list(dict.fromkeys(workers))


def cores_in_use(workers: int, main_threads: int | None = None) -> int:
    """The cores a run with ``workers`` can keep busy: the workers (capped at the
    usable cores), or with ``workers=0`` the main process's threads
    (``main_threads``, default torch's intra-op threads)."""
    import torch

    cores = usable_cores()
    if workers > 0:
        return max(1, min(cores, workers))
    return max(1, min(cores, main_threads if main_threads is not None else torch.get_num_threads()))


def resolve_device(device: str) -> Any:
    """``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"auto"`` -> a ``torch.device``.

    Raises:
        BenchError: an unknown name, or CUDA asked for without a CUDA device.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BenchError(f"--device must be cpu, cuda or auto, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise BenchError(f"--device must be cpu, cuda or auto, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda asked for, but no CUDA device is available; "
                         "use --device cpu or --device auto")
    return dev
