"""dataforge.collate: batch samples into tensors.

- :func:`default_collate`: torch's default collate with a type registry
  (``default_collate.register(MyType)(fn)`` or :func:`register_collate`), clear
  errors naming the key path, and shared-memory output in workers.
- :class:`PadCollate`: pads variable-length fields, with masks and lengths.
- :class:`HFCollate`: tokenizer output -> exactly the batch a ``transformers`` model
  takes (``dataforge.collate.hf`` also has ``DataforgeTrainer``, a ``Trainer`` fed by
  a dataforge loader).
- :class:`SplitCollate`: ``(data, label)`` pairs or dicts -> a tuple of batches.
- :mod:`dataforge.collate.functional`: the padding math.

Example:
    >>> from dataforge.collate import PadCollate
    >>> PadCollate()([[1, 2], [3]])[0].tolist()
    [[1, 2], [3, 0]]
"""

from __future__ import annotations

from dataforge.collate.default import (
    CollateContext,
    CollateFn,
    DefaultCollate,
    default_collate,
    register_collate,
)
from dataforge.collate.hf import HFCollate
from dataforge.collate.pad import PadCollate
from dataforge.collate.split import SplitCollate

__all__ = [
    "CollateContext",
    "CollateFn",
    "DefaultCollate",
    "HFCollate",
    "PadCollate",
    "SplitCollate",
    "default_collate",
    "register_collate",
]
