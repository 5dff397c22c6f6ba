"""The image benchmark's arms: the pipelines each arm runs over the same files.

The arms and what each one measures are listed in :mod:`dataforge.bench.image`;
the peers (DALI-CPU, SPDL, FFCV) are in :mod:`dataforge.bench.peers`. Every arm
draws from the same shuffled index space of about ``VIRTUAL_LENGTH`` entries
(NOTE [endless data] in :mod:`dataforge.bench.image`), and a sample counts once
its batch is a normalized float tensor on the device (:func:`consumer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from dataforge.bench.common import BenchError
from dataforge.bench.peers import peer_arms
from dataforge.bench.pipelines import MEAN, STD, images
from dataforge.bench.pipelines import batch_transforms as _batch_tf
from dataforge.bench.runner import Arm, Counters

VIRTUAL_LENGTH = 100_000
BATCH_TIMEOUT = 300.0  # seconds: a stuck worker fails its arm instead of hanging the run


# --------------------------------------------------------------------------- pipelines


class StockImageDataset(torch.utils.data.Dataset):
    """The torchvision tutorial pipeline: PIL open + convert, v2 per sample, float out."""

    def __init__(self, items: list[tuple[str, int]], size: int) -> None:
        from torchvision.transforms import v2

        self.items = items
        self.transform = v2.Compose([
            v2.ToImage(),
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=MEAN, std=STD),
        ])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as im:
            img = im.convert("RGB")
        return self.transform(img), label


class _Repeat(torch.utils.data.Dataset):
    """``source`` tiled to ``length`` entries (see NOTE [endless data])."""

    def __init__(self, source: Any, length: int) -> None:
        self.source, self.length, self.n = source, length, len(source)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.source[index % self.n]


class _Finish:
    """Iterate ``loader`` and finish each batch with ``fn`` (transfer + normalize)."""

    def __init__(self, loader: Iterable[Any], fn: Callable[[Any], Any]) -> None:
        self.loader, self.fn = loader, fn

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield self.fn(batch)


def tiled_length(n: int) -> int:
    """The tiled index space for a folder of ``n`` files (NOTE [endless data])."""
    return max(n, math.ceil(VIRTUAL_LENGTH / n) * n)


def consumer(device: torch.device) -> Callable[[Any], Counters]:
    """Counts a batch's samples once it is a float NCHW batch on ``device`` (synchronized on CUDA)."""
    def consume(batch: Any) -> Counters:
        x = images(batch)
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4
                and x.device.type == device.type):
            got = f"{x.dtype} {tuple(x.shape)} on {x.device}" if isinstance(x, torch.Tensor) else type(x)
            raise RuntimeError(f"arm produced {got}; expected a float NCHW batch on {device}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return {"samples": float(x.shape[0])}

    return consume


def _uint8_finisher(device: torch.device) -> Callable[[Any], Any]:
    tf = _batch_tf(device)
    nb = device.type == "cuda"

    def finish(batch: Any) -> Any:
        x = images(batch).to(device, non_blocking=nb)
        return {"image": tf(x), "label": batch["label"]}

    return finish


# --------------------------------------------------------------------------- arms


def make_arms(root: str, items: list[tuple[str, int]], *, size: int, batch_size: int,
              device: torch.device) -> list[Arm]:
    """The image arms over the folder ``root`` (whose files are ``items``): the six
    above and the peers of :mod:`dataforge.bench.peers`."""
    from dataforge.datasets.image_folder import ImageFolder
    from dataforge.loading.loader import build_loader
    from dataforge.transforms.image import train_transforms

    cuda = device.type == "cuda"
    n = len(items)
    length = tiled_length(n)
    stock_ds = _Repeat(StockImageDataset(items, size), length)
    df_ds = ImageFolder(root, transform=train_transforms(size))
    if len(df_ds) != n:
        raise BenchError(f"ImageFolder found {len(df_ds)} images in {root!r}, the file scan {n}")
    tiled_idx = torch.arange(length) % n
    df_tiled = df_ds.subset(tiled_idx)
    consume = consumer(device)

    def dl(ds: Any, workers: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=cuda,
            persistent_workers=workers > 0, timeout=BATCH_TIMEOUT if workers > 0 else 0,
            generator=torch.Generator().manual_seed(0))

    def make_stock(workers: int) -> Iterable[Any]:
        def finish(b: Any) -> Any:
            return (b[0].to(device, non_blocking=cuda), b[1])
        return _Finish(dl(stock_ds, workers), finish)

    def make_tuned(workers: int) -> Iterable[Any]:
        return _Finish(dl(df_tiled, workers), _uint8_finisher(device))

    arms = [
        Arm("stock", "DataLoader + PIL + transforms.v2 float pipeline per sample", make_stock,
            consume, pipeline="stock"),
        Arm("stock-tuned", "DataLoader + dataforge uint8 pipeline, normalize on device",
            make_tuned, consume),
    ]
    for engine in ("process", "thread"):
        def make_df(workers: int, engine: str = engine) -> Iterable[Any]:
            return build_loader(
                df_tiled, batch_size, shuffle=True, num_workers=workers, pin_memory=cuda,
                device=device, batch_transforms=_batch_tf(device), transform_keys=["image"],
                seed=0, engine=engine,
                timeout=BATCH_TIMEOUT if workers > 0 else 0)
        arms.append(Arm(f"dataforge-{engine}", f"dataforge.build_loader, {engine} engine",
                        make_df, consume))

    arms.append(_natural_arm(df_tiled, batch_size, device, consume))
    arms.append(_torchdata_arm(df_tiled, batch_size, device, consume))
    enc_tiled = ImageFolder(root, decode=False).subset(tiled_idx)
    arms.append(_gpu_decode_arm(enc_tiled, size, batch_size, device, consume))
    arms.extend(peer_arms(items, length=length, size=size, batch_size=batch_size, device=device,
                          consume=consume))  # DALI-CPU, SPDL, FFCV: absent when not installed
    return arms


def _natural_arm(ds: Any, batch_size: int, device: torch.device,
                 consume: Callable[[Any], Counters]) -> Arm:
    """The issue's natural code: ``build_loader`` with no engine, pinning or device
    argument, and the README's normalize (the fused ``ToFloat`` + ``Normalize``) applied
    in the training loop after ``.to(device)``. ``timeout`` only guards the run."""
    from dataforge.loading.loader import build_loader

    def make(workers: int) -> Iterable[Any]:
        loader = build_loader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                              drop_last=True, timeout=BATCH_TIMEOUT if workers > 0 else 0)
        return _Finish(loader, _uint8_finisher(device))

    return Arm("natural", "the natural code: build_loader defaults (engine='auto'), "
                          "normalize in the training loop", make, consume)


def gpu_decode_loader(ds: Any, workers: int, *, size: int, batch_size: int, device: torch.device,
                      decode: str = "cuda") -> Iterable[Any]:
    """The GPU decode arm's loader: threads read the files of ``ds`` (an
    ``ImageFolder(decode=False)``), :class:`GpuRandomResizedCrop` finishes each batch on
    ``device`` (``decode="cpu"``: its CPU path, for tests without a GPU)."""
    from dataforge.loading.loader import build_loader
    from dataforge.transforms.gpu_decode import GpuRandomResizedCrop

    tf = GpuRandomResizedCrop(size, decode=decode, device=device, mean=MEAN, std=STD, seed=0)
    return build_loader(ds, batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", device=device, batch_transforms=tf,
                        transform_keys=["image"], seed=0, engine="thread",
                        timeout=BATCH_TIMEOUT if workers > 0 else 0)


def _gpu_decode_arm(ds: Any, size: int, batch_size: int, device: torch.device,
                    consume: Callable[[Any], Counters]) -> Arm:
    import warnings

    from dataforge.transforms.gpu_decode import GpuRandomResizedCrop

    name = "dataforge-gpu-decode"
    label = "dataforge thread engine reading files + nvJPEG decode, crop, flip, normalize on the GPU"
    if device.type != "cuda":
        return Arm(name, label, lambda w: [], consume, pipeline="gpu-decode",
                   absent="needs --device cuda (decodes with nvJPEG on the GPU); skipped on the CPU")
    with warnings.catch_warnings():  # the reason is reported as the arm's status instead
        warnings.simplefilter("ignore")
        reason = GpuRandomResizedCrop(size, device=device).fallback_reason
    if reason is not None:
        return Arm(name, label, lambda w: [], consume, pipeline="gpu-decode",
                   absent=f"no GPU decode here: {reason}")

    def make(workers: int) -> Iterable[Any]:
        return gpu_decode_loader(ds, workers, size=size, batch_size=batch_size, device=device)

    return Arm(name, label, make, consume, pipeline="gpu-decode")


def _torchdata_arm(ds: Any, batch_size: int, device: torch.device,
                   consume: Callable[[Any], Counters]) -> Arm:
    label = "torchdata.nodes: ParallelMapper (threads) + Batcher + PinMemory"
    try:
        from torchdata import nodes
    except ImportError:
        return Arm("torchdata-nodes", label, lambda w: [], consume,
                   absent="torchdata is not installed (pip install torchdata)")
    from torch.utils.data import default_collate

    def make(workers: int) -> Iterable[Any]:
        sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(0))
        node: Any = nodes.SamplerWrapper(sampler)
        if workers > 0:
            node = nodes.ParallelMapper(node, ds.__getitem__, num_workers=workers, method="thread")
        else:
            node = nodes.Mapper(node, ds.__getitem__)
        node = nodes.Mapper(nodes.Batcher(node, batch_size, drop_last=False), default_collate)
        if device.type == "cuda":
            node = nodes.PinMemory(node)
        node = nodes.Prefetcher(node, prefetch_factor=2)
        return _Finish(nodes.Loader(node), _uint8_finisher(device))

    return Arm("torchdata-nodes", label, make, consume)
