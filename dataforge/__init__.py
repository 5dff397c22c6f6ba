"""dataforge: composable, fast, correct data pipelines for PyTorch.

Everything is a plain ``torch.utils.data`` citizen: datasets work in a stock
``DataLoader``, samplers work with any map-style dataset, collates are
``collate_fn``s.

The public names below are imported lazily (PEP 562) so that ``import dataforge``
stays cheap and optional extras are only imported when used.

Example:
    >>> import dataforge
    >>> ds = dataforge.from_sequence([1, 2, 3]).map(lambda x: x * 10)
    >>> [ds[i] for i in range(len(ds))]
    [10, 20, 30]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# NOTE [lazy public API]: name -> module that defines it. One table, sorted,
# is the whole public surface; `__all__` is derived from it.
_EXPORTS: dict[str, str] = {
    "BucketBatchSampler": "dataforge.samplers.bucket",
    "ClassBalancedSampler": "dataforge.samplers.class_balanced",
    "DataWaitMeter": "dataforge.loading.stats",
    "DevicePrefetcher": "dataforge.loading.prefetch",
    "DistributedSamplerWrapper": "dataforge.samplers.distributed",
    "ImageFolder": "dataforge.datasets.image_folder",
    "IterDataset": "dataforge.datasets.iterable",
    "Loader": "dataforge.loading.loader",
    "MapDataset": "dataforge.datasets.map_style",
    "PadCollate": "dataforge.collate.pad",
    "SplitCollate": "dataforge.collate.split",
    "TableDataset": "dataforge.datasets.table",
    "TextDataset": "dataforge.datasets.text",
    "WeightedSampler": "dataforge.samplers.weighted",
    "build_image_loaders": "dataforge.loading.builders",
    "build_loader": "dataforge.loading.loader",
    "build_text_loaders": "dataforge.loading.builders",
    "concat": "dataforge.datasets.map_style",
    "decode_fields": "dataforge.datasets.fields",
    "default_collate": "dataforge.collate.default",
    "doctor": "dataforge.doctor",
    "from_sequence": "dataforge.datasets.map_style",
    "from_shards": "dataforge.datasets.shards",
    "mix": "dataforge.datasets.mixing",
    "seed_worker": "dataforge.loading.seeding",
    "set_buffer_pool": "dataforge._memory",
    "write_shards": "dataforge.datasets.writer",
    "zip": "dataforge.datasets.map_style",
}
_SUBMODULES = ("collate", "datasets", "loading", "samplers", "synthetic", "transforms")

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"dataforge.{name}")
    raise AttributeError(f"module 'dataforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dataforge._memory import set_buffer_pool
    from dataforge.collate.default import default_collate
    from dataforge.collate.pad import PadCollate
    from dataforge.collate.split import SplitCollate
    from dataforge.datasets.fields import decode_fields
    from dataforge.datasets.image_folder import ImageFolder
    from dataforge.datasets.iterable import IterDataset
    from dataforge.datasets.map_style import MapDataset, concat, from_sequence, zip
    from dataforge.datasets.mixing import mix
    from dataforge.datasets.shards import from_shards
    from dataforge.datasets.table import TableDataset
    from dataforge.datasets.text import TextDataset
    from dataforge.datasets.writer import write_shards
    from dataforge.doctor import doctor
    from dataforge.loading.builders import build_image_loaders, build_text_loaders
    from dataforge.loading.loader import Loader, build_loader
    from dataforge.loading.prefetch import DevicePrefetcher
    from dataforge.loading.seeding import seed_worker
    from dataforge.loading.stats import DataWaitMeter
    from dataforge.samplers.bucket import BucketBatchSampler
    from dataforge.samplers.class_balanced import ClassBalancedSampler
    from dataforge.samplers.distributed import DistributedSamplerWrapper
    from dataforge.samplers.weighted import WeightedSampler
