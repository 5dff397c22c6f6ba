"""The calling convention of the per-sample image transforms (helpers, not public API).

Every image transform (:mod:`dataforge.transforms.image`, :mod:`dataforge.transforms.presets`,
:class:`~dataforge.transforms.decode.Decode`) is called on a bare image or on a
sample dict ``{"image": ..., ...}``: the image is transformed, the other keys pass
through, and the input dict is not mutated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

ENCODED = (bytes, bytearray, memoryview, str, os.PathLike)


def split_sample(sample: Any, key: str) -> tuple[Any, Mapping[str, Any] | None]:
    """``(image, sample_dict_or_None)`` from a bare image or a sample dict."""
    if isinstance(sample, Mapping):
        if key not in sample:
            raise KeyError(
                f"sample dict has no {key!r} key (keys: {sorted(map(str, sample))}); "
                f"pass key= to name the image entry"
            )
        return sample[key], sample
    return sample, None


def join_sample(image: Any, sample: Mapping[str, Any] | None, key: str) -> Any:
    return image if sample is None else {**sample, key: image}


def source_name(source: Any, d: Mapping[str, Any] | None) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if d is not None:
        return str(d.get("path", d.get("__key__", "<bytes>")))
    return None
