"""Pure math of the batch transforms (no randomness, no state).

Every function takes a whole ``(N, C, H, W)`` batch and, where a parameter
varies per sample, a 1-D tensor of ``N`` values. The classes in
:mod:`dataforge.transforms.batch` draw those values and call these.

All functions are differentiable where the operation is (flip, brightness,
contrast and normalize are arithmetic or selections; clamping has the usual
zero gradient outside the range) and run on any device.

Definitions follow ``torchvision.transforms.v2.functional`` on float images so
results agree with per-sample torchvision calls:

- brightness: ``clamp(x * b, 0, 1)``;
- contrast: ``clamp(c * x + (1 - c) * mean(gray(x)), 0, 1)`` with the ITU-R 601
  luma ``gray = 0.2989 R + 0.587 G + 0.114 B`` averaged over the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "hflip",
    "normalize",
    "rgb_to_grayscale",
    "to_float",
    "to_float_normalize",
]


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32, scale: bool = True) -> torch.Tensor:
    """Convert a uint8 batch to ``dtype``, dividing by 255 when ``scale``."""
    out = x.to(dtype)
    return out.div_(255.0) if scale else out


def _per_sample(values: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcastable ``(N, 1, 1, 1)`` view of per-sample ``values`` on ``x``'s device/dtype."""
    t = torch.as_tensor(values, device=x.device, dtype=x.dtype)
    return t.reshape(-1, *([1] * (x.ndim - 1))) if t.ndim else t


def hflip(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Flip samples left-right: all of them, or those where ``mask`` (bool ``(N,)``) is true."""
    flipped = x.flip(-1)
    if mask is None:
        return flipped
    m = mask.to(device=x.device, dtype=torch.bool).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(m, flipped, x)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(N, 1, H, W)`` of an RGB float batch (ITU-R 601, as torchvision); 1 channel passes."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Multiply each sample by its brightness ``factor`` and clamp to ``[0, 1]``."""
    return (x * _per_sample(factor, x)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Blend each sample with the mean of its grayscale image and clamp to ``[0, 1]``."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    c = _per_sample(factor, x)
    return (c * x + (1.0 - c) * mean).clamp(0.0, 1.0)


def _channels_last_rows(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """A 2-D view ``(rows, C * k)`` of a channels-last CPU batch, and ``k`` (or ``None``).

    NOTE [channels-last per-channel ops]: on the CPU, a ``(C, 1, 1)`` operand
    broadcast over a channels-last batch makes the innermost loop C = 3 elements
    long, which does not vectorize: measured 5x slower than on a contiguous batch
    (64 x 3 x 224 x 224: 10 ms per op instead of 2). Seen as rows of ``k`` whole
    pixels (``C * k`` contiguous values) with the per-channel values tiled ``k``
    times, the same arithmetic runs at full speed, with identical results.
    """
    if (
        x.device.type != "cpu" or x.ndim != 4 or x.is_contiguous()
        or not x.is_contiguous(memory_format=torch.channels_last)
    ):
        return None
    c = x.shape[1]
    pixels = x.numel() // c
    k = next(k for k in (256, 128, 64, 32, 16, 8, 4, 2, 1) if pixels % k == 0)
    return x.permute(0, 2, 3, 1).view(-1).view(-1, c * k), k


def _channels_last_into(out: torch.Tensor, x: torch.Tensor, ops: Sequence[tuple[str, torch.Tensor]]) -> bool:
    """``out = x`` then each in-place ``(method, per-channel values)`` of ``ops``, on the fast
    channels-last view (NOTE [channels-last per-channel ops]); False (nothing done) when
    ``out`` is not a channels-last CPU batch."""
    rows, src = _channels_last_rows(out), _channels_last_rows(x)
    if rows is None or src is None:
        return False
    view, k = rows
    view.copy_(src[0])
    for method, values in ops:
        getattr(view, method)(values.flatten().repeat(k))
    return True


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).reshape(shape)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).reshape(shape)
    if _channels_last_rows(x) is not None:  # allocate only for the fast path
        out = torch.empty_like(x)  # keeps the channels-last layout
        if _channels_last_into(out, x, [("sub_", m), ("div_", s)]):
            return out
    return torch.sub(x, m).div_(s)


def to_float_normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
    scale: bool = True,
) -> torch.Tensor:
    """``normalize(to_float(x, dtype, scale), mean, std)`` in one output buffer.

    NOTE [fused normalize]: computed as ``x * (1 / (255 * std)) - mean / std`` in
    place on the converted batch: one allocation instead of three. On the CPU a
    fresh batch-sized float buffer costs page faults that dominate the arithmetic,
    so this is about 2.5x faster there; on CUDA it launches fewer kernels. Equal to
    the unfused result up to float rounding. On the CPU a batch-sized output is
    huge-page backed (NOTE [huge pages] in ``dataforge._memory``), another ~3x.

    NOTE [normalize in one thread]: on the CPU the pass runs with one intra-op
    thread. It is memory-bound, and in a training loop the other cores are busy
    loading the next batches: an OpenMP team spun up for it waits on cores the
    workers hold (measured on 2 cores, a 64x3x224x224 batch: 12 ms with one
    thread, 34 ms with two; 2 loader threads busy: 24-38 against 64-84 ms).
    """
    if x.device.type == "cpu" and torch.get_num_threads() > 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return to_float_normalize(x, mean, std, dtype, scale)
        finally:
            torch.set_num_threads(threads)
    shape = (-1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=torch.float64).reshape(shape)
    m = torch.as_tensor(mean, device=x.device, dtype=torch.float64).reshape(shape)
    mul = (1.0 / (s * 255.0) if scale else 1.0 / s).to(dtype)
    sub = (m / s).to(dtype)
    if x.device.type == "cpu" and x.dtype != dtype:
        from dataforge._memory import empty_like_cpu

        out = empty_like_cpu(x, dtype)
        if _channels_last_into(out, x, [("mul_", mul), ("sub_", sub)]):
            return out
        out.copy_(x)
    else:
        out = x.to(dtype)
    return out.mul_(mul).sub_(sub)
