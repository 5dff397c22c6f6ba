"""Collate benchmark: dataforge PadCollate vs HF DataCollatorWithPadding vs pad_sequence.

The same run as `dataforge bench collate` (all of its options apply, `--help` lists them; see
`dataforge/bench/collate.py` for what is measured):

    python benchmarks/collate.py [--quick] [--seconds S] [--repeats N] [--batch-size N] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "collate", *sys.argv[1:]]))
