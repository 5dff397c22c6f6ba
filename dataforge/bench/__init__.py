"""The benchmark harness behind ``dataforge bench``.

Each benchmark is a module ``dataforge.bench.<name>`` with
``run(*, quick, seconds, device, data, out, **kw) -> dict`` and
``format_table(result) -> str`` (the contract in :mod:`dataforge.bench.common`).
``BENCHMARKS`` lists what the command can run; ``ALL`` is what ``bench all``
runs, in order.

Example:
    >>> from dataforge.bench import BENCHMARKS, ALL
    >>> ALL
    ('image', 'text', 'samplers', 'collate', 'feeding')
"""

from __future__ import annotations

BENCHMARKS: tuple[str, ...] = ("image", "text", "samplers", "collate", "feeding", "transforms", "shards")
# not in ALL: shards needs the dev extra's loopback S3 server (moto) and takes minutes
# for its two epochs of every library, past what `bench all --quick` (make demo) allows
ALL: tuple[str, ...] = ("image", "text", "samplers", "collate", "feeding")

__all__ = ["ALL", "BENCHMARKS"]
