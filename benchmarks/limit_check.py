"""How the image limit is timed: the whole flow against the batch share timed apart.

A one-off check behind NOTE [limit as a flow] in `dataforge/bench/image.py`. In one
process and one thread, alternating, it times the dataforge pipeline's CPU-ms per
sample two ways:

- flow (the limit since the sixth session): batch after batch, read + decode +
  augment 64 samples, then `stack` and normalize them;
- apart (the limit up to the fifth session): each sample alone (made, then
  dropped), plus the batch share timed on one batch of 64 samples stacked and
  normalized over and over.

    python benchmarks/limit_check.py [--rounds 3] [--seconds 4]
"""

from __future__ import annotations

import argparse

import torch

from dataforge.bench.data import check_image_folder, demo_image_folder
from dataforge.bench.pipelines import batch_step, batch_transforms, images
from dataforge.bench.runner import cpu_seconds_per_call
from dataforge.collate.functional import stack
from dataforge.datasets.image_folder import ImageFolder
from dataforge.transforms.image import train_transforms

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="CPU seconds per timing")
    args = parser.parse_args()
    root = str(demo_image_folder(2000, progress=True))
    n = len(check_image_folder(root))
    ds = ImageFolder(root, transform=train_transforms(224))
    tf = batch_transforms(torch.device("cpu"))
    flow = batch_step(ds, images, stack, tf, n, batch_size=BATCH)
    # as the old limit did: the samples dropped as soon as they are made
    samples_only = batch_step(ds, lambda s: None, list, lambda x: x, n, batch_size=BATCH)
    cached = [ds[i]["image"] for i in range(BATCH)]
    print("CPU-ms per sample: flow | samples alone + batch share on one cached batch = apart | apart/flow")
    for _ in range(args.rounds):
        f = cpu_seconds_per_call(flow, min_seconds=args.seconds) / BATCH * 1e3
        s = cpu_seconds_per_call(samples_only, min_seconds=args.seconds) / BATCH * 1e3
        b = cpu_seconds_per_call(lambda: tf(stack(cached)), min_seconds=args.seconds / 4) / BATCH * 1e3
        print(f"{f:.3f} | {s:.3f} + {b:.3f} = {s + b:.3f} | {(s + b) / f:.3f}", flush=True)


if __name__ == "__main__":
    main()
