"""Explicit, reproducible randomness.

NOTE [per-sample seeds]: an augmentation must depend only on (seed, epoch,
index), never on which worker ran it or how many workers there are. Every
per-sample random draw is made from a seed derived here.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import threading
from collections.abc import Iterator

import numpy as np
import torch

_MASK64 = (1 << 64) - 1

# NOTE [global RNGs under threads]: torch's default CPU generator, numpy's global
# RandomState and ``random``'s are process-wide, so two threads of the thread engine
# that each seed them for "their" sample would draw from each other's streams (seen:
# half the samples of a seeded map differed from the process engine's). Every block
# that seeds and uses the global RNGs (``seeded_rng``,
# ``transforms.compose.torch_rng_seeded``) holds this lock, so such blocks run one
# at a time; transforms that take ``generator=`` draw from their own generator and
# need no lock, which is why ``MapDataset.map(fn, seed=)`` hands one to an ``fn``
# with a ``generator`` parameter instead of seeding the globals. Re-entrant: seeded
# blocks nest (a seeded map around a Compose that seeds for a child).
GLOBAL_RNG_LOCK = threading.RLock()


def mix_seed(*parts: int) -> int:
    """Combine integers into one well-mixed 63-bit seed (splitmix64 steps)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index`` in ``epoch`` for a pipeline seeded with ``seed``."""
    return mix_seed(seed, epoch, index)


def accepts_generator(fn: object, *, via_kwargs: bool = True) -> bool:
    """Whether ``fn`` takes a ``generator`` keyword: a parameter of that name, or, when
    ``via_kwargs``, ``**kwargs`` (``MapDataset.map`` passes ``via_kwargs=False``: such
    a function may pass the generator on to something that ignores it)."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        params = inspect.signature(target).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):  # builtins and some C callables
        return False
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if via_kwargs:
        return any(p.name == "generator" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return any(p.name == "generator" and p.kind in keyword for p in params)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run a block with torch, numpy and ``random`` global RNGs seeded from ``seed``,
    restoring their previous states afterwards (so third-party transforms that
    use the global RNG, such as torchvision v2 or albumentations, become
    reproducible per sample without disturbing the caller's streams).

    Holds ``GLOBAL_RNG_LOCK`` for the block (NOTE [global RNGs under threads]):
    such blocks in different threads run one after the other."""
    # NOTE [cheap seeding]: seed the CPU default generator directly; torch.manual_seed
    # would also seed every accelerator (about 0.2 ms a call, paid per sample).
    with GLOBAL_RNG_LOCK:
        gen = torch.default_generator
        torch_state = gen.get_state()
        np_state = np.random.get_state(legacy=False)
        py_state = random.getstate()
        gen.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            gen.set_state(torch_state)
            np.random.set_state(np_state)
            random.setstate(py_state)
