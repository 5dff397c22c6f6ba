"""Per-sample image transforms on the CPU: decode, presets, torchvision adapter.

The one place to import them from: ``Decode`` is defined in
:mod:`dataforge.transforms.decode`, the presets (``train_transforms``,
``eval_transforms``, ``RandomResizedCrop``, ``ResizeCenterCrop``) in
:mod:`dataforge.transforms.presets`, ``Albumentations`` in
:mod:`dataforge.transforms.albumentations` (imported lazily); the
``Torchvision`` adapter and ``with_decode`` here.

Everything here keeps images as uint8 ``(C, H, W)`` tensors; conversion to
float and normalization happen later, once per batch, on the device
(:mod:`dataforge.transforms.batch`).

One calling convention for every transform in this module (and for
:class:`~dataforge.transforms.albumentations.Albumentations`): call it on a bare
image or on a sample dict ``{"image": ..., ...}`` (the image is transformed, other
keys pass through, the input dict is not mutated), with an optional keyword
``generator: torch.Generator``. Switching augmentation libraries is one line::

    aug = Torchvision(v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip()]))
    aug = Albumentations(A.Compose([A.RandomResizedCrop((224, 224)), A.HorizontalFlip()]))

Reproducibility per sample: see NOTE [per-sample randomness] in
:mod:`dataforge.transforms.compose` (``generator=`` or ``MapDataset.map(fn, seed=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dataforge.transforms._sample import join_sample, split_sample
from dataforge.transforms.compose import draw_seed, torch_rng_seeded
from dataforge.transforms.decode import Decode, ImageDecodeError
from dataforge.transforms.presets import (
    RandomResizedCrop,
    ResizeCenterCrop,
    eval_transforms,
    train_transforms,
)

# `Albumentations` is also importable from here (lazily, see __getattr__ below).
__all__ = [
    "Decode",
    "ImageDecodeError",
    "RandomResizedCrop",
    "ResizeCenterCrop",
    "Torchvision",
    "eval_transforms",
    "train_transforms",
    "with_decode",
]


class Torchvision:
    """Adapter giving a ``torchvision.transforms.v2`` transform dataforge's calling convention.

    Args:
        transform: any callable on an image (typically a v2 transform or ``v2.Compose``).
        key: the entry to transform when called on a sample dict.

    Example:
        >>> from torchvision.transforms import v2
        >>> t = Torchvision(v2.CenterCrop(2))
        >>> t({"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "label": 7})["image"].shape
        torch.Size([3, 2, 2])
    """

    def __init__(self, transform: Callable[[Any], Any], *, key: str = "image") -> None:
        if not callable(transform):
            raise TypeError(
                f"transform must be a callable torchvision transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        image, d = split_sample(sample, self.key)
        # v2 transforms draw only from torch's global CPU RNG: with a generator,
        # seed that RNG from it for the duration of the call only.
        if generator is None:
            out = self.transform(image)
        else:
            with torch_rng_seeded(draw_seed(generator)):
                out = self.transform(image)
        return join_sample(out, d, self.key)

    def __repr__(self) -> str:
        return f"Torchvision({self.transform!r})"


def with_decode(transform: Callable[..., Any] | None, **decode_kwargs: Any) -> Callable[..., Any]:
    """``transform`` made to take an encoded image (bytes or a path, bare or in a sample dict).

    A transform that decodes by itself (``accepts_encoded``, e.g. ``train_transforms``,
    which decodes only its crop) is returned as is; any other runs after
    :class:`Decode` (``decode_kwargs`` go to it); ``None`` gives ``Decode()``. Use it
    with ``ImageFolder(root, decode=False)`` (or encoded shards) so that the split,
    the sampler and the transforms decide what gets decoded.

    Example:
        >>> from torchvision.transforms import v2
        >>> with_decode(train_transforms(32)).accepts_encoded
        True
        >>> with_decode(Torchvision(v2.CenterCrop(8)))  # doctest: +ELLIPSIS
        Compose([
            Decode(mode='RGB', ...),
            Torchvision(CenterCrop(size=(8, 8)))
        ])
    """
    from dataforge.transforms.compose import Compose

    if transform is None:
        return Decode(**decode_kwargs)
    if getattr(transform, "accepts_encoded", False):
        return transform
    return Compose([Decode(**decode_kwargs), transform])


def __getattr__(name: str) -> Any:
    # NOTE [lazy albumentations]: re-exported here without importing albumentations
    # when this module is imported.
    if name == "Albumentations":
        from dataforge.transforms.albumentations import Albumentations

        return Albumentations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
