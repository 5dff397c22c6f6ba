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

Prints samples/s, CPU-ms per sample and cores busy of each round. Run from the
repository root: ``.venv/bin/python benchmarks/batched_paths.py``.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

import dataforge
from dataforge.bench.data import demo_image_folder
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


def _round(path: str, data: str, batched: bool, seconds: float) -> str:
    loader = _loader(path, data, batched)
    finish = batch_transforms(torch.device("cpu"))
    it = _batches(loader)
    for _ in range(3):
        finish(next(it))
    me0, kids0, t0, n = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += finish(next(it)).shape[0]
    wall, me1 = time.perf_counter() - t0, _cpu_s(resource.RUSAGE_SELF)
    loader.close()
    time.sleep(0.5)  # worker processes reaped: their CPU time is in RUSAGE_CHILDREN
    # worker processes' CPU comes whole once they end: their start-up and warm-up too
    cpu = me1 - me0 + _cpu_s(resource.RUSAGE_CHILDREN) - kids0
    return (f"{path:6s} {'batched' if batched else 'single':7s} {n / wall:7.0f} samples/s  "
            f"{cpu / n * 1e3:.3f} CPU-ms/sample  {cpu / wall:.2f} cores busy  engine {loader.engine}")


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
    with tempfile.TemporaryDirectory() as out:
        if "shards" in paths:
            files = ImageFolder(root, decode=False).map(lambda x: {"jpg": x["image"], "cls": x["label"]})
            write_shards(files, out, max_count=125)
        for path in paths:
            data = f"{out}/shard-{{000000..000015}}.tar" if path == "shards" else root
            for _ in range(args.rounds):
                for batched in (False, True):
                    print(_round(path, data, batched, args.seconds), flush=True)


if __name__ == "__main__":
    main()
