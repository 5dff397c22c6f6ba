"""A JPEG's structure read from its markers, nothing decoded: size, precision, process, scans.

The limits of :mod:`dataforge.transforms.decode` are checked on this before any
decoder runs, so every decode path (the region decoder, torchvision, PIL) is bounded
by the same numbers.

NOTE [counting scans]: a progressive (or non-interleaved sequential) JPEG costs one
pass over all its blocks per scan, so a small file with thousands of tiny scans costs
seconds in any decoder. Scans are counted as libjpeg meets them: marker segments are
skipped by their length (so an SOS inside an APP segment, such as an Exif thumbnail,
is not counted), entropy-coded data up to the next marker that is not a stuffed
``FF 00``, a restart ``FF D0``-``FF D7`` or fill ``FF FF``. A sequential file whose
first scan holds every component has exactly one scan (libjpeg rejects a second), so
its entropy data is not read at all. Otherwise the ``FF DA`` byte pairs after the
first scan are counted first (C speed): every SOS is one, so when that bound is
within the caller's limit it is the answer; only past it are the markers walked
(a Python loop per marker), and the walk stops once past the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The next marker after entropy-coded data: FF followed by anything but a stuffed
# zero, a restart marker or another fill byte.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC are not frames
_SEQUENTIAL = frozenset({0xC0, 0xC1, 0xC9})  # baseline, extended (Huffman / arithmetic)
_PROGRESSIVE = frozenset({0xC2, 0xCA})
_LOSSLESS = frozenset({0xC3, 0xCB})


@dataclass(frozen=True)
class JpegStructure:
    """What a JPEG's markers say.

    Attributes:
        width / height: the frame's size (0 when the frame header declares it so).
        precision: bits per sample (8 for nearly every JPEG; 12 for some medical or raw files).
        sof: the frame marker's second byte (``0xC0`` baseline, ``0xC2`` progressive, ...).
        components: ``(id, h, v)`` sampling factors per component.
        scans: start-of-scan markers before the end of the image, or an upper bound of
            that number when the bound is within ``max_scans`` (counted exactly past it,
            up to ``max_scans + 1``).
    """

    width: int
    height: int
    precision: int
    sof: int
    components: tuple[tuple[int, int, int], ...]
    scans: int

    @property
    def progressive(self) -> bool:
        return self.sof in _PROGRESSIVE

    @property
    def lossless(self) -> bool:
        return self.sof in _LOSSLESS

    @property
    def hierarchical(self) -> bool:
        return self.sof in (0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF)


def read_structure(data: bytes, max_scans: int | None = None) -> JpegStructure | None:
    """Walk the markers of ``data`` (a JPEG: it starts with ``FF D8``).

    Args:
        data: the whole file.
        max_scans: stop counting scans once there are more than this (``None``: count all).

    Returns:
        The structure, or ``None`` when no frame header (SOF) comes before the first
        scan, the end of the image or the end of the data.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (8, 4)).save(buf, "JPEG", progressive=True)
        >>> s = read_structure(buf.getvalue()); (s.width, s.height, s.progressive, s.scans > 1)
        (8, 4, True, True)
    """
    n = len(data)
    pos = 2
    frame: tuple[int, int, int, int, tuple[tuple[int, int, int], ...]] | None = None
    scans = 0
    while pos + 1 < n:
        if data[pos] != 0xFF:  # bytes that belong to no segment: resync as libjpeg does
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker == 0xD9 or marker == 0xD8:  # end of image, or a second SOI (an error)
            break
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if pos + 2 > n:
            break
        end = pos + ((data[pos] << 8) | data[pos + 1])
        if marker in _SOF and frame is None and end <= n and end - pos >= 8:
            count = data[pos + 7]
            comps = tuple(
                (data[p], data[p + 1] >> 4, data[p + 1] & 15)
                for p in range(pos + 8, min(pos + 8 + 3 * count, end - 2), 3)
            )
            frame = (
                marker,
                data[pos + 2],
                int.from_bytes(data[pos + 3 : pos + 5], "big"),
                int.from_bytes(data[pos + 5 : pos + 7], "big"),
                comps,
            )
        elif marker == 0xDA:
            if frame is None:
                return None
            scans += 1
            in_scan = data[pos + 2] if pos + 2 < n else 0
            if frame[0] in _SEQUENTIAL and scans == 1 and in_scan == len(frame[4]):
                break  # one interleaved scan: the whole image (NOTE [counting scans])
            if max_scans is not None and scans > max_scans:
                break
            if scans == 1:
                bound = 1 + data.count(b"\xff\xda", end)
                if max_scans is None or bound <= max_scans:
                    scans = bound
                    break
            found = _NEXT_MARKER.search(data, end)
            if found is None:
                break
            pos = found.start()
            continue
        pos = end
    if frame is None:
        return None
    sof, precision, height, width, comps = frame
    return JpegStructure(width, height, precision, sof, comps, scans)
