"""Shared test helpers.

``run_test_save_load_state`` is the one resume test applied to every stateful
component (samplers, iterable datasets, loaders), after torchdata's helper of
the same name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch


def to_plain(x: Any) -> Any:
    """Turn tensors / arrays / nested containers into comparable Python values."""
    if isinstance(x, torch.Tensor):
        return ("tensor", str(x.dtype), x.tolist())
    if isinstance(x, np.ndarray):
        return ("ndarray", str(x.dtype), x.tolist())
    if isinstance(x, dict):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def run_test_save_load_state(
    make: Callable[[], Any],
    checkpoints: Iterable[int] | None = None,
    *,
    epochs: int = 1,
) -> None:
    """Check that a stateful iterable resumes exactly.

    ``make()`` builds a fresh component with ``__iter__``, ``state_dict()`` and
    ``load_state_dict()``. For each checkpoint k (default: 0, 1, middle, last, and
    after the end), the state taken after k items of an epoch, round-tripped
    through JSON and loaded into a fresh component, must yield exactly the rest of
    the uninterrupted epoch. With ``set_epoch`` available, the check runs for each
    of ``epochs`` epochs.
    """
    has_epoch = hasattr(make(), "set_epoch")
    for epoch in range(epochs):
        ref = make()
        if has_epoch:
            ref.set_epoch(epoch)
        full = [to_plain(x) for x in ref]
        n = len(full)
        ks = sorted(set(checkpoints if checkpoints is not None else [0, 1, n // 2, max(n - 1, 0)]))
        for k in ks:
            if k > n:
                continue
            a = make()
            if has_epoch:
                a.set_epoch(epoch)
            it = iter(a)
            head = [to_plain(next(it)) for _ in range(k)]
            state = json.loads(json.dumps(a.state_dict()))
            b = make()
            b.load_state_dict(state)
            rest = [to_plain(x) for x in b]
            assert head == full[:k], f"epoch {epoch}: first {k} items differ from the reference"
            assert rest == full[k:], (
                f"epoch {epoch}: resuming after {k} of {n} items gave {len(rest)} items "
                f"that differ from the uninterrupted run's last {n - k}"
            )


def dense_hwc(x: torch.Tensor) -> bool:
    """(C, H, W) whose memory is one dense HWC block (channels-last; torch only names it for 4-D)."""
    c, h, w = x.shape
    return x.stride() == (1, w * c, c)


def torchvision_crop(image: torch.Tensor, size: int, draw: tuple[int, int, int, int, bool]) -> torch.Tensor:
    """torchvision v2's resized crop (antialiased) and horizontal flip of ``image`` for one
    ``RandomResizedCrop.draw``: the reference the preset's pixels must equal."""
    from torchvision.transforms import v2

    top, left, h, w, flip = draw
    out = v2.functional.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return v2.functional.horizontal_flip(out) if flip else out
