"""Map-style and iterable datasets, their composition ops, and sources.

- ``MapDataset`` / ``from_sequence`` / ``concat`` / ``zip``: lazy, composable
  map-style datasets whose ``.labels`` travel through every op.
- ``IterDataset`` / ``mix``: iterable pipelines sharded over workers and ranks.
- Sources: ``ImageFolder``, ``TableDataset``, ``TextDataset``, ``from_shards``
  (tar / JSONL shards, local or fsspec URLs), ``PackedTokenDataset``.
"""

from dataforge.datasets.image_folder import ImageFolder
from dataforge.datasets.iterable import IterDataset, ShardedSource
from dataforge.datasets.map_style import MapDataset, concat, from_sequence, zip
from dataforge.datasets.mixing import mix
from dataforge.datasets.packed import PackedTokenDataset, tokenize_dataset
from dataforge.datasets.shards import ShardDataset, expand_urls, from_shards
from dataforge.datasets.storage import StringStorage
from dataforge.datasets.table import TableDataset
from dataforge.datasets.tar_stream import ShardError
from dataforge.datasets.text import TextDataset

__all__ = [
    "ImageFolder",
    "IterDataset",
    "MapDataset",
    "PackedTokenDataset",
    "ShardDataset",
    "ShardError",
    "ShardedSource",
    "StringStorage",
    "TableDataset",
    "TextDataset",
    "concat",
    "expand_urls",
    "from_sequence",
    "from_shards",
    "mix",
    "tokenize_dataset",
    "zip",
]
