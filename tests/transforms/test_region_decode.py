"""Region decode (``dataforge._jpeg`` via ``decode_region``) and the crop-aware preset."""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz import jpeg_corpus as C
from helpers import torchvision_crop
from PIL import Image
from torchvision.transforms import v2

import dataforge.transforms.decode as dec
from dataforge.transforms.decode import (
    ImageDecodeError,
    decode_image,
    decode_region,
    read_header,
)
from dataforge.transforms.image import RandomResizedCrop, train_transforms

needs_ext = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="dataforge._jpeg not built")


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture: compresses like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    img += rng.normal(0, 20, (h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 30, 30)  # a sharp-edged block
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=kw.pop("quality", 90), **kw)
    return buf.getvalue()


VARIANTS = {
    "420": {"subsampling": 2},
    "422": {"subsampling": 1},
    "444": {"subsampling": 0},
    "progressive": {"progressive": True},
    "restart": {"restart_marker_blocks": 4},
}


def _dense_hwc(x: torch.Tensor) -> bool:
    """(C, H, W) whose memory is one dense HWC block (channels-last; torch only names it for 4-D)."""
    c, h, w = x.shape
    return x.stride() == (1, w * c, c)


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
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_region_equals_whole_decode_cropped(variant):
    data = _jpeg(_photo(123, 187, seed=1), **VARIANTS[variant])
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
        assert _dense_hwc(region), (top, left, h, w)


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
    arr = _photo(200, 328, seed=4)
    enc = read_header(_jpeg(arr))
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
    gray = _photo(64, 80)[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, "JPEG", quality=95)
    enc = read_header(buf.getvalue())
    rgb = decode_region(enc, (5, 7, 40, 50))
    assert rgb.shape == (3, 40, 50)
    assert torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])
    whole_l = decode_image(buf.getvalue(), "L")
    assert torch.equal(decode_region(enc, (5, 7, 40, 50), mode="L"), whole_l[:, 5:45, 7:57])
    color = read_header(_jpeg(_photo(64, 80)))
    assert decode_region(color, (0, 0, 64, 80), mode="L").shape == (1, 64, 80)


def test_cmyk_and_png_fall_back_to_the_whole_decode():
    arr = _photo(40, 56)
    buf = io.BytesIO()
    Image.fromarray(arr).convert("CMYK").save(buf, "JPEG", quality=90)
    png = io.BytesIO()
    Image.fromarray(arr).save(png, "PNG")
    for data in (buf.getvalue(), png.getvalue()):
        whole = decode_image(data)
        region = decode_region(read_header(data), (3, 4, 20, 30))
        assert torch.equal(region, whole[:, 3:23, 4:34])


def test_corrupt_data_behaves_as_the_whole_decode(tmp_path):
    data = _jpeg(_photo(96, 96))
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
    data = _jpeg(_photo(48, 64))
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

    data = _jpeg(_photo(32, 32))
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
    datas = [_jpeg(_photo(150, 200, seed=s)) for s in range(8)]
    boxes = [(s, 2 * s, 100, 120) for s in range(8)]
    serial = [decode_region(read_header(d), b) for d, b in zip(datas, boxes)]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            par = list(pool.map(lambda a: decode_region(read_header(a[0]), a[1]), zip(datas, boxes)))
            assert all(torch.equal(a, b) for a, b in zip(serial, par))


# ------------------------------------------------------------------ RandomResizedCrop


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"scale": (0.5, 1.0), "ratio": (1.0, 1.0)},
        {"hflip": 0.0},
        {"hflip": 1.0, "scale": (0.9, 1.0)},
        {"scale": (0.99, 1.0), "ratio": (3.0, 4.0)},  # often impossible: central-crop fallback
    ],
)
def test_tensor_input_equals_torchvision_for_the_same_draw(kw):
    img = torch.from_numpy(_photo(90, 130)).permute(2, 0, 1).contiguous()
    ours = RandomResizedCrop(32, **kw)
    flips = set()
    for seed in range(30):
        draw = ours.draw(90, 130, torch.Generator().manual_seed(seed))
        ref = torchvision_crop(img, 32, draw)
        assert torch.equal(ours(img, generator=torch.Generator().manual_seed(seed)), ref), (kw, seed)
        flips.add(draw[4])
    assert flips == {0.0: {False}, 1.0: {True}}.get(kw.get("hflip", 0.5), {False, True})


def test_params_follow_torchvision_get_params_rule():
    """NOTE [crop draws]: not torchvision's stream, but its rule: the same law of boxes
    (area share, aspect ratio, position) and the same central-crop fallback."""
    from torchvision.transforms import RandomResizedCrop as V1

    ours = RandomResizedCrop(16, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    dummy = torch.empty(1, 1, 1).expand(3, 77, 201)
    torch.manual_seed(0)
    ref = np.array([V1.get_params(dummy, [0.2, 0.9], [0.5, 2.0]) for _ in range(4000)], float)
    g = torch.Generator().manual_seed(0)
    got = np.array([ours.params(77, 201, g) for _ in range(4000)], float)
    assert ((got[:, 0] >= 0) & (got[:, 0] + got[:, 2] <= 77)).all()
    assert ((got[:, 1] >= 0) & (got[:, 1] + got[:, 3] <= 201)).all()

    def stats(b: np.ndarray) -> np.ndarray:  # area share, log aspect, relative centre
        feats = [b[:, 2] * b[:, 3] / (77 * 201), np.log(b[:, 3] / b[:, 2]),
                 (b[:, 0] + b[:, 2] / 2) / 77, (b[:, 1] + b[:, 3] / 2) / 201]
        return np.array([np.quantile(f, [0.1, 0.25, 0.5, 0.75, 0.9]) for f in feats])

    # 4000 draws each: a quantile's standard error is about 0.01 of these features' ranges
    np.testing.assert_allclose(stats(got), stats(ref), atol=0.05)
    impossible = RandomResizedCrop(16, scale=(0.99, 1.0), ratio=(3.0, 4.0))
    square = torch.empty(1, 1, 1).expand(3, 50, 50)
    for seed in range(5):
        assert impossible.params(50, 50, torch.Generator().manual_seed(seed)) == tuple(
            V1.get_params(square, [0.99, 1.0], [3.0, 4.0]))


@pytest.mark.parametrize("variant", ["420", "444", "progressive"])
def test_encoded_input_equals_decode_then_torchvision(tmp_path, variant):
    data = _jpeg(_photo(150, 210, seed=5), **VARIANTS[variant])
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    ours = train_transforms(64, reduce=False)
    whole = decode_image(data)
    for seed in range(20):
        torch.manual_seed(seed)  # without a generator, the draw comes from the global RNG
        expected = torchvision_crop(whole, 64, ours.draw(150, 210))
        for src in (data, path, str(path), {"image": data, "path": str(path), "label": 3}):
            torch.manual_seed(seed)
            out = ours(src)
            if isinstance(src, dict):
                assert out["label"] == 3 and out["path"] == str(path)
                out = out["image"]
            assert torch.equal(out, expected), (variant, seed, type(src))


@needs_ext
def test_reduce_decodes_big_crops_at_lower_scale_and_stays_close():
    arr = _photo(600, 800, seed=6)
    data = _jpeg(arr)
    big = RandomResizedCrop(64, scale=(0.9, 1.0), hflip=0.0)
    exact = RandomResizedCrop(64, scale=(0.9, 1.0), hflip=0.0, reduce=False)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a, b = big(data, generator=g1), exact(data, generator=g2)
        assert a.shape == b.shape == (3, 64, 64)
        assert (a.float() - b.float()).abs().mean() < 4


def test_generator_reproducible_and_varies():
    data = _jpeg(_photo(120, 160))
    t = train_transforms(48)
    a = [t(data, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    b = [t(data, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len({x.float().sum().item() for x in a}) > 1


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"not a jpeg at all")
    t = train_transforms(32)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t(p)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        t({"image": p.read_bytes(), "path": str(p)})
    with pytest.raises(ValueError, match="hflip"):
        RandomResizedCrop(32, hflip=2)
    with pytest.raises(ValueError, match="size"):
        RandomResizedCrop(0)


def test_image_folder_hands_the_file_to_crop_aware_transforms(tmp_path):
    from dataforge import ImageFolder
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=8, num_classes=2, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    seen: list[object] = []

    class Spy(RandomResizedCrop):
        def __call__(self, sample, *, generator=None):
            seen.append(sample)
            return super().__call__(sample, generator=generator)

    fused = ImageFolder(root, transform=Spy(32, reduce=False))  # decode="auto": gets the path
    whole = ImageFolder(root, transform=train_transforms(32, reduce=False), decode=True)
    tv = ImageFolder(root, transform=v2.CenterCrop(20))  # not crop-aware: gets a tensor
    for i in range(len(fused)):
        torch.manual_seed(i)
        a = fused[i]
        torch.manual_seed(i)
        b = whole[i]
        assert seen[-1] == a["path"]
        assert a["image"].shape == (3, 32, 32) and a["label"] == b["label"]
        assert torch.equal(a["image"], b["image"])
        assert tv[i]["image"].shape == (3, 20, 20)
    raw = ImageFolder(root, decode=False)
    assert isinstance(raw[0]["image"], bytes)
    assert os.path.exists(fused[0]["path"])


def test_map_with_seed_same_for_0_and_2_workers(tmp_path):
    from dataforge import ImageFolder, build_loader
    from dataforge.synthetic import make_image_folder

    root = make_image_folder(tmp_path, num_images=12, num_classes=3, imbalance=1.0,
                             sizes=(60, 90), progress=False)
    ds = ImageFolder(root, decode=False).map(train_transforms(24), seed=7)

    def run(workers: int) -> list[torch.Tensor]:
        loader = build_loader(ds, 4, num_workers=workers, seed=0)
        return [b["image"] for b in loader]

    a, b = run(0), run(2)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_with_decode():
    from dataforge.transforms.compose import Compose
    from dataforge.transforms.image import Decode, Torchvision, with_decode

    data = _jpeg(_photo(40, 50))
    preset = train_transforms(16)
    assert with_decode(preset) is preset
    assert isinstance(with_decode(None), Decode)
    assert with_decode(None)(data).shape == (3, 40, 50)
    wrapped = with_decode(Torchvision(v2.CenterCrop(10)), mode="L")
    assert isinstance(wrapped, Compose) and not wrapped.accepts_encoded
    assert wrapped({"image": data, "label": 1})["image"].shape == (1, 10, 10)
    assert Compose([preset, Torchvision(v2.CenterCrop(8))]).accepts_encoded


def test_eval_preset_matches_torchvision_and_decodes_large_jpegs_reduced(tmp_path):
    from dataforge.transforms.image import ResizeCenterCrop, eval_transforms

    ref = v2.Compose([v2.Resize(36, antialias=True), v2.CenterCrop(32)])
    img = torch.from_numpy(_photo(70, 95)).permute(2, 0, 1).contiguous()
    assert torch.equal(eval_transforms(32, resize=36)(img), ref(img))
    data = _jpeg(_photo(70, 95))
    path = tmp_path / "v.jpg"
    path.write_bytes(data)
    expected = ref(decode_image(data))
    for src in (data, path, {"image": data, "path": str(path)}):
        out = eval_transforms(32, resize=36)(src)
        assert torch.equal(out["image"] if isinstance(out, dict) else out, expected)
    big = _jpeg(_photo(600, 800, seed=7))
    ref_big = v2.Compose([v2.Resize(64, antialias=True), v2.CenterCrop(56)])(decode_image(big))
    exact = ResizeCenterCrop(56, 64, reduce=False)(big)
    reduced = eval_transforms(56, resize=64)(big)  # decoded at 1/8: 75 x 100
    assert torch.equal(exact, ref_big)
    assert reduced.shape == ref_big.shape == (3, 56, 56)
    assert (reduced.float() - exact.float()).abs().mean() < 4
    with pytest.raises(ValueError, match="resize=20 is smaller than size=32"):
        eval_transforms(32, resize=20)


@needs_ext
def test_the_train_preset_on_a_file_gives_channels_last_samples_that_batch_without_a_transpose():
    from dataforge.collate.functional import stack

    data = _jpeg(_photo(300, 400, seed=5))
    t = RandomResizedCrop(64)
    torch.manual_seed(0)
    samples = [t(data) for _ in range(4)]
    assert all(_dense_hwc(s) for s in samples)
    batch = stack(samples)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack(samples))


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "gray", "same_size", "upscale"])
def test_direct_resize_equals_torchvision_resize(layout, antialias):
    # NOTE [direct resize] in image.py: the same interpolate call as v2's resize_image
    from torchvision.transforms.v2 import functional as F

    from dataforge.transforms.presets import _resize_crop

    g = torch.Generator().manual_seed(3)
    h, w, c, size = 157, 203, 3, (64, 48)
    hwc = torch.randint(0, 256, (h, w, c), dtype=torch.uint8, generator=g)
    crop = {"channels_last": hwc.permute(2, 0, 1), "contiguous": hwc.permute(2, 0, 1).contiguous(),
            "gray": hwc[..., :1].permute(2, 0, 1), "same_size": hwc.permute(2, 0, 1),
            "upscale": hwc[:20, :30].permute(2, 0, 1)}[layout]
    if layout == "same_size":
        size = (h, w)
    ref = F.resize(crop, list(size), antialias=antialias)
    out = _resize_crop(crop, size, antialias)
    assert out.shape == ref.shape and torch.equal(out, ref)
    assert out.stride() == ref.stride()  # the layout too (channels-last in, channels-last out)
