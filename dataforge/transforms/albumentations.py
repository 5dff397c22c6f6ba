"""Adapter for albumentations pipelines (optional extra ``dataforge[albumentations]``).

albumentations works on HWC numpy arrays and takes named arguments
(``aug(image=...)``); dataforge's per-sample convention is a uint8 CHW tensor or a
sample dict. :class:`Albumentations` converts both ways, so a pipeline can switch
between torchvision and albumentations by changing one line.

NOTE [albumentations randomness]: albumentations 2.x draws from its own numpy /
python generators, not the global RNGs. With ``reseed=True`` (default) the adapter
re-seeds the pipeline before every call from ``generator`` when given, else from
torch's global RNG, which ``MapDataset.map(fn, seed=...)`` seeds per sample. The
augmentation then depends only on (seed, epoch, index), not on the worker.
The random state lives in the transform object, which the threads of the thread
engine share: a re-seeded call therefore holds a lock from the seeding to the
result, so albumentations pipelines run one sample at a time under
``engine="thread"`` (use the process engine to run them in parallel).
albumentations itself is imported only when an adapter is built.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from dataforge.transforms.compose import draw_seed

__all__ = ["Albumentations"]

_RESEEDED_CALL = threading.Lock()  # NOTE [albumentations randomness]: seed + call, atomically


def _to_hwc(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        if image.ndim == 2:
            return image.numpy(force=True)
        if image.ndim != 3:
            raise ValueError(
                f"Albumentations expects a (C, H, W) image tensor, got shape {tuple(image.shape)}"
            )
        return np.ascontiguousarray(image.permute(1, 2, 0).numpy(force=True))
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(
                f"Albumentations expects an (H, W, C) or (H, W) numpy image, got shape {image.shape}"
            )
        return image
    raise TypeError(
        f"Albumentations expects a CHW torch.Tensor or an HWC numpy image, got "
        f"{type(image).__name__}; decode it first (dataforge.transforms.image.Decode)"
    )


def _to_chw(image: Any) -> torch.Tensor:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class Albumentations:
    """Run an albumentations transform on a CHW tensor or a sample dict.

    The image goes in as HWC numpy (uint8 stays uint8) and comes back as a CHW
    tensor of the dtype albumentations returned (uint8, or float32 after
    ``A.Normalize``). Other keys of a sample dict pass through.

    Args:
        transform: an ``albumentations.Compose`` or a single albumentations transform.
        key: the entry to transform when called on a sample dict.
        reseed: re-seed the transform before each call (see NOTE [albumentations randomness]).

    Example:
        >>> import albumentations as A
        >>> t = Albumentations(A.Compose([A.CenterCrop(2, 2)]))
        >>> t(torch.zeros(3, 4, 4, dtype=torch.uint8)).shape
        torch.Size([3, 2, 2])
    """

    def __init__(
        self, transform: Callable[..., Any], *, key: str = "image", reseed: bool = True
    ) -> None:
        try:
            import albumentations  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Albumentations needs the optional albumentations package: "
                "pip install 'dataforge[albumentations]'"
            ) from exc
        if not callable(transform):
            raise TypeError(
                f"transform must be an albumentations transform or Compose, got {type(transform).__name__}"
            )
        self.transform = transform
        self.key = key
        self.reseed = bool(reseed)

    def _seed(self, generator: torch.Generator | None) -> None:
        seed = draw_seed(generator)
        if hasattr(self.transform, "set_random_state"):
            # One shared stream for the whole pipeline: children draw in sequence.
            self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        elif hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        if isinstance(sample, Mapping):
            if self.key not in sample:
                raise KeyError(
                    f"sample dict has no {self.key!r} key (keys: {sorted(map(str, sample))}); "
                    "pass key= to name the image entry"
                )
            image = sample[self.key]
        else:
            image = sample
        if self.reseed:
            with _RESEEDED_CALL:
                self._seed(generator)
                result = self.transform(image=_to_hwc(image))["image"]
        else:
            result = self.transform(image=_to_hwc(image))["image"]
        out = _to_chw(result)
        return {**sample, self.key: out} if isinstance(sample, Mapping) else out

    def __repr__(self) -> str:
        return f"Albumentations({self.transform!r}, reseed={self.reseed})"
