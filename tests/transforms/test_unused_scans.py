"""NOTE [unused scans] (dataforge/_jpeg.c): a progressive JPEG is decoded without the AC
scans no output pixel reads and without the rows below the crop, with the same pixels
as decoding every scan of the whole image."""

from __future__ import annotations

import functools
import random

import pytest
from fuzz import jpeg_corpus as C

import dataforge.transforms.decode as dec
from dataforge.transforms._jpeg_markers import read_structure

pytestmark = pytest.mark.skipif(not dec.HAVE_ROI_DECODE, reason="needs the dataforge._jpeg extension")


def _decode(data: bytes, box, denom: int, gray: bool = False, *, skip: bool = True, strict: bool = True):
    from dataforge import _jpeg  # type: ignore[attr-defined]

    pixels, *shape = _jpeg.decode_crop(data, *box, denom, gray, strict, 0, skip_unused_scans=skip)
    return bytes(pixels), *shape


@functools.cache
def _progressive_corpus() -> dict[str, bytes]:
    out = {k: v for k, v in C.sampling_corpus().items() if read_structure(v).progressive}
    arr = C.photo(301, 403, seed=5)
    for name, sub in (("444", 0), ("422", 1), ("420", 2)):
        out[f"pil-{name}"] = C.pil_jpeg(arr, subsampling=sub, progressive=True)
    out["pil-gray"] = C.pil_jpeg(arr[..., 0], progressive=True)
    if C.have_cjpeg():
        out["cjpeg-420-restart"] = C.cjpeg(arr, "-sample", "2x2", "-progressive", "-restart", "3B")
        out["cjpeg-420-arithmetic"] = C.cjpeg(arr, "-sample", "2x2", "-progressive", "-arithmetic")
    return out


def _scans(data: bytes) -> list[tuple[int, int, int]]:
    """(start of the SOS marker, start of its entropy data, end of it) of every scan."""
    from dataforge.transforms._jpeg_markers import _NEXT_MARKER

    out, pos = [], 0
    while (pos := data.find(b"\xff\xda", pos)) >= 0:
        start = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = _NEXT_MARKER.search(data, start).start()
        out.append((pos, start, end))
        pos = end
    return out


def test_the_corpus_covers_every_progressive_case():
    corpus = _progressive_corpus()
    assert len(corpus) >= 8
    components = {read_structure(v).components for v in corpus.values()}
    assert len(components) >= 4  # gray, 4:4:4, 4:2:2, 4:2:0 at least


@pytest.mark.parametrize("name", sorted(_progressive_corpus()))
def test_same_pixels_as_decoding_every_scan(name):
    data = _progressive_corpus()[name]
    s = read_structure(data)
    rng = random.Random(name)
    boxes = [(0, 0, s.height, s.width), (0, 0, 1, 1), (s.height - 1, s.width - 1, 1, 1)]
    for _ in range(10):
        top, left = rng.randrange(s.height), rng.randrange(s.width)
        boxes.append((top, left, rng.randint(1, s.height - top), rng.randint(1, s.width - left)))
    for box in boxes:
        for denom in (1, 2, 4, 8):
            for gray in (False, True):
                assert _decode(data, box, denom, gray) == _decode(data, box, denom, gray, skip=False), \
                    (box, denom, gray)


def _with_damaged_scan(data: bytes, index: int) -> bytes:
    """``data`` with the entropy data of scan ``index`` cut to a quarter (EOI kept)."""
    _, start, end = _scans(data)[index]
    return data[:start + (end - start) // 4] + data[end:]


def test_a_luma_ac_scan_is_not_decoded_at_one_eighth_scale():
    data = C.pil_jpeg(C.photo(256, 320, seed=2), subsampling=0, progressive=True)
    scans = _scans(data)
    # libjpeg's default progression: the last luma AC scan is the last but one
    luma_ac = [i for i, (pos, _, _) in enumerate(scans)
               if data[pos + 4] == 1 and data[pos + 5] == 1 and data[pos + 7] > 0]
    damaged = _with_damaged_scan(data, luma_ac[-1])
    box = (0, 0, 256, 320)
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        _decode(damaged, box, 1)  # the full-scale decode reads that scan: strict refuses it
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        _decode(damaged, box, 8, skip=False)
    # at 1/8 luma reads only its DC coefficients: the scan is left out, nothing is damaged
    assert _decode(damaged, box, 8) == _decode(data, box, 8)


def test_chroma_ac_scans_are_not_decoded_for_grayscale_output():
    data = C.pil_jpeg(C.photo(128, 160, seed=3), subsampling=0, progressive=True)
    scans = _scans(data)
    chroma_ac = [i for i, (pos, _, _) in enumerate(scans)
                 if data[pos + 4] == 1 and data[pos + 5] in (2, 3) and data[pos + 7] > 0]
    damaged = _with_damaged_scan(data, chroma_ac[0])
    box = (10, 20, 100, 120)
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        _decode(damaged, box, 1)
    assert _decode(damaged, box, 1, gray=True) == _decode(data, box, 1, gray=True)


def test_rows_below_the_crop_are_not_decoded():
    data = C.pil_jpeg(C.photo(512, 256, seed=4), subsampling=2, progressive=True)
    damaged = _with_damaged_scan(data, len(_scans(data)) - 1)  # the last scan loses its bottom rows
    top_rows = (0, 0, 96, 256)
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        _decode(damaged, top_rows, 1, skip=False)
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        _decode(damaged, (400, 0, 112, 256), 1)  # a crop over the damage still sees it
    # the top rows come from the intact start of every scan: the same pixels as the
    # undamaged file, and no damage is seen
    assert _decode(damaged, top_rows, 1) == _decode(data, top_rows, 1, skip=False)


def test_a_truncated_file_is_decoded_as_it_is():
    data = C.pil_jpeg(C.photo(128, 128, seed=6), progressive=True)
    cut = data[: len(data) * 2 // 3]  # no EOI: no trimmed copy
    box = (0, 0, 40, 128)
    assert (_decode(cut, box, 8, strict=False)
            == _decode(cut, box, 8, skip=False, strict=False))
