"""``WeightedSampler``: ``WeightedRandomSampler`` without the 2^24 limit, seeded and sharded."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dataforge.samplers.base import EpochSampler, check_int
from dataforge.samplers.draws import alias_draw, alias_table, gumbel_top_k
from dataforge.samplers.functional import index_dtype
from dataforge.samplers.quota_stream import keyed_rng


def as_weights(weights: Any, name: str = "weights") -> np.ndarray:
    """Validate sampling weights and return them as a 1-D float64 array.

    Raises:
        ValueError: empty, not 1-D, not numbers, negative / NaN / infinite values
            (the first offending index and value are named), or all zero.
    """
    if isinstance(weights, torch.Tensor):
        arr = weights.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            arr = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a 1-D sequence of numbers: {e}") from e
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one weight per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass one non-negative weight per sample")
    lo, hi = float(arr.min()), float(arr.max())  # NaN propagates: two passes decide
    if not (math.isfinite(lo) and math.isfinite(hi) and lo >= 0):
        bad = ~np.isfinite(arr)
        bad |= np.where(bad, False, arr < 0)
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} must be finite and >= 0, got {name}[{i}]={arr[i].item()!r}"
        )
    if hi == 0:
        raise ValueError(f"{name} are all zero; at least one sample needs a positive weight")
    return arr


class WeightedSampler(EpochSampler[int]):
    """Draw ``num_samples`` indices with probability proportional to ``weights``.

    A drop-in for ``torch.utils.data.WeightedRandomSampler`` (same first three
    arguments) without its 2^24-category limit, with an explicit seed,
    ``set_epoch``, exact resume and rank splitting. With replacement, indices come
    from Walker's alias table (8 bytes per index, O(1) per draw; the epoch is
    drawn chunk by chunk, so its length costs no memory); without replacement,
    from Gumbel-top-k keys (``k`` distinct indices in the order of successive
    weighted draws). Zero-weight indices are never drawn.

    Args:
        weights: one non-negative weight per sample (sequence, array or tensor).
        num_samples: indices per epoch over all ranks (each rank yields its share).
        replacement: draw with replacement (default) or not.
        seed: base seed; the order depends only on ``(seed, epoch)``.
        num_replicas: ranks (default from ``torch.distributed``, else 1).
        rank: this rank (default from ``torch.distributed``, else 0).
        drop_last: drop the epoch's tail instead of padding so ranks get equal shares.

    Example:
        >>> s = WeightedSampler([0.0, 1.0, 3.0], num_samples=6, seed=0)
        >>> len(s), 0 in list(s)
        (6, False)
        >>> sorted(WeightedSampler([1, 0, 2, 5], 3, replacement=False, seed=1))
        [0, 2, 3]
    """

    _draw_chunk = 1 << 20  # i.i.d. draws per generated chunk

    def __init__(
        self,
        weights: Any,
        num_samples: int,
        replacement: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.weights = as_weights(weights)
        self.num_samples = check_int("num_samples", num_samples, minimum=1)
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement must be a bool, got {replacement!r}")
        self.replacement = replacement
        positive = 0 if replacement else int(np.count_nonzero(self.weights > 0))
        if not replacement and self.num_samples > positive:
            raise ValueError(
                f"num_samples={self.num_samples} exceeds the {positive} indices with a "
                "positive weight, which is all that replacement=False can draw; lower "
                "num_samples or pass replacement=True"
            )
        self._alias = alias_table(self.weights) if replacement else None

    def _global_len(self) -> int:
        return self.num_samples

    def _global_chunks(self, start: int) -> Iterator[np.ndarray]:
        dtype = index_dtype(len(self.weights))
        if self._alias is None:  # without replacement: k distinct draws, bounded by len(weights)
            order = gumbel_top_k(self.weights, self.num_samples, self.generator())
            yield order[start:].astype(dtype)
            return
        # NOTE [chunked i.i.d. draws]: draws are independent, so chunk j of the epoch
        # is drawn from its own generator keyed by (seed, epoch, j): memory O(chunk)
        # and resuming at any position starts at its chunk.
        size = self._draw_chunk
        for j in range(start // size, -(-self.num_samples // size)):
            m = min(size, self.num_samples - j * size)
            rng = keyed_rng(self.seed, self.epoch, j)
            out = alias_draw(*self._alias, m, rng, dtype)
            yield out[start - j * size :] if j == start // size else out

    def _state_fields(self) -> dict[str, Any]:
        return {
            "num_weights": len(self.weights),
            "num_samples": self.num_samples,
            "replacement": self.replacement,
        }
