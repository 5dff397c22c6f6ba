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
- ``eval``: ``ImageFolder(root, transform=eval_transforms(224))``.

Prints samples/s, CPU-ms per sample and cores busy of each round. Run from the
repository root: ``.venv/bin/python benchmarks/batched_paths.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from dataforge.bench.data import demo_image_folder
from dataforge.bench.pipelines import batch_transforms
from dataforge.datasets.image_folder import ImageFolder
from dataforge.loading.loader import build_loader
from dataforge.transforms.image import eval_transforms, train_transforms

PATHS = ("folder", "map", "eval")


def _dataset(path: str, root: str, batched: bool) -> object:
    t = eval_transforms(224) if path == "eval" else train_transforms(224)
    if not batched:
        t.call_batch = None  # type: ignore[method-assign, assignment]  # one call per sample
    tiles = [i % 2000 for i in range(100_000)]  # NOTE [endless data] in bench/image.py
    if path == "map":
        return ImageFolder(root, decode=False).subset(tiles).map(t, seed=0)
    return ImageFolder(root, transform=t).subset(tiles)


def _round(path: str, root: str, batched: bool, seconds: float) -> str:
    loader = build_loader(_dataset(path, root, batched), batch_size=64, shuffle=True, num_workers=2,
                          drop_last=True, timeout=60)
    finish = batch_transforms(torch.device("cpu"))
    it = iter(loader)
    for _ in range(3):
        finish(next(it)["image"])
    r0, t0, n = os.times(), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        n += finish(next(it)["image"]).shape[0]
    wall, r1 = time.perf_counter() - t0, os.times()
    loader.close()
    cpu = (r1.user - r0.user) + (r1.system - r0.system)
    return (f"{path:6s} {'batched' if batched else 'single':7s} {n / wall:7.0f} samples/s  "
            f"{cpu / n * 1e3:.3f} CPU-ms/sample  {cpu / wall:.2f} cores busy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per round (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="alternations per path (default 2)")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    args = p.parse_args()
    root = str(demo_image_folder(2000, progress=True))
    for path in args.paths.split(","):
        if path not in PATHS:
            raise SystemExit(f"--paths: unknown path {path!r}; pick from {', '.join(PATHS)}")
        for _ in range(args.rounds):
            for batched in (False, True):
                print(_round(path, root, batched, args.seconds), flush=True)


if __name__ == "__main__":
    main()
