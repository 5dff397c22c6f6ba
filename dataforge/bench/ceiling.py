"""The parallel ceiling of the image benchmark: the limit's work in N processes at once.

NOTE [parallel ceiling]: the limit (``image.measure_limit``) is one core's work per
sample times the cores in use, which assumes that cores add up perfectly. They do
not quite: they share the last-level cache and the memory bandwidth, and on a
virtual machine they may share more. The ceiling measures what the cores really
give together. It runs the same work as the dataforge limit, through the same
function (``pipelines.dataforge_step``, NOTE [limit as a flow]), with nothing between the
processes and no loader: read, decode and augment each sample, then stack each batch
and, on the CPU, normalize it. That work runs in ``cores`` independent
processes, each with one torch thread, started together after a warm-up; their
rates are added up.

No loader can beat the ceiling on that machine, so an arm's fraction of it
separates the loader's own overhead from what the hardware takes. The ceiling is
informational only: the targets are stated against the limit.

The processes are spawned, not forked. A child forked from the benchmark process,
which holds about 1.5 GB by then, pays a copy-on-write fault each time it reuses the
parent's freed heap. In one quick run that put the ceiling at 85% of the limit,
where two separately started processes reach 98%. Start-up (imports) happens
before the measured window.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from typing import Any

WARMUP_S = 0.5
START_TIMEOUT_S = 120.0


def _work(root: str, size: int, batch_size: int, normalize: bool, seconds: float, seed: int,
          barrier: Any, results: Any) -> None:
    """One process: warm up, wait for the others, then batches for ``seconds``; put the rate."""
    import torch

    from dataforge.bench.pipelines import dataforge_step
    from dataforge.datasets.image_folder import ImageFolder
    from dataforge.transforms.image import train_transforms

    try:
        torch.set_num_threads(1)
        ds = ImageFolder(root, transform=train_transforms(size))
        one_batch = dataforge_step(ds, len(ds), batch_size=batch_size,
                                   normalize=normalize, seed=seed)

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < WARMUP_S:
            one_batch()
        barrier.wait(START_TIMEOUT_S)
        t0, done = time.perf_counter(), 0
        while True:
            one_batch()
            done += batch_size
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        results.put(("ok", done / dt))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the measure
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def measure_ceiling(root: str, *, size: int, batch_size: int, cores: int, normalize: bool,
                    seconds: float, seed: int = 0) -> float:
    """Samples/s of ``cores`` processes running the dataforge limit's work at once (see NOTE).

    Raises:
        RuntimeError: a process failed or did not report in time.
    """
    ctx: Any = mp.get_context("spawn")
    barrier = ctx.Barrier(cores)
    results = ctx.Queue()
    procs = [ctx.Process(target=_work, args=(root, size, batch_size, normalize, seconds, seed + k,
                                              barrier, results), daemon=True)
             for k in range(cores)]
    for p in procs:
        p.start()
    rates: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S + 10 * seconds + 60
    try:
        while len(rates) + len(errors) < cores:
            try:
                status, value = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:  # killed (out of memory, a signal) before it could report
                    errors.append(f"a ceiling process died with exit code {dead[0]}")
                elif time.monotonic() > deadline:
                    errors.append("a ceiling process did not report in time")
                else:
                    continue
                break
            (rates if status == "ok" else errors).append(value)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        raise RuntimeError(f"parallel ceiling: {errors[0]}")
    return sum(rates)
