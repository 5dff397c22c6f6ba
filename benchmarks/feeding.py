"""Feeding benchmark: DevicePrefetcher vs ``.to(device)`` per batch vs the raw pinned copy.

Usage:
    python benchmarks/feeding.py [--quick] [--seconds S] [--device cpu|cuda] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from dataforge.bench import feeding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, short windows (seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per arm and repeat")
    parser.add_argument("--device", default="cpu", help="target device, e.g. cuda")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median)")
    parser.add_argument("--workers", type=int, default=None, help="stock DataLoader workers")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    result = feeding.run(
        quick=args.quick, seconds=args.seconds, device=args.device, repeats=args.repeats,
        workers=args.workers, progress=lambda line: print(f"  .. {line}", file=sys.stderr),
    )
    print(feeding.format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
