"""Region decode (``dataforge._jpeg`` via ``decode_region``): the pixels of a whole decode
cropped, at every sampling factor, scale and box; its errors and arguments. The presets
that use it: test_crop_preset.py."""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz import jpeg_corpus as C
from helpers import dense_hwc
from PIL import Image

import dataforge.transforms.decode as dec
from dataforge.transforms.decode import (
    ImageDecodeError,
    decode_image,
    decode_region,
    read_header,
)

needs_ext = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="dataforge._jpeg not built")


def _random_boxes(h: int, w: int, n: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    boxes = [(0, 0, h, w), (h - 1, w - 1, 1, 1), (0, 0, 1, 1)]
    for _ in range(n):
        bh, bw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        boxes.append((int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw))
    return boxes


def _corpus_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """Boxes at every edge and corner, MCU-aligned and not, and inside."""
    boxes = [(0, 0, h, w), (0, 0, 1, 1), (0, w - 1, 1, 1), (h - 1, 0, 1, 1), (h - 1, w - 1, 1, 1),
             (0, 0, 1, w), (h - 1, 0, 1, w), (0, 0, h, 1), (0, w - 1, h, 1), (16, 32, 32, 64),
             (15, 31, 34, 66), (17, 33, h - 17, w - 33), (0, 45, h, 70), (50, 0, 40, w)]
    return boxes + _random_boxes(h, w, 6, seed=11)[3:]


@needs_ext
@pytest.mark.parametrize("name", sorted(C.sampling_corpus()))
def test_region_corpus_every_sampling_factor_scale_and_box_equals_the_whole_decode(name):
    # NOTE [scaled crop of 4x2 / 2x4 chroma] in _jpeg.c: zero differing pixels, reduce off
    # (scale 1, against torchvision's own libjpeg-turbo) and on (scales 2, 4, 8, against the
    # whole image decoded at that scale by the same libjpeg, without crop or skipped rows).
    from torchvision.io import decode_jpeg

    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    data = C.sampling_corpus()[name]
    enc = read_header(data)
    h, w = enc.height, enc.width
    gray = name.startswith("gray")
    tv = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    for denom in (1, 2, 4, 8):
        buf, rows, cols, ch = ext.decode_crop(data, 0, 0, h, w, denom)
        whole = torch.frombuffer(buf, dtype=torch.uint8).view(rows, cols, ch).permute(2, 0, 1)
        if denom == 1:
            assert torch.equal(whole, tv.expand(3, -1, -1) if gray else tv), name
        for top, left, bh, bw in _corpus_boxes(h, w):
            out = decode_region(enc, (top, left, bh, bw), scale_denom=denom)
            y0, x0 = top // denom, left // denom
            ref = whole[:, y0 : -(-(top + bh) // denom), x0 : -(-(left + bw) // denom)]
            assert out.shape == ref.shape and torch.equal(out, ref), (name, denom, (top, left, bh, bw))
        if gray or name.endswith("baseline"):
            out_l = decode_region(enc, (9, 13, h - 20, w - 30), mode="L", scale_denom=denom)
            assert out_l.shape[0] == 1


@needs_ext
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_built_as_if_for_libjpeg_turbo_3_the_crop_widths_are_checked_at_run_time(tmp_path):
    # NOTE [scaled crop of 4x2 / 2x4 chroma]: an extension built against >= 3.0 headers but
    # loaded with an older library (same soname) must refuse the broken crop, not return
    # uninitialised pixels; built here against 2.1.5 while assuming 3.0.0.
    import importlib.util
    import subprocess
    import sysconfig

    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    if ext.CROP_SCALED_FIXED:
        pytest.skip("the system libjpeg-turbo is >= 3.0: its crop is right")
    so = tmp_path / f"_jpeg{sysconfig.get_config_var('EXT_SUFFIX')}"
    src = Path(dec.__file__).parent.parent / "_jpeg.c"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-DDATAFORGE_TURBO_VERSION=3000000",
                    f"-I{sysconfig.get_paths()['include']}", str(src), "-ljpeg", "-o", str(so)],
                   check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("_jpeg", so)
    forced = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(forced)
    assert forced.CROP_SCALED_FIXED == 1
    data = C.sampling_corpus()["410_4x2-baseline"] if C.have_cjpeg() else None
    if data is None:
        pytest.skip("cjpeg missing: no 4x2 JPEG to try")
    with pytest.raises(forced.Unsupported, match="4x2/2x4"):
        forced.decode_crop(data, 10, 40, 60, 70, 2)
    # unaffected factors and scales still crop, with the same pixels as the real build
    for name, denom in (("420-baseline", 2), ("420-progressive", 8), ("410_4x2-baseline", 1)):
        d = C.sampling_corpus()[name]
        a, b = forced.decode_crop(d, 10, 40, 60, 70, denom), ext.decode_crop(d, 10, 40, 60, 70, denom)
        assert (bytes(a[0]), *a[1:]) == (bytes(b[0]), *b[1:])


def test_extension_built_where_libjpeg_headers_exist():
    # CI must not silently lose the fast path: where the headers are, it is built.
    if any(Path(p, "jpeglib.h").exists() for p in ("/usr/include", "/usr/local/include")):
        assert dec.HAVE_ROI_DECODE, "libjpeg headers present but dataforge._jpeg is not built"


@needs_ext
@pytest.mark.parametrize("variant", sorted(C.PIL_VARIANTS))
def test_region_equals_whole_decode_cropped(variant):
    data = C.pil_jpeg(C.photo(123, 187, seed=1), **C.PIL_VARIANTS[variant])
    enc = read_header(data)
    whole = dec._decode_whole(enc, "RGB", False)
    assert whole.shape == (3, 123, 187)
    for top, left, h, w in _random_boxes(123, 187, 40, seed=2):
        region = decode_region(enc, (top, left, h, w))
        ref = whole[:, top : top + h, left : left + w]
        assert region.shape == ref.shape
        assert torch.equal(region, ref), (variant, (top, left, h, w))
        # dense channels-last, whatever columns libjpeg decoded around the box: the uint8
        # resize's fast path needs it (see decode_region)
        assert dense_hwc(region), (top, left, h, w)


@needs_ext
def test_region_on_demo_style_files_is_exact_against_torchvision(tmp_path):
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=6, num_classes=2, imbalance=1.0,
                             sizes=(200, 300), progress=False)
    from torchvision.io import decode_jpeg

    for path in sorted(Path(root).rglob("*.jpg")):
        enc = read_header(path)
        whole = decode_jpeg(torch.frombuffer(bytearray(enc.data), dtype=torch.uint8))
        for box in _random_boxes(enc.height, enc.width, 10, seed=3):
            t, left, h, w = box
            assert torch.equal(decode_region(enc, box), whole[:, t : t + h, left : left + w])


@needs_ext
@pytest.mark.parametrize("denom", [2, 4, 8])
def test_reduced_scale_shape_and_content(denom):
    arr = C.photo(200, 328, seed=4)
    enc = read_header(C.pil_jpeg(arr))
    top, left, h, w = 17, 33, 150, 251
    out = decode_region(enc, (top, left, h, w), scale_denom=denom)
    exp_h = -(-(top + h) // denom) - top // denom
    exp_w = -(-(left + w) // denom) - left // denom
    assert out.shape == (3, exp_h, exp_w)
    # Content: close to an area-average downscale of the same region.
    ref = torch.from_numpy(arr).permute(2, 0, 1).float()[None]
    ref = torch.nn.functional.avg_pool2d(ref, denom, ceil_mode=True)[0]
    ref = ref[:, top // denom : top // denom + exp_h, left // denom : left // denom + exp_w]
    assert (out.float() - ref).abs().mean() < 12


@needs_ext
def test_grayscale_and_mode_l():
    gray = C.photo(64, 80)[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, "JPEG", quality=95)
    enc = read_header(buf.getvalue())
    rgb = decode_region(enc, (5, 7, 40, 50))
    assert rgb.shape == (3, 40, 50)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    whole_l = decode_image(buf.getvalue(), "L")
    assert torch.equal(decode_region(enc, (5, 7, 40, 50), mode="L"), whole_l[:, 5:45, 7:57])
    color = read_header(C.pil_jpeg(C.photo(64, 80)))
    assert decode_region(color, (0, 0, 64, 80), mode="L").shape == (1, 64, 80)


def test_cmyk_and_png_fall_back_to_the_whole_decode():
    arr = C.photo(40, 56)
    buf = io.BytesIO()
    Image.fromarray(arr).convert("CMYK").save(buf, "JPEG", quality=90)
    png = io.BytesIO()
    Image.fromarray(arr).save(png, "PNG")
    for data in (buf.getvalue(), png.getvalue()):
        whole = decode_image(data)
        region = decode_region(read_header(data), (3, 4, 20, 30))
        assert torch.equal(region, whole[:, 3:23, 4:34])


def test_corrupt_data_behaves_as_the_whole_decode(tmp_path):
    data = C.pil_jpeg(C.photo(96, 96))
    corrupt = data[:400] + bytes(b ^ 0x5A for b in data[400:900]) + data[900:]
    p = tmp_path / "corrupt.jpg"
    p.write_bytes(corrupt)
    try:
        whole = decode_image(p)
    except ImageDecodeError as exc:
        with pytest.raises(ImageDecodeError, match="corrupt.jpg") as info:
            decode_region(read_header(p), (10, 10, 50, 50))
        assert str(info.value) == str(exc)
    else:  # the reference decoder tolerated it: the region path gives its pixels
        assert torch.equal(decode_region(read_header(p), (10, 10, 50, 50)), whole[:, 10:60, 10:60])


def test_header_errors_truncation_and_box_checks(tmp_path):
    data = C.pil_jpeg(C.photo(48, 64))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg: truncated JPEG"):
        read_header(p)
    assert read_header(p, allow_truncated=True).width == 64
    with pytest.raises(ImageDecodeError, match="max_pixels=100"):
        read_header(data, max_pixels=100, name="big.jpg")
    enc = read_header(data, name="img.jpg")
    with pytest.raises(ValueError, match="img.jpg: box .* does not lie inside the 64x48 image"):
        decode_region(enc, (40, 0, 10, 10))
    with pytest.raises(ValueError, match="scale_denom must be 1, 2, 4 or 8"):
        decode_region(enc, (0, 0, 8, 8), scale_denom=3)


@needs_ext
def test_c_function_checks_its_arguments():
    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    data = C.pil_jpeg(C.photo(32, 32))
    with pytest.raises(ValueError, match="scale_denom"):
        ext.decode_crop(data, 0, 0, 8, 8, 3)
    with pytest.raises(ValueError, match="crop box"):
        ext.decode_crop(data, -1, 0, 8, 8)
    with pytest.raises(ValueError, match="outside"):
        ext.decode_crop(data, 100, 0, 8, 8)
    with pytest.raises(ValueError, match="libjpeg"):
        ext.decode_crop(b"\xff\xd8\xff\xe0 not really a jpeg", 0, 0, 8, 8)
    with pytest.raises(ValueError, match="max_scans"):
        ext.decode_crop(data, 0, 0, 8, 8, 1, False, True, -1)
    assert ext.decode_crop(data, 0, 0, 32, 32)[1:] == (32, 32, 3)


@needs_ext
def test_threads_decode_in_parallel_and_agree():
    datas = [C.pil_jpeg(C.photo(150, 200, seed=s)) for s in range(8)]
    boxes = [(s, 2 * s, 100, 120) for s in range(8)]
    serial = [decode_region(read_header(d), b) for d, b in zip(datas, boxes)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            par = list(pool.map(lambda a: decode_region(read_header(a[0]), a[1]), zip(datas, boxes)))
            assert all(torch.equal(a, b) for a, b in zip(serial, par))
