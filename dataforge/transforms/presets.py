"""Image presets on the CPU: random resized crop + flip (train), resize + center crop (eval).

Both are torchvision v2 semantics (the same crop rule, the same pixels for a given
crop on a decoded image) and both can take the encoded file instead, to decode only
what they keep (NOTE [region decode] in :mod:`dataforge.transforms.decode`). They
keep images as uint8 ``(C, H, W)`` and follow the calling convention of
:mod:`dataforge.transforms.image` (bare image or sample dict, optional
``generator=``); they are re-exported from there.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dataforge.transforms._sample import ENCODED, join_sample, split_sample
from dataforge.transforms.decode import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SCANS,
    Decode,
)
from dataforge.transforms.resize import (
    batch_channels,
    batch_resize_available,
    center_window,
    resize_crop,
    resize_into,
)

__all__ = ["RandomResizedCrop", "ResizeCenterCrop", "eval_transforms", "train_transforms"]


def _check_size(name: str, size: Any) -> int | tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return (size[0], size[1])
    raise ValueError(f"{name} must be a positive int or an (h, w) pair of them, got {size!r}")


def _check_range(name: str, value: Any, *, upper: float | None = None) -> tuple[float, float]:
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and 0 < value[0] <= value[1]
        and (upper is None or value[1] <= upper)
    )
    if not ok:
        limit = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a (min, max) pair with 0 < min <= max{limit}, got {value!r}")
    return float(value[0]), float(value[1])


# NOTE [GIL transitions]: every torch call (views included) and every os.* call
# releases the GIL and takes it back. Under the thread engine each take-back is a
# chance to wait while another fetch thread holds it, and every wait leaves a core
# idle: on the 2-core VM nearly all the fetch threads' sleeps were GIL waits
# (``perf`` sched_switch stacks ending in take_gil). So the per-sample path makes few
# such calls: the file is read by ``dataforge._jpeg`` (one hand-off, not four), the seed
# is drawn into a reused tensor, the decoder's pixels come as the batch of one the
# resize takes, and views are made in numpy, whose calls keep the GIL. Freeing a tensor
# hands off too. That left about 13 hand-offs and 0.30 waits per sample (counted with a
# uprobe on PyEval_SaveThread); a batch of files therefore takes the batched path, with
# a few hand-offs per batch besides each file's read (NOTE [one native call per batch]
# in ``dataforge/_crops.cpp``): 0.03 waits per sample.
_SEED = threading.local()  # per thread: (an int64 tensor of one element, its numpy view)


def _draw_rng(generator: torch.Generator | None) -> random.Random:
    """The random stream of one :class:`RandomResizedCrop` call.

    NOTE [crop draws]: one torch op draws a 62-bit seed from ``generator`` (torch's
    global RNG when ``None``), and Python's ``random.Random`` seeded with it draws the
    crop and the flip: the law of torchvision's draws, not its stream. torchvision
    draws them with about ten one-element torch ops, each of which releases and
    retakes the GIL; under the thread engine those hand-offs left the fetch threads
    waiting (demo images, ``benchmarks/arm_threads.py --arm natural``, 4 interleaved
    rounds: 1,472-1,569 samples/s and 1.88-1.89 cores busy with torch's draws,
    1,656-1,712 and 1.92-1.93 with these). The draws still depend only on the
    generator's state, so they stay per-sample seeded and reproducible. The seed is
    ``random_(0, 2**62)`` into a reused one-element tensor, read through numpy: the
    value of ``torch.randint(0, 2**62, (1,))`` (which is that op on a new tensor)
    without a new tensor and ``item()`` (NOTE [GIL transitions]).
    """
    seed = getattr(_SEED, "buffer", None)
    if seed is None:
        array = np.zeros(1, dtype=np.int64)
        seed = _SEED.buffer = (torch.from_numpy(array), array)
    seed[0].random_(0, 1 << 62, generator=generator)
    return random.Random(int(seed[1][0]))


def _draw_rngs(generator: torch.Generator | None, n: int) -> list[random.Random]:
    """The random streams of ``n`` calls in a row (:func:`_draw_rng` ``n`` times): the
    ``n`` seeds in one op, which draws them one after another from ``generator`` (tested
    equal)."""
    seeds = np.zeros(n, dtype=np.int64)
    torch.from_numpy(seeds).random_(0, 1 << 62, generator=generator)
    return [random.Random(int(seed)) for seed in seeds]


class RandomResizedCrop:
    """v2 ``RandomResizedCrop`` + ``RandomHorizontalFlip`` that can also decode: only the crop.

    Called on a uint8 ``(C, H, W)`` tensor it is the torchvision pair
    ``v2.Compose([v2.RandomResizedCrop(size, scale, ratio), v2.RandomHorizontalFlip(hflip)])``:
    the same crop rule (10 tries, then a centre crop) and, for a given crop, the same
    pixels (tested), but its own draws (NOTE [crop draws]): one 62-bit seed from
    ``generator=`` (or torch's global RNG when none is given) seeds the crop and the
    flip. With a generator, the global RNG is neither read nor seeded (safe in parallel
    threads).

    Called on an encoded image (bytes or a path, bare or as ``sample["image"]``), it
    draws the crop from the header's size, then decodes only that box (see NOTE
    [region decode] in :mod:`dataforge.transforms.decode`): the rows below the crop
    are never read, the rows above and the columns beside it are not reconstructed.
    Same draws, same crop as on the decoded image; with ``reduce=False`` the pixels
    equal decode-then-crop
    exactly. With ``reduce=True`` (default) a JPEG whose crop is at least twice
    ``size`` is decoded at 1/2, 1/4 or 1/8 scale in the IDCT, then resized as usual
    (a small, antialiased difference in pixels for a large saving on big photos).
    :class:`~dataforge.datasets.ImageFolder` hands this transform the file
    instead of a decoded image (``accepts_encoded``).

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale / ratio: crop area (relative) and aspect-ratio ranges, as torchvision.
        hflip: probability of a horizontal flip (0 disables it, and its draw).
        antialias: antialias when downscaling.
        reduce: allow reduced-scale JPEG decoding (see above).
        mode / max_pixels / max_scans / max_bytes / allow_truncated / strict: as
            :class:`Decode`, for encoded input (limits checked before decoding; see
            NOTE [decode limits] in :mod:`dataforge.transforms.decode`).
        key: the entry to transform when called on a sample dict.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (80, 60), (9, 99, 199)).save(buf, "JPEG")
        >>> t = RandomResizedCrop(32)
        >>> t(buf.getvalue()).shape, t(torch.zeros(3, 60, 80, dtype=torch.uint8)).shape
        (torch.Size([3, 32, 32]), torch.Size([3, 32, 32]))
    """

    accepts_encoded = True

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        antialias: bool = True,
        reduce: bool = True,
        mode: str = "RGB",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_scans: int | None = DEFAULT_MAX_SCANS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        allow_truncated: bool = False,
        strict: bool = True,
        key: str = "image",
    ) -> None:
        size = _check_size("size", size)
        self.size = (size, size) if isinstance(size, int) else size
        self.scale = _check_range("scale", scale, upper=1.0)
        self.ratio = _check_range("ratio", ratio)
        if isinstance(hflip, bool) or not isinstance(hflip, (int, float)) or not 0 <= hflip <= 1:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
        self.hflip = float(hflip)
        self.antialias = bool(antialias)
        self.reduce = bool(reduce)
        self.decode = Decode(mode, max_pixels=max_pixels, max_scans=max_scans, max_bytes=max_bytes,
                             allow_truncated=allow_truncated, strict=strict, key=key)
        self.key = key
        self._log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))

    def params(self, height: int, width: int,
               generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """Draw ``(top, left, height, width)`` of a crop of a ``height x width`` image by
        v2 ``RandomResizedCrop``'s rule, from ``generator`` (torch's global RNG when
        ``None``; NOTE [crop draws])."""
        return self._crop(height, width, _draw_rng(generator))

    def draw(self, height: int, width: int,
             generator: torch.Generator | None = None) -> tuple[int, int, int, int, bool]:
        """What one call draws for a ``height x width`` image: ``(top, left, height, width,
        flip)``, the crop of :meth:`params` and then the flip, from one seed."""
        return self._draw_from(height, width, _draw_rng(generator))

    def _draw_from(self, height: int, width: int,
                   rng: random.Random) -> tuple[int, int, int, int, bool]:
        top, left, h, w = self._crop(height, width, rng)
        return top, left, h, w, rng.random() < self.hflip  # never with hflip=0

    def _denom(self, height: int, width: int) -> int:
        """The JPEG decode reduction for a ``height x width`` crop (1 without ``reduce``)."""
        return scale_denom(height, width, *self.size) if self.reduce else 1

    def _crop(self, height: int, width: int, rng: random.Random) -> tuple[int, int, int, int]:
        area = height * width
        lo, hi = self._log_ratio
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(lo, hi))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        in_ratio = width / height  # fallback: central crop
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        # draws straight from ``generator``: no global-RNG seeding, so no lock, and
        # threads run it in parallel (NOTE [global RNGs under threads] in dataforge._rng)
        image, d = split_sample(sample, self.key)
        if isinstance(image, ENCODED):
            enc = self.decode.header(image, d)
            top, left, h, w, flip = self.draw(enc.height, enc.width, generator)
            crop = self.decode.region(enc, (top, left, h, w), self._denom(h, w), batch=True)
            out = resize_crop(crop, self.size, self.antialias)
        else:
            # imported here, off the encoded path: an import statement runs on every call
            from torchvision.transforms.v2 import functional as F

            height, width = F.get_size(image)
            top, left, h, w, flip = self.draw(height, width, generator)
            out = F.resized_crop(image, top, left, h, w, list(self.size), antialias=self.antialias)
        if flip:
            out = out.flip(-1)  # F.horizontal_flip on a tensor, without the dispatch
        return join_sample(out, d, self.key)

    def call_batch(self, sources: Sequence[Any], *, generator: torch.Generator | None = None,
                   generators: Sequence[torch.Generator] | None = None) -> list[Any]:
        """``[self(s, generator=generator) for s in sources]`` (with ``generators``, one per
        source: ``self(s, generator=g)`` for each pair, as ``map(seed=)`` calls it): the
        same draws in the same order and the same pixels, made faster for encoded images.

        When every source is an encoded image (bytes or a path, bare or as
        ``sample["image"]``), each header is read and each crop drawn in turn, every crop
        is decoded in one GIL release, and the crops are resized, flipped and written into
        one uint8 ``(N, C, *size)`` batch in another (NOTE [one native call per batch] in
        ``dataforge/_crops.cpp``); the results are that batch's rows (channels-last).
        Anything else, or without the native extension, or for a subclass with its own
        ``__call__``, is the list of single calls. :class:`~dataforge.datasets.ImageFolder`
        and ``MapDataset.map`` use it for a batch.
        """
        gens = _per_source(generator, generators, len(sources))
        split = _encoded_batch(self, RandomResizedCrop, sources)
        if split is None:
            return [self(s, generator=g) for s, g in zip(sources, gens)]
        encoded = [self.decode.header(image, d) for image, d in split]
        rngs = (_draw_rngs(generator, len(sources)) if generators is None
                else [_draw_rng(g) for g in gens])
        boxes, denoms, flips = [], [], []
        for enc, rng in zip(encoded, rngs):
            top, left, h, w, flip = self._draw_from(enc.height, enc.width, rng)
            boxes.append((top, left, h, w))
            denoms.append(self._denom(h, w))
            flips.append(flip)
        crops = self.decode.regions(encoded, boxes, denoms, batch=True)
        channels = batch_channels(crops)
        if channels is None:
            outs = [resize_crop(c, self.size, self.antialias) for c in crops]
            images = [o.flip(-1) if f else o for o, f in zip(outs, flips)]
        else:
            images = resize_into(crops, flips, self.size, channels, self.antialias)
        return [join_sample(im, d, self.key) for im, (_, d) in zip(images, split)]

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"hflip={self.hflip}, antialias={self.antialias}, reduce={self.reduce})")


def _encoded_batch(transform: Any, preset: type,
                   sources: Sequence[Any]) -> list[tuple[Any, Mapping[str, Any] | None]] | None:
    """``(image, sample dict or None)`` of each source when ``transform.call_batch`` takes
    the native path: the extension is there, every source is an encoded image (bare or
    as ``sample[key]``; two or more), and ``__call__`` is the preset's own (a subclass
    that changes it gets its own calls, one per source); else None."""
    if not batch_resize_available() or len(sources) < 2 or type(transform).__call__ is not preset.__call__:
        return None
    split = [split_sample(s, transform.key) for s in sources]
    return split if all(isinstance(image, ENCODED) for image, _ in split) else None


def _per_source(generator: torch.Generator | None, generators: Sequence[torch.Generator] | None,
                n: int) -> list[torch.Generator | None]:
    """Each source's generator: ``generators`` (one per source), else ``generator`` for all."""
    if generators is None:
        return [generator] * n
    if generator is not None:
        raise ValueError("call_batch: pass generator= (one stream for all) or generators= (one per "
                         "source), not both")
    if len(generators) != n:
        raise ValueError(f"call_batch: generators= must have one generator per source: {len(generators)} "
                         f"for {n} sources")
    return list(generators)


def scale_denom(height: int, width: int, min_height: int, min_width: int) -> int:
    """The largest JPEG decode reduction (8, 4, 2, else 1) that keeps ``height x width``
    at least ``min_height x min_width``: the image is shrunk further afterwards anyway."""
    return next((k for k in (8, 4, 2) if height // k >= min_height and width // k >= min_width), 1)


def train_transforms(
    size: int | tuple[int, int] = 224,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    antialias: bool = True,
    reduce: bool = True,
) -> RandomResizedCrop:
    """Training preset: random resized crop + horizontal flip, uint8 CHW out.

    Built on ``torchvision.transforms.v2`` semantics (the same crop rule, the same
    pixels for a given crop on a decoded image); given an encoded image it decodes only
    the crop (see :class:`RandomResizedCrop`, which this returns).

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale: range of the crop's area relative to the image.
        ratio: range of the crop's aspect ratio.
        hflip: probability of a horizontal flip (0 disables it).
        antialias: antialias when downscaling.
        reduce: allow reduced-scale JPEG decoding for crops at least twice ``size``.

    Returns:
        A transform: uint8 ``(C, H, W)`` tensor, or JPEG/PNG bytes or a path, in;
        uint8 ``(C, *size)`` out (bare image or sample dict; optional ``generator=``).

    Example:
        >>> t = train_transforms(32)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = t(torch.zeros(3, 60, 80, dtype=torch.uint8), generator=g)
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    return RandomResizedCrop(size, scale=scale, ratio=ratio, hflip=hflip, antialias=antialias,
                             reduce=reduce)


class ResizeCenterCrop:
    """v2 ``Resize(resize)`` (shorter side) + ``CenterCrop(size)`` that can also decode.

    Called on a uint8 ``(C, H, W)`` tensor it is the torchvision pair (same pixels).
    Called on an encoded image (bytes or a path, bare or as ``sample["image"]``) it
    decodes it first; with ``reduce=True`` (default) a JPEG whose shorter side is at
    least twice ``resize`` is decoded at 1/2, 1/4 or 1/8 scale in the IDCT before the
    same resize and crop (large photos: far less work, a small antialiased difference
    in pixels); ``reduce=False`` gives exactly decode-then-torchvision.

    Args:
        size: output size (int for square, or ``(h, w)``).
        resize: length of the shorter side before cropping; at least ``size``.
        reduce: allow reduced-scale JPEG decoding (see above).
        mode / max_pixels / max_scans / max_bytes / allow_truncated / strict: as
            :class:`Decode`, for encoded input (limits checked before decoding; see
            NOTE [decode limits] in :mod:`dataforge.transforms.decode`).
        key: the entry to transform when called on a sample dict.

    Example:
        >>> out = ResizeCenterCrop(32, resize=36)(torch.zeros(3, 60, 80, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """

    accepts_encoded = True

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        resize: int = 256,
        *,
        reduce: bool = True,
        mode: str = "RGB",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_scans: int | None = DEFAULT_MAX_SCANS,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        allow_truncated: bool = False,
        strict: bool = True,
        key: str = "image",
    ) -> None:
        size = _check_size("size", size)
        if isinstance(resize, bool) or not isinstance(resize, int) or resize < 1:
            raise ValueError(f"resize must be a positive int (shorter side), got {resize!r}")
        biggest = size if isinstance(size, int) else max(size)
        if resize < biggest:
            raise ValueError(
                f"resize={resize} is smaller than size={size!r}: the center crop would pad; "
                f"use resize >= {biggest} (commonly size * 8 / 7)"
            )
        self.size = [size, size] if isinstance(size, int) else list(size)
        self.resize = resize
        self.reduce = bool(reduce)
        self.decode = Decode(mode, max_pixels=max_pixels, max_scans=max_scans, max_bytes=max_bytes,
                             allow_truncated=allow_truncated, strict=strict, key=key)
        self.key = key

    def __call__(self, sample: Any, *, generator: torch.Generator | None = None) -> Any:
        image, d = split_sample(sample, self.key)
        if isinstance(image, ENCODED):
            enc = self.decode.header(image, d)
            denom = self._denom(enc.height, enc.width)
            image = self.decode.region(enc, (0, 0, enc.height, enc.width), denom)
        return join_sample(self._resize_center(image), d, self.key)

    def _denom(self, height: int, width: int) -> int:
        """The JPEG decode reduction for a ``height x width`` image (1 without ``reduce``)."""
        return scale_denom(height, width, self.resize, self.resize) if self.reduce else 1

    def _resize_center(self, image: torch.Tensor) -> torch.Tensor:
        """v2 ``Resize(resize)`` + ``CenterCrop(size)`` of a decoded ``(C, H, W)`` image."""
        from torchvision.transforms.v2 import functional as F

        return F.center_crop(F.resize(image, [self.resize], antialias=True), self.size)

    def call_batch(self, sources: Sequence[Any], *, generator: torch.Generator | None = None,
                   generators: Sequence[torch.Generator] | None = None) -> list[Any]:
        """``[self(s) for s in sources]``, the same pixels, made faster for encoded images
        (bare or as ``sample["image"]``): every file decoded in one GIL release and every
        image resized and center-cropped into one uint8 batch in another (NOTE [one native
        call per batch] in ``dataforge/_crops.cpp``; the rows are channels-last). Anything
        else, or without the native extension, or for a subclass with its own
        ``__call__``, is the list of single calls. ``generator(s)``: unused (no draws)."""
        split = _encoded_batch(self, ResizeCenterCrop, sources)
        if split is None:
            return [self(s) for s in sources]
        encoded = [self.decode.header(image, d) for image, d in split]
        denoms = [self._denom(e.height, e.width) for e in encoded]
        decoded = self.decode.regions(encoded, [(0, 0, e.height, e.width) for e in encoded], denoms,
                                      batch=True)
        channels = batch_channels(decoded)
        if channels is None:
            images = [self._resize_center(im[0]) for im in decoded]
        else:
            windows = [center_window(im.shape[2], im.shape[3], self.resize, self.size) for im in decoded]
            images = resize_into(decoded, [False] * len(decoded), (self.size[0], self.size[1]),
                                  channels, True, windows)
        return [join_sample(im, d, self.key) for im, (_, d) in zip(images, split)]

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize={self.resize}, reduce={self.reduce})"


def eval_transforms(
    size: int | tuple[int, int] = 224, resize: int = 256, *, reduce: bool = True
) -> ResizeCenterCrop:
    """Evaluation preset: v2 ``Resize(resize)`` (shorter side) + ``CenterCrop(size)``, uint8 CHW.

    Same pixels as the torchvision pair on a decoded image; given an encoded image it
    decodes it, at reduced scale for large JPEGs unless ``reduce=False`` (see
    :class:`ResizeCenterCrop`, which this returns).

    Args:
        size: output size (int for square, or ``(h, w)``).
        resize: length of the shorter side before cropping; at least ``size``.
        reduce: allow reduced-scale JPEG decoding when the shorter side is >= 2 * ``resize``.

    Example:
        >>> out = eval_transforms(32, resize=36)(torch.zeros(3, 60, 80, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 32, 32]), torch.uint8)
    """
    return ResizeCenterCrop(size, resize, reduce=reduce)
