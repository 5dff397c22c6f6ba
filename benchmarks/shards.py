"""Shards benchmark: demo images and text written as shards to a loopback S3 server, then read for two epochs: conversion time and epoch-1 / epoch-2 samples/s for dataforge, webdataset, litdata and MosaicML streaming (each optional).

The same run as `dataforge bench shards` (all of its options apply; see
`dataforge/bench/shards.py` for what is measured):

    python benchmarks/shards.py [--quick] [--workers N] [--batch-size N] [--repeats N] [--out DIR]
"""

import sys

from dataforge.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "shards", *sys.argv[1:]]))
