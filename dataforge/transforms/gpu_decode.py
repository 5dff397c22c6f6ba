"""Batch JPEG decode on the GPU (nvJPEG) with the train preset's random resized crop.

:class:`GpuRandomResizedCrop` takes a batch of encoded images (the bytes that
``ImageFolder(decode=False)`` yields, collated into a list) and returns the finished
``(N, 3, H, W)`` batch on the device: decoded by ``torchvision.io.decode_jpeg(list,
device="cuda")`` (nvJPEG), then cropped, resized, flipped and normalized there.

NOTE [gpu decode draws]: each sample's crop box and flip are drawn by the CPU preset
itself (:meth:`~dataforge.transforms.presets.RandomResizedCrop.draw`, from the
sample's generator and the header's size), so a seed gives the same boxes and flips
on either path. Only the pixels differ, slightly: nvJPEG is not libjpeg-turbo, the
GPU resizes in float (the CPU in uint8), and the GPU path always decodes at full
scale.

NOTE [gpu decode fallback]: without CUDA, or when torchvision cannot decode JPEGs on
the device (built without nvJPEG), the transform warns once
(:class:`GpuDecodeFallbackWarning`, naming the cause) and runs the CPU preset on each
sample instead: same draws, the CPU preset's pixels exactly; the batch is then
normalized on the device (on the CPU when CUDA is absent). Which path runs is decided
on the first call, by decoding a tiny JPEG on the device, so that building the
transform never touches CUDA (a forked worker may build it). Non-JPEG files in a
batch (PNG, ...) are decoded on the CPU, cropped there and finished on the device.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dataforge.transforms import functional as F
from dataforge.transforms._sample import ENCODED
from dataforge.transforms.batch import IMAGENET_MEAN, IMAGENET_STD
from dataforge.transforms.decode import DEFAULT_MAX_PIXELS, EncodedImage
from dataforge.transforms.presets import RandomResizedCrop

__all__ = ["CropDraw", "GpuDecodeFallbackWarning", "GpuRandomResizedCrop"]

CropDraw = tuple[int, int, int, int, bool]
"""One sample's draw: ``(top, left, height, width, flip)``."""

_DECODES = ("cuda", "cpu")


class GpuDecodeFallbackWarning(RuntimeWarning):
    """:class:`GpuRandomResizedCrop` decodes on the CPU: CUDA or nvJPEG is missing."""


class GpuRandomResizedCrop:
    """Decode a batch of JPEGs on the GPU, then random resized crop + flip + normalize there.

    The batch counterpart of ``train_transforms(size)`` followed by on-device
    ``ToFloat`` + ``Normalize``, for loaders that ship the encoded files instead of
    pixels: workers only read bytes, the GPU does the rest. Each sample's box and
    flip are the CPU preset's draws (NOTE [gpu decode draws]); without CUDA or
    nvJPEG it falls back to the CPU preset with one warning (NOTE [gpu decode
    fallback]).

    Randomness (as :mod:`dataforge.transforms.batch`): the ``generator`` passed to
    the call, else the transform's own (``generator=`` here, or seeded from
    ``seed``), drawn sample after sample; or ``generators=``, one per sample (for
    example seeded per sample index, as ``MapDataset.map(t, seed=...)`` does).
    Generators must be CPU generators, as the preset's.

    Args:
        size: output size (int for square, or ``(h, w)``).
        scale / ratio / hflip / antialias: as :class:`RandomResizedCrop`.
        decode: ``"cuda"`` (nvJPEG on ``device``) or ``"cpu"`` (the CPU preset per sample).
        device: where the batch comes out (and, with ``decode="cuda"``, is decoded).
        normalize: ``True``: float32 ``(x / 255 - mean) / std``; ``False``: uint8 pixels.
        mean / std: per-channel statistics for ``normalize``.
        reduce / max_pixels / allow_truncated: as :class:`RandomResizedCrop` (the
            pixel limit and the truncation check apply on both paths; ``reduce`` only
            to the CPU path).
        generator / seed: the transform's own source of randomness.
        key: the entry holding the encoded images when called on a batch dict; its
            ``"path"`` entry, when present, names the files in errors.

    Example:
        >>> from PIL import Image; import io
        >>> buf = io.BytesIO(); Image.new("RGB", (80, 60), (9, 99, 199)).save(buf, "JPEG")
        >>> t = GpuRandomResizedCrop(32, device="cpu", decode="cpu", seed=0)
        >>> out = t([buf.getvalue()] * 4)
        >>> out.shape, out.dtype, out.device.type
        (torch.Size([4, 3, 32, 32]), torch.float32, 'cpu')
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        antialias: bool = True,
        decode: str = "cuda",
        device: str | torch.device = "cuda",
        normalize: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        reduce: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        allow_truncated: bool = False,
        generator: torch.Generator | None = None,
        seed: int = 0,
        key: str = "image",
    ) -> None:
        self.preset = RandomResizedCrop(size, scale=scale, ratio=ratio, hflip=hflip, antialias=antialias,
                                        reduce=reduce, mode="RGB", max_pixels=max_pixels,
                                        allow_truncated=allow_truncated, key=key)
        if decode not in _DECODES:
            raise ValueError(f"decode must be one of {_DECODES}, got {decode!r}")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cuda' or 'cpu', got {device!r}") from None
        if decode == "cuda" and dev.type != "cuda":
            raise ValueError(f"decode='cuda' decodes on device, which must then be a CUDA device, got "
                             f"device={device!r}; pass decode='cpu' to decode on the CPU")
        m = torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.as_tensor(std, dtype=torch.float32).flatten()
        if m.numel() != 3 or s.numel() != 3 or bool((s == 0).any()):
            raise ValueError(f"mean and std must be 3 values each (RGB), std without zeros, got "
                             f"mean={mean!r}, std={std!r}")
        _check_generator("generator", generator)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.decode = decode
        self.device = dev
        self.normalize = bool(normalize)
        self.mean, self.std = tuple(m.tolist()), tuple(s.tolist())
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.key = key
        self._lock = threading.Lock()
        self._resolved: tuple[torch.device, str | None] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.preset.size

    # ------------------------------------------------------------------ which path

    @property
    def fallback_reason(self) -> str | None:
        """Why batches are decoded on the CPU (``None``: on the GPU). Decided on first use."""
        return self._resolve()[1]

    @property
    def output_device(self) -> torch.device:
        """Where batches come out: ``device``, or the CPU when CUDA is absent."""
        return self._resolve()[0]

    def _resolve(self) -> tuple[torch.device, str | None]:
        with self._lock:
            if self._resolved is None:
                self._resolved = self._decide()
                reason = self._resolved[1]
                if reason is not None and self.decode == "cuda":
                    warnings.warn(f"GpuRandomResizedCrop: {reason}; decoding on the CPU instead "
                                  f"(RandomResizedCrop per sample, same draws)",
                                  GpuDecodeFallbackWarning, stacklevel=3)
            return self._resolved

    def _decide(self) -> tuple[torch.device, str | None]:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            return torch.device("cpu"), "CUDA is not available (batches come out on the CPU)"
        if self.decode == "cpu":
            return self.device, "decode='cpu' was asked for"
        try:
            _probe_nvjpeg(self.device)
        except Exception as exc:  # any failure of the tiny decode means no usable nvJPEG
            first = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return self.device, f"torchvision cannot decode JPEGs on {self.device} ({first})"
        return self.device, None

    # ------------------------------------------------------------------ draws

    def draw(self, sizes: Sequence[tuple[int, int]], *, generator: torch.Generator | None = None,
             generators: Sequence[torch.Generator] | None = None) -> list[CropDraw]:
        """Each sample's ``(top, left, height, width, flip)`` for images of ``(height, width)``.

        The CPU preset's own draws (NOTE [gpu decode draws]): with one generator,
        sample after sample, as calling the preset on each sample in turn.
        """
        gens = self._generators(len(sizes), generator, generators)
        p = self.preset
        out: list[CropDraw] = []
        for (height, width), g in zip(sizes, gens):
            out.append(p.draw(height, width, g))
        return out

    def _generators(self, n: int, generator: torch.Generator | None,
                    generators: Sequence[torch.Generator] | None) -> list[torch.Generator]:
        if generators is None:
            _check_generator("generator", generator)
            return [generator if generator is not None else self.generator] * n
        if generator is not None:
            raise ValueError("pass generator= (one stream for the batch) or generators= (one per "
                             "sample), not both")
        gens = list(generators)
        if len(gens) != n:
            raise ValueError(f"generators must hold one generator per sample: the batch has {n} "
                             f"samples, generators {len(gens)}")
        for i, g in enumerate(gens):
            _check_generator(f"generators[{i}]", g)
        return gens

    # ------------------------------------------------------------------ call

    def __call__(self, batch: Any, *, generator: torch.Generator | None = None,
                 generators: Sequence[torch.Generator] | None = None) -> Any:
        """Finish a batch: a list of encoded images, or a batch dict holding one at ``key``.

        Returns the ``(N, 3, *size)`` tensor (float32 normalized, or uint8), or the
        batch dict with ``key`` replaced by it.
        """
        sources, paths, d = self._split(batch)
        gens = self._generators(len(sources), generator, generators)
        dev, reason = self._resolve()
        if reason is None:
            out = self._on_gpu(sources, paths, gens, dev)
        else:
            out = self._on_cpu(sources, paths, gens, dev)
        return out if d is None else {**d, self.key: out}

    def _split(self, batch: Any) -> tuple[list[Any], list[Any] | None, Mapping[str, Any] | None]:
        d = None
        images = batch
        if isinstance(batch, Mapping):
            if self.key not in batch:
                raise KeyError(f"batch dict has no {self.key!r} key (keys: {sorted(map(str, batch))}); "
                               f"pass key= to name the entry holding the encoded images")
            d, images = batch, batch[self.key]
        if isinstance(images, (str, bytes, bytearray, memoryview)) or not isinstance(images, Sequence):
            raise TypeError(f"GpuRandomResizedCrop expects a list of encoded images (bytes or paths), "
                            f"got {type(images).__name__}; load with ImageFolder(decode=False) so the "
                            f"batch holds the files' bytes")
        sources = list(images)
        if not sources:
            raise ValueError("GpuRandomResizedCrop got an empty batch; it needs at least one image")
        for i, s in enumerate(sources):
            if not isinstance(s, ENCODED):
                raise TypeError(f"sample {i} of the batch is a {type(s).__name__}, not an encoded "
                                f"image (bytes or a path); decode=False on the dataset keeps the bytes")
        paths = d.get("path") if d is not None else None
        if not (isinstance(paths, Sequence) and not isinstance(paths, str) and len(paths) == len(sources)):
            paths = None
        return sources, (list(paths) if paths is not None else None), d

    def _named(self, i: int, source: Any, paths: list[Any] | None) -> Any:
        """``source`` as the preset takes it, named by the batch's path when it has one."""
        if paths is None:
            return source
        return {self.key: source, "path": paths[i]}

    def _on_cpu(self, sources: list[Any], paths: list[Any] | None, gens: list[torch.Generator],
                dev: torch.device) -> torch.Tensor:
        images = []
        for i, (src, g) in enumerate(zip(sources, gens)):
            out = self.preset(self._named(i, src, paths), generator=g)
            images.append(out[self.key] if paths is not None else out)
        x = torch.stack(images).to(dev, non_blocking=dev.type == "cuda")
        return self._finish(x)

    def _on_gpu(self, sources: list[Any], paths: list[Any] | None, gens: list[torch.Generator],
                dev: torch.device) -> torch.Tensor:
        decode = self.preset.decode
        headers = [decode.header(src, self._named(i, src, paths) if paths is not None else None)
                   for i, src in enumerate(sources)]
        draws = self.draw([(h.height, h.width) for h in headers], generators=gens)
        decoded = _decode_jpegs(headers, dev)
        h_out, w_out = self.size
        out = torch.empty((len(headers), 3, h_out, w_out), dtype=torch.float32, device=dev)
        for i, (header, (top, left, h, w, flip)) in enumerate(zip(headers, draws)):
            whole = decoded.get(i)
            if whole is not None:
                crop = whole[:, top:top + h, left:left + w]
            else:  # not a JPEG, or nvJPEG refused it: the CPU decoder (its errors name the file)
                crop = decode.region(header, (top, left, h, w)).to(dev, non_blocking=True)
            x = crop.unsqueeze(0).float()
            if (h, w) != (h_out, w_out):
                x = torch.nn.functional.interpolate(x, size=[h_out, w_out], mode="bilinear",
                                                    align_corners=False, antialias=self.preset.antialias)
            out[i] = x[0].flip(-1) if flip else x[0]
        if not self.normalize:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return F.to_float_normalize(out, self.mean, self.std)  # out holds 0..255 floats

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch on its device -> normalized float32, or as is when ``normalize=False``."""
        return F.to_float_normalize(x, self.mean, self.std) if self.normalize else x

    def __repr__(self) -> str:
        p = self.preset
        return (f"GpuRandomResizedCrop(size={p.size}, scale={p.scale}, ratio={p.ratio}, hflip={p.hflip}, "
                f"decode={self.decode!r}, device={str(self.device)!r}, normalize={self.normalize})")


def _check_generator(name: str, g: Any) -> None:
    if g is None:
        return
    if not isinstance(g, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(g).__name__}")
    if g.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU generator (the crop draws are the CPU preset's), "
                         f"got one on {g.device}; use torch.Generator() with manual_seed(...)")


def _decode_jpegs(headers: list[EncodedImage], dev: torch.device) -> dict[int, torch.Tensor]:
    """The JPEGs among ``headers`` decoded on ``dev`` in one nvJPEG call: ``{index: (3, H, W)}``.

    A batch that nvJPEG refuses as a whole (a file it cannot read, such as CMYK)
    comes back empty, and each sample is then decoded on the CPU.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    index = [i for i, h in enumerate(headers) if h.format == "JPEG"]
    if not index:
        return {}
    data = [torch.frombuffer(bytearray(headers[i].data), dtype=torch.uint8) for i in index]
    # NOTE [nvJPEG stream hazard]: torchvision allocates the outputs on the current
    # stream, and nvJPEG's hardware decoder (Hopper has one) may write them before
    # the work already queued on that stream has run; a block the caching allocator
    # just recycled can still be read by those kernels, which then see the decoded
    # pixels (pytorch/vision#9606, unfixed in torchvision). Draining the stream first
    # removes the hazard; the decode host-synchronizes before returning anyway.
    if dev.type == "cuda":
        torch.cuda.current_stream(dev).synchronize()
    try:
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)
    except RuntimeError:
        return {}
    return dict(zip(index, images))


def _probe_nvjpeg(dev: torch.device) -> None:
    """Decode a tiny JPEG on ``dev``; raises whatever torchvision raises when it cannot."""
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (40, 120, 200)).save(buf, "JPEG")
    data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    out = decode_jpeg([data], mode=ImageReadMode.RGB, device=dev)
    if out[0].shape != (3, 16, 16) or out[0].device.type != dev.type:
        raise RuntimeError(f"decode_jpeg returned {tuple(out[0].shape)} on {out[0].device}")
