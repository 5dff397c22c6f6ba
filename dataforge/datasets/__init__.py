"""Map-style and iterable datasets, their composition ops, and sources.

- ``MapDataset`` / ``from_sequence`` / ``concat`` / ``zip``: lazy, composable
  map-style datasets whose ``.labels`` travel through every op.
- ``IterDataset`` / ``mix``: iterable pipelines sharded over workers and ranks.
- Sources: ``ImageFolder``, ``TableDataset``, ``TextDataset``, ``from_shards``
  (tar / JSONL / Parquet shards, local or fsspec URLs), ``PackedTokenDataset``.
- Shard formats: ``Reader`` / ``register_reader`` (one registry, by extension).
- Shards out and fields back: ``write_shards`` (tar / JSONL, parallel, atomic, with
  an index) and ``decode_fields`` / ``FieldDecoder`` (fields decoded by extension).
"""

from dataforge.datasets.fields import FieldDecodeError, FieldDecoder, decode_fields
from dataforge.datasets.image_folder import ImageFolder
from dataforge.datasets.iterable import IterDataset, ShardedSource
from dataforge.datasets.map_style import MapDataset, concat, from_sequence, zip
from dataforge.datasets.mixing import mix
from dataforge.datasets.packed import PackedTokenDataset, tokenize_dataset
from dataforge.datasets.readers import Reader, register_reader
from dataforge.datasets.records import RecordError
from dataforge.datasets.shards import ShardDataset, expand_urls, from_shards
from dataforge.datasets.storage import StringStorage
from dataforge.datasets.table import TableDataset
from dataforge.datasets.tar_stream import ShardError
from dataforge.datasets.text import TextDataset
from dataforge.datasets.writer import WrittenShards, read_index, write_shards

__all__ = [
    "FieldDecodeError",
    "FieldDecoder",
    "ImageFolder",
    "IterDataset",
    "MapDataset",
    "PackedTokenDataset",
    "Reader",
    "RecordError",
    "ShardDataset",
    "ShardError",
    "ShardedSource",
    "StringStorage",
    "TableDataset",
    "TextDataset",
    "WrittenShards",
    "concat",
    "decode_fields",
    "expand_urls",
    "from_sequence",
    "from_shards",
    "mix",
    "read_index",
    "register_reader",
    "tokenize_dataset",
    "write_shards",
    "zip",
]
