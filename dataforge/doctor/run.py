"""Run a pipeline for a bounded time with a simulated or real training step.

NOTE [steady state]: throughput and data wait are measured from the arrival of the
first batch to the end of the last step, so that worker start-up (which a long
training run pays once) does not count against a short trial; start-up is reported
apart, as the time to the first batch. Every trial of the doctor is measured the
same way, so their figures compare.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from dataforge.doctor import memory
from dataforge.loading.stats import batch_len

Step = Callable[[Any], Any]


@dataclass
class RunResult:
    """What one bounded run measured.

    Attributes:
        seconds: steady-state time, first batch to the end of the last step.
        batches, samples: counted after the first batch (NOTE [steady state]).
        wait_s: time the consumer spent waiting for those batches.
        time_to_first_batch_s: from ``iter()`` to the first batch.
        consumer: ``(wait_start, wait_end, step_end)`` per batch, ``time.perf_counter()``.
        stats: the loader's ``stats()`` at the end (``{}`` when it has none).
        memory: PSS samples over the run (empty without psutil).
    """

    seconds: float
    batches: int
    samples: int
    wait_s: float
    time_to_first_batch_s: float
    consumer: list[tuple[float, float, float]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    memory: list[memory.MemorySample] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_fraction(self) -> float:
        return min(1.0, self.wait_s / self.seconds) if self.seconds > 0 else 0.0


def make_step(step: Step | None, step_ms: float) -> Step:
    """The step the run calls on each batch: ``step`` itself, else a sleep of ``step_ms``.

    Raises:
        ValueError: ``step_ms`` is negative or not a number.
        TypeError: ``step`` is not callable.
    """
    if isinstance(step_ms, bool) or not isinstance(step_ms, (int, float)) or not step_ms >= 0:
        raise ValueError(f"step_ms must be a number of milliseconds >= 0, got {step_ms!r}")
    if step is not None:
        if not callable(step):
            raise TypeError(f"step must be a callable taking a batch, got {type(step).__name__}")
        return step
    seconds = step_ms / 1000.0

    def simulated(batch: Any) -> None:
        if seconds > 0:
            time.sleep(seconds)

    return simulated


def run_pipeline(
    loader: Iterable[Any],
    seconds: float,
    step: Step,
    *,
    memory_samples: int = 5,
) -> RunResult:
    """Iterate ``loader`` for about ``seconds`` (steady state), calling ``step`` on each batch.

    An epoch that ends starts the next one (its start-up wait counts as wait). The
    run stops at the first step that ends after ``seconds`` of steady state.

    Args:
        loader: any iterable of batches; ``reset_stats()`` and ``stats()`` are used when
            it has them (a dataforge ``Loader``).
        seconds: steady-state duration, > 0.
        step: called with each batch.
        memory_samples: PSS samples taken over the run (first batch, then evenly);
            child processes alive before ``iter(loader)`` are not counted as workers.

    Raises:
        ValueError: ``seconds`` is not positive, or the loader yields no batch.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if hasattr(loader, "reset_stats"):
        loader.reset_stats()
    consumer: list[tuple[float, float, float]] = []
    mem: list[memory.MemorySample] = []
    samples = batches = 0
    wait = 0.0
    others = memory.child_pids() if memory_samples > 0 else frozenset()
    t_iter = time.perf_counter()
    it = iter(loader)
    t_first: float | None = None
    next_mem = 0.0
    empty_epochs = 0
    try:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                empty_epochs += 1
                if empty_epochs > 1:
                    raise ValueError(
                        f"the loader {loader!r} yields no batch: check its dataset's length, "
                        "batch_size and drop_last"
                    ) from None
                it = iter(loader)
                continue
            t1 = time.perf_counter()
            empty_epochs = 0
            step(batch)
            t2 = time.perf_counter()
            if t_first is None:
                t_first = t1
                ttfb = t1 - t_iter
            else:
                wait += t1 - t0
                batches += 1
                samples += batch_len(batch)
            consumer.append((t0, t1, t2))
            del batch
            elapsed = t2 - t_first
            if memory_samples > 0 and elapsed >= next_mem:
                s = memory.sample(t2, exclude=others)
                if s is not None:
                    mem.append(s)
                next_mem += seconds / max(1, memory_samples - 1)
            if elapsed >= seconds:
                break
        if memory_samples > 0 and (not mem or mem[-1].t != consumer[-1][2]):
            s = memory.sample(time.perf_counter(), exclude=others)
            if s is not None:
                mem.append(s)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
    stats = loader.stats() if hasattr(loader, "stats") else {}
    return RunResult(
        seconds=consumer[-1][2] - t_first, batches=batches, samples=samples, wait_s=wait,
        time_to_first_batch_s=ttfb, consumer=consumer, stats=stats, memory=mem,
    )
