"""Samplers benchmark: ClassBalancedSampler vs WeightedRandomSampler, bucketing padding efficiency.

Usage:
    python benchmarks/samplers.py [--quick] [--seconds S] [--device cpu] [--out result.json]
                                  [--num-labels N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import sys

from dataforge.bench import samplers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 labels: a few seconds")
    parser.add_argument("--seconds", type=float, default=None, help="unused: fixed epochs")
    parser.add_argument("--device", default="cpu", help="recorded only: samplers run on CPU")
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--num-labels", type=int, default=None, help="default 1e6 quick, 1e8 full")
    parser.add_argument("--repeats", type=int, default=None, help="default 3")
    args = parser.parse_args(argv)
    result = samplers.run(quick=args.quick, seconds=args.seconds, device=args.device, out=args.out,
                          num_labels=args.num_labels, repeats=args.repeats)
    print(samplers.format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
