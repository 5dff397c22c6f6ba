"""The ``dataforge`` command (placeholder until the bench harness lands)."""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataforge")
    sub = parser.add_subparsers(dest="cmd", required=True)
    bench = sub.add_parser("bench", help="throughput benchmarks")
    bench.add_argument("what", nargs="?", default="all")
    bench.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch.utils.data



    ds = list(range(10_000))
    t0 = time.perf_counter()
    n = sum(len(b) for b in torch.utils.data.DataLoader(ds, batch_size=64))
    print(f"iterated {n} samples at {n / (time.perf_counter() - t0):,.0f} samples/s", file=sys.stdout)
    return 0
