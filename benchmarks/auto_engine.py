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
    return {
        "preset": dataforge.ImageFolder(root, transform=train_transforms(224)),
        "torchvision": dataforge.ImageFolder(root, transform=tv),
        "python": PythonHeavy(100_000, 20_000),
    }


def rate(ds: Any, engine: str, seconds: float, workers: int) -> float:
    loader = dataforge.build_loader(ds, batch_size=64, shuffle=True, num_workers=workers,
                                    engine=engine, timeout=300)
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["label"] if isinstance(ds, dataforge.ImageFolder) else next(it))
    out = n / (time.perf_counter() - t0)
    loader.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    root = str(demo_image_folder(2000, progress=True))
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for kind, ds in datasets(root).items():
            for engine in ("thread", "process"):
                results.setdefault((kind, engine), []).append(rate(ds, engine, args.seconds, args.workers))
    print(f"{'dataset':<12} {'thread':>9} {'process':>9} {'thread/process':>15}")
    for kind in ("preset", "torchvision", "python"):
        th = statistics.median(results[(kind, "thread")])
        pr = statistics.median(results[(kind, "process")])
        print(f"{kind:<12} {th:9.0f} {pr:9.0f} {th / pr:15.2f}")


if __name__ == "__main__":
    main()
