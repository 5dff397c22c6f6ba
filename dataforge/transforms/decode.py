"""Image decoding: bytes or a path to a uint8 CHW tensor.

``torchvision.io.decode_image`` (libjpeg-turbo / libpng, releases the GIL) first,
PIL as the fallback for formats torchvision cannot read. Safety is kept:
a pixel limit against decompression bombs and truncated files refused unless the
caller opts in.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

# NOTE [pixel limit]: the same default as PIL's Image.MAX_IMAGE_PIXELS (about
# 89 M pixels); checked from the header before any pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485

_MODES = ("RGB", "L", "RGBA", "UNCHANGED")


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the file."""


def _read(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file does not exist: {str(path)!r}") from None
    raise TypeError(
        f"image source must be bytes or a path, got {type(source).__name__}; "
        "pass the file's bytes or its path"
    )


def _check_header(data: bytes, name: str, max_pixels: int | None) -> None:
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header only
            w, h = im.size
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name}: not an image (no known image format starts with {data[:8]!r})"
        ) from exc
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
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
    data, default_name = _read(source)
    name = name or default_name
    if not data:
        raise ImageDecodeError(f"{name}: empty file, not an image")
    _check_header(data, name, max_pixels)
    if not allow_truncated and _is_truncated_jpeg(data):
        raise ImageDecodeError(
            f"{name}: truncated JPEG (no end-of-image marker); "
            "pass allow_truncated=True to decode what is there"
        )
    try:
        return _decode_torchvision(data, mode)
    except Exception:
        pass  # a format or feature torchvision cannot read: fall back to PIL
    return _decode_pil(data, mode, name, allow_truncated)


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
