"""Labels and splits: validation of class-id arrays and deterministic (stratified) partitions.

Pure functions used by ``MapDataset.split`` and the sources; apart from the
dataset classes so each file holds one concept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def as_labels(labels: Any, length: int, name: str = "labels") -> np.ndarray:
    """Validate ``labels`` into a read-only int64 array of ``length`` entries."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != length:
        raise ValueError(
            f"{name} must be a 1-D sequence with one int per item ({length}), "
            f"got shape {arr.shape}"
        )
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= 2**63:
        raise ValueError(f"{name} must fit int64, got the class id {int(arr.max())}")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            if arr.size and float(np.abs(arr).max()) >= 2.0**63:  # astype would wrap silently
                raise ValueError(f"{name} must fit int64, got the class id {float(np.abs(arr).max())!r}")
            arr = arr.astype(np.int64)
        else:
            raise TypeError(
                f"{name} must be integer class ids, got dtype {arr.dtype}; "
                "map string labels to ids first (sorted(set(labels)).index)"
            )
    out = arr.astype(np.int64, copy=True)
    out.setflags(write=False)
    return out


def _allocate(n: int, fractions: np.ndarray, ensure_each: bool) -> np.ndarray:
    """Split ``n`` into integer counts close to ``fractions * n`` (largest remainder)."""
    exact = fractions * n
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    positive = np.flatnonzero(fractions > 0)
    if ensure_each and n >= len(positive):
        # NOTE [every class in every part]: move one item from the largest part to
        # each empty part that asked for a share, when the class is big enough.
        for k in positive:
            if counts[k] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[k] += 1
    return counts


def split_indices(
    n: int, fractions: Sequence[float], *, seed: int = 0, labels: np.ndarray | None = None
) -> list[np.ndarray]:
    """Deterministic random partition of ``range(n)`` (stratified when ``labels``)."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (Sequence, np.ndarray)):
        raise TypeError(f"fractions must be a sequence of floats such as [0.8, 0.2], got {fractions!r}")
    try:
        fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"fractions must be a sequence of floats such as [0.8, 0.2], got {fractions!r}") from None
    if len(fr) == 0 or not np.all(np.isfinite(fr)) or np.any(fr < 0):
        raise ValueError(f"fractions must be non-negative floats such as [0.8, 0.2], got {list(fractions)!r}")
    if abs(float(fr.sum()) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must sum to 1 (within 1e-6), got {list(fractions)!r} summing to "
            f"{float(fr.sum())!r}; for example [0.8, 0.1, 0.1]"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    if labels is None:
        perm = rng.permutation(n)
        parts = np.split(perm, np.cumsum(_allocate(n, fr, False))[:-1])
    else:
        pieces: list[list[np.ndarray]] = [[] for _ in fr]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            counts = _allocate(len(members), fr, True)
            for k, piece in enumerate(np.split(members, np.cumsum(counts)[:-1])):
                pieces[k].append(piece)
        parts = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in pieces]
    return [np.sort(p).astype(np.int64) for p in parts]
