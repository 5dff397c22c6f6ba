from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from dataforge.transforms.decode import ImageDecodeError, decode_image


def _array(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return _encode(Image.fromarray(_array()), "JPEG", quality=90)


def test_jpeg_matches_pil_closely(jpeg):
    out = decode_image(jpeg)
    ref = torch.from_numpy(np.array(Image.open(io.BytesIO(jpeg)).convert("RGB"))).permute(2, 0, 1)
    assert out.shape == (3, 48, 64) and out.dtype == torch.uint8
    assert (out.int() - ref.int()).abs().max() <= 2  # libjpeg-turbo vs PIL's IDCT rounding


def test_path_and_bytes_agree(tmp_path, jpeg):
    p = tmp_path / "img.jpg"
    p.write_bytes(jpeg)
    assert torch.equal(decode_image(p), decode_image(jpeg))
    assert torch.equal(decode_image(str(p)), decode_image(memoryview(jpeg)))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(TypeError, match="bytes or a path"):
        decode_image(123)


def test_not_an_image_names_the_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am text")
    with pytest.raises(ImageDecodeError, match="notes.txt: not an image"):
        decode_image(p)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="my-name"):
        decode_image(b"garbage bytes", name="my-name")


def test_corrupt_jpeg_names_the_file(tmp_path, jpeg):
    corrupt = jpeg[:200] + b"\x00" * 500 + b"\xff\xd9"  # valid header, garbage scan data
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(corrupt)
    with pytest.raises(ImageDecodeError, match="corrupt.jpg"):
        decode_image(p)


def test_truncated_jpeg_refused_unless_allowed(tmp_path, jpeg):
    p = tmp_path / "cut.jpg"
    p.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut.jpg: truncated JPEG.*allow_truncated=True"):
        decode_image(p)
    out = decode_image(p, allow_truncated=True)
    assert out.shape == (3, 48, 64) and out.dtype == torch.uint8


def test_grayscale_converted_to_rgb():
    gray = Image.fromarray(np.full((6, 7), 77, dtype=np.uint8), mode="L")
    for fmt in ("PNG", "JPEG"):
        out = decode_image(_encode(gray, fmt))
        assert out.shape == (3, 6, 7)
        assert (out.int() - 77).abs().max() <= 1
    assert decode_image(_encode(gray, "PNG"), mode="L").shape == (1, 6, 7)
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 40))
    assert decode_image(_encode(rgba, "PNG")).shape == (3, 4, 5)
    assert decode_image(_encode(rgba, "PNG"), mode="RGBA").shape == (4, 4, 5)


def test_pixel_limit(jpeg):
    with pytest.raises(ImageDecodeError, match=r"64x48 = 3072 pixels exceeds max_pixels=3000"):
        decode_image(jpeg, max_pixels=3000, name="big.jpg")
    assert decode_image(jpeg, max_pixels=None).shape == (3, 48, 64)
    assert decode_image(jpeg, max_pixels=3072).shape == (3, 48, 64)
    with pytest.raises(ValueError, match="mode"):
        decode_image(jpeg, mode="CMYK")


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_pil_fallback_for_formats_torchvision_cannot_read(fmt):
    arr = _array(10, 12)
    out = decode_image(_encode(Image.fromarray(arr), fmt))
    assert torch.equal(out, torch.from_numpy(arr).permute(2, 0, 1))


def test_animated_gif_first_frame_and_16_bit_png():
    frames = [Image.new("RGB", (20, 10), (i * 50, 0, 0)) for i in range(3)]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(gif)
    assert out.shape == (3, 10, 20) and out.dtype == torch.uint8
    a16 = (np.arange(64 * 80).reshape(64, 80) * 10).astype(np.uint16)
    png16 = _encode(Image.fromarray(a16), "PNG")
    out = decode_image(png16)
    assert out.dtype == torch.uint8 and out.shape == (3, 64, 80)
    assert int(out[0, -1, -1]) == int(a16[-1, -1]) >> 8


def test_reading_a_file_gives_its_bytes_whatever_the_size_says(tmp_path) -> None:
    from dataforge.transforms.image_file import _read

    data = bytes(range(256)) * 700
    path = tmp_path / "img.jpg"
    path.write_bytes(data)
    assert _read(path) == (data, str(path))
    assert _read(str(path))[0] == data
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert _read(empty)[0] == b""
    # procfs reports size 0 but has content: read on to the end
    if os.path.exists("/proc/self/status"):
        assert _read("/proc/self/status")[0].startswith(b"Name:")
    with pytest.raises(FileNotFoundError, match="image file does not exist"):
        _read(tmp_path / "missing.jpg")
