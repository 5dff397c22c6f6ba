"""Tar shards through the loader: worker processes against worker threads (NOTE
[iterable threads] in ``dataforge/loading/iterable_threads.py``).

The demo images (2,000 JPEGs of 300-500 px, ``dataforge.bench.data``) are written
once as 16 tar shards; each window builds ``from_shards(..., shuffle_shards=True)
.map(crop-decode + flip, train_transforms(224))`` under ``build_loader(batch_size=64,
num_workers=2, drop_last=True)`` with ``engine="process"`` or ``engine="thread"`` and
runs epoch after epoch for ``--seconds`` (worker start-up included, as a training
run meets it each epoch). The engines alternate in order from round to round, so
drift of a busy machine falls on both. Reports samples/s and CPU-ms per sample (this
process and its worker processes) per window, and the medians.

Run from the repository root: ``.venv/bin/python benchmarks/iterable_engines.py``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from typing import Any

import dataforge
from dataforge.bench.data import demo_image_folder
from dataforge.datasets.writer import write_shards
from dataforge.transforms.presets import train_transforms

ENGINES = ("process", "thread")


class _Sample:
    def __init__(self) -> None:
        self.transform = train_transforms(224)

    def __call__(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"image": self.transform(s["jpg"]), "label": int(s["cls"])}


def _folder_sample(item: dict[str, Any]) -> dict[str, Any]:
    return {"jpg": item["image"], "cls": item["label"]}


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _window(urls: str, engine: str, seconds: float, workers: int) -> tuple[float, float]:
    ds = dataforge.from_shards(urls, shuffle_shards=True, seed=0).map(_Sample())
    loader = dataforge.build_loader(ds, 64, num_workers=workers, engine=engine, drop_last=True)
    n, epoch = 0, 0
    c0, t0 = _cpu_s(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loader.set_epoch(epoch)
        epoch += 1
        for batch in loader:
            n += batch["image"].shape[0]
            if time.perf_counter() - t0 >= seconds:
                break
    wall = time.perf_counter() - t0
    loader.close()
    time.sleep(0.5)  # worker processes reaped: their CPU time is in RUSAGE_CHILDREN
    return n / wall, 1000 * (_cpu_s() - c0) / max(n, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="windows per engine (default 4)")
    p.add_argument("--seconds", type=float, default=6.0, help="seconds per window (default 6)")
    p.add_argument("--workers", type=int, default=2, help="workers of either engine (default 2)")
    args = p.parse_args()
    folder = dataforge.ImageFolder(demo_image_folder(2000), decode=False).map(_folder_sample)
    with tempfile.TemporaryDirectory() as out:
        write_shards(folder, out, max_count=125)
        urls = f"{out}/shard-{{000000..000015}}.tar"
        results: dict[str, list[tuple[float, float]]] = {e: [] for e in ENGINES}
        for r in range(args.rounds):
            for engine in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                rate, cpu_ms = _window(urls, engine, args.seconds, args.workers)
                results[engine].append((rate, cpu_ms))
                print(f"round {r + 1}/{args.rounds} {engine:>7}: {rate:7.1f} samples/s, "
                      f"{cpu_ms:.2f} CPU-ms per sample", flush=True)
    for engine, rows in results.items():
        print(f"{engine:>7}: median {statistics.median(x for x, _ in rows):.1f} samples/s, "
              f"{statistics.median(c for _, c in rows):.2f} CPU-ms per sample")


if __name__ == "__main__":
    main()
