"""Reading an image file and checking its header, before any decoder spends on it.

:func:`read_header` reads a file (or takes bytes) and checks the format and the
limits of NOTE [decode limits] in :mod:`dataforge.transforms.decode` from the
header alone; the :class:`EncodedImage` it returns is what every decoder takes.
:func:`read_file` reads a whole file with as few GIL hand-offs as it can (NOTE
[GIL transitions] in :mod:`dataforge.transforms.presets`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dataforge.transforms._jpeg_markers import JpegStructure, read_structure

try:
    from dataforge import _jpeg  # type: ignore[attr-defined]
except ImportError:  # built without the optional C extension (see setup.py)
    _jpeg = None

# NOTE [pixel limit]: the same default as PIL's Image.MAX_IMAGE_PIXELS (about
# 89 M pixels); checked from the header before any pixel is decoded.
DEFAULT_MAX_PIXELS = 89_478_485
# A progressive JPEG has about 10 scans (cjpeg writes at most 100); libjpeg-turbo's own
# fuzz targets cap files at 50-100 (TJPARAM_SCANLIMIT), its djpeg offers -maxscans.
DEFAULT_MAX_SCANS = 256
# 256 MiB: the size of an uncompressed RGB image at the default pixel limit.
DEFAULT_MAX_BYTES = 256 * 2**20


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message names the file."""


def _read(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    max_bytes: int | None = None,
    name: str | None = None,
) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = memoryview(source).nbytes
        if max_bytes is not None and size > max_bytes:
            raise ImageDecodeError(_too_many_bytes(name or "<bytes>", size, max_bytes))
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return read_file(path, max_bytes=max_bytes), str(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file does not exist: {str(path)!r}") from None
        except _TooLarge as exc:
            raise ImageDecodeError(_too_many_bytes(name or str(path), exc.size, max_bytes)) from None
    raise TypeError(
        f"image source must be bytes or a path, got {type(source).__name__}; "
        "pass the file's bytes or its path"
    )


def _too_many_bytes(name: str, size: int, max_bytes: int | None) -> str:
    return (f"{name}: {size} bytes exceeds max_bytes={max_bytes}; "
            "raise max_bytes if the file is trusted")


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def read_file(path: str | bytes, *, max_bytes: int | None = None) -> bytes:
    """The whole file in one ``read`` of the size ``fstat`` reports (about half the time of
    ``Path.read_bytes`` for a 75 kB JPEG); a short read, or a size of 0 (pipes, procfs),
    reads on to the end. Over ``max_bytes`` it raises ``ValueError`` (before reading,
    when ``fstat`` knows the size). A regular file is read by ``dataforge._jpeg`` when
    built: one GIL release instead of four (NOTE [GIL transitions] in
    :mod:`dataforge.transforms.presets`)."""
    if _jpeg is not None:
        data = _jpeg.read_file(path, -1 if max_bytes is None else max_bytes)
        if isinstance(data, bytes):
            return data
        if data is not None:
            raise _TooLarge(data)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        if max_bytes is not None and size > max_bytes:
            raise _TooLarge(size)
        data = os.read(fd, size) if size else b""
        if len(data) < size or not size:
            chunks = [data]
            total = len(data)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise _TooLarge(total)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image whose header has been checked: bytes, name, size and format.

    ``truncated``: a JPEG without its end marker (read with ``allow_truncated=True``);
    ``max_scans``: the scan limit it was checked with, which the region decoder
    enforces again while it decodes.
    """

    data: bytes
    name: str
    width: int
    height: int
    format: str | None
    truncated: bool = False
    max_scans: int | None = None


def read_header(
    source: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_scans: int | None = DEFAULT_MAX_SCANS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    allow_truncated: bool = False,
    name: str | None = None,
) -> EncodedImage:
    """Read ``source`` and check its header (format, limits, JPEG truncation).

    Nothing is decoded; errors are :class:`ImageDecodeError` naming the file. The
    limits (NOTE [decode limits]; ``None`` for none) are checked here, so every
    decoder that takes the result is bounded by them.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (4, 3)).save(buf, "JPEG")
        >>> im = read_header(buf.getvalue()); (im.width, im.height, im.format)
        (4, 3, 'JPEG')
    """
    data, default_name = _read(source, max_bytes, name)
    name = name or default_name
    if not data:
        raise ImageDecodeError(f"{name}: empty file, not an image")
    if data[:3] == b"\xff\xd8\xff":
        w, h = _check_jpeg(data, name, max_pixels, max_scans)
        fmt: str | None = "JPEG"
    else:
        w, h, fmt = _check_other(data, name, max_pixels)
    truncated = _is_truncated_jpeg(data)
    if truncated and not allow_truncated:
        raise ImageDecodeError(
            f"{name}: truncated JPEG (no end-of-image marker); "
            "pass allow_truncated=True to decode what is there"
        )
    return EncodedImage(data, name, w, h, fmt, truncated, max_scans)


def _check_jpeg(data: bytes, name: str, max_pixels: int | None, max_scans: int | None) -> tuple[int, int]:
    s: JpegStructure | None = read_structure(data, max_scans)
    if s is None:
        raise ImageDecodeError(f"{name}: corrupt JPEG: no frame header (SOF marker) before the image data")
    if s.precision != 8:
        raise ImageDecodeError(
            f"{name}: {s.precision}-bit JPEG (sample precision {s.precision}); the decoders here "
            "(libjpeg-turbo in torchvision, PIL and dataforge._jpeg) read 8-bit JPEGs only: "
            "convert the file to 8 bits per sample"
        )
    if s.width == 0 or s.height == 0:
        raise ImageDecodeError(
            f"{name}: JPEG declares a {s.width}x{s.height} image (a height set by a DNL marker "
            "is not supported)"
        )
    _check_pixels(s.width, s.height, name, max_pixels)
    if max_scans is not None and s.scans > max_scans:
        raise ImageDecodeError(
            f"{name}: JPEG with more than max_scans={max_scans} scans (a progressive file has "
            "about 10; each scan is a pass over the whole image); raise max_scans if the file "
            "is trusted"
        )
    return s.width, s.height


def _check_other(data: bytes, name: str, max_pixels: int | None) -> tuple[int, int, str | None]:
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


def _check_pixels(w: int, h: int, name: str, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise ImageDecodeError(
            f"{name}: {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels} "
            "(decompression-bomb guard); raise max_pixels if the image is trusted"
        )


def _is_truncated_jpeg(data: bytes) -> bool:
    # A complete JPEG ends with the EOI marker (possibly followed by padding zeros).
    if data[:2] != b"\xff\xd8":
        return False
    return not (data.endswith(b"\xff\xd9") or data.rstrip(b"\x00").endswith(b"\xff\xd9"))


def check_limit(name: str, value: Any) -> int | None:
    """``value`` as a decode limit: a positive int, or None for no limit (else ValueError)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None (no limit), got {value!r}")
    return value
