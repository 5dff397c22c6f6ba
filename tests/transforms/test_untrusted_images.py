"""Issue #16, the image findings (1, 2, 3, 4, 5, 10): each input is a regression test,
and no input of the corpus costs more than 1 s or 512 MB through a preset with default
limits (NOTE [decode limits] in dataforge.transforms.decode)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzz import jpeg_corpus as C
from PIL import Image

import dataforge.transforms.decode as dec
from dataforge.transforms._jpeg_markers import read_structure
from dataforge.transforms.decode import (
    ImageDecodeError,
    decode_image,
    decode_region,
    read_header,
)
from dataforge.transforms.presets import RandomResizedCrop, ResizeCenterCrop
from dataforge.transforms.resize import resize_crop

needs_ext = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="dataforge._jpeg not built")
needs_cjpeg = pytest.mark.skipif(not C.have_cjpeg(), reason="cjpeg missing (Debian: "
                                 "libjpeg-turbo-progs; `make setup` installs it)")


def _whole_scaled(data: bytes, denom: int) -> torch.Tensor:
    """The whole image decoded at 1/denom by libjpeg (no crop, no skipped rows)."""
    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    h, w = read_header(data).height, read_header(data).width
    buf, rows, cols, ch = ext.decode_crop(data, 0, 0, h, w, denom)
    return torch.frombuffer(buf, dtype=torch.uint8).view(rows, cols, ch).permute(2, 0, 1)


# ------------------------------------------------------------- finding 1: wrong pixels


@needs_ext
@needs_cjpeg
@pytest.mark.parametrize("name", ["410_4x2-baseline", "2x4-progressive", "2x4-arithmetic"])
def test_finding1_random_resized_crop_with_reduce_gives_the_scaled_whole_image_sliced(name):
    # 4x2 / 2x4 chroma at 1/2 and 1/4 read uninitialised memory in libjpeg-turbo 2.1.5's
    # crop path; the preset reaches it with its default reduce=True.
    data = C.sampling_corpus()[name]
    h, w = C.SIZE
    t = RandomResizedCrop(24, scale=(0.3, 1.0), hflip=0.0)
    seen = set()
    for seed in range(12):
        out = t(data, generator=torch.Generator().manual_seed(seed))
        top, left, bh, bw = t.params(h, w, torch.Generator().manual_seed(seed))
        d = next(k for k in (8, 4, 2, 1) if bh // k >= 24 and bw // k >= 24)
        seen.add(d)
        crop = _whole_scaled(data, d)[:, top // d : -(-(top + bh) // d), left // d : -(-(left + bw) // d)]
        crop = crop.permute(1, 2, 0).contiguous().permute(2, 0, 1)  # the dense layout the decoder gives
        assert torch.equal(out, resize_crop(crop[None], (24, 24), True)), (name, seed, d)
    assert {2, 4} <= seen


# --------------------------------------------------------- finding 2: box arithmetic


@needs_ext
def test_finding2_huge_boxes_are_clipped_without_overflow():
    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    data = C.pil_jpeg(C.photo(123, 187))
    big = sys.maxsize  # top + height + denom - 1 overflowed a signed long before
    assert ext.decode_crop(data, 0, 0, big, big)[1:] == (123, 187, 3)
    assert ext.decode_crop(data, 5, 7, big, big, 8)[1:] == (16 - 0, 24 - 0, 3)
    assert ext.decode_crop(data, 9, 17, big - 1, big - 16, 4)[1:] == (31 - 2, 47 - 4, 3)
    with pytest.raises(ValueError, match="lies outside the 187x123 image"):
        ext.decode_crop(data, big, 0, big, 1)
    with pytest.raises(ValueError, match="lies outside"):
        ext.decode_crop(data, 0, 187, 1, big)


# ------------------------------------------------------------ finding 3: many scans


def test_finding3_many_scans_refused_before_any_decoder_runs():
    data = C.many_scans_jpeg(1500)
    for call in (lambda: read_header(data), lambda: decode_image(data),
                 lambda: RandomResizedCrop(64)(data), lambda: ResizeCenterCrop(32, 36)(data),
                 lambda: decode_image(data, strict=False)):
        with pytest.raises(ImageDecodeError, match=r"more than max_scans=256 scans"):
            call()
    with pytest.raises(ImageDecodeError, match="max_scans=1499"):
        read_header(data, max_scans=1499)
    assert read_header(data, max_scans=1500).width == 1024
    # trusted: no limit, lenient (the repeated scans are a bogus progression)
    assert decode_image(data, max_scans=None, strict=False).shape == (3, 1024, 1024)
    if dec.HAVE_ROI_DECODE:  # NOTE [strict decoding]: the check needs the extension
        with pytest.raises(ImageDecodeError, match="corrupt JPEG"):
            decode_image(data, max_scans=None)


@needs_ext
def test_finding3_the_region_decoder_enforces_the_scan_limit_too():
    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    data = C.many_scans_jpeg(40, size=64)
    with pytest.raises(ValueError, match="more than max_scans=30 scans"):
        ext.decode_crop(data, 0, 0, 8, 8, 1, False, False, 30)
    assert ext.decode_crop(data, 0, 0, 8, 8, 1, False, False, 40)[1:] == (8, 8, 3)


@needs_cjpeg
def test_valid_progressive_files_with_many_scans_decode_under_the_default_limit():
    data = C.valid_many_scans_jpeg()
    assert read_structure(data).scans == 100
    from torchvision.io import decode_jpeg

    ref = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    assert torch.equal(decode_image(data), ref)
    assert torch.equal(decode_region(read_header(data), (10, 20, 50, 60)), ref[:, 10:60, 20:80])


def test_scan_count_skips_segments_and_counts_exactly_past_the_limit():
    prog = C.pil_jpeg(C.photo(40, 56), progressive=True)
    n = read_structure(prog).scans
    assert n == prog.count(b"\xff\xda") and n > 3
    # an APP segment whose payload holds SOS markers (an Exif thumbnail would) is skipped
    payload = b"\xff\xda" * 600
    app = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    padded = prog[:2] + app + prog[2:]
    assert read_structure(padded, max_scans=5).scans == 6  # walked: stops past the limit
    assert read_structure(padded, max_scans=None).scans >= n  # an upper bound within the limit
    assert read_header(padded, max_scans=n).width == 56
    assert read_structure(C.pil_jpeg(C.photo(40, 56))).scans == 1  # baseline: one scan
    assert read_structure(b"\xff\xd8\xff\xda\x00\x02") is None  # no frame header


# ---------------------------------------------------------------- finding 10: header


def test_finding10_twelve_bit_jpeg_is_named_as_such():
    data = C.twelve_bit_jpeg()
    with pytest.raises(ImageDecodeError, match="12-bit JPEG") as info:
        read_header(data, name="ct.jpg")
    assert "not an image" not in str(info.value) and "ct.jpg" in str(info.value)
    with pytest.raises(ImageDecodeError, match="12-bit JPEG"):
        RandomResizedCrop(16)(data)


@needs_ext
def test_finding10_benign_warnings_take_the_fast_path_with_exact_pixels(monkeypatch):
    from torchvision.io import decode_jpeg

    data = C.extraneous_bytes_jpeg()
    ref = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def no_fallback(*args, **kwargs):
        raise AssertionError("the whole-image fallback ran for a file with a benign warning")

    monkeypatch.setattr(dec, "_decode_whole", no_fallback)
    enc = read_header(data)
    assert torch.equal(decode_region(enc, (3, 5, 40, 50)), ref[:, 3:43, 5:55])
    assert decode_region(enc, (0, 0, 64, 96), scale_denom=2).shape == (3, 32, 48)


@needs_ext
def test_fuzz_finding_incomplete_progressive_crops_equal_the_whole_decode():
    # NOTE [no block smoothing] in _jpeg.c: with libjpeg's default smoothing of missing AC
    # coefficients, crop edges differed from the whole image by up to 6 levels
    data = C.dc_only_progressive_jpeg()
    assert read_structure(data).scans == 1
    enc = read_header(data)
    for denom in (1, 2, 4, 8):
        whole = decode_region(enc, (0, 0, enc.height, enc.width), scale_denom=denom)
        if denom == 1:
            assert torch.equal(whole, decode_image(data))
        for top, left, bh, bw in [(13, 45, 4, 1), (0, 17, 72, 30), (30, 50, 20, 54), (5, 8, 9, 16)]:
            out = decode_region(enc, (top, left, bh, bw), scale_denom=denom)
            ref = whole[:, top // denom : -(-(top + bh) // denom), left // denom : -(-(left + bw) // denom)]
            assert torch.equal(out, ref), (denom, (top, left, bh, bw))


# --------------------------------------------------------- finding 5: corrupt files


def test_finding5_corrupt_but_complete_jpeg_is_strict_by_default_and_lenient_on_request(tmp_path):
    data = C.corrupt_complete_jpeg()
    assert data.endswith(b"\xff\xd9")
    p = tmp_path / "damaged.jpg"
    p.write_bytes(data)
    whole = RandomResizedCrop(32, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))  # the crop is the image
    for call in (lambda: decode_image(p), lambda: whole(p),
                 lambda: ResizeCenterCrop(32, 40)(p)):
        if not dec.HAVE_ROI_DECODE:
            pytest.skip("strict decoding of warning-level damage needs dataforge._jpeg")
        with pytest.raises(ImageDecodeError, match=r"damaged.jpg: corrupt JPEG .*strict=False"):
            call()
    lenient = decode_image(p, strict=False)
    assert lenient.shape == (3, 96, 128)
    assert torch.equal(decode_region(read_header(p), (10, 20, 30, 40), strict=False),
                       lenient[:, 10:40, 20:60])
    assert RandomResizedCrop(32, strict=False)(p).shape == (3, 32, 32)


@needs_ext
def test_finding5_a_refused_region_is_not_decoded_again_by_the_fallback(monkeypatch):
    data = C.declared_size_jpeg(6000, 4000)
    calls: list[object] = []
    monkeypatch.setattr(dec, "_decode_torchvision", lambda *a: calls.append(a))
    monkeypatch.setattr(dec, "_decode_pil", lambda *a: calls.append(a))
    with pytest.raises(ImageDecodeError, match="corrupt JPEG"):
        RandomResizedCrop(64, max_pixels=None)(data, generator=torch.Generator().manual_seed(0))
    assert calls == []


def test_truncated_files_stay_refused_unless_allowed_and_then_decode_leniently():
    cut = C.pil_jpeg(C.photo(64, 64, seed=8))[:700]
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        RandomResizedCrop(16)(cut)
    assert RandomResizedCrop(16, allow_truncated=True)(cut).shape == (3, 16, 16)
    assert decode_image(cut, allow_truncated=True).shape == (3, 64, 64)


# ------------------------------------------------------------- finding 4 and limits


def test_finding4_gif_first_frame_only_and_equal_to_pil():
    frames = [Image.fromarray(np.full((30, 40), 40 * i, np.uint8), mode="L").convert("P") for i in range(5)]
    import io

    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue())
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        ref = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(out, ref)


def test_byte_limit_before_reading(tmp_path):
    data = C.pil_jpeg(C.photo(32, 32))
    p = tmp_path / "x.jpg"
    p.write_bytes(data)
    with pytest.raises(ImageDecodeError, match=rf"x.jpg: {len(data)} bytes exceeds max_bytes=100"):
        decode_image(p, max_bytes=100)
    with pytest.raises(ImageDecodeError, match="max_bytes=100"):
        RandomResizedCrop(16, max_bytes=100)(data)
    assert decode_image(p, max_bytes=len(data)).shape == (3, 32, 32)
    if Path("/proc/self/status").exists():  # size 0 in fstat: the read itself stops past the limit
        with pytest.raises(ImageDecodeError, match="max_bytes=10"):
            read_header("/proc/self/status", max_bytes=10)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_scans must be a positive int or None"):
            RandomResizedCrop(16, max_scans=bad)
    with pytest.raises(ValueError, match="max_bytes must be a positive int or None"):
        ResizeCenterCrop(16, 20, max_bytes=0)


# NOTE: a subprocess, so that peak memory (ru_maxrss, which also sees torchvision's and
# libjpeg's allocations, unlike tracemalloc) and CPU time (robust on a loaded machine)
# belong to these inputs alone. The GIF goes first, right after a warm-up, so its own
# peak shows; the declared-65500 file with max_pixels=None goes last, under an address
# space limit, so that a regression fails instead of taking 13 GB.
_BUDGET_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    import torch
    from dataforge.transforms.decode import HAVE_ROI_DECODE, ImageDecodeError
    from dataforge.transforms.presets import RandomResizedCrop, ResizeCenterCrop

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    root = Path(sys.argv[1])
    presets = {"train": RandomResizedCrop(), "eval": ResizeCenterCrop()}
    warm = (root / "warmup.jpg").read_bytes()
    for t in presets.values():
        t(warm, generator=torch.Generator().manual_seed(0))
    base = peak_mb()
    result = {"inputs": {}, "base_mb": base}

    def run(name, data, preset, t):
        start = time.process_time()
        try:
            out = t(data, generator=torch.Generator().manual_seed(1))
            outcome = "ok " + str(tuple(out.shape))
        except ImageDecodeError as exc:
            outcome = "refused: " + str(exc)[:200]
        except BaseException as exc:
            outcome = "ESCAPED " + type(exc).__name__ + ": " + str(exc)[:160]
        result["inputs"][name + " / " + preset] = {
            "cpu_s": time.process_time() - start, "outcome": outcome}

    gif = (root / "gif_200_frames").read_bytes()
    for preset, t in presets.items():
        run("gif_200_frames", gif, preset, t)
    result["gif_mb"] = peak_mb() - base
    for path in sorted(root.iterdir()):
        if path.name not in ("warmup.jpg", "gif_200_frames"):
            for preset, t in presets.items():
                run(path.name, path, preset, t)
    result["corpus_mb"] = peak_mb() - base
    if not HAVE_ROI_DECODE:  # strictness needs the extension: nothing bounds max_pixels=None
        print(json.dumps(result))
        sys.exit(0)
    vm = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmSize")))
    resource.setrlimit(resource.RLIMIT_AS, ((vm + 1024 * 1024) * 1024,) * 2)  # 1 GiB more
    before = peak_mb()
    for name in ("declared_65500", "declared_65500_progressive"):
        for preset, t in {"train": RandomResizedCrop(max_pixels=None),
                          "eval": ResizeCenterCrop(max_pixels=None)}.items():
            run(name + " max_pixels=None", (root / name).read_bytes(), preset, t)
    result["huge_mb"] = peak_mb() - before
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def budget(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    (root / "warmup.jpg").write_bytes(C.pil_jpeg(C.photo(300, 400)))
    for name, data in C.regression_inputs().items():
        (root / name).write_bytes(data)
    if C.have_cjpeg():
        for name, data in C.sampling_corpus().items():
            (root / f"sampling_{name}").write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _BUDGET_SCRIPT, str(root)], capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_no_corpus_input_escapes_or_costs_more_than_1s_or_512mb(budget):
    assert len(budget["inputs"]) >= 2 * 8
    for name, r in budget["inputs"].items():
        assert not r["outcome"].startswith("ESCAPED"), (name, r)
        assert r["cpu_s"] < 1.0, (name, r)
    assert budget["corpus_mb"] < 512, budget["corpus_mb"]


def test_finding4_a_200_frame_gif_costs_one_frame(budget):
    for preset in ("train", "eval"):
        assert budget["inputs"][f"gif_200_frames / {preset}"]["outcome"].startswith("ok")
    # every frame decoded: 105 MB more peak (216 MB of frames); the first frame only: 6 MB
    assert budget["gif_mb"] < 50, budget["gif_mb"]


@needs_ext
def test_finding5_declared_65500_with_no_pixel_limit_is_refused_cheaply(budget):
    for name in ("declared_65500", "declared_65500_progressive"):
        for preset in ("train", "eval"):
            r = budget["inputs"][f"{name} max_pixels=None / {preset}"]
            assert r["outcome"].startswith("refused") and "corrupt JPEG" in r["outcome"], r
            assert r["cpu_s"] < 1.0, r
    assert budget["huge_mb"] < 512, budget["huge_mb"]


def test_refusals_name_the_limit_or_the_damage(budget):
    by_name = {k.split(" / ")[0]: v["outcome"] for k, v in budget["inputs"].items()}
    assert "max_scans=256" in by_name["many_scans_1500"]
    assert "12-bit JPEG" in by_name["twelve_bit"]
    assert "truncated JPEG" in by_name["truncated"]
    assert by_name["extraneous"].startswith("ok")
    # torchvision's decode_png died of SIGSEGV here (the subprocess would have failed)
    assert "png_bad_checksum: corrupt or unsupported image" in by_name["png_bad_checksum"]
    if dec.HAVE_ROI_DECODE:
        assert "corrupt JPEG" in by_name["corrupt_complete"]
