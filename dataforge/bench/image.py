"""End-to-end image benchmark: stock PyTorch vs dataforge vs torchdata, same files.

Every arm reads the same JPEGs and applies the same augmentation semantics
(``RandomResizedCrop(size)`` + horizontal flip, then ImageNet normalization), and a
sample counts only once its batch is a normalized float tensor on the target
device (synchronized on CUDA):

1. ``stock``: ``torch.utils.data.DataLoader`` + PIL open/convert + the
   ``transforms.v2`` tutorial pipeline per sample (``ToImage``, crop, flip,
   ``ToDtype(float32)``, ``Normalize``), ``pin_memory`` on CUDA, ``.to(device)``.
2. ``stock-tuned``: the same ``DataLoader`` over dataforge's uint8 pipeline
   (``ImageFolder``: ``torchvision.io`` decode + uint8 preset); the batch is
   converted and normalized after the transfer. Separates what the pipeline buys
   from what the loader buys.
3. ``dataforge-process`` / 4. ``dataforge-thread``: ``dataforge.build_loader``
   with ``device=`` and on-device ``batch_transforms``, process / thread engine.
5. ``torchdata-nodes``: ``torchdata.nodes`` (``SamplerWrapper`` ->
   ``ParallelMapper`` with threads -> ``Batcher`` -> collate -> ``PinMemory`` on
   CUDA -> ``Prefetcher``) over the same uint8 pipeline; ``absent`` when
   torchdata is not installed.
6. ``dataforge-gpu-decode`` (``--device cuda`` only): the thread engine's workers
   only read the files; each batch of encoded JPEGs is decoded with nvJPEG and
   cropped, flipped and normalized on the GPU (:class:`~dataforge.transforms.gpu_decode.
   GpuRandomResizedCrop`, the same crop draws). ``absent``, with the reason, on the
   CPU or where torchvision cannot decode on the GPU. It has no CPU limit.

The limit, measured in the same run: the CPU time per sample of each pipeline's
whole job done batch after batch by a single process with one thread and no
loader (read + decode + augment each sample, then its own collate, ``torch.stack``
for stock and dataforge's ``stack`` for dataforge, and normalize when the device
is the CPU; NOTE [limit as a flow] in :func:`measure_limit`), times the cores the
run can use (``min(max(workers, 1), cores)``). Beside it, the parallel ceiling
(NOTE [parallel ceiling] in :mod:`dataforge.bench.ceiling`): the same dataforge work
run by that many processes at once, which shows what the cores give together on
this machine.

NOTE [endless data]: every arm draws from the same shuffled, repeated index
space (the folder tiled to about 100,000 entries), so a small demo folder
measures the pipeline rather than epoch-end worker restarts, equally for all
arms.

Example:
    >>> result = run(quick=True)          # doctest: +SKIP
    >>> print(format_table(result))       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dataforge.bench import report
from dataforge.bench.ceiling import measure_ceiling
from dataforge.bench.common import BenchError, env_info, median, usable_cores
from dataforge.bench.data import check_image_folder
from dataforge.bench.image_arms import StockImageDataset, make_arms, tiled_length
from dataforge.bench.pipelines import batch_step, dataforge_step, images
from dataforge.bench.pipelines import identity as _identity
from dataforge.bench.runner import (
    check_workers,
    cores_in_use,
    cpu_seconds_per_call,
    resolve_device,
    run_arms,
)

FULL = {"num_images": 2000, "batch_size": 64, "seconds": 10.0, "warmup": 1.0}
QUICK = {"num_images": 256, "batch_size": 32, "seconds": 1.0, "warmup": 0.3}
QUICK_PHOTOS = 16  # photo files for --quick --images photos
IMAGE_SETS = ("demo", "photos")


# --------------------------------------------------------------------------- the limit


def measure_limit(stock_ds: Any, df_ds: Any, n: int, *,
                  batch_size: int, device: torch.device, repeats: int,
                  min_seconds: float) -> dict[str, float]:
    """CPU seconds of work per sample of each pipeline: one process, one thread, no loader.

    NOTE [limit as a flow]: the limit times the whole job as one thread does it
    without a loader (:func:`batch_step`): read + decode + augment each sample (a batch
    fetched as a ``DataLoader`` fetches it: ``__getitems__`` where the dataset has it), then
    the pipeline's own collate (``torch.stack`` for stock, dataforge's ``stack``)
    and, on the CPU, the uint8 pipeline's convert + normalize, batch after batch.
    The batch share is not timed apart on one batch stacked over and over: its inputs
    would stay in the caches and its buffers mapped, at about half its cost in the
    flow, and the limit would sit above what one core can do (the measurements are in
    benchmarks/README.md, limit_check.py reruns them).
    See also NOTE [limit in CPU time] in ``runner``.
    """
    def per_sample(step: Callable[[], None]) -> float:
        return cpu_seconds_per_call(step, repeats=repeats, min_seconds=min_seconds) / batch_size

    stock = batch_step(stock_ds, images, torch.stack, _identity, n, batch_size=batch_size)
    df = dataforge_step(df_ds, n, batch_size=batch_size, normalize=device.type == "cpu")
    return {"stock": per_sample(stock), "dataforge": per_sample(df)}


# --------------------------------------------------------------------------- the benchmark


def _image_root(data: str | None, images: str, num_images: int | None, quick: bool) -> str:
    """The folder to benchmark: ``data``, else the generated ``images`` set (cached)."""
    from dataforge.bench.data import PHOTO_IMAGES, demo_image_folder, photo_image_folder

    if images not in IMAGE_SETS:
        raise BenchError(f"--images must be one of {', '.join(IMAGE_SETS)}, got {images!r}")
    if data is not None:
        if images != "demo":
            raise BenchError(f"--images {images} generates data, --data {data!r} names yours; "
                             "pass one of them")
        return str(data)
    if images == "photos":
        n = num_images or (QUICK_PHOTOS if quick else PHOTO_IMAGES)
        return str(photo_image_folder(int(n), progress=True))
    return str(demo_image_folder(int(num_images or (QUICK if quick else FULL)["num_images"]),
                                 progress=True))


@dataclass(frozen=True)
class _Config:
    """The settings of one run, checked, with the defaults filled in (``config`` in the result)."""

    root: str
    items: list[tuple[str, int]]
    images: str  # "demo", "photos" (generated) or "data" (the user's folder)
    batch_size: int
    image_size: int
    workers: list[int]
    seconds: float
    warmup: float
    repeats: int
    device: torch.device
    quick: bool

    @property
    def window(self) -> float:
        """Seconds per limit and ceiling measurement (NOTE [limit window])."""
        return min(1.0, self.seconds / 2) if self.quick else min(5.0, self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.root, "demo_data": self.images != "data", "images": self.images,
            "num_samples": len(self.items),
            "batch_size": self.batch_size, "image_size": self.image_size, "workers": self.workers,
            "seconds": self.seconds, "warmup_s": self.warmup, "repeats": self.repeats,
            "device": str(self.device), "quick": self.quick, "virtual_length": tiled_length(len(self.items)),
        }


def _config(*, quick: bool, seconds: float | None, device: str, data: str | None,
            workers: list[int] | None, batch_size: int | None, repeats: int, image_size: int,
            num_images: int | None, warmup: float | None, images: str) -> _Config:
    """:func:`run`'s arguments checked, defaults filled in, the image folder found or generated."""
    cfg = QUICK if quick else FULL
    dev = resolve_device(device)
    secs = float(seconds if seconds is not None else cfg["seconds"])
    batch = _check_sizes(int(batch_size or cfg["batch_size"]), image_size)
    cores = usable_cores()
    workers_list = check_workers(workers, [min(2, cores)] if quick else sorted({0, cores}))
    root = _image_root(data, images, num_images, quick)
    return _Config(
        root=root, items=check_image_folder(root), images=images if data is None else "data",
        batch_size=batch, image_size=image_size, workers=workers_list, seconds=secs,
        warmup=float(warmup if warmup is not None else min(cfg["warmup"], secs)),
        repeats=repeats, device=dev, quick=quick)


def _check_sizes(batch_size: int, image_size: Any) -> int:
    if batch_size < 1:
        raise BenchError(f"--batch-size must be a positive int, got {batch_size!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise BenchError(f"--image-size must be an int >= 8, got {image_size!r}")
    return batch_size


class _ImageBench:
    """The image benchmark as one object: its config, its arms (:func:`make_arms`), and the
    limit and the parallel ceiling, measured once per repeat between the arms (``measure``,
    ``run_arms``' ``on_repeat``). ``result()`` runs it and returns the result.

    NOTE [limit window]: the limit and the ceiling are each timed over windows as long as
    an arm's (up to 5 CPU-s): with 1 s windows, a slow or fast second on a shared machine
    moved the limit by 10% between runs (one full run put an arm at 106% of it).
    """

    def __init__(self, cfg: _Config, progress: Callable[[str], None] | None) -> None:
        from dataforge.datasets.image_folder import ImageFolder
        from dataforge.transforms.image import train_transforms

        self.cfg, self.progress = cfg, progress
        self.arms = make_arms(cfg.root, cfg.items, size=cfg.image_size, batch_size=cfg.batch_size,
                              device=cfg.device)
        self.stock_ds = StockImageDataset(cfg.items, cfg.image_size)
        self.df_ds = ImageFolder(cfg.root, transform=train_transforms(cfg.image_size))
        self.limit_runs: list[dict[str, float]] = []
        self.ceiling_runs: dict[int, list[float]] = {
            k: [] for k in sorted({cores_in_use(w) for w in cfg.workers} - {1})}
        self.ceiling_error: str | None = None

    def result(self) -> dict[str, Any]:
        """Run the arms interleaved with the limit and the ceiling; the result (no plot)."""
        cfg = self.cfg
        summaries = run_arms(self.arms, cfg.workers, seconds=cfg.seconds, repeats=cfg.repeats,
                             warmup=cfg.warmup, progress=self.progress, on_repeat=self.measure)
        arm_dicts = [s.to_dict() for s in summaries]
        return {
            "benchmark": "image",
            "status": "ok",
            "unit": "samples/s",
            "env": env_info(str(cfg.device)),
            "config": cfg.to_dict(),
            **self.report(arm_dicts),
            "arms": arm_dicts,
        }

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def measure(self, _: int) -> None:
        cfg, cpu = self.cfg, self.cfg.device.type == "cpu"
        self._say("limit: one process, one thread, no loader")
        self.limit_runs.append(measure_limit(
            self.stock_ds, self.df_ds, len(cfg.items), batch_size=cfg.batch_size,
            device=cfg.device, repeats=1, min_seconds=cfg.window))
        for k, runs in self.ceiling_runs.items():  # NOTE [parallel ceiling]
            if self.ceiling_error:
                return
            self._say(f"parallel ceiling: the limit's work in {k} processes at once")
            try:
                runs.append(measure_ceiling(cfg.root, size=cfg.image_size, batch_size=cfg.batch_size,
                                            cores=k, normalize=cpu, seconds=cfg.window))
            except RuntimeError as exc:  # informational: reported, the benchmark goes on
                self.ceiling_error = str(exc)

    def report(self, arm_dicts: list[dict[str, Any]]) -> dict[str, Any]:
        """The result's ``limit`` and ``ceiling`` entries; adds each arm's ratios to them."""
        workers = self.cfg.workers
        limit_s = {p: median([r[p] for r in self.limit_runs]) for p in self.limit_runs[0]}
        by_workers = {str(w): {p: cores_in_use(w) / s for p, s in limit_s.items()} for w in workers}
        report.add_ratios(arm_dicts, by_workers)
        ceiling = {str(w): median(self.ceiling_runs[cores_in_use(w)]) for w in workers
                   if self.ceiling_runs.get(cores_in_use(w)) and not self.ceiling_error}
        report.add_ceiling_fractions(arm_dicts, ceiling, "dataforge")
        return {"limit": {
            "method": "CPU time, 1 process, 1 thread, no loader: batch after batch, read + decode + "
                      "augment each sample, then its own collate (and normalize on CPU); per sample, "
                      "times the cores in use (workers, or torch threads when workers=0, at most the "
                      "usable cores); median over repeats, interleaved with the arms",
            "cores_in_use": {str(w): cores_in_use(w) for w in workers},
            "per_sample_ms": {p: s * 1e3 for p, s in limit_s.items()},
            "by_workers": by_workers,
        }, "ceiling": {
            "method": "the dataforge limit's work (read + decode + augment, stack, normalize on CPU) in "
                      "that many independent processes at once, 1 thread each, no loader; samples/s "
                      "added up; median over repeats. Informational: no loader beats it on this machine",
            "pipeline": "dataforge",
            "by_workers": ceiling,
            "fraction_of_limit": {w: v / by_workers[w]["dataforge"] for w, v in ceiling.items()},
            "error": self.ceiling_error,
        }}


# --------------------------------------------------------------------------- run


def run(*, quick: bool = False, seconds: float | None = None, device: str = "cpu",
        data: str | None = None, out: str | None = None, workers: list[int] | None = None,
        batch_size: int | None = None, repeats: int = 3, image_size: int = 224,
        num_images: int | None = None, warmup: float | None = None, images: str = "demo",
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    """Run the image benchmark and return its result (schema in :mod:`dataforge.bench.report`).

    Args:
        quick: small defaults (256 demo images, 1 s windows, one workers count).
        seconds / warmup: steady-state seconds per arm and repeat / excluded after the first batch.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        data: an image folder (``ROOT/<class>/<image>``); default: generated ``images``.
        out: a folder to write ``image.png`` into (``None``: no plot).
        workers: the workers counts to sweep (default ``0,<cores>``; quick: ``min(2, cores)``).
        batch_size / image_size: images per batch (default 64; quick 32) / the crop size.
        repeats: measured runs per arm and workers count; the median is reported.
        num_images / images: the generated set's size and kind: ``"demo"`` (300-500 px) or
            ``"photos"`` (1-12 MP JPEGs, NOTE [photo set] in :mod:`dataforge.bench.data`).
        progress: called with a line of text before each measured run.
    """
    cfg = _config(quick=quick, seconds=seconds, device=device, data=data, workers=workers,
                  batch_size=batch_size, repeats=repeats, image_size=image_size,
                  num_images=num_images, warmup=warmup, images=images)
    result = _ImageBench(cfg, progress).result()
    if out is not None:
        from dataforge.bench.plot import plot_throughput

        png = plot_throughput(result, os.path.join(out, "image.png"))
        result["plot"] = str(png) if png else None
    return result


def format_table(result: dict[str, Any]) -> str:
    return report.format_throughput_table(result)
