"""Peer arms of ``dataforge bench image``: NVIDIA DALI (CPU only), Meta SPDL, FFCV.

Each arm reads the same files as the other arms (the folder's items), in the same
shuffled, repeated index space (NOTE [endless data] in :mod:`dataforge.bench.image`),
crops to the same size, batches as many samples, and runs on as many threads as the
other arms have workers (one when ``workers=0``: none of the peers decodes in the
calling thread). A batch counts once it is a normalized float32 NCHW tensor on the
target device. Each is ``absent``, with a one-line reason, when its package is not
installed (``pip install 'dataforge[peers]'``; ``make setup-peers`` also installs the
Debian libraries SPDL and FFCV need). Where their work differs from dataforge's
(decoder, interpolation, crop sampling, layout): ``docs/bench_peers.md``.

1. ``dali-cpu``: a DALI pipeline with ``device_id=None``: ``readers.file`` over the
   files, ``decoders.image_random_crop`` (decodes only the crop), ``resize``
   (linear, antialiased), ``crop_mirror_normalize`` with a ``coin_flip`` mirror,
   float CHW out; ``num_threads`` = workers.
2. ``spdl``: ``spdl.pipeline.PipelineBuilder``: a source of (path, label), a pipe
   that demuxes the JPEG, draws dataforge's crop and decodes with FFmpeg through a
   ``crop,scale,hflip`` filter, ``aggregate`` into batches, a collate pipe;
   ``num_threads`` = concurrency = workers. Its uint8 NHWC batch is made NCHW in the
   collate and converted and normalized like the uint8 arms'.
3. ``ffcv``: ``ffcv.loader.Loader`` over a ``.beton`` written from the same files
   (re-encoded as JPEG, quality 90; written once into the demo cache, its writing
   time measured apart and shown in the arm's label): ``RandomResizedCropRGBImageDecoder``,
   ``RandomHorizontalFlip``, ``NormalizeImage`` (before ``ToTensor``: on the CPU the
   documented order loops forever), ``ToTorchImage``, ``OrderOption.RANDOM``.

Example:
    >>> arms = peer_arms(items, length=100_000, size=224, batch_size=64,
    ...                  device=torch.device("cpu"), consume=consume)   # doctest: +SKIP
    >>> [a.name for a in arms]                                          # doctest: +SKIP
    ['dali-cpu', 'spdl', 'ffcv']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from dataforge.bench.pipelines import MEAN, STD, batch_transforms
from dataforge.bench.runner import Arm, Counters

Items = Sequence[tuple[str, int]]
Consume = Callable[[Any], Counters]


def peer_arms(items: Items, *, length: int, size: int, batch_size: int, device: torch.device,
              consume: Consume) -> list[Arm]:
    """The DALI-CPU, SPDL and FFCV arms over ``items`` (``(path, label)`` pairs).

    Args:
        items: the folder's files and labels, as the other arms read them.
        length: the length of the repeated index space (NOTE [endless data]).
        size: the output crop size (square).
        batch_size: samples per batch.
        device: where a batch must end (the peers work on the CPU; the finished batch
            is copied there).
        consume: the benchmark's batch check (float NCHW on ``device``).
    """
    if not items:
        raise ValueError("items must list at least one (path, label) pair")
    if isinstance(length, bool) or not isinstance(length, int) or length < len(items):
        raise ValueError(f"length must be an int >= len(items) ({len(items)}), got {length!r}")
    order = shuffled_order(len(items), length)
    return [dali_arm(items, order, size=size, batch_size=batch_size, device=device,
                     consume=consume),
            spdl_arm(items, order, size=size, batch_size=batch_size, device=device,
                     consume=consume),
            ffcv_arm(items, length, size=size, batch_size=batch_size, device=device,
                     consume=consume)]


def shuffled_order(n: int, length: int, seed: int = 0) -> list[int]:
    """File indices of one shuffled pass over ``range(n)`` tiled to ``length`` entries."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randperm(length, generator=g) % n).tolist()


def threads_for(workers: int) -> int:
    """The peers' thread count: the workers, and one at ``workers=0`` (they have no
    mode that decodes in the calling thread)."""
    return max(int(workers), 1)


def absent_arm(name: str, label: str, consume: Consume, reason: str) -> Arm:
    return Arm(name, label, lambda w: [], consume, absent=reason, pipeline=name)


def one_line(exc: BaseException) -> str:
    """``exc`` as one short line: its type and the first line of its message."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


def missing(package: str, install: str, exc: BaseException) -> str:
    """The one-line ``absent`` reason of a peer whose import failed."""
    return f"{package} is not usable here ({one_line(exc)}); install: {install}"


class Endless:
    """Batches of a peer, finished with ``finish``; ``close()`` stops the peer.

    ``start()`` builds the peer, ``batches(state)`` yields its raw batches without end,
    and ``stop(state)`` shuts it down (when the iterator or this object is closed).
    """

    def __init__(self, start: Callable[[], Any], batches: Callable[[Any], Iterator[Any]],
                 finish: Callable[[Any], Any], stop: Callable[[Any], None] | None = None) -> None:
        self._start, self._batches, self._finish, self._stop = start, batches, finish, stop
        self._state: Any = None

    def __iter__(self) -> Iterator[Any]:
        if self._state is None:
            self._state = self._start()
        try:
            for raw in self._batches(self._state):
                yield self._finish(raw)
        finally:  # the runner closes the iterator, not this object: stop the peer either way
            self.close()

    def close(self) -> None:
        state, self._state = self._state, None
        if state is not None and self._stop is not None:
            with contextlib.suppress(Exception):  # best-effort shutdown of a peer
                self._stop(state)


def float_finisher(device: torch.device) -> Callable[[tuple[torch.Tensor, torch.Tensor]], Any]:
    """A peer's normalized float NCHW batch and labels -> the benchmark's batch on ``device``."""
    nb = device.type == "cuda"

    def finish(b: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return {"image": b[0].to(device, non_blocking=nb), "label": b[1]}

    return finish


def uint8_finisher(device: torch.device) -> Callable[[tuple[torch.Tensor, torch.Tensor]], Any]:
    """A peer's uint8 NCHW batch -> float, ImageNet-normalized on ``device`` (as the
    uint8 dataforge arms are finished)."""
    tf = batch_transforms(device)
    nb = device.type == "cuda"

    def finish(b: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return {"image": tf(b[0].to(device, non_blocking=nb)), "label": b[1]}

    return finish


# --------------------------------------------------------------------------- DALI


def dali_arm(items: Items, order: list[int], *, size: int, batch_size: int,
             device: torch.device, consume: Consume) -> Arm:
    """NVIDIA DALI on the CPU (``device_id=None``), its random-crop decoder."""
    name = "dali-cpu"
    label = ("NVIDIA DALI, CPU only: readers.file, decoders.image_random_crop, resize, "
             "crop_mirror_normalize (coin_flip mirror)")
    try:
        from nvidia.dali import fn, pipeline_def, types
    except (ImportError, OSError) as exc:
        return absent_arm(name, label, consume,
                          missing("nvidia-dali", "pip install nvidia-dali-cuda130", exc))
    files = [items[i][0] for i in order]
    labels = [items[i][1] for i in order]

    @pipeline_def  # type: ignore[misc]
    def pipe() -> Any:
        jpegs, lab = fn.readers.file(files=files, labels=labels, random_shuffle=False,
                                     name="reader")
        img: Any = fn.decoders.image_random_crop(
            jpegs, device="cpu", output_type=types.DALIImageType.RGB,
            random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
        img = fn.resize(img, resize_x=size, resize_y=size,
                        interp_type=types.DALIInterpType.INTERP_LINEAR, antialias=True)
        img = fn.crop_mirror_normalize(
            img, dtype=types.DALIDataType.FLOAT, output_layout="CHW",
            mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD],
            mirror=fn.random.coin_flip(probability=0.5))
        return img, lab

    def make(workers: int) -> Iterable[Any]:
        def start() -> Any:
            p = pipe(batch_size=batch_size, num_threads=threads_for(workers), device_id=None,
                     seed=0, prefetch_queue_depth=2)
            p.build()
            return p

        return Endless(start, _dali_batches, float_finisher(device))

    return Arm(name, label, make, consume, pipeline=name)


def _dali_batches(p: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:  # the reader wraps around the file list: no end (NOTE [endless data])
        img, lab = p.run()
        yield (torch.from_numpy(img.as_array()),
               torch.from_numpy(lab.as_array()).reshape(-1).long())


# --------------------------------------------------------------------------- SPDL


def spdl_arm(items: Items, order: list[int], *, size: int, batch_size: int,
             device: torch.device, consume: Consume) -> Arm:
    """Meta SPDL: its pipeline builder, FFmpeg decode with a crop + scale filter."""
    name = "spdl"
    label = ("SPDL PipelineBuilder: FFmpeg decode through a crop,scale(bilinear),hflip filter "
             "(dataforge's crop draws), aggregate, collate")
    try:
        import spdl.io
        from spdl.pipeline import PipelineBuilder
    except (ImportError, OSError) as exc:
        return absent_arm(name, label, consume, missing(
            "spdl", "pip install spdl, and Debian's FFmpeg 5.1 libraries (make setup-peers)", exc))
    from dataforge.transforms.presets import RandomResizedCrop

    def make(workers: int) -> Iterable[Any]:
        stop = threading.Event()
        load = spdl_loader(spdl.io, RandomResizedCrop(size), size, torch.Generator().manual_seed(0))

        def start() -> Any:
            n = threads_for(workers)
            builder: Any = PipelineBuilder()  # its generics do not follow a chain of stages
            p = (builder
                 .add_source(_cycle(items, order, stop))
                 .pipe(load, concurrency=n)
                 .aggregate(batch_size, drop_last=True)
                 .pipe(collate_hwc)
                 .add_sink(2)
                 .build(num_threads=n))
            p.start()
            return p

        def halt(p: Any) -> None:
            stop.set()
            p.stop()

        return Endless(start, lambda p: iter(p.get_iterator()), uint8_finisher(device), halt)

    return Arm(name, label, make, consume, pipeline=name)


def _cycle(items: Items, order: list[int], stop: threading.Event) -> Iterator[tuple[str, int]]:
    while not stop.is_set():  # endless; ``stop`` ends it when the arm is closed
        for i in order:
            if stop.is_set():
                return
            yield items[i]


def spdl_loader(io: Any, rrc: Any, size: int,
                generator: torch.Generator) -> Callable[[tuple[str, int]], Any]:
    """``(path, label)`` -> ``(uint8 HWC crop, label)`` with SPDL: demux, draw the crop
    from the JPEG's header (``rrc.params``: dataforge's draws), decode through FFmpeg's
    ``crop``, ``scale`` (bilinear) and, half the time, ``hflip`` filters."""
    def load(item: tuple[str, int]) -> tuple[torch.Tensor, int]:
        path, label = item
        packets = io.demux_image(path)
        codec = packets.codec
        top, left, h, w = rrc.params(codec.height, codec.width, generator)
        flip = ",hflip" if torch.rand(1, generator=generator).item() < 0.5 else ""
        desc = (f"crop={w}:{h}:{left}:{top}:exact=1,scale={size}:{size}:flags=bilinear{flip},"
                "format=rgb24")
        frames = io.decode_packets(packets, filter_desc=desc)
        img = io.to_torch(io.convert_frames(frames))
        return img.reshape(size, size, 3), label

    return load


def collate_hwc(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """HWC uint8 samples -> a contiguous NCHW uint8 batch and its labels."""
    x = torch.stack([s[0] for s in samples]).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([s[1] for s in samples])


# --------------------------------------------------------------------------- FFCV

BETON_QUALITY = 90  # the .beton's JPEG quality (FFCV re-encodes what it is given)


def ffcv_arm(items: Items, length: int, *, size: int, batch_size: int, device: torch.device,
             consume: Consume) -> Arm:
    """FFCV over a ``.beton`` written from ``items`` (writing timed apart, in the label)."""
    name = "ffcv"
    label = ("FFCV Loader over a .beton: RandomResizedCropRGBImageDecoder, RandomHorizontalFlip, "
             "NormalizeImage, ToTensor, ToTorchImage, OrderOption.RANDOM")
    try:
        from ffcv.loader import Loader, OrderOption
    except (ImportError, OSError) as exc:
        return absent_arm(name, label, consume, missing(
            "ffcv", "make setup-peers (pip install ffcv builds against OpenCV and libturbojpeg)",
            exc))
    try:
        beton, write_s = ensure_beton(items)
    except Exception as exc:  # the arm cannot run; the benchmark goes on without it
        return absent_arm(name, label, consume, f"the .beton could not be written: {one_line(exc)}")
    label += f" (.beton written in {write_s:.1f} s, timed apart)"
    # NOTE [ffcv memory]: FFCV may take at most half the memory available: past that the
    # kernel's OOM killer can end the whole benchmark process, every arm's results with it.
    # Each repeat's epoch iterator is closed when the arm stops, or its buffers would add
    # up over the repeats.
    need, have = ffcv_buffer_bytes(items, batch_size), available_bytes()
    if have is not None and need > have / 2:
        return absent_arm(name, label, consume, (
            f"FFCV would allocate about {need / 2**30:.1f} GiB of decode buffers (sized for the "
            f"largest image, x batch {batch_size}, x batches in flight); "
            f"{have / 2**30:.1f} GiB available: use a smaller --batch-size"))
    indices = [i % len(items) for i in range(length)]  # NOTE [endless data]; RANDOM shuffles

    def make(workers: int) -> Iterable[Any]:
        def start() -> Any:
            return {"loader": Loader(beton, batch_size=batch_size, num_workers=threads_for(workers),
                                     order=OrderOption.RANDOM, seed=0, indices=indices, drop_last=True,
                                     os_cache=True, pipelines=ffcv_pipelines(size)), "epoch": None}

        def batches(state: dict[str, Any]) -> Iterator[Any]:
            state["epoch"] = iter(state["loader"])
            return state["epoch"]  # type: ignore[no-any-return]

        return Endless(start, batches, float_finisher(device), _close_ffcv_epoch)

    return Arm(name, label, make, consume, pipeline=name)


def _close_ffcv_epoch(state: dict[str, Any]) -> None:
    """End an FFCV epoch: its iterator is a thread that holds the batch buffers (GiBs for
    photos) until closed, and otherwise outlives the arm (NOTE [ffcv memory])."""
    epoch, state["epoch"] = state["epoch"], None
    if epoch is not None:
        epoch.close()
        epoch.join(timeout=5)


def ffcv_pipelines(size: int) -> dict[str, list[Any]]:
    """FFCV's decode + augment pipelines; ``NormalizeImage`` before ``ToTensor``: in the
    documented order (``ToTensor`` first) its CPU path never returns a batch."""
    import numpy as np
    from ffcv.fields.decoders import IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.transforms import (
        NormalizeImage,
        RandomHorizontalFlip,
        Squeeze,
        ToTensor,
        ToTorchImage,
    )

    mean = np.array([m * 255 for m in MEAN])
    std = np.array([s * 255 for s in STD])
    return {
        "image": [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip(),
                  NormalizeImage(mean, std, np.float32), ToTensor(),
                  ToTorchImage(channels_last=False)],
        "label": [IntDecoder(), ToTensor(), Squeeze()],
    }


FFCV_BATCH_SETS = 5  # FFCV's batches_ahead (3) + the batch in use + the one being filled


def ffcv_buffer_bytes(items: Items, batch_size: int) -> int:
    """About what FFCV's decode buffers take: it sizes every sample's buffer for the
    largest image (H x W x 3 bytes), for each batch it holds (``FFCV_BATCH_SETS``)."""
    from PIL import Image

    largest = 0
    for path, _ in items:
        with Image.open(path) as im:  # the header only: no decode
            largest = max(largest, im.width * im.height)
    return largest * 3 * batch_size * FFCV_BATCH_SETS


def available_bytes() -> int | None:
    """Memory available to new allocations (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class _PilFiles:
    """``items`` as FFCV's writer reads them: ``(RGB PIL image, label)``."""

    def __init__(self, items: Items) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as im:
            return im.convert("RGB"), label


def ensure_beton(items: Items, cache: str | os.PathLike[str] | None = None) -> tuple[str, float]:
    """The ``.beton`` of ``items`` and the seconds its writing took.

    It is written once into the demo cache (``<cache>/ffcv/<key>.beton``, the key a hash
    of the files' paths, sizes, times and labels), through a temporary name, with the
    writing time in a ``.json`` beside it; later runs reuse both.
    """
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    from dataforge.bench.common import usable_cores
    from dataforge.bench.data import cache_dir

    folder = cache_dir(cache) / "ffcv"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / beton_key(items)
    beton, meta = base.with_suffix(".beton"), base.with_suffix(".json")
    if beton.exists() and meta.exists():
        return str(beton), float(json.loads(meta.read_text())["write_s"])
    tmp = base.with_name(f"{base.name}.tmp-{os.getpid()}.beton")
    fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=BETON_QUALITY),
              "label": IntField()}
    t0 = time.perf_counter()
    writer = DatasetWriter(str(tmp), fields, num_workers=usable_cores())
    writer.from_indexed_dataset(_PilFiles(items))
    write_s = time.perf_counter() - t0
    os.replace(tmp, beton)
    meta.write_text(json.dumps({"write_s": write_s, "files": len(items), "quality": BETON_QUALITY}))
    return str(beton), write_s


def beton_key(items: Items) -> str:
    """A hash of the files (path, size, mtime, label) and the writing settings."""
    h = hashlib.sha1(f"q{BETON_QUALITY}".encode())
    for path, label in items:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    return h.hexdigest()[:20]
