"""Per-sample image transforms on the CPU: decode, presets, torchvision adapter.

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

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dataforge.transforms.compose import draw_seed, torch_rng_seeded
from dataforge.transforms.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image

# `Albumentations` is also importable from here (lazily, see __getattr__ below).
__all__ = [
    "Decode",
    "ImageDecodeError",
    "Torchvision",
    "eval_transforms",
    "train_transforms",
]


def _split(sample: Any, key: str) -> tuple[Any, Mapping[str, Any] | None]:
    """``(image, sample_dict_or_None)`` from a bare image or a sample dict."""
    if isinstance(sample, Mapping):
        if key not in sample:
            raise KeyError(
                f"sample dict has no {key!r} key (keys: {sorted(map(str, sample))}); "
                f"pass key= to name the image entry"
            )
        return sample[key], sample
    return sample, None


def _join(image: Any, sample: Mapping[str, Any] | None, key: str) -> Any:
    return image if sample is None else {**sample, key: image}


class Decode:
    """Decode bytes or a path into a uint8 ``(C, H, W)`` tensor.

    ``torchvision.io`` (libjpeg-turbo, releases the GIL) first, PIL as the fallback;
    images over ``max_pixels`` are refused (decompression-bomb guard) and truncated
    files raise :class:`ImageDecodeError` unless ``allow_truncated``. Errors name
    the file.

    Args:
        mode: ``"RGB"`` (grayscale / RGBA converted), ``"L"``, ``"RGBA"`` or ``"UNCHANGED"``.
        max_pixels: pixel limit, ``None`` for none.
        allow_truncated: decode truncated files instead of raising.
        key: the entry to decode when called on a sample dict.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("L", (5, 4)).save(buf, "PNG")
        >>> Decode()({"image": buf.getvalue(), "label": 1})["image"].shape
        torch.Size([3, 4, 5])
    """

    def __init__(
        self,
        mode: str = "RGB",
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        allow_truncated: bool = False,
        key: str = "image",
    ) -> None:
        modes = ("RGB", "L", "RGBA", "UNCHANGED")
        if mode not in modes:
            raise ValueError(f"mode must be one of {modes}, got {mode!r}")
        if max_pixels is not None and (
            isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
        ):
            raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
        self.mode = mode
        self.max_pixels = max_pixels
        self.allow_truncated = bool(allow_truncated)
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        source, d = _split(sample, self.key)
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        if d is not None and name is None:
            name = str(d.get("path", d.get("__key__", "<bytes>")))
        image = decode_image(
            source,
            self.mode,
            max_pixels=self.max_pixels,
            allow_truncated=self.allow_truncated,
            name=name,
        )
        return _join(image, d, self.key)

    def __repr__(self) -> str:
        return f"Decode(mode={self.mode!r}, max_pixels={self.max_pixels}, allow_truncated={self.allow_truncated})"


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
        image, d = _split(sample, self.key)
        # v2 transforms draw only from torch's global CPU RNG: with a generator,
        # seed that RNG from it for the duration of the call only.
        if generator is None:
            out = self.transform(image)
        else:
            with torch_rng_seeded(draw_seed(generator)):
                out = self.transform(image)
        return _join(out, d, self.key)

    def __repr__(self) -> str:
        return f"Torchvision({self.transform!r})"


def _check_size(name: str, size: Any) -> int | tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return (size[0], size[1])
    raise ValueError(f"{name} must be a positive int or an (h, w) pair of them, got {size!r}")


def _check_range(name: str, value: Any, *, upper: float | None = None) -> tuple[float, float]:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1]
        and (upper is None or value[1] <= upper)
    )
    if not ok:
        limit = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a (min, max) pair with 0 < min <= max{limit}, got {value!r}")
    return float(value[0]), float(value[1])


def train_transforms(
    size: int | tuple[int, int] = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    antialias: bool = True,
) -> Torchvision:
    """Training preset: v2 ``RandomResizedCrop`` + ``RandomHorizontalFlip`` on uint8 CHW.

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale: range of the crop's area relative to the image.
        ratio: range of the crop's aspect ratio.
        hflip: probability of a horizontal flip (0 disables it).
        antialias: antialias when downscaling.

    Returns:
        A :class:`Torchvision` transform: uint8 ``(C, H, W)`` in, uint8 ``(C, *size)`` out
        (bare image or sample dict; optional ``generator=``).

    Example:
        >>> t = train_transforms(32)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = t(torch.zeros(3, 60, 80, dtype=torch.uint8), generator=g)
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    from torchvision.transforms import v2

    size = _check_size("size", size)
    scale = _check_range("scale", scale, upper=1.0)
    ratio = _check_range("ratio", ratio)
    if isinstance(hflip, bool) or not isinstance(hflip, (int, float)) or not 0 <= hflip <= 1:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
    ops: list[Any] = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=antialias)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=hflip))
    return Torchvision(v2.Compose(ops))


def eval_transforms(size: int | tuple[int, int] = 224, resize: int = 256) -> Torchvision:
    """Evaluation preset: v2 ``Resize(resize)`` (shorter side) + ``CenterCrop(size)`` on uint8 CHW.

    Args:
        size: output size (int for square, or ``(h, w)``).
        resize: length of the shorter side before cropping; at least ``size``.

    Example:
        >>> out = eval_transforms(32, resize=36)(torch.zeros(3, 60, 80, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    from torchvision.transforms import v2

    size = _check_size("size", size)
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < 1:
        raise ValueError(f"resize must be a positive int (shorter side), got {resize!r}")
    biggest = size if isinstance(size, int) else max(size)
    if resize < biggest:
        raise ValueError(
            f"resize={resize} is smaller than size={size!r}: the center crop would pad; "
            f"use resize >= {biggest} (commonly size * 8 / 7)"
        )
    return Torchvision(v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size)]))


def __getattr__(name: str) -> Any:
    # NOTE [lazy albumentations]: re-exported here without importing albumentations
    # when this module is imported.
    if name == "Albumentations":
        from dataforge.transforms.albumentations import Albumentations

        return Albumentations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
