"""Image benchmark: stock DataLoader + PIL + transforms.v2 vs dataforge (process / thread engines) vs torchdata.nodes, same files.

The same run as `dataforge bench image` (all of its options apply; see
`dataforge/bench/image.py` for what is measured):

    python benchmarks/image.py [--quick] [--seconds S] [--device cpu|cuda|auto] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "image", *sys.argv[1:]]))
