"""Fuzz the image decoders with atheris (libFuzzer for Python).

Run: ``python tests/fuzz/fuzz_decode.py [libFuzzer flags] CORPUS_DIR`` (``pip install
'dataforge[fuzz]'``); an empty ``CORPUS_DIR`` is first filled with the seed corpus
(:func:`write_seed_corpus`: every sampling factor, arithmetic, progressive and
restart-marker JPEGs, issue #16's crafted inputs, a PNG and a GIF). A long run beside
other work: ``DATAFORGE_FUZZ_FINDINGS=findings nice -n 19 python tests/fuzz/fuzz_decode.py
-max_total_time=900 -timeout=30 -rss_limit_mb=3072 -max_len=65536 corpus``; a run stops
at its first finding, so restart it on the same corpus to go on.

Each input goes through :func:`read_header`, then, when its header passes the default
limits, :func:`decode_region` on a box and scale drawn from the input's CRC, strict and
lenient, each compared with the whole image decoded at that scale when that succeeds
too, every scan decoded (a differential check: any differing pixel of a strict decode, any differing shape,
is a finding; a region may decode where the whole image does not, when the damage lies
below it; libjpeg's repair of damaged data is not the same in the crop path, so lenient
pixels are not compared), and through both presets with default limits. A finding is any exception but :class:`ImageDecodeError` (a crash, a leak of
another error type, a differing pixel), or a libFuzzer timeout or memory limit.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import zlib
from pathlib import Path
from typing import Any

import torch

# The differential check decodes the whole image a second time: only for small ones.
_DIFF_MAX_PIXELS = 1 << 22


def _corpus() -> Any:
    """tests/fuzz/jpeg_corpus.py, also when this file runs as a script."""
    tests = str(Path(__file__).resolve().parent.parent)
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from fuzz import jpeg_corpus

    return jpeg_corpus


def write_seed_corpus(directory: str | os.PathLike[str]) -> int:
    """Write the seed inputs into ``directory``; returns how many."""
    import io

    from PIL import Image

    C = _corpus()
    seeds = dict(C.sampling_corpus())
    seeds.update({k: v for k, v in C.regression_inputs().items() if len(v) < 100_000})
    small = C.photo(40, 56, seed=9)
    for fmt in ("PNG", "GIF"):
        buf = io.BytesIO()
        Image.fromarray(small).save(buf, fmt)
        seeds[f"small-{fmt.lower()}"] = buf.getvalue()
    seeds["small-progressive-restart"] = C.pil_jpeg(small, progressive=True, restart_marker_blocks=1)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (out / name).write_bytes(data)
    return len(seeds)


def one_input(data: bytes) -> None:
    """Everything one input goes through; raises on a finding, after saving the input in
    ``$DATAFORGE_FUZZ_FINDINGS`` when set (libFuzzer's own artifact can be lost when its
    timer signal arrives while Python unwinds)."""
    try:
        _one_input(data)
    except Exception:
        where = os.environ.get("DATAFORGE_FUZZ_FINDINGS")
        if where:
            os.makedirs(where, exist_ok=True)
            Path(where, f"finding-{zlib.crc32(data):08x}").write_bytes(data)
        raise


def _one_input(data: bytes) -> None:
    from dataforge.transforms.decode import (
        HAVE_ROI_DECODE,
        ImageDecodeError,
        decode_region,
        read_header,
    )
    from dataforge.transforms.presets import RandomResizedCrop, ResizeCenterCrop

    try:
        enc = read_header(data, allow_truncated=True)
    except ImageDecodeError:
        return
    rng = random.Random(zlib.crc32(data))
    h, w = enc.height, enc.width
    top, left = rng.randrange(h), rng.randrange(w)
    box = (top, left, rng.randint(1, h - top), rng.randint(1, w - left))
    denom = rng.choice((1, 2, 4, 8))
    for strict in (True, False):
        try:
            region = decode_region(enc, box, scale_denom=denom, strict=strict)
        except ImageDecodeError:
            continue
        if enc.format == "JPEG" and HAVE_ROI_DECODE and h * w <= _DIFF_MAX_PIXELS:
            _check_against_whole(enc, box, denom, strict, region)
    generator = torch.Generator().manual_seed(rng.randrange(1 << 30))
    for preset in (RandomResizedCrop(64), ResizeCenterCrop(32, 40)):
        with contextlib.suppress(ImageDecodeError):
            preset(data, generator=generator)


def _check_against_whole(enc, box, denom: int, strict: bool, region: torch.Tensor) -> None:
    from dataforge import _jpeg as ext  # type: ignore[attr-defined]

    strict = strict and not enc.truncated  # a truncated file decodes leniently (allow_truncated)
    try:
        # every scan decoded: the region's path leaves some out (NOTE [unused scans])
        buf, rows, cols, ch = ext.decode_crop(enc.data, 0, 0, enc.height, enc.width, denom, False,
                                              strict, 0, skip_unused_scans=False)
    except ext.Unsupported:
        return  # the region came from the general decoder, at full scale
    except ValueError:
        return  # damage or a limit in rows the region did not need: nothing to compare
    whole = torch.frombuffer(buf, dtype=torch.uint8).view(rows, cols, ch).permute(2, 0, 1)
    top, left, bh, bw = box
    ref = whole[:, top // denom : -(-(top + bh) // denom), left // denom : -(-(left + bw) // denom)]
    if region.shape != ref.shape or (strict and not torch.equal(region, ref)):
        raise AssertionError(f"region {box} at 1/{denom} (strict={strict}) differs from the whole decode")


def main(argv: list[str]) -> None:
    import atheris

    corpus = [a for a in argv[1:] if not a.startswith("-")]
    for d in corpus:
        if not os.path.isdir(d) or not os.listdir(d):
            write_seed_corpus(d)
    with atheris.instrument_imports():
        import dataforge.transforms._jpeg_markers  # noqa: F401
        import dataforge.transforms.decode  # noqa: F401
    torch.set_num_threads(1)
    # the first call imports torchvision's transforms (seconds): not inside a timed unit
    C = _corpus()
    one_input(C.pil_jpeg(C.photo(40, 56)))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
