"""Generated test images: JPEGs of every sampling factor libjpeg decodes, and the inputs
of issue #16 (many scans, a huge declared size, 12-bit, extraneous bytes, a long GIF)
and of the fuzz run (a PNG with a bad zlib checksum).

Shared by the region-decode corpus test, the untrusted-input regression tests and the
fuzz harness's seed corpus; nothing binary is committed. Sampling factors PIL cannot
write (4:4:0, 4:1:1, 4x2, 2x4, 3x1, 4x4, ...), arithmetic coding and scan scripts come
from ``cjpeg`` (Debian: libjpeg-turbo-progs, installed by ``make setup``); without it
only PIL's variants exist (:func:`have_cjpeg` says which).
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess
import tempfile
import zlib

import numpy as np
from PIL import Image

SIZE = (123, 187)  # (h, w): partial MCUs at the right and bottom edges for every factor

# cjpeg -sample values (luma factors, chroma 1x1 unless listed) -> a readable name.
# "scans": written as three non-interleaved scans (more than 10 blocks per MCU).
SAMPLINGS: dict[str, tuple[str, bool]] = {
    "444": ("1x1", False),
    "422": ("2x1", False),
    "420": ("2x2", False),
    "440": ("1x2", False),
    "411": ("4x1", False),
    "410_4x2": ("4x2", False),
    "2x4": ("2x4", False),
    "1x4": ("1x4", False),
    "3x1": ("3x1", False),
    "1x3": ("1x3", False),
    "3x2": ("3x2", False),
    "4x4": ("4x4", True),
    "3x3": ("3x3", True),
    "mixed_2x2_2x1": ("2x2,2x1,1x1", False),
    "mixed_2x2_1x2": ("2x2,1x2,1x1", False),
}
# Coding variants: cjpeg options (none for the non-interleaved samplings but restart).
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "progressive": ("-progressive",),
    "arithmetic": ("-arithmetic",),
    "restart": ("-restart", "2B"),
}


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients, texture and a sharp block: compresses like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    img += rng.normal(0, 20, (h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 30, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


# PIL's coding variants, as ``pil_jpeg`` keywords.
PIL_VARIANTS: dict[str, dict[str, object]] = {
    "420": {"subsampling": 2},
    "422": {"subsampling": 1},
    "444": {"subsampling": 0},
    "progressive": {"progressive": True},
    "restart": {"restart_marker_blocks": 4},
}


def pil_jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=kw.pop("quality", 90), **kw)
    return buf.getvalue()


def have_cjpeg() -> bool:
    return shutil.which("cjpeg") is not None


def cjpeg(arr: np.ndarray, *args: str, scans: str | None = None) -> bytes:
    """``arr`` encoded by cjpeg with ``args``; ``scans``: a scan script's text."""
    ppm = io.BytesIO()
    Image.fromarray(arr).save(ppm, "PPM")
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        if scans is not None:
            path = os.path.join(tmp, "scans.txt")
            with open(path, "w") as f:
                f.write(scans)
            extra = ["-scans", path]
        out = subprocess.run(["cjpeg", "-quality", "90", *args, *extra], input=ppm.getvalue(),
                             capture_output=True, check=True)
    return out.stdout


@functools.cache
def sampling_corpus() -> dict[str, bytes]:
    """``"<sampling>-<variant>"`` -> JPEG bytes, every sampling x variant cjpeg can write
    (PIL's 4:4:4 / 4:2:2 / 4:2:0 baseline, progressive and restart without cjpeg), plus
    grayscale files."""
    arr = photo(*SIZE, seed=1)
    out: dict[str, bytes] = {}
    if not have_cjpeg():
        for name, sub in (("444", 0), ("422", 1), ("420", 2)):
            out[f"{name}-baseline"] = pil_jpeg(arr, subsampling=sub)
            out[f"{name}-progressive"] = pil_jpeg(arr, subsampling=sub, progressive=True)
            out[f"{name}-restart"] = pil_jpeg(arr, subsampling=sub, restart_marker_blocks=2)
        return out
    for name, (sample, non_interleaved) in SAMPLINGS.items():
        for variant, opts in VARIANTS.items():
            if non_interleaved and variant == "progressive":
                continue  # an interleaved DC scan needs <= 10 blocks per MCU
            script = "0;\n1;\n2;\n" if non_interleaved else None
            out[f"{name}-{variant}"] = cjpeg(arr, "-sample", sample, *opts, scans=script)
    out["gray-baseline"] = cjpeg(arr, "-grayscale")
    out["gray_2x2-progressive"] = cjpeg(arr, "-grayscale", "-sample", "2x2", "-progressive")
    return out


# ------------------------------------------------------------------ issue #16's inputs


def many_scans_jpeg(scans: int, size: int = 1024) -> bytes:
    """A progressive JPEG with ``scans`` scans: its smallest scan (with the Huffman tables
    just before it) repeated until there are that many. A repeated refinement scan is a
    bogus progression, which libjpeg only warns about: a lenient decoder decodes every
    scan, each a pass over all blocks (issue #16: 1,500 scans, 40 kB, seconds)."""
    flat = np.full((size, size, 3), (90, 140, 200), dtype=np.uint8)  # tiny refinement scans
    data = pil_jpeg(flat, progressive=True, quality=75, subsampling=0)
    first = data.index(b"\xff\xda")
    marks = [(m.start(), data[m.start() + 1]) for m in re.finditer(rb"\xff[^\x00\xd0-\xd7\xff]", data)
             if m.start() > first]
    starts = [pos for i, (pos, kind) in enumerate(marks)
              if kind != 0xDA or i == 0 or marks[i - 1][1] != 0xC4]
    units = [data[a:b] for a, b in zip(starts, starts[1:]) if b"\xff\xda" in data[a:b]]
    unit = min(units, key=len)
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + unit * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def valid_many_scans_jpeg(bands_per_component: int = 11, refinements: int = 3) -> bytes:
    """A valid progressive JPEG (cjpeg scan script) with 1 + 3 * bands * refinements scans
    (cjpeg takes at most 100; coefficients past the last band stay zero)."""
    lines = ["0,1,2: 0-0, 0, 0;"]
    for comp in range(3):
        for k in range(1, bands_per_component + 1):
            al = refinements - 1
            lines.append(f"{comp}: {k}-{k}, 0, {al};")
            lines.extend(f"{comp}: {k}-{k}, {a + 1}, {a};" for a in range(al - 1, -1, -1))
    return cjpeg(photo(128, 128, seed=3), "-sample", "1x1", scans="\n".join(lines) + "\n")


def declared_size_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    """A small JPEG whose frame header declares ``width x height``: the data ends long
    before the declared rows do, but the file still ends with EOI. Progressive: libjpeg
    sets up a coefficient buffer for the whole declared image (13 GB at 65500 x 65500)."""
    data = pil_jpeg(photo(32, 32, seed=4), progressive=progressive, subsampling=0)
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    return (data[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + data[sof + 9 :])


def twelve_bit_jpeg() -> bytes:
    """An 8-bit baseline JPEG with its frame header's precision set to 12."""
    data = pil_jpeg(photo(32, 48, seed=5))
    sof = data.index(b"\xff\xc0")
    return data[: sof + 4] + bytes([12]) + data[sof + 5 :]


def extraneous_bytes_jpeg(junk: bytes = b"\x00\x00\x00") -> bytes:
    """A valid JPEG with junk bytes before its frame header (libjpeg warns:
    'N extraneous bytes before marker 0xc0'), as some cameras and editors write."""
    data = pil_jpeg(photo(64, 96, seed=6))
    sof = data.index(b"\xff\xc0")
    return data[:sof] + junk + data[sof:]


def animated_gif(frames: int = 200, size: int = 600) -> bytes:
    """A GIF of ``frames`` distinct frames, each ``size`` x ``size``: small to store,
    ``frames`` x 3 x size**2 bytes to decode in full."""
    base = np.zeros((size, size), dtype=np.uint8)
    images = []
    for i in range(frames):
        f = base.copy()
        f[(i * 7) % size : (i * 7) % size + 40, :] = 200
        f[:, (i * 13) % size : (i * 13) % size + 40] = 100
        images.append(Image.fromarray(f, mode="L").convert("P"))
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], optimize=False)
    return buf.getvalue()


def corrupt_complete_jpeg() -> bytes:
    """A JPEG whose entropy data is damaged in the middle but which still ends with EOI."""
    data = pil_jpeg(photo(96, 128, seed=7))
    sos = data.index(b"\xff\xda")
    cut = sos + (len(data) - sos) // 3
    return data[:cut] + b"\x00" * ((len(data) - cut) // 2) + b"\xff\xd9"


def png_bad_checksum() -> bytes:
    """A PNG whose zlib stream has a wrong Adler-32 (its chunk CRC made right, so libpng
    reaches zlib): torchvision 0.29's decode_png dies of SIGSEGV on it (found by the fuzz
    harness)."""
    buf = io.BytesIO()
    Image.fromarray(photo(48, 64, seed=10)).save(buf, "PNG")
    data = buf.getvalue()
    start = data.index(b"IDAT") - 4
    size = int.from_bytes(data[start : start + 4], "big")
    body = bytearray(data[start + 8 : start + 8 + size])
    body[-1] ^= 0xFF  # the last byte of zlib's Adler-32
    chunk = b"IDAT" + bytes(body)
    return (data[:start] + size.to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
            + data[start + 12 + size :])


def dc_only_progressive_jpeg() -> bytes:
    """A progressive JPEG that ends after its first (DC) scan: valid, but its AC
    coefficients are missing, which is when libjpeg smooths across blocks (found by the
    fuzz harness: a crop then differed from the whole image at its edges)."""
    data = pil_jpeg(photo(72, 104, seed=11), progressive=True)
    first = data.index(b"\xff\xda")
    second = data.index(b"\xff\xc4", first) if b"\xff\xc4" in data[first:] else data.index(b"\xff\xda", first + 2)
    return data[:second] + b"\xff\xd9"


def regression_inputs() -> dict[str, bytes]:
    """Every crafted input of issue #16's image findings, by name."""
    out = {
        "many_scans_1500": many_scans_jpeg(1500),
        "declared_65500": declared_size_jpeg(65500, 65500),
        "declared_65500_progressive": declared_size_jpeg(65500, 65500, progressive=True),
        "twelve_bit": twelve_bit_jpeg(),
        "extraneous": extraneous_bytes_jpeg(),
        "gif_200_frames": animated_gif(),
        "corrupt_complete": corrupt_complete_jpeg(),
        "truncated": pil_jpeg(photo(64, 64, seed=8))[:700],
        "png_bad_checksum": png_bad_checksum(),
        "dc_only_progressive": dc_only_progressive_jpeg(),
    }
    if have_cjpeg():
        out["valid_many_scans"] = valid_many_scans_jpeg()
        out["sampling_4x2"] = sampling_corpus()["410_4x2-baseline"]
        out["sampling_2x4_progressive"] = sampling_corpus()["2x4-progressive"]
    return out
