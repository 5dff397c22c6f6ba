"""Feeding benchmark: DevicePrefetcher vs ``.to(device)`` per batch vs the raw pinned copy.

The same run as `dataforge bench feeding` (all of its options apply; see
`dataforge/bench/feeding.py` for what is measured):

    python benchmarks/feeding.py [--quick] [--seconds S] [--device cpu|cuda|auto] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "feeding", *sys.argv[1:]]))
