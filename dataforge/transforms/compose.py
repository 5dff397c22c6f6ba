"""Compose per-sample transforms: ``Compose``, ``RandomApply``, ``OneOf``.

Per-sample callables take one sample (a bare image or a sample dict) and an
optional keyword ``generator: torch.Generator``. The helpers here pass the
generator on to every child that accepts one, so a whole pipeline draws its
randomness from one explicit stream.

NOTE [per-sample randomness]: reproducibility must not depend on which worker
runs a sample. There are two equivalent ways to get it:

1. pass ``generator=`` to the call (for example one made by
   ``dataforge._rng.make_generator(sample_seed(seed, epoch, index))``); or
2. ``MapDataset.map(fn, seed=...)``: an ``fn`` with a ``generator`` parameter is
   called with ``generator=make_generator(sample_seed(seed, epoch, index))``; any
   other runs inside ``dataforge._rng.seeded_rng(sample_seed(seed, epoch, index))``,
   so the global RNGs that torchvision and albumentations use are seeded per
   sample and restored afterwards (one such call at a time across threads:
   NOTE [global RNGs under threads] in :mod:`dataforge._rng`).

Without either, random draws fall back to torch's global RNG, exactly as
torchvision does.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from dataforge._rng import GLOBAL_RNG_LOCK, accepts_generator, seeded_rng

Transform = Callable[..., Any]

__all__ = [
    "Compose",
    "OneOf",
    "RandomApply",
    "accepts_generator",
    "call",
    "draw_seed",
    "torch_rng_seeded",
]


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A 63-bit seed drawn from ``generator`` (or torch's global RNG when ``None``)."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())


@contextlib.contextmanager
def torch_rng_seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU generator seeded from ``seed``, then restore it.

    A few microseconds, against about half a millisecond for
    :func:`dataforge._rng.seeded_rng` (which also seeds numpy, ``random`` and every
    accelerator): enough for transforms that draw only from torch's CPU RNG, such
    as all torchvision v2 transforms. Holds ``GLOBAL_RNG_LOCK`` for the block
    (NOTE [global RNGs under threads] in :mod:`dataforge._rng`).
    """
    with GLOBAL_RNG_LOCK:
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            yield
        finally:
            gen.set_state(state)


def call(
    fn: Transform,
    x: Any,
    generator: torch.Generator | None,
    *,
    takes_generator: bool | None = None,
) -> Any:
    """Call ``fn(x)``, drawing its randomness from ``generator`` when one is given.

    A transform that accepts ``generator=`` gets it directly; any other (a
    torchvision v2 transform, a plain function) runs inside
    :func:`dataforge._rng.seeded_rng` seeded from ``generator``, so its global-RNG
    draws become reproducible without disturbing the caller's RNG streams.
    """
    if generator is None:
        return fn(x)
    if takes_generator is None:
        takes_generator = accepts_generator(fn)
    if takes_generator:
        return fn(x, generator=generator)
    with seeded_rng(draw_seed(generator)):
        return fn(x)


def _check_callable(name: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}; pass a transform")


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


class Compose:
    """Apply transforms in order, passing one ``generator`` through all of them.

    Args:
        transforms: the per-sample callables, applied first to last.

    Example:
        >>> t = Compose([lambda x: x + 1, lambda x: x * 10])
        >>> t(1)
        20
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
            raise TypeError(
                f"transforms must be a list of callables, got {type(transforms).__name__}; "
                "wrap a single transform in a list"
            )
        for i, t in enumerate(transforms):
            _check_callable(f"transforms[{i}]", t)
        self.transforms = list(transforms)
        self._takes = [accepts_generator(t) for t in self.transforms]
        # Takes an encoded image (bytes / path) when its first transform does (see
        # ImageFolder(decode="auto") and transforms.image.RandomResizedCrop).
        self.accepts_encoded = bool(self.transforms) and bool(
            getattr(self.transforms[0], "accepts_encoded", False)
        )

    def __call__(self, x: Any, *, generator: torch.Generator | None = None) -> Any:
        for t, takes in zip(self.transforms, self._takes):
            x = call(t, x, generator, takes_generator=takes)
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"{type(self).__name__}([\n{inner}\n])"


class RandomApply:
    """Apply ``transform`` with probability ``p``, else return the input unchanged.

    Args:
        transform: the per-sample callable to apply.
        p: probability of applying it.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t = RandomApply(lambda x: -x, p=1.0)
        >>> t(3, generator=g)
        -3
    """

    def __init__(self, transform: Transform, p: float = 0.5) -> None:
        _check_callable("transform", transform)
        self.transform = transform
        self.p = _check_p(p)
        self._takes = accepts_generator(transform)

    def __call__(self, x: Any, *, generator: torch.Generator | None = None) -> Any:
        if torch.rand((), generator=generator).item() >= self.p:
            return x
        return call(self.transform, x, generator, takes_generator=self._takes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r}, p={self.p})"


class OneOf:
    """Apply exactly one of ``transforms``, picked at random per sample.

    Args:
        transforms: the candidate per-sample callables.
        weights: relative probabilities (default: uniform); need not sum to 1.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t = OneOf([lambda x: x + 1, lambda x: x - 1])
        >>> t(0, generator=g) in (1, -1)
        True
    """

    def __init__(self, transforms: Sequence[Transform], weights: Sequence[float] | None = None) -> None:
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence) or not transforms:
            raise TypeError(
                f"transforms must be a non-empty list of callables, got {transforms!r}"
            )
        for i, t in enumerate(transforms):
            _check_callable(f"transforms[{i}]", t)
        if weights is None:
            weights = [1.0] * len(transforms)
        w = [float(v) for v in weights]
        if len(w) != len(transforms) or any(v < 0 for v in w) or sum(w) <= 0:
            raise ValueError(
                f"weights must be {len(transforms)} non-negative numbers with a positive sum "
                f"(one per transform), got {list(weights)!r}"
            )
        self.transforms = list(transforms)
        self.weights = w
        total = sum(w)
        self._cdf = list(itertools.accumulate(v / total for v in w))
        self._takes = [accepts_generator(t) for t in self.transforms]

    def __call__(self, x: Any, *, generator: torch.Generator | None = None) -> Any:
        u = torch.rand((), dtype=torch.float64, generator=generator).item()
        i = min(bisect.bisect_right(self._cdf, u), len(self._cdf) - 1)
        return call(self.transforms[i], x, generator, takes_generator=self._takes[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r}, weights={self.weights})"
