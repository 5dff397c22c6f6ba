"""The image pipelines' per-batch work that the limit, the parallel ceiling and the arms share.

One home for what ``bench.image_arms`` (the arms), ``bench.image`` (the limit) and
``bench.ceiling`` (the same work in N processes) all run, so none imports another's
internals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def images(batch: Any) -> torch.Tensor:
    """The images of a batch, or the image of a sample: ``["image"]`` of a dict, else ``[0]``."""
    return batch["image"] if isinstance(batch, dict) else batch[0]


def identity(x: Any) -> Any:
    return x


def batch_transforms(device: torch.device) -> Any:
    """uint8 batch -> float, ImageNet-normalized, on ``device``."""
    from dataforge.transforms.batch import Compose, Normalize, ToFloat

    return Compose([ToFloat(), Normalize(MEAN, STD)]).to(device)


def batch_step(get: Callable[[int], Any], pick: Callable[[Any], torch.Tensor],
               collate: Callable[[list[torch.Tensor]], Any], finish: Callable[[Any], Any], n: int, *,
               batch_size: int, seed: int = 0) -> Callable[[], None]:
    """A callable that does one batch of a pipeline's whole job in this thread, no loader.

    Each call reads, decodes and augments the next ``batch_size`` samples of one
    shuffled order over all ``n`` files (as the arms do: a small cycled subset would
    stay in the CPU caches), collates them with ``collate`` and applies ``finish``.
    The limit times it in one thread and the parallel ceiling runs it in N processes
    (NOTE [limit as a flow] in ``bench.image``).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    state = {"i": 0}

    def step() -> None:
        i = state["i"]
        samples = [pick(get(order[(i + j) % n])) for j in range(batch_size)]
        state["i"] = i + batch_size
        finish(collate(samples))

    return step


def dataforge_step(get: Callable[[int], Any], n: int, *, batch_size: int, normalize: bool,
                   seed: int = 0) -> Callable[[], None]:
    """One batch of the dataforge limit's work per call (:func:`batch_step` over ``get``):
    each sample read, decoded and augmented, the batch stacked, and normalized on the CPU
    when ``normalize``. The limit times it; the parallel ceiling runs it in N processes."""
    from dataforge.collate.functional import stack

    tf = batch_transforms(torch.device("cpu")) if normalize else identity
    return batch_step(get, images, stack, tf, n, batch_size=batch_size, seed=seed)
