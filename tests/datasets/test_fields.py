"""Field decoders: every kind decoded by extension, never pickle, limits kept, errors named."""

from __future__ import annotations

import base64
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dataforge.datasets.fields import (
    FieldDecodeError,
    FieldDecoder,
    decode_fields,
    encode_field,
    field_kind,
    to_json_value,
)
from dataforge.transforms.decode import decode_image


def image(c: int = 3, h: int = 6, w: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def one(field: str, raw: object, **kw: object) -> object:
    return FieldDecoder(**kw)({"__key__": "k1", "__url__": "s.tar", field: raw})[field]  # type: ignore[arg-type]


def test_kinds():
    assert field_kind("jpg") == "jpg" and field_kind("seg.PNG") == "png" and field_kind("a.b.json") == "json"


@pytest.mark.parametrize("field", ["cls", "index", "id", "count"])
def test_int_fields(field):
    assert one(field, encode_field(field, 12)) == 12
    assert one(field, b" -3\n") == -3
    assert one(field, 7) == 7  # a JSONL shard's int


@pytest.mark.parametrize("raw", [b"3.5", b"", b"abc", b"1" * 41, True])
def test_bad_int_names_sample_and_field(raw):
    with pytest.raises(FieldDecodeError, match=r"sample 'k1', field 'cls' \(shard 's.tar'\)") as e:
        one("cls", raw)
    assert e.value.key == "k1" and e.value.field == "cls"


def test_text_strict_utf8():
    assert one("txt", encode_field("txt", "héllo ✓")) == "héllo ✓"
    assert one("txt", "already str") == "already str"
    with pytest.raises(FieldDecodeError, match="field 'txt'.*not UTF-8"):
        one("txt", b"ab\xff")


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True]}, [1, "é"], "just a string", 3, None])
def test_json_round_trip(value):
    assert one("json", encode_field("json", value)) == value


def test_json_limits():
    with pytest.raises(FieldDecodeError, match="max_json_bytes=8"):
        one("json", b'{"a": [1, 2, 3]}', max_json_bytes=8)
    with pytest.raises(FieldDecodeError, match="nested deeper than 128"):
        one("json", b"[" * 200 + b"]" * 200)
    with pytest.raises(FieldDecodeError, match="invalid JSON"):
        one("json", b'{"a": ')
    with pytest.raises(FieldDecodeError, match="not UTF-8"):
        one("json", b'"\xff\xfe"')
    with pytest.raises(FieldDecodeError, match="not JSON-serialisable"):
        encode_field("json", {"x": float("nan")}, key="k")


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.int16).reshape(3, 4),
    np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    np.array(3.5, dtype=np.float32),
    np.zeros((0, 5), dtype=np.uint8),
    np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
])
def test_npy_round_trip(arr):
    back = one("npy", encode_field("npy", arr))
    assert isinstance(back, np.ndarray) and back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr) and back.flags.writeable


def test_npy_from_tensor():
    t = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    assert np.array_equal(one("npy", encode_field("npy", t)), t.numpy())


def test_npy_never_unpickles():
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FieldDecodeError, match="need pickle; refused"):
        one("npy", buf.getvalue())
    with pytest.raises(FieldDecodeError, match="plain dtypes only"):
        encode_field("npy", np.array([None], dtype=object))


def test_npy_header_checked_against_data():
    from numpy.lib import format as npformat

    raw = encode_field("npy", np.zeros(4, dtype=np.float64))
    with pytest.raises(FieldDecodeError, match="truncated or corrupt"):
        one("npy", raw[:-1])
    f = io.BytesIO()  # a header claiming 8 TB over 8 bytes of data: refused before allocating
    npformat.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with pytest.raises(FieldDecodeError, match=r"\(1000000000000,\) float64 .* but 8 bytes"):
        one("npy", f.getvalue() + b"\0" * 8)
    with pytest.raises(FieldDecodeError, match="not a readable .npy"):
        one("npy", b"PK\x03\x04 a zip")


def test_png_and_webp_lossless():
    for kind, c in (("png", 3), ("png", 1), ("png", 4), ("webp", 3), ("seg.png", 1)):
        img = image(c)
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[c]
        assert torch.equal(one(kind, encode_field(kind, img), image_mode=mode), img), kind


def test_jpeg_equals_decoding_the_written_bytes():
    img = image(3, 16, 16)
    raw = encode_field("jpg", img)
    assert raw[:2] == b"\xff\xd8"
    assert torch.equal(one("jpg", raw), decode_image(raw))
    assert one("jpg", raw, decode_images=False) == raw


def test_pil_image_encodes():
    im = Image.fromarray(np.full((4, 5, 3), 7, dtype=np.uint8))
    assert torch.equal(one("png", encode_field("png", im)), torch.full((3, 4, 5), 7, dtype=torch.uint8))


def test_image_limits_stay_on():
    raw = encode_field("png", image(3, 20, 20))
    with pytest.raises(FieldDecodeError, match="field 'png'.*pixels"):
        one("png", raw, max_pixels=100)
    with pytest.raises(FieldDecodeError, match="field 'jpg'"):
        one("jpg", b"\xff\xd8not a jpeg")


@pytest.mark.parametrize(("field", "value", "match"), [
    ("cls", 2.0, "takes an int"),
    ("cls", True, "takes an int"),
    ("txt", [1], "cannot store a list"),
    ("jpg", image(4), "JPEG stores 1 or 3 channels"),
    ("png", image().float(), "uint8 \\(C, H, W\\)"),
    ("png", np.zeros((4, 4, 3), np.uint8), "torch.from_numpy"),
    ("npy", [1, 2], "numpy array or tensor"),
    ("npy", torch.zeros(2, dtype=torch.bfloat16), "numpy dtype"),
])
def test_encode_errors_name_sample_and_field(field, value, match):
    with pytest.raises(FieldDecodeError, match=match) as e:
        encode_field(field, value, key="s7")
    assert f"sample 's7', field {field!r}" in str(e.value) and e.value.field == field


def test_unknown_and_meta_fields_unchanged():
    sample = {"__key__": "a", "__url__": "u", "bin": b"\x00\x01", "weird.ext": b"x", "txt": b"t"}
    assert decode_fields(sample) == {"__key__": "a", "__url__": "u", "bin": b"\x00\x01", "weird.ext": b"x", "txt": "t"}
    assert encode_field("bin", "text") == b"text" and encode_field("bin", b"\x00") == b"\x00"


def test_jsonl_values():
    img = image()
    assert to_json_value("cls", 3) == 3 and to_json_value("json", {"a": 1}) == {"a": 1}
    b64 = to_json_value("png", img)
    assert isinstance(b64, str) and torch.equal(one("png", b64), img)
    assert np.array_equal(one("npy", to_json_value("npy", np.arange(3))), np.arange(3))
    with pytest.raises(FieldDecodeError, match="format='tar'"):
        to_json_value("bin", b"\x00", key="k")
    with pytest.raises(FieldDecodeError, match="not base64"):
        one("png", "not base64!")
    assert base64.b64decode(b64)[:4] == b"\x89PNG"


def test_decoder_validation_and_pickling():
    with pytest.raises(ValueError, match="image_mode"):
        FieldDecoder(image_mode="CMYK")
    with pytest.raises(ValueError, match="max_json_bytes"):
        FieldDecoder(max_json_bytes=0)
    with pytest.raises(ValueError, match="max_pixels"):
        FieldDecoder(max_pixels=0)
    with pytest.raises(TypeError, match="sample dict"):
        decode_fields([b"x"])  # type: ignore[arg-type]
    err = pickle.loads(pickle.dumps(FieldDecodeError("m", key="k", field="f")))
    assert (str(err), err.key, err.field) == ("m", "k", "f")
    assert pickle.loads(pickle.dumps(decode_fields))({"cls": b"1"}) == {"cls": 1}


def test_docstring_examples():
    import doctest

    from dataforge.datasets import fields, writer

    for mod in (fields, writer):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__
