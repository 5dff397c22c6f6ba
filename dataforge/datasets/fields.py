"""Sample fields by extension: encode them for a shard, decode them back (never pickle).

A sample is a dict of fields named like webdataset's tar members: the part of the
member name after the key (``"jpg"``, ``"cls"``, ``"seg.png"``); its kind is its last
dot-separated part (``"seg.png"`` is a ``png``). Keys starting with ``"__"``
(``__key__``, ``__url__``) are metadata, passed through.

NOTE [field rules]: one table serves the writer and the decoder, so that
``decode_fields(read(write(sample)))`` gives the sample back:

=====================  ============================  ==========================================
kind                   written from                  decoded to
=====================  ============================  ==========================================
cls cls2 class count   int (``str(i)`` in ASCII)     int
index inx id
txt text transcript    str (UTF-8)                   str (strict UTF-8)
json jsn               any JSON value (``json.dumps``,  the value (strict UTF-8, at most
                       no NaN)                       ``max_json_bytes``, nested at most 128 deep)
npy                    numpy array / torch tensor    numpy array (header checked against the
                       (``np.save``, no pickle)      data length, object dtypes refused)
jpg jpeg png webp      uint8 ``(C, H, W)`` tensor or  uint8 ``(C, H, W)`` tensor through
                       PIL image, encoded by PIL     ``decode_image`` with its limits on
anything else          bytes as is; str as UTF-8     bytes, unchanged
=====================  ============================  ==========================================

Bytes are written as they are under every kind. NOTE [image encoding]: a tensor
with 1, 3 or 4 channels is an ``L``, ``RGB`` or ``RGBA`` image (JPEG takes 1 or 3);
PNG and WebP are written lossless (decoding gives the same pixels), JPEG at
``jpeg_quality`` (default 95) with PIL's default 4:2:0 chroma subsampling (decoding
gives the pixels of the written bytes, not the original ones). The same PIL and
libjpeg give the same bytes, so written shards are reproducible.

JSONL shards hold JSON values: int, text and JSON kinds are stored as themselves,
and the binary kinds (npy and images) as base64 text, which :func:`decode_fields`
recognises by the kind; bytes of any other kind are refused by the JSONL writer.

Parquet shards hold one column per field, typed by kind (:func:`parquet_column`):
int kinds as int64, text kinds as UTF-8 strings, every other kind as binary holding
the bytes a tar member would (JSON text, ``.npy``, encoded images, bytes as is).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dataforge.datasets.records import MAX_JSON_DEPTH, MAX_LINE_BYTES, json_depth
from dataforge.transforms.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    ImageDecodeError,
    check_limit,
    decode_image,
)

__all__ = [
    "FieldDecodeError", "FieldDecoder", "decode_fields", "encode_field", "field_kind", "parquet_column",
    "to_parquet_value",
]

INT_KINDS = frozenset({"cls", "cls2", "class", "count", "index", "inx", "id"})
TEXT_KINDS = frozenset({"txt", "text", "transcript"})
JSON_KINDS = frozenset({"json", "jsn"})
IMAGE_KINDS = frozenset({"jpg", "jpeg", "png", "webp"})
BINARY_KINDS = IMAGE_KINDS | {"npy"}  # stored as base64 text in JSONL shards
_PIL_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_MAX_INT_CHARS = 40  # a class id is short; longer text is not one


class FieldDecodeError(ValueError):
    """A field that cannot be encoded or decoded; the message names the sample and field.

    Attributes:
        key: the sample's ``__key__`` (or index), when known.
        field: the field name.
    """

    def __init__(self, message: str, *, key: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.key, self.field = key, field

    def __reduce__(self) -> Any:
        return _rebuild, (type(self), str(self), self.key, self.field)


def _rebuild(cls: type[FieldDecodeError], message: str, key: str | None, field: str | None) -> FieldDecodeError:
    return cls(message, key=key, field=field)


def field_kind(field: str) -> str:
    """The kind of a field: its last dot-separated part, lowercased (``"seg.PNG" -> "png"``)."""
    return field.rsplit(".", 1)[-1].lower()


def _where(sample: Mapping[str, Any], key: Any, field: str) -> str:
    url = sample.get("__url__")
    return f"sample {key!r}, field {field!r}" + (f" (shard {url!r})" if url else "")


# ---- encoding -----------------------------------------------------------------------------
def _encode_image(value: Any, kind: str, jpeg_quality: int, where: str) -> bytes:
    from PIL import Image

    if isinstance(value, torch.Tensor):
        if value.dtype != torch.uint8 or value.ndim != 3 or value.shape[0] not in (1, 3, 4):
            raise FieldDecodeError(
                f"{where}: an image must be a uint8 (C, H, W) tensor with 1, 3 or 4 channels, got "
                f"{value.dtype} of shape {tuple(value.shape)}; convert with .to(torch.uint8) / .permute(2, 0, 1)"
            )
        hwc = value.detach().cpu().permute(1, 2, 0).contiguous().numpy()
        image = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
    elif isinstance(value, Image.Image):
        image = value
    else:
        raise FieldDecodeError(
            f"{where}: a {kind} field takes encoded bytes, a uint8 (C, H, W) tensor or a PIL image, got "
            f"{type(value).__name__}; for an (H, W, C) numpy array pass torch.from_numpy(a).permute(2, 0, 1)"
        )
    fmt = _PIL_FORMAT[kind]
    if fmt == "JPEG" and image.mode not in ("L", "RGB"):
        raise FieldDecodeError(f"{where}: JPEG stores 1 or 3 channels, got mode {image.mode}; use a png field")
    opts: dict[str, Any] = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    if fmt == "WEBP":
        opts = {"lossless": True}
    buf = io.BytesIO()
    image.save(buf, fmt, **opts)
    return buf.getvalue()


def _encode_npy(value: Any, where: str) -> bytes:
    if isinstance(value, torch.Tensor):
        try:
            value = value.detach().cpu().numpy()
        except TypeError as e:  # bfloat16 and other dtypes numpy lacks
            raise FieldDecodeError(f"{where}: {e}; convert the tensor to a numpy dtype first") from None
    if not isinstance(value, (np.ndarray, np.generic)):
        raise FieldDecodeError(f"{where}: an npy field takes a numpy array or tensor, got {type(value).__name__}")
    buf = io.BytesIO()
    try:
        np.save(buf, value, allow_pickle=False)
    except ValueError as e:  # object arrays would need pickle
        raise FieldDecodeError(f"{where}: {e}; npy fields hold plain dtypes only") from None
    return buf.getvalue()


def encode_field(field: str, value: Any, *, key: Any = None, jpeg_quality: int = 95) -> bytes:
    """Encode one field's value to the bytes of its tar member (NOTE [field rules]).

    Args:
        field: the field name (its last dot-separated part is the kind).
        value: the value to encode.
        key: the sample's key, for error messages.
        jpeg_quality: JPEG quality, 1-95 (NOTE [image encoding]).

    Raises:
        FieldDecodeError: a value the field's kind cannot hold, naming the sample and field.

    Example:
        >>> encode_field("cls", 3), encode_field("json", {"a": [1]}), encode_field("txt", "hé")
        (b'3', b'{"a":[1]}', b'h\\xc3\\xa9')
    """
    kind = field_kind(field)
    where = f"sample {key!r}, field {field!r}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if kind in JSON_KINDS:
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise FieldDecodeError(f"{where}: not JSON-serialisable ({e})", key=key, field=field) from None
    try:
        if kind in INT_KINDS:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise FieldDecodeError(f"{where}: a {kind} field takes an int, got {type(value).__name__} {value!r}")
            return str(int(value)).encode("ascii")
        if kind == "npy":
            return _encode_npy(value, where)
        if kind in IMAGE_KINDS:
            return _encode_image(value, kind, jpeg_quality, where)
        if isinstance(value, str):
            return value.encode("utf-8")
    except FieldDecodeError as e:
        raise FieldDecodeError(str(e), key=key, field=field) from None
    raise FieldDecodeError(
        f"{where}: cannot store a {type(value).__name__} in a {kind!r} field; pass bytes or str, or name the "
        "field by what it holds (cls: int, txt: str, json: JSON value, npy: array, jpg/png/webp: image)",
        key=key, field=field,
    )


def to_json_value(field: str, value: Any, *, key: Any = None, jpeg_quality: int = 95) -> Any:
    """A field as a JSONL shard stores it: JSON values as they are, binary kinds as base64 text."""
    kind = field_kind(field)
    if kind in BINARY_KINDS and not isinstance(value, str):
        return base64.b64encode(encode_field(field, value, key=key, jpeg_quality=jpeg_quality)).decode("ascii")
    if isinstance(value, (bytes, bytearray, memoryview, np.ndarray, torch.Tensor)):
        raise FieldDecodeError(
            f"sample {key!r}, field {field!r}: a JSONL shard holds JSON values, and binary data only in "
            f"npy / jpg / png / webp fields; got {type(value).__name__}: write format='tar' or rename the field",
            key=key, field=field,
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldDecodeError(f"sample {key!r}, field {field!r}: {value} is not valid JSON", key=key, field=field)
    return value


def parquet_column(field: str) -> str:
    """The type of a field's parquet column: ``"int64"``, ``"string"`` or ``"binary"`` (NOTE [field rules])."""
    kind = field_kind(field)
    return "int64" if kind in INT_KINDS else "string" if kind in TEXT_KINDS else "binary"


def to_parquet_value(field: str, value: Any, *, key: Any = None, jpeg_quality: int = 95) -> int | str | bytes:
    """A field as a parquet shard stores it in its :func:`parquet_column`.

    The value is first encoded as for a tar member (so bytes given for an int or text
    field must hold an int or UTF-8 text), then int and text kinds are decoded back to
    ``int`` / ``str``.

    Raises:
        FieldDecodeError: a value the field's kind cannot hold, or an int past int64.
    """
    data = encode_field(field, value, key=key, jpeg_quality=jpeg_quality)
    column = parquet_column(field)
    where = f"sample {key!r}, field {field!r}"
    try:
        if column == "int64":
            i = _decode_int(data, where)
            if not -(2**63) <= i < 2**63:
                raise FieldDecodeError(f"{where}: {i} does not fit a parquet int64 column; write format='tar'")
            return i
        if column == "string":
            return _decode_text(data, where)
    except FieldDecodeError as e:
        raise FieldDecodeError(str(e), key=key, field=field) from None
    return data


# ---- decoding -----------------------------------------------------------------------------
def _decode_int(raw: Any, where: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, (bytes, str)) and len(raw) <= _MAX_INT_CHARS:
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        t = text.strip()
        if t.lstrip("-").isdigit() and t.isascii():
            return int(t)
    raise FieldDecodeError(f"{where}: expected an integer class id such as b'3', got {raw[:60]!r}"
                           if isinstance(raw, (bytes, str)) else f"{where}: expected an int, got {raw!r}")


def _decode_text(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FieldDecodeError(f"{where}: not UTF-8 (byte {raw[e.start:e.start + 1]!r} at {e.start})") from None


def _decode_json(raw: bytes, where: str, max_bytes: int) -> Any:
    if len(raw) > max_bytes:
        raise FieldDecodeError(f"{where}: {len(raw)} bytes of JSON, over max_json_bytes={max_bytes}; "
                               "pass a larger max_json_bytes= if such fields are expected")
    text = _decode_text(raw, where)
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and json_depth(raw) > MAX_JSON_DEPTH:
        raise FieldDecodeError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise FieldDecodeError(f"{where}: invalid JSON ({str(e)[:200]})") from None


def _decode_npy(raw: bytes, where: str) -> np.ndarray:
    from numpy.lib import format as npformat

    f = io.BytesIO(raw)
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy format version {version} is not read here (1.0 and 2.0 are)")
    except ValueError as e:
        raise FieldDecodeError(f"{where}: not a readable .npy file ({str(e)[:200]})") from None
    if dtype.hasobject:
        raise FieldDecodeError(f"{where}: the array holds Python objects, which need pickle; refused")
    count = math.prod(shape)
    body = memoryview(raw)[f.tell():]
    if len(body) != count * dtype.itemsize:
        raise FieldDecodeError(f"{where}: the header says {shape} {dtype} ({count * dtype.itemsize} bytes) but "
                               f"{len(body)} bytes of data follow; the field is truncated or corrupt")
    arr = np.frombuffer(bytearray(body), dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def _binary(raw: Any, where: str) -> bytes:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):  # a JSONL shard's base64 text
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise FieldDecodeError(f"{where}: text that is not base64 in a binary field") from None
    raise FieldDecodeError(f"{where}: expected bytes (or base64 text), got {type(raw).__name__}")


class FieldDecoder:
    """Decode a sample's fields by kind (NOTE [field rules]); unknown kinds stay as they are.

    Use it as ``from_shards(...).map(FieldDecoder(...))``; :func:`decode_fields` is
    the default one. Errors are :class:`FieldDecodeError` naming the sample's key,
    the field and the shard.

    Args:
        image_mode: ``mode`` of :func:`~dataforge.transforms.decode.decode_image`.
        decode_images: ``False`` keeps image fields encoded (bytes), for transforms
            that decode by themselves (``accepts_encoded``, such as ``train_transforms``,
            which decodes only its crop).
        max_json_bytes: the largest JSON field parsed.
        max_pixels / max_scans / max_bytes: the image limits (NOTE [decode limits]).

    Example:
        >>> FieldDecoder()({"__key__": "a", "cls": b"3", "json": b'{"x": 1}', "bin": b"\\x00"})
        {'__key__': 'a', 'cls': 3, 'json': {'x': 1}, 'bin': b'\\x00'}
    """

    def __init__(
        self,
        *,
        image_mode: str = "RGB",
        decode_images: bool = True,
        max_json_bytes: int = MAX_LINE_BYTES,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_scans: int | None = DEFAULT_MAX_SCANS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        if image_mode not in ("RGB", "L", "RGBA", "UNCHANGED"):
            raise ValueError(f"image_mode must be 'RGB', 'L', 'RGBA' or 'UNCHANGED', got {image_mode!r}")
        if not isinstance(decode_images, bool):
            raise TypeError(f"decode_images must be a bool, got {decode_images!r}")
        if isinstance(max_json_bytes, bool) or not isinstance(max_json_bytes, int) or max_json_bytes < 1:
            raise ValueError(f"max_json_bytes must be a positive int (bytes), got {max_json_bytes!r}")
        self.image_mode, self.decode_images, self.max_json_bytes = image_mode, decode_images, max_json_bytes
        self.max_pixels = check_limit("max_pixels", max_pixels)
        self.max_scans = check_limit("max_scans", max_scans)
        self.max_bytes = check_limit("max_bytes", max_bytes)

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(sample, Mapping):
            raise TypeError(f"decode_fields takes a sample dict of fields, got {type(sample).__name__}")
        key = sample.get("__key__")
        return {name: value if name.startswith("__") else self.decode_field(name, value, sample, key)
                for name, value in sample.items()}

    def decode_field(self, name: str, value: Any, sample: Mapping[str, Any], key: Any) -> Any:
        """One field, decoded by its kind."""
        kind = field_kind(name)
        where = _where(sample, key, name)
        try:
            if kind in INT_KINDS:
                return _decode_int(value, where)
            if kind in TEXT_KINDS:
                return _decode_text(value, where) if isinstance(value, (bytes, bytearray, str)) else value
            if kind in JSON_KINDS:
                return _decode_json(bytes(value), where, self.max_json_bytes) if isinstance(
                    value, (bytes, bytearray)) else value
            if kind == "npy":
                return _decode_npy(_binary(value, where), where)
            if kind in IMAGE_KINDS:
                data = _binary(value, where)
                if not self.decode_images:
                    return data
                return decode_image(data, self.image_mode, max_pixels=self.max_pixels, max_scans=self.max_scans,
                                    max_bytes=self.max_bytes, name=where)
        except FieldDecodeError as e:
            raise FieldDecodeError(str(e), key=key, field=name) from None
        except ImageDecodeError as e:
            raise FieldDecodeError(str(e), key=key, field=name) from e
        return value

    def __repr__(self) -> str:
        return f"FieldDecoder(image_mode={self.image_mode!r}, decode_images={self.decode_images})"


decode_fields = FieldDecoder()
"""Decode a sample's fields with the default :class:`FieldDecoder`: ``ds.map(decode_fields)``."""
