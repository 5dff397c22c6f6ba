"""Collate benchmark: dataforge PadCollate vs HF DataCollatorWithPadding vs pad_sequence.

Usage:
    python benchmarks/collate.py [--quick] [--seconds S] [--device cpu] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from dataforge.bench import collate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per arm")
    parser.add_argument("--device", default="cpu", help="recorded only: collation runs on CPU")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args(argv)
    result = collate.run(quick=args.quick, seconds=args.seconds, device=args.device, out=args.out)
    print(collate.format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
