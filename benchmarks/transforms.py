"""Transforms benchmark: per-core image pipeline (stock tutorial vs dataforge uint8) and text tokenization.

Usage:
    python benchmarks/transforms.py [--quick] [--seconds S] [--device cpu|cuda] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from dataforge.bench import transforms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, short windows (seconds)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per image run")
    parser.add_argument("--device", default="cpu", help="where batch ToFloat+Normalize run")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median)")
    parser.add_argument("--data", default=None, help="image folder or JSONL corpus (default: demo data)")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    result = transforms.run(
        quick=args.quick, seconds=args.seconds, device=args.device, data=args.data,
        repeats=args.repeats, progress=lambda line: print(f"  .. {line}", file=sys.stderr),
    )
    print(transforms.format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
