"""Transforms benchmark: per-core image pipeline (stock tutorial vs dataforge uint8) and text tokenization.

The same run as `dataforge bench transforms` (all of its options apply; see
`dataforge/bench/transforms.py` for what is measured):

    python benchmarks/transforms.py [--quick] [--seconds S] [--device cpu|cuda|auto] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "transforms", *sys.argv[1:]]))
