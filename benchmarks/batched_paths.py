"""The presets' batched path against one call per sample, under the thread engine.

NOTE [one native call per batch] in ``dataforge/_crops.cpp``: a dataset's batch goes to
the preset's ``call_batch``. This times three ways users build the pipeline, each with
``call_batch`` (``batched``) and with it switched off on the transform object
(``single``: the dataset then calls the transform once per sample), alternating, over
the demo images (2,000 JPEGs of 300-500 px), batch 64, ``build_loader(...,
num_workers=2)`` (engine ``auto``: threads), the batch normalized on the CPU as the
bench's natural arm does:

- ``folder``: ``ImageFolder(root, transform=train_transforms(224))``;
- ``map``: ``ImageFolder(root, decode=False).map(train_transforms(224), seed=0)`` (the
  README's code);
- ``eval``: ``ImageFolder(root, transform=eval_transforms(224))``;
- ``shards``: the same files as 16 tar shards (written once, to a temporary folder),
  ``from_shards(urls, shuffle_shards=True, seed=0).map(RandomResizedCrop(224, key="jpg"))``
  epoch after epoch (NOTE [batched map] in ``dataforge/datasets/batched_map.py``).

Each round also runs ``stock``: the bench's stock arm (``torch.utils.data.DataLoader``,
2 worker processes, PIL + the ``transforms.v2`` tutorial pipeline per sample, batch
64, the same files), so every figure has its ratio to stock PyTorch in the same run.
Prints samples/s, CPU-ms per sample and cores busy of each window, then the medians
and their ratio to stock's. Run from the repository root: ``.venv/bin/python
benchmarks/batched_paths.py``.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

import dataforge
from dataforge.bench.data import check_image_folder, demo_image_folder
from dataforge.bench.image_arms import StockImageDataset
from dataforge.bench.pipelines import batch_transforms
from dataforge.datasets.image_folder import ImageFolder
from dataforge.datasets.writer import write_shards
from dataforge.loading.loader import build_loader
from dataforge.transforms.image import RandomResizedCrop, eval_transforms

PATHS = ("folder", "map", "eval", "shards")


def _loader(path: str, data: str, batched: bool) -> Any:
    key = "jpg" if path == "shards" else "image"  # the tar member's extension
    t = eval_transforms(224) if path == "eval" else RandomResizedCrop(224, key=key)  # train_transforms(224)
    if not batched:
        t.call_batch = None  # type: ignore[method-assign, assignment]  # one call per sample
    if path == "shards":
        ds = dataforge.from_shards(data, shuffle_shards=True, seed=0).map(t)
        return build_loader(ds, batch_size=64, num_workers=2, drop_last=True, timeout=60)
    tiles = [i % 2000 for i in range(100_000)]  # NOTE [endless data] in bench/image.py
    if path == "map":
        mapped = ImageFolder(data, decode=False).subset(tiles).map(t, seed=0)
    else:
        mapped = ImageFolder(data, transform=t).subset(tiles)
    return build_loader(mapped, batch_size=64, shuffle=True, num_workers=2, drop_last=True, timeout=60)


def _batches(loader: Any) -> Iterator[torch.Tensor]:
    """The images of the loader's batches, epoch after epoch."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch["jpg" if "jpg" in batch else "image"]


def _stock_loader(root: str) -> Any:
    """The bench's stock arm: a stock ``DataLoader`` over the tutorial pipeline (normalized
    per sample), the folder tiled as the other paths' (NOTE [endless data])."""
    items = check_image_folder(root) * 50
    return torch.utils.data.DataLoader(StockImageDataset(items, 224), batch_size=64, shuffle=True,
                                       num_workers=2, drop_last=True, timeout=60)


def _window(path: str, data: str, batched: bool, seconds: float) -> tuple[float, str]:
    """One measured window: samples/s and the line to print."""
    stock = path == "stock"
    loader = _stock_loader(data) if stock else _loader(path, data, batched)
    finish = (lambda x: x) if stock else batch_transforms(torch.device("cpu"))
    it: Iterator[torch.Tensor] = (b[0] for b in loader) if stock else _batches(loader)
    for _ in range(3):
        finish(next(it))
    me0, kids0, t0, n = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += finish(next(it)).shape[0]
    wall, me1 = time.perf_counter() - t0, _cpu_s(resource.RUSAGE_SELF)
    engine = "stock DataLoader" if stock else loader.engine
    del it  # a stock DataLoader's worker processes end with its iterator
    if not stock:
        loader.close()
    time.sleep(0.5)  # worker processes reaped: their CPU time is in RUSAGE_CHILDREN
    # worker processes' CPU comes whole once they end: their start-up and warm-up too
    cpu = me1 - me0 + _cpu_s(resource.RUSAGE_CHILDREN) - kids0
    return n / wall, (f"{path:6s} {_variant(path, batched):7s} {n / wall:7.0f} samples/s  "
                      f"{cpu / n * 1e3:.3f} CPU-ms/sample  {cpu / wall:.2f} cores busy  {engine}")


def _variant(path: str, batched: bool) -> str:
    return "-" if path == "stock" else "batched" if batched else "single"


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per round (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="alternations per path (default 2)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    args = p.parse_args()
    paths = args.paths.split(",")
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown}; pick from {', '.join(PATHS)}")
    root = str(demo_image_folder(2000, progress=True))
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as out:
        if "shards" in paths:
            files = ImageFolder(root, decode=False).map(lambda x: {"jpg": x["image"], "cls": x["label"]})
            write_shards(files, out, max_count=125)
        for _ in range(args.rounds):  # every path's windows in each round, so drift falls on all
            for path in ("stock", *paths):
                data = f"{out}/shard-{{000000..000015}}.tar" if path == "shards" else root
                for batched in (False,) if path == "stock" else (False, True):
                    rate, line = _window(path, data, batched, args.seconds)
                    rates.setdefault((path, _variant(path, batched)), []).append(rate)
                    print(line, flush=True)
    stock = statistics.median(rates[("stock", "-")])
    print("medians:")
    for (path, variant), r in rates.items():
        print(f"  {path:6s} {variant:7s} {statistics.median(r):7.0f} samples/s  "
              f"{statistics.median(r) / stock:.2f}x stock")

if __name__ == "__main__":
    main()
