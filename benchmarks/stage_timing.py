"""The overhead of the loader's always-on stage timing (NOTE [stage timing] in
``dataforge/loading/stages.py``) on ``dataforge bench image``'s ``dataforge-thread`` arm.

One process, the bench's own arm (``make_arms``: 2,000 demo JPEGs of 300-500 px,
``train_transforms(224)``, batch 64, normalize as a batch transform on the device)
and its own window timer (``runner.measure``), 2 workers. Each pair of windows runs
stage timing on and off (``stages.ENABLED``, what ``DATAFORGE_STAGE_TIMING=0`` sets
at import), in alternating order so that drift of a busy machine falls on both
sides. Reports samples/s and CPU-ms per sample (the process's CPU time: the thread
engine runs in it) per window, and the medians of the per-pair ratios.

``--direct`` times the machinery alone instead: a fetcher over a dataset that does
nothing (64 samples per batch, a list for a collate), stage timing on and off in
alternating rounds, and the main process's per-batch bookkeeping; the difference
of the fastest rounds is the cost per batch, to set against the image arm's CPU
time per batch.

Run from the repository root: ``.venv/bin/python benchmarks/stage_timing.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dataforge.bench.data import check_image_folder, demo_image_folder
from dataforge.bench.image_arms import make_arms
from dataforge.bench.runner import measure
from dataforge.loading import stages
from dataforge.loading.fetch import BatchFetcher, BatchKey
from dataforge.loading.stats import StageTimes


class _Nothing(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> int:
        return i


def direct(rounds: int = 20, batches: int = 2000) -> None:
    """The cost per batch of the stage timing machinery alone (see the module docstring)."""
    fetcher = BatchFetcher(_Nothing(), list)
    keys = [BatchKey(0, b, list(range(64))) for b in range(batches)]
    table = StageTimes()
    best = {True: float("inf"), False: float("inf")}
    for r in range(rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            stages.ENABLED = on
            t0 = time.perf_counter()
            for key in keys:
                meta = fetcher[key].meta
                if meta.timing is not None:
                    table.add_batch("0", meta.timing, meta.num_samples)
            best[on] = min(best[on], (time.perf_counter() - t0) / batches)
    stages.ENABLED = True
    print(f"per batch of 64 (fastest of {rounds} rounds): timing on {1e6 * best[True]:.1f} us, "
          f"off {1e6 * best[False]:.1f} us; stage timing costs {1e6 * (best[True] - best[False]):.1f} us "
          "per batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="on/off window pairs (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per window (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="thread-engine workers (default 2)")
    parser.add_argument("--direct", action="store_true", help="time the machinery alone")
    args = parser.parse_args()
    if args.direct:
        direct()
        return
    root = str(demo_image_folder(2000, progress=True))
    arms = make_arms(root, check_image_folder(root), size=224, batch_size=64,
                     device=torch.device("cpu"))
    arm = next(a for a in arms if a.name == "dataforge-thread")
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    ratios, cpu_ratios = [], []
    for p in range(args.pairs):
        pair, pair_cpu = {}, {}
        for on in ((True, False) if p % 2 == 0 else (False, True)):
            stages.ENABLED = on
            run = measure(arm, args.workers, seconds=args.seconds, warmup=1.0)
            pair[on] = run.samples_per_s
            pair_cpu[on] = 1000 * run.cpu_s / max(1.0, run.counters.get("samples", 0.0))
            rates[on].append(pair[on])
            cpu[on].append(pair_cpu[on])
            print(f"pair {p + 1}/{args.pairs} timing {'on ' if on else 'off'}: "
                  f"{pair[on]:8.1f} samples/s, {pair_cpu[on]:.3f} CPU-ms per sample", flush=True)
        ratios.append(pair[False] / pair[True])
        cpu_ratios.append(pair_cpu[True] / pair_cpu[False])
    stages.ENABLED = True
    med = statistics.median
    print(f"median samples/s: on {med(rates[True]):.1f}, off {med(rates[False]):.1f}; throughput "
          f"overhead (median of per-pair off/on - 1): {100 * (med(ratios) - 1):+.2f}% "
          f"(pairs: {', '.join(f'{100 * (r - 1):+.1f}%' for r in ratios)})")
    print(f"median CPU-ms per sample: on {med(cpu[True]):.3f}, off {med(cpu[False]):.3f}; CPU "
          f"overhead (median of per-pair on/off - 1): {100 * (med(cpu_ratios) - 1):+.2f}% "
          f"(pairs: {', '.join(f'{100 * (r - 1):+.1f}%' for r in cpu_ratios)})")


if __name__ == "__main__":
    main()
