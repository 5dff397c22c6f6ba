"""Samplers benchmark: ClassBalancedSampler vs WeightedRandomSampler, bucketing padding efficiency.

The same run as `dataforge bench samplers` (all of its options apply, `--help` lists them; see
`dataforge/bench/samplers.py` for what is measured):

    python benchmarks/samplers.py [--quick] [--repeats N] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "samplers", *sys.argv[1:]]))
