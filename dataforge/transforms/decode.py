"""Image decoding: bytes or a path to a uint8 CHW tensor, whole or only a crop of it.

JPEGs with ``dataforge._jpeg`` or ``torchvision.io`` (libjpeg-turbo, releases the
GIL), other formats with PIL (NOTE [decoder choice]).

NOTE [decode limits]: untrusted files are bounded before any decoder spends on them,
whichever path decodes them: ``max_bytes`` (the file's size, checked before it is
read), ``max_pixels`` (the header's width x height; animated GIFs are decoded by PIL,
first frame only, so one frame is all that is decoded) and ``max_scans`` (a JPEG's
scans, counted from its markers: see NOTE [counting scans] in ``_jpeg_markers``).
A file refused by a limit or found corrupt by the region decoder is refused: no
fallback decodes it again.

NOTE [strict decoding]: ``strict=True`` (default) raises on a JPEG whose data is
damaged even though it still ends properly (libjpeg would invent the missing pixels,
mostly gray); ``strict=False`` keeps libjpeg's repair. Strict is the default because
a training set should not quietly learn from invented pixels, and a loader's
``on_error`` policy can skip and count what raises. Benign libjpeg warnings (bytes
between segments, unknown JFIF revision, ...) are not corruption (NOTE [benign
warnings] in ``dataforge/_jpeg.c``). A region decode sees the damage in the rows it
decodes and above them (skipped rows are still entropy-decoded), not below, nor in the
scans of a progressive file that no pixel of the output reads (NOTE [unused scans] in
``dataforge/_jpeg.c``): a crop that does not need the damaged data decodes, as its
pixels are all real. The check needs the
C extension: torchvision and PIL repair damaged data silently, so without it, and for
the JPEGs it leaves to torchvision (CMYK / YCCK), only errors raise. Truncated files are refused by ``allow_truncated=False`` (default) from
the header; when allowed, they are decoded leniently.

NOTE [region decode]: :func:`decode_region` decodes only a box of a JPEG, at
full or 1/2, 1/4, 1/8 scale, with the C extension ``dataforge._jpeg``
(libjpeg-turbo's ``jpeg_skip_scanlines`` / ``jpeg_crop_scanline`` / DCT scaling,
and for a progressive file a copy without the scans and rows no output pixel reads;
see ``dataforge/_jpeg.c``, NOTE [unused scans]). Its pixels equal a whole decode cropped to the box, at
every scale and sampling factor (tested on a corpus), also on libjpeg-turbo < 3.0
(NOTE [scaled crop of 4x2 / 2x4 chroma] there). It is how
:class:`dataforge.transforms.presets.RandomResizedCrop` avoids decoding the parts of an image a crop throws away. Without the extension
(``HAVE_ROI_DECODE`` is False: no compiler or libjpeg headers at install time), for
other formats, and for JPEGs the extension does not decode (CMYK, lossless), it
decodes the whole image with :func:`decode_image` and slices it: same pixels, only
slower. Corrupt data it reports is an error (NOTE [decode limits]).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile

from dataforge.transforms._jpeg_markers import read_structure
from dataforge.transforms._sample import join_sample, source_name, split_sample
from dataforge.transforms.image_file import (  # re-exported: the decoders' inputs and limits
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    EncodedImage,
    ImageDecodeError,
    check_limit,
    read_header,
)

_MODES = ("RGB", "L", "RGBA", "UNCHANGED")
_OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>")

try:
    from dataforge import _jpeg  # type: ignore[attr-defined]

    HAVE_ROI_DECODE = True
except ImportError:  # built without the optional C extension (see setup.py)
    _jpeg = None
    HAVE_ROI_DECODE = False


def decode_image(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    mode: str = "RGB",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_scans: int | None = DEFAULT_MAX_SCANS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    allow_truncated: bool = False,
    strict: bool = True,
    name: str | None = None,
) -> torch.Tensor:
    """Decode an encoded image into a uint8 ``(C, H, W)`` tensor.

    Args:
        source: encoded bytes, or a path to read.
        mode: ``"RGB"`` (grayscale and RGBA are converted), ``"L"``, ``"RGBA"`` or
            ``"UNCHANGED"``.
        max_pixels: refuse images with more pixels than this (``None``: no limit).
        max_scans: refuse JPEGs with more scans than this (``None``: no limit).
        max_bytes: refuse files larger than this (``None``: no limit). See NOTE
            [decode limits].
        allow_truncated: decode truncated files (missing rows come out gray)
            instead of raising.
        strict: raise on damaged JPEG data (default) instead of decoding what
            libjpeg can repair; see NOTE [strict decoding].
        name: how to name the image in errors (defaults to the path).

    Returns:
        A uint8 tensor of shape ``(C, H, W)`` (the first frame of an animated
        image; 16-bit images reduced to their 8 high bits). JPEGs come back as a
        channels-last view of an HWC buffer, kept as is: the uint8 resize kernels
        are fastest on that layout.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 3)).save(buf, "PNG")
        >>> decode_image(buf.getvalue()).shape
        torch.Size([3, 3, 4])
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    image = read_header(source, max_pixels=max_pixels, max_scans=max_scans, max_bytes=max_bytes,
                        allow_truncated=allow_truncated, name=name)
    return _decode_whole(image, mode, allow_truncated, strict)


def _decode_whole(image: EncodedImage, mode: str, allow_truncated: bool, strict: bool = True) -> torch.Tensor:
    # NOTE [decoder choice]: a JPEG goes to dataforge._jpeg when it is built (it reports
    # damaged data and enforces max_scans while decoding), else to torchvision
    # (libjpeg-turbo); every other format to PIL, whose decoders raise on damaged data
    # and read the first frame only. torchvision's other decoders are not used on
    # untrusted files: 0.29's decode_png kills the process (SIGSEGV) on a PNG whose
    # zlib checksum is wrong (found by tests/fuzz/fuzz_decode.py), and its GIF decoder
    # decodes every frame of an animation (issue #16, finding 4).
    if image.format == "JPEG":
        if _jpeg is not None:
            out = _decode_jpeg_whole(image, mode, strict)
            if out is not None:
                return out
        try:
            return _decode_torchvision(image.data, mode)
        except Exception:
            pass  # a JPEG feature torchvision cannot read: PIL decides
    return _decode_pil(image.data, mode, image.name, allow_truncated)


def _decode_jpeg_whole(image: EncodedImage, mode: str, strict: bool) -> torch.Tensor | None:
    """The whole JPEG through ``dataforge._jpeg`` (torchvision's pixels for a complete
    file, and it reports damaged data); None when it does not decode this file or mode."""
    gray = mode == "L" or (mode == "UNCHANGED" and len(_components(image)) == 1)
    out = _jpeg_crop(image, (0, 0, image.height, image.width), 1, gray, strict)
    if out is None or mode in ("RGB", "L", "UNCHANGED"):
        return out
    alpha = torch.full((1, *out.shape[1:]), 255, dtype=torch.uint8)  # RGBA: opaque, as PIL
    return torch.cat([out, alpha])


def _components(image: EncodedImage) -> tuple[tuple[int, int, int], ...]:
    s = read_structure(image.data, 0)
    return s.components if s is not None else ()


def _jpeg_crop(image: EncodedImage, box: tuple[int, int, int, int], scale_denom: int, gray: bool,
               strict: bool, batch: bool = False) -> torch.Tensor | None:
    """``box`` of a JPEG decoded by ``dataforge._jpeg`` as a dense channels-last ``(C, h, w)``
    (``(1, C, h, w)`` with ``batch``);
    None when the extension does not decode this file (the caller uses a general decoder).
    Damaged data (under ``strict``) and limits raise :class:`ImageDecodeError`: no other
    decoder gets the file (NOTE [decode limits])."""
    if _jpeg is None:
        return None
    try:
        got = _jpeg.decode_crop(*_crop_job(image, box, scale_denom, gray, strict))
    except (_jpeg.Unsupported, ValueError) as exc:
        got = exc
    return _crop_pixels(image, got, strict, batch)


def _crop_job(image: EncodedImage, box: tuple[int, int, int, int], scale_denom: int, gray: bool,
              strict: bool) -> tuple[Any, ...]:
    """``_jpeg.decode_crop``'s arguments for ``box`` of ``image``."""
    return (image.data, *box, scale_denom, gray, strict and not image.truncated, image.max_scans or 0)


def _crop_pixels(image: EncodedImage, got: Any, strict: bool, batch: bool) -> torch.Tensor | None:
    """What ``_jpeg.decode_crop`` gave for ``image`` (its result, or the exception it raised)
    as :func:`_jpeg_crop` returns it: the pixels, None when unsupported, else the error."""
    if _jpeg is not None and isinstance(got, _jpeg.Unsupported):
        return None  # CMYK, lossless, ...: a general decoder reads it
    if isinstance(got, ValueError):
        hint = "; pass strict=False to decode what libjpeg can repair" if strict else ""
        raise ImageDecodeError(f"{image.name}: corrupt JPEG ({got}){hint}") from None
    if isinstance(got, BaseException):
        raise got
    buf, rows, cols, channels = got
    # A dense channels-last (1, C, H, W) view of the HWC pixels. NOTE: dense matters:
    # torch's uint8 antialiased resize takes its fast path only on channels-last
    # contiguous input; a strided crop view cost 186 instead of 125 us per sample
    # (one core, demo data), and its output came back in the slow NCHW layout. The views
    # are made in numpy: torch's view calls each release and retake the GIL (NOTE [GIL
    # transitions] in dataforge.transforms.presets).
    pixels = np.frombuffer(buf, np.uint8).reshape(1, rows, cols, channels).transpose(0, 3, 1, 2)
    return torch.from_numpy(pixels if batch else pixels[0])


def decode_region(
    image: EncodedImage,
    box: tuple[int, int, int, int],
    *,
    mode: str = "RGB",
    scale_denom: int = 1,
    allow_truncated: bool = False,
    strict: bool = True,
    batch: bool = False,
) -> torch.Tensor:
    """Decode the box ``(top, left, height, width)`` of an image into uint8 ``(C, h, w)``.

    See NOTE [region decode]. With ``scale_denom`` 2, 4 or 8, a JPEG is decoded at
    that reduced scale (the box's pixels ``top // d`` .. ``ceil((top + height) / d)``);
    other formats, and the fallback path, give the box at full scale: callers
    resize the result anyway.

    Args:
        image: from :func:`read_header` (its limits hold here too).
        box: ``(top, left, height, width)`` in full-resolution pixels, inside the image.
        mode: ``"RGB"`` or ``"L"`` use the fast path; other modes decode whole.
        scale_denom: 1, 2, 4 or 8.
        allow_truncated: as in :func:`decode_image`.
        strict: as in :func:`decode_image` (NOTE [strict decoding]).
        batch: give a batch of one, ``(1, C, h, w)``: what torch's resize takes, without a
            view op on the way (NOTE [GIL transitions] in :mod:`dataforge.transforms.presets`).

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
        >>> decode_region(read_header(buf.getvalue()), (8, 16, 20, 30)).shape
        torch.Size([3, 20, 30])
    """
    box = _check_box(image, box, scale_denom)
    if _region_decoder_takes(image, mode):
        out = _jpeg_crop(image, box, scale_denom, mode == "L", strict, batch)
        if out is not None:
            return out
    return _whole_crop(image, box, mode, allow_truncated, strict, batch)


def decode_regions(
    images: Sequence[EncodedImage],
    boxes: Sequence[tuple[int, int, int, int]],
    scale_denoms: Sequence[int],
    *,
    mode: str = "RGB",
    allow_truncated: bool = False,
    strict: bool = True,
    batch: bool = False,
) -> list[torch.Tensor]:
    """``[decode_region(im, box, scale_denom=d, ...) for im, box, d in zip(...)]``, the same
    pixels, with the JPEGs the fast path decodes done in one GIL release for all of them
    (NOTE [one native call per batch] in ``dataforge/_crops.cpp``). The first image that
    fails raises its error, as the loop would (after every image has been tried)."""
    checked = [_check_box(im, box, d) for im, box, d in zip(images, boxes, scale_denoms, strict=True)]
    fast = [i for i, im in enumerate(images) if _region_decoder_takes(im, mode)]
    got: dict[int, Any] = {}
    if fast and _jpeg is not None:
        jobs = [_crop_job(images[i], checked[i], scale_denoms[i], mode == "L", strict) for i in fast]
        got = dict(zip(fast, _jpeg.decode_crops(jobs)))
    out = []
    for i, (image, box) in enumerate(zip(images, checked)):
        crop = _crop_pixels(image, got[i], strict, batch) if i in got else None
        out.append(crop if crop is not None else
                   _whole_crop(image, box, mode, allow_truncated, strict, batch))
    return out


def _region_decoder_takes(image: EncodedImage, mode: str) -> bool:
    """Whether ``dataforge._jpeg`` is there and decodes this image in this mode (it may
    still leave an unusual JPEG to the general decoders: ``_jpeg.Unsupported``)."""
    return _jpeg is not None and image.format == "JPEG" and mode in ("RGB", "L")


def _check_box(image: EncodedImage, box: tuple[int, int, int, int],
               scale_denom: int) -> tuple[int, int, int, int]:
    top, left, height, width = (int(v) for v in box)
    if not (top >= 0 and left >= 0 and height > 0 and width > 0
            and top + height <= image.height and left + width <= image.width):
        raise ValueError(
            f"{image.name}: box (top, left, height, width) = {box} does not lie inside the "
            f"{image.width}x{image.height} image"
        )
    if scale_denom not in (1, 2, 4, 8):
        raise ValueError(f"scale_denom must be 1, 2, 4 or 8, got {scale_denom!r}")
    return top, left, height, width


def _whole_crop(image: EncodedImage, box: tuple[int, int, int, int], mode: str,
                allow_truncated: bool, strict: bool, batch: bool) -> torch.Tensor:
    """``box`` of the image decoded whole (the general decoders)."""
    top, left, height, width = box
    whole = _decode_whole(image, mode, allow_truncated, strict)
    crop = whole[:, top : top + height, left : left + width]
    return crop[None] if batch else crop


def _decode_torchvision(data: bytes, mode: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    read_mode = {
        "RGB": ImageReadMode.RGB,
        "L": ImageReadMode.GRAY,
        "RGBA": ImageReadMode.RGB_ALPHA,
        "UNCHANGED": ImageReadMode.UNCHANGED,
    }[mode]
    return tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=read_mode)


def _decode_pil(data: bytes, mode: str, name: str, allow_truncated: bool) -> torch.Tensor:
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(_pil_mode(im, mode))
    except Exception as exc:
        why = _OBJECT_REPR.sub("", str(exc))  # PIL names the BytesIO by its address: not stable
        raise ImageDecodeError(f"{name}: corrupt or unsupported image ({type(exc).__name__}: {why})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.require(arr.transpose(2, 0, 1), requirements=["C", "W"]))


def _pil_mode(im: Image.Image, mode: str) -> Image.Image:
    """``im`` loaded and in ``mode``, as torchvision gives it: 16-bit gray keeps its 8 high
    bits (as ``v2.ToDtype``); ``UNCHANGED`` expands a palette and keeps the channels."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        im = Image.fromarray((np.asarray(im) >> 8).clip(0, 255).astype(np.uint8), "L")
    if mode != "UNCHANGED":
        return im if im.mode == mode else im.convert(mode)
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        return im.convert("RGB" if len(im.getbands()) >= 3 else "L")
    im.load()
    return im


class Decode:
    """Decode bytes or a path into a uint8 ``(C, H, W)`` tensor.

    JPEGs with ``dataforge._jpeg`` or ``torchvision.io`` (libjpeg-turbo, releases the GIL),
    other formats with PIL (NOTE [decoder choice]); files over the limits are refused before anything is decoded
    (NOTE [decode limits]), damaged JPEG data raises unless ``strict=False`` (NOTE
    [strict decoding]) and truncated files raise :class:`ImageDecodeError` unless
    ``allow_truncated``. Errors name the file.

    Args:
        mode: ``"RGB"`` (grayscale / RGBA converted), ``"L"``, ``"RGBA"`` or ``"UNCHANGED"``.
        max_pixels / max_scans / max_bytes: limits, ``None`` for none.
        allow_truncated: decode truncated files instead of raising.
        strict: raise on damaged JPEG data instead of decoding libjpeg's repair.
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
        max_scans: int | None = DEFAULT_MAX_SCANS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        allow_truncated: bool = False,
        strict: bool = True,
        key: str = "image",
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.max_pixels = check_limit("max_pixels", max_pixels)
        self.max_scans = check_limit("max_scans", max_scans)
        self.max_bytes = check_limit("max_bytes", max_bytes)
        self.allow_truncated = bool(allow_truncated)
        self.strict = bool(strict)
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        source, d = split_sample(sample, self.key)
        image = self.header(source, d)
        return join_sample(_decode_whole(image, self.mode, self.allow_truncated, self.strict), d, self.key)

    def header(self, source: Any, sample: Mapping[str, Any] | None = None) -> EncodedImage:
        """Read and check ``source``'s header with these settings (nothing decoded)."""
        return read_header(source, max_pixels=self.max_pixels, max_scans=self.max_scans,
                           max_bytes=self.max_bytes, allow_truncated=self.allow_truncated,
                           name=source_name(source, sample))

    def region(self, image: EncodedImage, box: tuple[int, int, int, int], scale_denom: int = 1, *,
               batch: bool = False) -> torch.Tensor:
        """Decode ``box`` of an image from :meth:`header` (see ``decode_region``)."""
        return decode_region(image, box, mode=self.mode, scale_denom=scale_denom,
                             allow_truncated=self.allow_truncated, strict=self.strict, batch=batch)

    def regions(self, images: Sequence[EncodedImage], boxes: Sequence[tuple[int, int, int, int]],
                scale_denoms: Sequence[int], *, batch: bool = False) -> list[torch.Tensor]:
        """:meth:`region` for each image, the JPEGs in one native call (``decode_regions``)."""
        return decode_regions(images, boxes, scale_denoms, mode=self.mode,
                              allow_truncated=self.allow_truncated, strict=self.strict, batch=batch)

    def __repr__(self) -> str:
        return (f"Decode(mode={self.mode!r}, max_pixels={self.max_pixels}, max_scans={self.max_scans}, "
                f"max_bytes={self.max_bytes}, allow_truncated={self.allow_truncated}, strict={self.strict})")
