"""Region decode of the photo set with and without NOTE [unused scans] (``dataforge/_jpeg.c``).

For each JPEG of the photo set (200 JPEGs of 1-12 MP, ``--images photos`` of ``bench
image``) draws ``--draws`` crops with ``train_transforms(224)``'s rule, then times
``dataforge._jpeg.decode_crop`` on each crop and scale twice, alternating: as it runs
(``skip_unused_scans=True``: a progressive file without the AC scans and the rows below
the crop that no output pixel reads) and decoding every scan (``False``). One thread,
CPU time; prints the mean CPU-ms per crop by kind of file (baseline or progressive,
luma sampling factors), and checks that both give the same pixels.

Run from the repository root: ``.venv/bin/python benchmarks/unused_scans.py``.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from PIL import Image

from dataforge import _jpeg  # type: ignore[attr-defined]
from dataforge.bench.data import photo_image_folder
from dataforge.datasets.image_folder import ImageFolder
from dataforge.transforms.decode import read_header
from dataforge.transforms.image import train_transforms
from dataforge.transforms.presets import scale_denom


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=3, help="crops per file (default 3)")
    args = p.parse_args()
    torch.set_num_threads(1)
    preset = train_transforms(224)
    paths = ImageFolder(str(photo_image_folder(progress=False))).paths
    g = torch.Generator().manual_seed(0)
    ms: dict[tuple[str, tuple[int, int]], list[list[float]]] = collections.defaultdict(lambda: [[], []])
    for path in paths:
        enc = read_header(path)
        with Image.open(path) as im:  # PIL's header: the coding and the luma sampling factors
            kind = ("progressive" if im.info.get("progressive") else "baseline", tuple(im.layer[0][1:3]))
        data = enc.data
        for _ in range(args.draws):
            top, left, h, w, _flip = preset.draw(enc.height, enc.width, g)
            denom = scale_denom(h, w, 224, 224)
            out = []
            for i, skip in enumerate((True, False)):
                t0 = time.thread_time()
                pixels, *shape = _jpeg.decode_crop(data, top, left, h, w, denom, skip_unused_scans=skip)
                ms[kind][i].append((time.thread_time() - t0) * 1e3)
                out.append((bytes(pixels), *shape))
            assert out[0] == out[1], f"{path}: the pixels differ"
    print(f"{'file kind':28s} {'crops':>5s} {'as it runs':>11s} {'every scan':>11s} {'speed-up':>9s}")
    for (coding, (h, v)), (fast, full) in sorted(ms.items()):
        a, b = sum(fast) / len(fast), sum(full) / len(full)
        print(f"{coding + f' {h}x{v} luma':28s} {len(fast):5d} {a:9.1f} ms {b:9.1f} ms {b / a:8.2f}x")
    fast_all = sum(sum(f) for f, _ in ms.values())
    full_all = sum(sum(f) for _, f in ms.values())
    print(f"{'all':28s} {sum(len(f) for f, _ in ms.values()):5d} {'':>11s} {'':>11s} {full_all / fast_all:8.2f}x")


if __name__ == "__main__":
    main()
