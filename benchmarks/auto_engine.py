"""The measurements behind NOTE [auto engine] (``dataforge/loading/auto.py``).

Three kinds of map-style dataset, each loaded by the thread engine and by the
process engine (2 workers, batch 64, shuffled), arms interleaved, median samples/s
of ``--repeats`` windows of ``--seconds`` after one warm-up batch:

- ``preset``: ``ImageFolder(root, transform=train_transforms(224))`` (crop-only
  decode in C, resize in ATen: GIL released for most of the sample);
- ``torchvision``: ``ImageFolder(root, transform=v2.Compose([...]))`` (whole
  decode, v2 ``RandomResizedCrop`` + flip on the uint8 tensor);
- ``python``: a dataset whose ``__getitem__`` is a pure-Python loop (holds the GIL).

Run from the repository root: ``.venv/bin/python benchmarks/auto_engine.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import dataforge
from dataforge.bench.data import demo_image_folder
from dataforge.transforms.image import train_transforms


class PythonHeavy(torch.utils.data.Dataset):
    """``__getitem__`` spends ``work`` iterations of a Python loop, then returns a small tensor."""

    def __init__(self, n: int, work: int) -> None:
        self.n, self.work = n, work

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        acc = 0
        for k in range(self.work):
            acc += (k * i) % 7
        return torch.full((8,), acc, dtype=torch.int64)


def datasets(root: str) -> dict[str, Any]:
    from torchvision.transforms import v2

    tv = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()])
    preset = dataforge.ImageFolder(root, transform=train_transforms(224))
    tiled = torch.arange(100_000) % len(preset)  # no epoch end inside a window
    return {
        "preset": preset.subset(tiled),
        "torchvision": dataforge.ImageFolder(root, transform=tv).subset(tiled),
        "python": PythonHeavy(100_000, 20_000),
    }


def cpu_seconds() -> float:
    """CPU seconds of this process and its live children (worker processes)."""
    import psutil

    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def rate(ds: Any, engine: str, seconds: float, workers: int) -> tuple[float, float]:
    """(samples/s, CPU ms per sample) over ``seconds`` after one warm-up batch."""
    loader = dataforge.build_loader(ds, batch_size=64, shuffle=True, num_workers=workers,
                                    engine=engine, timeout=300)
    it = iter(loader)
    next(it)
    t0, c0, n = time.perf_counter(), cpu_seconds(), 0
    while time.perf_counter() - t0 < seconds:
        batch = next(it)
        n += len(batch["label"] if isinstance(batch, dict) else batch)
    out = n / (time.perf_counter() - t0), (cpu_seconds() - c0) / n * 1e3
    loader.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    root = str(demo_image_folder(2000, progress=True))
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for kind, ds in datasets(root).items():
            for engine in ("thread", "process"):
                results.setdefault((kind, engine), []).append(rate(ds, engine, args.seconds, args.workers))
    print("samples/s and CPU ms per sample, medians; thread/process of each")
    print(f"{'dataset':<12} {'thread':>14} {'process':>14} {'samples/s':>10} {'CPU':>6}")
    for kind in ("preset", "torchvision", "python"):
        th = [statistics.median(v) for v in zip(*results[(kind, "thread")])]
        pr = [statistics.median(v) for v in zip(*results[(kind, "process")])]
        print(f"{kind:<12} {th[0]:7.0f} {th[1]:5.2f}ms {pr[0]:7.0f} {pr[1]:5.2f}ms "
              f"{th[0] / pr[0]:10.2f} {th[1] / pr[1]:6.2f}")


if __name__ == "__main__":
    main()
