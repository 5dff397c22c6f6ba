"""dataforge.transforms: per-sample and on-device batch transforms.

- :mod:`~dataforge.transforms.image`: ``Decode``, ``train_transforms``,
  ``eval_transforms``, ``Torchvision`` and ``Albumentations`` adapters (uint8 CHW);
  the presets live in :mod:`~dataforge.transforms.presets`, ``Decode`` and the
  decoders in :mod:`~dataforge.transforms.decode`.
- :mod:`~dataforge.transforms.batch`: ``ToFloat``, ``Normalize``,
  ``RandomHorizontalFlip``, ``RandomBrightnessContrast``, ``ChannelsLast``,
  ``Compose`` on whole NCHW batches on any device.
- :mod:`~dataforge.transforms.gpu_decode`: ``GpuRandomResizedCrop``, a batch of JPEG
  files decoded with nvJPEG and cropped, flipped and normalized on the GPU.
- :mod:`~dataforge.transforms.text`: ``Tokenize``, ``train_tokenizer``,
  ``load_tokenizer``.
- here: ``Compose``, ``RandomApply``, ``OneOf`` for per-sample callables.

Submodules are imported on first use, so ``import dataforge.transforms`` does
not import torchvision.transforms.v2, tokenizers or albumentations.

Example:
    >>> import dataforge.transforms as T
    >>> T.Compose([lambda x: x + 1, T.RandomApply(lambda x: x * 2, p=0.0)])(1)
    2
"""

from __future__ import annotations

import importlib
from typing import Any

from dataforge.transforms.compose import Compose, OneOf, RandomApply

__all__ = ["Compose", "OneOf", "RandomApply"]

_SUBMODULES = ("albumentations", "batch", "compose", "decode", "functional", "gpu_decode", "image",
               "presets", "text")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
