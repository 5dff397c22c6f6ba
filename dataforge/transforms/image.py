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

import functools
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dataforge.transforms.compose import draw_seed, torch_rng_seeded
from dataforge.transforms.decode import (
    DEFAULT_MAX_PIXELS,
    EncodedImage,
    ImageDecodeError,
    decode_image,
    decode_region,
    read_header,
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

_ENCODED = (bytes, bytearray, memoryview, str, os.PathLike)


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
        name = _name(source, d)
        image = decode_image(
            source,
            self.mode,
            max_pixels=self.max_pixels,
            allow_truncated=self.allow_truncated,
            name=name,
        )
        return _join(image, d, self.key)

    def header(self, source: Any, sample: Mapping[str, Any] | None = None) -> EncodedImage:
        """Read and check ``source``'s header with these settings (nothing decoded)."""
        return read_header(source, max_pixels=self.max_pixels, allow_truncated=self.allow_truncated,
                           name=_name(source, sample))

    def region(self, image: EncodedImage, box: tuple[int, int, int, int], scale_denom: int = 1) -> torch.Tensor:
        """Decode ``box`` of an image from :meth:`header` (see ``decode_region``)."""
        return decode_region(image, box, mode=self.mode, scale_denom=scale_denom,
                             allow_truncated=self.allow_truncated)

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


class RandomResizedCrop:
    """v2 ``RandomResizedCrop`` + ``RandomHorizontalFlip`` that can also decode: only the crop.

    Called on a uint8 ``(C, H, W)`` tensor it is the torchvision pair: the same
    random draws and the same pixels as ``v2.Compose([v2.RandomResizedCrop(size,
    scale, ratio), v2.RandomHorizontalFlip(hflip)])`` (tested). The draws come from
    torch's global RNG, as torchvision's, or from ``generator=`` when given: then they
    are v2's under ``torch.manual_seed`` with the generator's seed, and the global
    RNG is neither read nor seeded (safe in parallel threads).

    Called on an encoded image (bytes or a path, bare or as ``sample["image"]``), it
    draws the crop from the header's size, then decodes only that box (see NOTE
    [region decode] in :mod:`dataforge.transforms.decode`): the rows below the crop
    are never read, the rows above and the columns beside it are not reconstructed.
    Same draws, same crop; with ``reduce=False`` the pixels equal decode-then-crop
    exactly. With ``reduce=True`` (default) a JPEG whose crop is at least twice
    ``size`` is decoded at 1/2, 1/4 or 1/8 scale in the IDCT, then resized as usual
    (a small, antialiased difference in pixels for a large saving on big photos).
    :class:`~dataforge.datasets.ImageFolder` hands this transform the file
    instead of a decoded image (``accepts_encoded``).

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale / ratio: crop area (relative) and aspect-ratio ranges, as torchvision.
        hflip: probability of a horizontal flip (0 disables it, and its draw).
        antialias: antialias when downscaling.
        reduce: allow reduced-scale JPEG decoding (see above).
        mode / max_pixels / allow_truncated: as :class:`Decode`, for encoded input.
        key: the entry to transform when called on a sample dict.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (80, 60), (9, 99, 199)).save(buf, "JPEG")
        >>> t = RandomResizedCrop(32)
        >>> t(buf.getvalue()).shape, t(torch.zeros(3, 60, 80, dtype=torch.uint8)).shape
        (torch.Size([3, 32, 32]), torch.Size([3, 32, 32]))
    """

    accepts_encoded = True

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        antialias: bool = True,
        reduce: bool = True,
        mode: str = "RGB",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        allow_truncated: bool = False,
        key: str = "image",
    ) -> None:
        size = _check_size("size", size)
        self.size = (size, size) if isinstance(size, int) else size
        self.scale = _check_range("scale", scale, upper=1.0)
        self.ratio = _check_range("ratio", ratio)
        if isinstance(hflip, bool) or not isinstance(hflip, (int, float)) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
        self.hflip = float(hflip)
        self.antialias = bool(antialias)
        self.reduce = bool(reduce)
        self.decode = Decode(mode, max_pixels=max_pixels, allow_truncated=allow_truncated, key=key)
        self.key = key
        # As torchvision: float32 log-ratios, so the draws below are its draws.
        self._log_ratio = torch.log(torch.tensor(self.ratio))

    def params(self, height: int, width: int,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """Draw ``(top, left, height, width)`` of a crop, exactly as v2 ``RandomResizedCrop``
        draws it from torch's global RNG (here from ``generator`` when one is given)."""
        area = height * width
        lo, hi = self._log_ratio
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(
                self.scale[0], self.scale[1], generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(lo, hi, generator=generator)).item()  # type: ignore[arg-type]
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
                j = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
                return i, j, h, w
        in_ratio = width / height  # fallback: central crop
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        # draws straight from ``generator``: no global-RNG seeding, so no lock, and
        # threads run it in parallel (NOTE [global RNGs under threads] in dataforge._rng)
        from torchvision.transforms.v2 import functional as F

        image, d = _split(sample, self.key)
        if isinstance(image, _ENCODED):
            enc = self.decode.header(image, d)
            top, left, h, w = self.params(enc.height, enc.width, generator)
            denom = _scale_denom(h, w, *self.size) if self.reduce else 1
            crop = self.decode.region(enc, (top, left, h, w), denom)
            out = _resize_crop(crop, self.size, self.antialias)
        else:
            height, width = F.get_size(image)
            top, left, h, w = self.params(height, width, generator)
            out = F.resized_crop(image, top, left, h, w, list(self.size), antialias=self.antialias)
        if self.hflip > 0 and torch.rand(1, generator=generator) < self.hflip:
            out = out.flip(-1)  # F.horizontal_flip on a tensor, without the dispatch
        return _join(out, d, self.key)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"hflip={self.hflip}, antialias={self.antialias}, reduce={self.reduce})")


@functools.cache
def _native_uint8_bilinear() -> bool:
    """torchvision's ``_do_native_uint8_resize_on_cpu(BILINEAR)``: resize uint8 natively."""
    import platform

    return (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            or platform.machine() in ("aarch64", "arm64"))


def _resize_crop(crop: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """``F.resize(crop, size, antialias=antialias)`` for a decoded crop, without v2's dispatch.

    NOTE [direct resize]: for a uint8 CPU image where torchvision resizes natively
    in uint8, this makes the same ``interpolate`` call as v2's ``resize_image``
    (with its channels-last restride), so the pixels are the same (tested); it
    skips ~20 us per sample of Python dispatch and argument checks, which hold
    the GIL that the thread engine's workers share. Anything else goes to
    ``F.resize``.
    """
    from torchvision.transforms.v2 import functional as F

    c, h, w = crop.shape
    if (h, w) == size:
        return crop
    if not (_native_uint8_bilinear() and crop.dtype == torch.uint8 and crop.device.type == "cpu"
            and h * w > 0):
        return F.resize(crop, list(size), antialias=antialias)
    x = crop.reshape(1, c, h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and x.stride(0) != x.numel():
        x = x.as_strided(x.shape, (x.numel(), *x.stride()[1:]))  # keeps the output channels-last
    out = torch.nn.functional.interpolate(x, size=list(size), mode="bilinear", align_corners=False,
                                          antialias=antialias)
    return out.reshape(c, *size)


def _scale_denom(height: int, width: int, min_height: int, min_width: int) -> int:
    """The largest JPEG decode reduction (8, 4, 2, else 1) that keeps ``height x width``
    at least ``min_height x min_width``: the image is shrunk further afterwards anyway."""
    return next((k for k in (8, 4, 2) if height // k >= min_height and width // k >= min_width), 1)


def _name(source: Any, d: Mapping[str, Any] | None) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if d is not None:
        return str(d.get("path", d.get("__key__", "<bytes>")))
    return None


def train_transforms(
    size: int | tuple[int, int] = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    antialias: bool = True,
    reduce: bool = True,
) -> RandomResizedCrop:
    """Training preset: random resized crop + horizontal flip, uint8 CHW out.

    Built on ``torchvision.transforms.v2`` semantics (same draws, same pixels on a
    decoded image); given an encoded image it decodes only the crop (see
    :class:`RandomResizedCrop`, which this returns).

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale: range of the crop's area relative to the image.
        ratio: range of the crop's aspect ratio.
        hflip: probability of a horizontal flip (0 disables it).
        antialias: antialias when downscaling.
        reduce: allow reduced-scale JPEG decoding for crops at least twice ``size``.

    Returns:
        A transform: uint8 ``(C, H, W)`` tensor, or JPEG/PNG bytes or a path, in;
        uint8 ``(C, *size)`` out (bare image or sample dict; optional ``generator=``).

    Example:
        >>> t = train_transforms(32)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = t(torch.zeros(3, 60, 80, dtype=torch.uint8), generator=g)
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    return RandomResizedCrop(size, scale=scale, ratio=ratio, hflip=hflip, antialias=antialias,
                             reduce=reduce)


class ResizeCenterCrop:
    """v2 ``Resize(resize)`` (shorter side) + ``CenterCrop(size)`` that can also decode.

    Called on a uint8 ``(C, H, W)`` tensor it is the torchvision pair (same pixels).
    Called on an encoded image (bytes or a path, bare or as ``sample["image"]``) it
    decodes it first; with ``reduce=True`` (default) a JPEG whose shorter side is at
    least twice ``resize`` is decoded at 1/2, 1/4 or 1/8 scale in the IDCT before the
    same resize and crop (large photos: far less work, a small antialiased difference
    in pixels); ``reduce=False`` gives exactly decode-then-torchvision.

    Args:
        size: output size (int for square, or ``(h, w)``).
        resize: length of the shorter side before cropping; at least ``size``.
        reduce: allow reduced-scale JPEG decoding (see above).
        mode / max_pixels / allow_truncated: as :class:`Decode`, for encoded input.
        key: the entry to transform when called on a sample dict.

    Example:
        >>> out = ResizeCenterCrop(32, resize=36)(torch.zeros(3, 60, 80, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """

    accepts_encoded = True

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        resize: int = 256,
        *,
        reduce: bool = True,
        mode: str = "RGB",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        allow_truncated: bool = False,
        key: str = "image",
    ) -> None:
        size = _check_size("size", size)
        if isinstance(resize, bool) or not isinstance(resize, int) or resize < 1:
            raise ValueError(f"resize must be a positive int (shorter side), got {resize!r}")
        biggest = size if isinstance(size, int) else max(size)
        if resize < biggest:
            raise ValueError(
                f"resize={resize} is smaller than size={size!r}: the center crop would pad; "
                f"use resize >= {biggest} (commonly size * 8 / 7)"
            )
        self.size = [size, size] if isinstance(size, int) else list(size)
        self.resize = resize
        self.reduce = bool(reduce)
        self.decode = Decode(mode, max_pixels=max_pixels, allow_truncated=allow_truncated, key=key)
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        from torchvision.transforms.v2 import functional as F

        image, d = _split(sample, self.key)
        if isinstance(image, _ENCODED):
            enc = self.decode.header(image, d)
            denom = _scale_denom(enc.height, enc.width, self.resize, self.resize) if self.reduce else 1
            image = self.decode.region(enc, (0, 0, enc.height, enc.width), denom)
        out = F.center_crop(F.resize(image, [self.resize], antialias=True), self.size)
        return _join(out, d, self.key)

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize={self.resize}, reduce={self.reduce})"


def eval_transforms(
    size: int | tuple[int, int] = 224, resize: int = 256, *, reduce: bool = True
) -> ResizeCenterCrop:
    """Evaluation preset: v2 ``Resize(resize)`` (shorter side) + ``CenterCrop(size)``, uint8 CHW.

    Same pixels as the torchvision pair on a decoded image; given an encoded image it
    decodes it, at reduced scale for large JPEGs unless ``reduce=False`` (see
    :class:`ResizeCenterCrop`, which this returns).

    Args:
        size: output size (int for square, or ``(h, w)``).
        resize: length of the shorter side before cropping; at least ``size``.
        reduce: allow reduced-scale JPEG decoding when the shorter side is >= 2 * ``resize``.

    Example:
        >>> out = eval_transforms(32, resize=36)(torch.zeros(3, 60, 80, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    return ResizeCenterCrop(size, resize, reduce=reduce)


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
