"""Resizing decoded crops as torchvision v2 does, one at a time or a batch in one native call.

:func:`resize_crop` is ``F.resize`` of one crop without v2's dispatch (NOTE [direct
resize]); :func:`resize_into` resizes (and flips, or center-crops) a batch's crops into
one uint8 batch with ``dataforge._crops`` (NOTE [one native call per batch] in
``dataforge/_crops.cpp``), the same aten call per crop, so the same pixels. The presets
(:mod:`dataforge.transforms.presets`) use both.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

try:  # NOTE [one native call per batch] in dataforge/_crops.cpp; optional
    from dataforge import _crops  # type: ignore[attr-defined]
except ImportError:  # not built, or its torch's symbols are gone
    _crops = None
if _crops is not None and _crops.torch_version != torch.__version__:
    _crops = None  # built against another torch: rebuild with setup.py build_ext --inplace

HAVE_BATCH_RESIZE = _crops is not None


def batch_resize_available() -> bool:
    """Whether :func:`resize_into` can run here (``dataforge._crops`` built and loadable)."""
    return _crops is not None


@functools.cache
def native_uint8_bilinear() -> bool:
    """torchvision's ``_do_native_uint8_resize_on_cpu(BILINEAR)``: resize uint8 natively."""
    import platform

    return (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            or platform.machine() in ("aarch64", "arm64"))


def aten_resize(antialias: bool, namespace: Any = None) -> Any:
    """The aten bilinear resize ``interpolate`` calls for 4-D input: ``(x, size,
    align_corners, scale_factors)``, from ``namespace`` (``torch._C._nn``);
    ``interpolate`` itself where a torch lacks it."""
    name = "_upsample_bilinear2d_aa" if antialias else "upsample_bilinear2d"
    found = getattr(torch._C._nn if namespace is None else namespace, name, None)
    if found is not None:
        return found
    return lambda x, size, align_corners, scale_factors: torch.nn.functional.interpolate(
        x, size=size, mode="bilinear", align_corners=align_corners, antialias=antialias)


_RESIZE = {True: aten_resize(True), False: aten_resize(False)}


def resize_crop(crop: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """``F.resize(crop[0], size, antialias=antialias)`` for a decoded crop given as a batch
    of one ``(1, C, h, w)`` (``Decode.region(..., batch=True)``), without v2's dispatch.

    NOTE [direct resize]: for a uint8 CPU image where torchvision resizes natively
    in uint8, this makes the same aten call as v2's ``resize_image`` (through
    ``interpolate``, with its channels-last restride), so the pixels are the same
    (tested); it skips ~20 us per sample of Python dispatch and argument checks,
    which hold the GIL that the thread engine's workers share, and the views around
    the call (NOTE [GIL transitions] in :mod:`dataforge.transforms.presets`). Anything
    else goes to ``F.resize``.
    """
    _, c, h, w = crop.shape
    if (h, w) == size:
        return crop[0]
    if not (native_uint8_bilinear() and crop.dtype == torch.uint8 and crop.device.type == "cpu"
            and h * w > 0):
        from torchvision.transforms.v2 import functional as F

        return F.resize(crop[0], list(size), antialias=antialias)
    if crop.stride() != (c * h * w, 1, w * c, c):  # not the region decoder's dense layout:
        crop = crop[0].reshape(1, c, h, w)  # the view v2's resize_image makes, so its layout out
    out = _RESIZE[antialias](crop, list(size), False, None)
    return torch.from_numpy(out.numpy()[0])  # the (C, H, W) view, made in numpy


def batch_channels(crops: list[torch.Tensor]) -> int | None:
    """The crops' channel count when one native call can resize them all (the extension is
    there, torchvision resizes uint8 natively, and they are uint8 on the CPU with one
    channel count), else None."""
    channels = {c.shape[1] for c in crops}
    ok = (_crops is not None and native_uint8_bilinear() and len(channels) == 1
          and all(c.dtype == torch.uint8 and c.device.type == "cpu" for c in crops))
    return channels.pop() if ok else None


def resize_into(crops: list[torch.Tensor], flips: list[bool], size: tuple[int, int], channels: int,
                 antialias: bool, windows: list[tuple[int, int, int, int]] | None = None,
                 ) -> list[torch.Tensor]:
    """The rows of one uint8 batch made by ``_crops.resize_into`` (the same aten call per
    crop as :func:`resize_crop`, so the same pixels; NOTE [one native call per batch])."""
    # channels-last, the layout of a single call's result: each row is copied, not
    # transposed, and the rows stack as single results do
    assert _crops is not None  # batch_channels said so
    out = torch.empty((len(crops), *size, channels), dtype=torch.uint8).permute(0, 3, 1, 2)
    _crops.resize_into(crops, flips, out, antialias, windows)
    return list(out.unbind(0))


def center_window(height: int, width: int, resize: int, size: list[int]) -> tuple[int, int, int, int]:
    """v2 ``Resize(resize)`` then ``CenterCrop(size)`` of a ``height x width`` image as
    ``(resized height, resized width, top, left)``: the shorter side to ``resize``, the
    longer in proportion (truncated), the crop's corner rounded as v2 rounds it."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    new_h, new_w = (new_long, resize) if width <= height else (resize, new_long)
    return new_h, new_w, int(round((new_h - size[0]) / 2.0)), int(round((new_w - size[1]) / 2.0))
