"""Text benchmark: per-sample tokenization + DataCollatorWithPadding (stock) vs packed tokens + BucketBatchSampler + PadCollate (dataforge).

The same run as `dataforge bench text` (all of its options apply; see
`dataforge/bench/text.py` for what is measured):

    python benchmarks/text.py [--quick] [--seconds S] [--device cpu|cuda|auto] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "text", *sys.argv[1:]]))
