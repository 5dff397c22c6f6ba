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


def fetch_batch(dataset: Any) -> Callable[[list[int]], list[Any]]:
    """How a ``DataLoader`` fetches a batch of ``dataset``: ``__getitems__`` when it has one
    (dataforge's map-style datasets; ``ImageFolder`` with a preset makes the batch's crops in
    one native call), else ``__getitem__`` for each index."""
    getitems = getattr(dataset, "__getitems__", None)
    if getitems is not None:
        return getitems  # type: ignore[no-any-return]
    return lambda indices: [dataset[i] for i in indices]


def batch_step(dataset: Any, pick: Callable[[Any], torch.Tensor],
               collate: Callable[[list[torch.Tensor]], Any], finish: Callable[[Any], Any], n: int, *,
               batch_size: int, seed: int = 0) -> Callable[[], None]:
    """A callable that does one batch of a pipeline's whole job in this thread, no loader.

    Each call fetches the next ``batch_size`` samples of one shuffled order over all
    ``n`` files of ``dataset`` as a ``DataLoader`` does (:func:`fetch_batch`; in order
    over all files, as the arms do: a small cycled subset would stay in the CPU caches),
    collates them with ``collate`` and applies ``finish``. The limit times it in one
    thread and the parallel ceiling runs it in N processes (NOTE [limit as a flow] in
    ``bench.image``).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    fetch = fetch_batch(dataset)
    state = {"i": 0}

    def step() -> None:
        i = state["i"]
        samples = [pick(s) for s in fetch([order[(i + j) % n] for j in range(batch_size)])]
        state["i"] = i + batch_size
        finish(collate(samples))

    return step


def dataforge_step(dataset: Any, n: int, *, batch_size: int, normalize: bool,
                   seed: int = 0) -> Callable[[], None]:
    """One batch of the dataforge limit's work per call (:func:`batch_step` over ``dataset``):
    the samples read, decoded and augmented, the batch stacked, and normalized on the CPU
    when ``normalize``. The limit times it; the parallel ceiling runs it in N processes."""
    from dataforge.collate.functional import stack

    tf = batch_transforms(torch.device("cpu")) if normalize else identity
    return batch_step(dataset, images, stack, tf, n, batch_size=batch_size, seed=seed)
