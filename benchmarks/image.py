"""Image benchmark: stock DataLoader + PIL + transforms.v2 vs dataforge (process / thread engines) vs torchdata.nodes, same files.

The same measurement as ``dataforge bench image`` (arms interleaved, median of
repeats, the limit measured in the same run); see ``dataforge/bench/image.py``.

Usage:
    python benchmarks/image.py [--quick] [--seconds S] [--device cpu|cuda|auto]
        [--workers 0,2] [--data PATH] [--repeats N] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dataforge.bench import image
from dataforge.bench.common import BenchError


def _workers(text: str) -> list[int]:
    return [int(w) for w in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small demo data, 1 s windows")
    parser.add_argument("--seconds", type=float, default=None, help="steady-state seconds per arm")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--workers", type=_workers, default=None, help="comma list, e.g. 0,2")
    parser.add_argument("--data", default=None, help="your own data (default: demo data)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (median reported)")
    parser.add_argument("--out", default=None, help="write the JSON result here (and the PNG beside it)")
    args = parser.parse_args(argv)
    out_dir = (os.path.dirname(args.out) or ".") if args.out else None
    try:
        result = image.run(quick=args.quick, seconds=args.seconds, device=args.device, data=args.data,
                           out=out_dir, workers=args.workers, repeats=args.repeats)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(image.format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
