"""Image decoding: bytes or a path to a uint8 CHW tensor, whole or only a crop of it.

``torchvision.io.decode_image`` (libjpeg-turbo / libpng, releases the GIL) first,
PIL as the fallback for formats torchvision cannot read. Safety is kept:
a pixel limit against decompression bombs and truncated files refused unless the
caller opts in.

NOTE [region decode]: :func:`decode_region` decodes only a box of a JPEG, at
full or 1/2, 1/4, 1/8 scale, with the C extension ``dataforge._jpeg``
(libjpeg-turbo's ``jpeg_skip_scanlines`` / ``jpeg_crop_scanline`` / DCT scaling;
see ``dataforge/_jpeg.c``). At full scale its pixels equal a whole decode cropped
to the box (tested). It is how :class:`dataforge.transforms.presets.RandomResizedCrop`
avoids decoding the parts of an image a crop throws away. Without the extension
(``HAVE_ROI_DECODE`` is False: no compiler or libjpeg headers at install time), for
other formats, and for anything the extension refuses (CMYK, any corrupt-data
warning), it decodes the whole image with :func:`decode_image` and slices it, so
results and errors stay the same, only slower.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile

from dataforge.transforms._sample import join_sample, source_name, split_sample

# NOTE [pixel limit]: the same default as PIL's Image.MAX_IMAGE_PIXELS (about
# 89 M pixels); checked from the header before any pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485

_MODES = ("RGB", "L", "RGBA", "UNCHANGED")

try:
    from dataforge import _jpeg  # type: ignore[attr-defined]

    HAVE_ROI_DECODE = True
except ImportError:  # built without the optional C extension (see setup.py)
    _jpeg = None
    HAVE_ROI_DECODE = False


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the file."""


def _read(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return read_file(path), str(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file does not exist: {str(path)!r}") from None
    raise TypeError(
        f"image source must be bytes or a path, got {type(source).__name__}; "
        "pass the file's bytes or its path"
    )


def read_file(path: str | bytes) -> bytes:
    """The whole file in one ``read`` of the size ``fstat`` reports (about half the time of
    ``Path.read_bytes`` for a 75 kB JPEG); a short read, or a size of 0 (pipes, procfs),
    reads on to the end."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size) if size else b""
        if len(data) < size or not size:
            chunks = [data]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image whose header has been checked: bytes, name, size and format."""

    data: bytes
    name: str
    width: int
    height: int
    format: str | None


def read_header(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
    name: str | None = None,
) -> EncodedImage:
    """Read ``source`` and check its header (format, pixel limit, JPEG truncation).

    Nothing is decoded; errors are :class:`ImageDecodeError` naming the file.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 3)).save(buf, "JPEG")
        >>> im = read_header(buf.getvalue()); (im.width, im.height, im.format)
        (4, 3, 'JPEG')
    """
    data, default_name = _read(source)
    name = name or default_name
    if not data:
        raise ImageDecodeError(f"{name}: empty file, not an image")
    w, h, fmt = _check_header(data, name, max_pixels)
    if not allow_truncated and _is_truncated_jpeg(data):
        raise ImageDecodeError(
            f"{name}: truncated JPEG (no end-of-image marker); "
            "pass allow_truncated=True to decode what is there"
        )
    return EncodedImage(data, name, w, h, fmt)


def _check_header(data: bytes, name: str, max_pixels: int | None) -> tuple[int, int, str | None]:
    size = _jpeg_size(data)
    if size is not None:
        _check_pixels(*size, name, max_pixels)
        return size[0], size[1], "JPEG"
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header only
            w, h = im.size
            fmt = im.format
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name}: not an image (no known image format starts with {data[:8]!r})"
        ) from exc
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    _check_pixels(w, h, name, max_pixels)
    return w, h, fmt


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG's size read by libjpeg (about 1 us, PIL's parser 17 us); None to ask PIL."""
    if _jpeg is None or data[:3] != b"\xff\xd8\xff":
        return None
    try:
        w, h = _jpeg.header(data)
    except ValueError:
        return None  # PIL reads it, or words the error
    return (w, h) if w > 0 and h > 0 else None


def _check_pixels(w: int, h: int, name: str, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise ImageDecodeError(
            f"{name}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} "
            "(decompression-bomb guard); raise max_pixels if the image is trusted"
        )


def _is_truncated_jpeg(data: bytes) -> bool:
    # A complete JPEG ends with the EOI marker (possibly followed by padding zeros).
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9")


def decode_image(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    mode: str = "RGB",
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    allow_truncated: bool = False,
    name: str | None = None,
) -> torch.Tensor:
    """Decode an encoded image into a uint8 ``(C, H, W)`` tensor.

    Args:
        source: encoded bytes, or a path to read.
        mode: ``"RGB"`` (grayscale and RGBA are converted), ``"L"``, ``"RGBA"`` or
            ``"UNCHANGED"``.
        max_pixels: refuse images with more pixels than this (``None``: no limit).
        allow_truncated: decode truncated files (missing rows come out gray)
            instead of raising.
        name: how to name the image in errors (defaults to the path).

    Returns:
        A uint8 tensor of shape ``(C, H, W)`` (the first frame of an animated
        image; 16-bit images reduced to their 8 high bits). torchvision returns
        JPEGs as a channels-last view of its HWC buffer, kept as is: the uint8
        resize kernels are fastest on that layout.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 3)).save(buf, "PNG")
        >>> decode_image(buf.getvalue()).shape
        torch.Size([3, 3, 4])
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    image = read_header(source, max_pixels=max_pixels, allow_truncated=allow_truncated, name=name)
    return _decode_whole(image, mode, allow_truncated)


def _decode_whole(image: EncodedImage, mode: str, allow_truncated: bool) -> torch.Tensor:
    try:
        return _decode_torchvision(image.data, mode)
    except Exception:
        pass  # a format or feature torchvision cannot read: fall back to PIL
    return _decode_pil(image.data, mode, image.name, allow_truncated)


def decode_region(
    image: EncodedImage,
    box: tuple[int, int, int, int],
    *,
    mode: str = "RGB",
    scale_denom: int = 1,
    allow_truncated: bool = False,
) -> torch.Tensor:
    """Decode the box ``(top, left, height, width)`` of an image into uint8 ``(C, h, w)``.

    See NOTE [region decode]. With ``scale_denom`` 2, 4 or 8, a JPEG is decoded at
    that reduced scale (the box's pixels ``top // d`` .. ``ceil((top + height) / d)``);
    other formats, and the fallback path, give the box at full scale: callers
    resize the result anyway.

    Args:
        image: from :func:`read_header`.
        box: ``(top, left, height, width)`` in full-resolution pixels, inside the image.
        mode: ``"RGB"`` or ``"L"`` use the fast path; other modes decode whole.
        scale_denom: 1, 2, 4 or 8.
        allow_truncated: as in :func:`decode_image`.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
        >>> decode_region(read_header(buf.getvalue()), (8, 16, 20, 30)).shape
        torch.Size([3, 20, 30])
    """
    top, left, height, width = (int(v) for v in box)
    if not (top >= 0 and left >= 0 and height > 0 and width > 0
            and top + height <= image.height and left + width <= image.width):
        raise ValueError(
            f"{image.name}: box (top, left, height, width) = {box} does not lie inside the "
            f"{image.width}x{image.height} image"
        )
    if scale_denom not in (1, 2, 4, 8):
        raise ValueError(f"scale_denom must be 1, 2, 4 or 8, got {scale_denom!r}")
    if _jpeg is not None and image.format == "JPEG" and mode in ("RGB", "L"):
        try:
            buf, rows, cols, channels = _jpeg.decode_crop(
                image.data, top, left, height, width, scale_denom, mode == "L"
            )
        except ValueError:
            pass  # CMYK, or libjpeg warned about the data: the general decoder decides
        else:
            # A dense channels-last (C, H, W) view of the HWC pixels. NOTE: dense matters:
            # torch's uint8 antialiased resize takes its fast path only on channels-last
            # contiguous input; a strided crop view cost 186 instead of 125 us per sample
            # (one core, demo data), and its output came back in the slow NCHW layout.
            return torch.frombuffer(buf, dtype=torch.uint8).view(rows, cols, channels).permute(2, 0, 1)
    whole = _decode_whole(image, mode, allow_truncated)
    return whole[:, top : top + height, left : left + width]


def _decode_torchvision(data: bytes, mode: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    read_mode = {
        "RGB": ImageReadMode.RGB,
        "L": ImageReadMode.GRAY,
        "RGBA": ImageReadMode.RGB_ALPHA,
        "UNCHANGED": ImageReadMode.UNCHANGED,
    }[mode]
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    out = tv_decode(buf, mode=read_mode)
    if out.ndim == 4:  # an animated GIF comes back as (frames, C, H, W): keep the first, as PIL
        out = out[0].contiguous()
    if out.dtype != torch.uint8:  # 16-bit PNG -> uint16: keep the 8 high bits (as v2.ToDtype)
        out = out.to(torch.int32).bitwise_right_shift(8).to(torch.uint8)
    return out


def _decode_pil(data: bytes, mode: str, name: str, allow_truncated: bool) -> torch.Tensor:
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated
    try:
        with Image.open(io.BytesIO(data)) as im:
            if mode != "UNCHANGED" and im.mode != mode:
                im = im.convert(mode)
            im.load()
            arr = np.asarray(im)
    except Exception as exc:
        raise ImageDecodeError(f"{name}: corrupt or unsupported image ({type(exc).__name__}: {exc})") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


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
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if max_pixels is not None and (
            isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
        ):
            raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
        self.mode = mode
        self.max_pixels = max_pixels
        self.allow_truncated = bool(allow_truncated)
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        source, d = split_sample(sample, self.key)
        name = source_name(source, d)
        image = decode_image(
            source,
            self.mode,
            max_pixels=self.max_pixels,
            allow_truncated=self.allow_truncated,
            name=name,
        )
        return join_sample(image, d, self.key)

    def header(self, source: Any, sample: Mapping[str, Any] | None = None) -> EncodedImage:
        """Read and check ``source``'s header with these settings (nothing decoded)."""
        return read_header(source, max_pixels=self.max_pixels, allow_truncated=self.allow_truncated,
                           name=source_name(source, sample))

    def region(self, image: EncodedImage, box: tuple[int, int, int, int], scale_denom: int = 1) -> torch.Tensor:
        """Decode ``box`` of an image from :meth:`header` (see ``decode_region``)."""
        return decode_region(image, box, mode=self.mode, scale_denom=scale_denom,
                             allow_truncated=self.allow_truncated)

    def __repr__(self) -> str:
        return f"Decode(mode={self.mode!r}, max_pixels={self.max_pixels}, allow_truncated={self.allow_truncated})"
