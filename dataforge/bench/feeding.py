"""Feeding benchmark: host-to-device copies, with and without ``DevicePrefetcher``.

Same batches (uint8 images, ``batch_size x 3 x size x size``), same run, arms
interleaved with their order rotated each repeat, medians reported:

Copy throughput (GB/s of batches delivered on ``device``):

- ``raw_pinned``: the limit: pre-pinned batches copied back to back with
  ``.to(device, non_blocking=True)``, one synchronisation at the end. (On a CPU
  the limit is a host ``memcpy`` of each batch instead.)
- ``stock_to``: a stock ``DataLoader(pin_memory=True)`` over the batches, then
  ``batch.to(device)`` per batch (the tutorial pattern).
- ``prefetcher``: the same ``DataLoader`` wrapped in ``DevicePrefetcher``.
- ``prefetcher_pinned``: ``DevicePrefetcher`` over the pre-pinned batches (the
  copy path alone, without the DataLoader).

Overlap with a simulated training step (a matmul loop of fixed length, about the
copy time of one batch): ``compute_only`` runs the steps with no data;
``data_wait = (wall - compute_only) / wall`` is the share of wall time the step
loop lost to data, for ``stock_to`` and ``prefetcher`` (both over the pre-pinned
batches, so only the copy is in question).

Targets on a GPU: ``prefetcher`` >= 90% of ``raw_pinned``; ``data_wait`` of the
prefetcher < 5%. On a CPU there is no copy to overlap: the benchmark runs the
same code path, says that no GPU was present, and reports what it measured.

Example:
    >>> r = run(quick=True, seconds=0.05, repeats=1, num_batches=2)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.utils.data

from dataforge.bench.common import BenchError, env_info, interleaved, median
from dataforge.bench.runner import timed_window
from dataforge.loading.prefetch import DevicePrefetcher

__all__ = ["format_table", "run"]

TARGET_RATIO = 0.9
TARGET_WAIT = 0.05

# NOTE [feeding on a CPU]: with no GPU, only raw_pinned copies anything (a host memcpy);
# the other arms hand over batches that are already on the CPU, so their "GB/s" is a
# handoff rate, not a transfer rate. The table then shows them in batches/s and says so.
_MEASURES = {
    "cuda": {"raw_pinned": "pinned host-to-device copies back to back (the limit)",
             "stock_to": "DataLoader(pin_memory=True), then .to(device) per batch",
             "prefetcher": "the same DataLoader wrapped in DevicePrefetcher",
             "prefetcher_pinned": "DevicePrefetcher over pre-pinned batches (the copy path alone)"},
    "cpu": {"raw_pinned": "CPU memcpy of each batch (no GPU: no host-to-device copy)",
            "stock_to": "no copy: DataLoader hands over the CPU batch, .to(cpu) is a no-op",
            "prefetcher": "no copy: DevicePrefetcher passes the CPU batch through",
            "prefetcher_pinned": "no copy: DevicePrefetcher over a list of CPU batches"},
}

_QUICK = {"batch_size": 32, "size": 128, "num_batches": 12, "seconds": 0.2, "repeats": 3}
_FULL = {"batch_size": 64, "size": 224, "num_batches": 32, "seconds": 1.0, "repeats": 5}


class _Batches(torch.utils.data.Dataset):
    """Pre-collated batches, one per index (used with ``batch_size=None``)."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.batches[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Step:
    """A fixed amount of matmul work, calibrated to last about ``target_s``."""

    def __init__(self, device: torch.device, target_s: float) -> None:
        self.device = device
        dim = 1024 if device.type == "cuda" else 192
        g = torch.Generator().manual_seed(0)  # explicit: never the global RNG
        self.a = torch.randn(dim, dim, generator=g).to(device)
        self.iters = 1
        for _ in range(2):
            t = self.time_one()
            self.iters = max(1, round(self.iters * target_s / max(t, 1e-6)))

    def __call__(self) -> None:
        x = self.a
        for _ in range(self.iters):
            x = torch.mm(x, self.a)
            x = x * (1.0 / x.shape[0])
        self.sink = x

    def time_one(self) -> float:
        self()
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(3):
            self()
        _sync(self.device)
        return (time.perf_counter() - t0) / 3


def run(
    *,
    threads: int | None = None,
    quick: bool = False,
    seconds: float | None = None,
    device: str = "cpu",
    data: str | None = None,
    out: str | None = None,
    repeats: int | None = None,
    batch_size: int | None = None,
    size: int | None = None,
    num_batches: int | None = None,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Measure the arms above; return a JSON-serialisable result (``out``: also write it).

    ``threads``: torch intra-op threads while measuring (default 1 on a CPU, where the
    step and the copies would otherwise fight over the same cores; unchanged on CUDA).
    """
    before = torch.get_num_threads()
    if threads is None and not str(device).startswith("cuda"):
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(quick=quick, seconds=seconds, device=device, data=data, out=out, workers=workers,
                    progress=progress, repeats=repeats, batch_size=batch_size, size=size,
                    num_batches=num_batches, **kw)
    finally:
        torch.set_num_threads(before)


def _run(
    *,
    quick: bool,
    seconds: float | None,
    device: str,
    data: str | None,
    out: str | None,
    workers: int | None,
    progress: Callable[[str], None] | None,
    **kw: Any,
) -> dict[str, Any]:
    if data is not None:
        raise BenchError("the feeding benchmark uses synthetic uint8 batches; it takes no --data")
    cfg = _config(quick, seconds, kw)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for, but CUDA is not available here")
    cuda = dev.type == "cuda"
    if workers is None:
        workers = 2 if cuda else 0
    feed = _Feed(cfg, dev, workers)
    copy = _measure_copy(feed, cfg, progress or (lambda line: None))
    limit: float = copy["raw_pinned"]["gb_per_s"]
    # NOTE: on a CPU the arms copy nothing, so a ratio to the memcpy rate would mean nothing
    ratios = {
        f"{k}_vs_raw": (copy[k]["gb_per_s"] / limit if cuda else None) for k in copy if k != "raw_pinned"
    }
    # overlap: a step of about one batch's copy time (at the raw rate), at least 2 ms
    step_s = max(0.002, feed.batch_bytes / (limit * 1e9)) if cuda else 0.003
    overlap = _measure_overlap(feed, _Step(dev, step_s), cfg)
    result = _result(cfg, feed, step_s, copy, ratios, overlap)
    if out:
        import json

        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _config(quick: bool, seconds: float | None, kw: dict[str, Any]) -> dict[str, Any]:
    """The quick or full sizes, with the options given (``None``: the default) in place."""
    known = ("repeats", "batch_size", "size", "num_batches")
    unknown = sorted(set(kw) - set(known))
    if unknown:
        raise BenchError(f"unknown options for the feeding benchmark: {unknown}")
    cfg: dict[str, Any] = dict(_QUICK if quick else _FULL)
    for k, v in (("seconds", seconds), *((k, kw.get(k)) for k in known)):
        if v is not None:
            cfg[k] = v
    return cfg


class _Feed:
    """The batches every arm delivers: on the host, pinned (on CUDA), and a DataLoader over them."""

    def __init__(self, cfg: dict[str, Any], device: torch.device, workers: int) -> None:
        cuda = device.type == "cuda"
        g = torch.Generator().manual_seed(0)
        shape = (cfg["batch_size"], 3, cfg["size"], cfg["size"])
        self.device, self.workers = device, workers
        # called after each timed call: a window ends once the queued copies are done
        self.sync = functools.partial(torch.cuda.synchronize, device) if cuda else None
        self.host = [torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
                     for _ in range(cfg["num_batches"])]
        self.pinned = [b.pin_memory() for b in self.host] if cuda else self.host
        self.batch_bytes = self.host[0].numel() * self.host[0].element_size()
        self.loader = torch.utils.data.DataLoader(
            _Batches(self.host), batch_size=None, pin_memory=cuda, num_workers=workers,
            persistent_workers=workers > 0,
        )


def _drain(batches: Iterable[torch.Tensor], step: Callable[[], None] | None = None) -> int:
    """Take every batch (running ``step`` before each); the number taken."""
    n = 0
    for b in batches:
        if step is not None:
            step()
        n += 1
        del b
    return n


def _measure_copy(feed: _Feed, cfg: dict[str, Any], say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The copy arms' GB/s, interleaved over ``cfg["repeats"]``, with what each measures."""
    dev, loader, pinned = feed.device, feed.loader, feed.pinned
    cuda = dev.type == "cuda"
    buf = torch.empty_like(feed.host[0])

    def raw() -> int:
        if cuda:
            return _drain(b.to(dev, non_blocking=True) for b in pinned)
        return _drain(buf.copy_(b) for b in feed.host)

    copy_arms: dict[str, Callable[[], int]] = {
        "raw_pinned": raw,
        "stock_to": lambda: _drain(b.to(dev) for b in loader),
        "prefetcher": lambda: _drain(DevicePrefetcher(loader, dev)),
        "prefetcher_pinned": lambda: _drain(DevicePrefetcher(pinned, dev)),
    }
    _drain(loader)  # start persistent workers outside the measurements
    for fn in copy_arms.values():
        fn()  # warm-up (allocator, streams)

    def gb_per_s(fn: Callable[[], int]) -> Callable[[], float]:
        def window() -> float:
            w = timed_window(fn, cfg["seconds"], feed.sync)
            return w.done * feed.batch_bytes / w.wall_s / 1e9
        return window

    runs = interleaved({k: gb_per_s(fn) for k, fn in copy_arms.items()}, cfg["repeats"],
                       after=lambda r, name, v: say(f"repeat {r}: {name} {v:.2f} GB/s"))
    measures = _MEASURES["cuda" if cuda else "cpu"]
    return {
        k: {"gb_per_s": median(v), "runs": v, "batches_per_s": median(v) * 1e9 / feed.batch_bytes,
            "copies": cuda or k == "raw_pinned", "measures": measures[k]}
        for k, v in runs.items()}


def _measure_overlap(feed: _Feed, step: _Step, cfg: dict[str, Any]) -> dict[str, dict[str, float]]:
    """ms per batch of the step loop with no data, ``.to(device)`` and the prefetcher, and
    the share of wall time each lost to data (``data_wait``)."""
    dev, pinned = feed.device, feed.pinned
    n = len(pinned)

    def compute_only() -> int:
        for _ in range(n):
            step()
        return n

    overlap_arms: dict[str, Callable[[], int]] = {
        "compute_only": compute_only,
        "stock_to": lambda: _drain((b.to(dev) for b in pinned), step),
        "prefetcher": lambda: _drain(DevicePrefetcher(pinned, dev), step),
    }
    for fn in overlap_arms.values():
        fn()

    def per_batch_s(fn: Callable[[], int]) -> Callable[[], float]:
        def window() -> float:
            w = timed_window(fn, cfg["seconds"], feed.sync)
            return w.wall_s / w.done
        return window

    runs = interleaved({k: per_batch_s(fn) for k, fn in overlap_arms.items()}, cfg["repeats"])
    per_batch = {k: median(v) for k, v in runs.items()}
    return {
        k: {
            "ms_per_batch": per_batch[k] * 1e3,
            "data_wait": max(0.0, (per_batch[k] - per_batch["compute_only"]) / per_batch[k]),
        }
        for k in per_batch
    }


def _result(cfg: dict[str, Any], feed: _Feed, step_s: float, copy: dict[str, dict[str, Any]],
            ratios: dict[str, float | None], overlap: dict[str, dict[str, float]]) -> dict[str, Any]:
    cuda = feed.device.type == "cuda"
    return {
        "benchmark": "feeding",
        "env": env_info(str(feed.device)),
        "gpu_present": torch.cuda.is_available(),
        "config": {**cfg, "device": str(feed.device), "workers": feed.workers,
                   "batch_mb": feed.batch_bytes / 2**20, "torch_threads": torch.get_num_threads(),
                   "step_ms": step_s * 1e3},
        "copy": copy,
        "ratios": ratios,
        "overlap": overlap,
        "targets": {
            "prefetcher_vs_raw": TARGET_RATIO,
            "prefetcher_data_wait": TARGET_WAIT,
            "met": (ratios["prefetcher_vs_raw"] >= TARGET_RATIO  # type: ignore[operator]
                    and overlap["prefetcher"]["data_wait"] < TARGET_WAIT) if cuda else None,
        },
        "note": (
            None if cuda else
            "device is the CPU, so no host-to-device copy happens; 'raw_pinned' is a host "
            "memcpy, the other arms measure the CPU path (no streams, no pinning) and the step "
            "runs on the same CPU, so nothing can overlap"
        ),
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width table."""
    cfg = result["config"]
    lines = [
        f"feeding: {cfg['num_batches']} batches of {cfg['batch_size']}x3x{cfg['size']}x{cfg['size']} "
        f"uint8 ({cfg['batch_mb']:.1f} MiB) to {cfg['device']}, DataLoader workers {cfg['workers']}, "
        f"median of {cfg['repeats']} interleaved repeats",
    ]
    on_gpu = cfg["device"].startswith("cuda")
    if not on_gpu:
        lines.append(f"NO GPU{' present' if not result['gpu_present'] else ' used'}: {result['note']}")
    lines.append(f"{'copy arm':<20} {'rate':>17} {'vs raw':>7}  what it measures")
    for name, arm in result["copy"].items():
        ratio = result["ratios"].get(f"{name}_vs_raw")
        # NOTE [feeding on a CPU]: a handoff that copies nothing is no GB/s figure
        rate = (f"{arm['gb_per_s']:.2f} GB/s" if arm.get("copies", on_gpu)
                else f"{arm['gb_per_s'] * 1e9 / (cfg['batch_mb'] * 2**20):,.0f} batches/s")
        lines.append(f"{name:<20} {rate:>17} {(f'{ratio:.0%}' if ratio else '-'):>7}  "
                     f"{arm.get('measures', '')}")
    lines.append(f"{'step loop (step ' + format(cfg['step_ms'], '.1f') + ' ms)':<20} {'ms/batch':>8} {'data wait':>10}")
    for name, arm in result["overlap"].items():
        lines.append(f"{name:<20} {arm['ms_per_batch']:>8.2f} {arm['data_wait']:>10.1%}")
    t = result["targets"]
    if t["met"] is not None:
        lines.append(
            f"targets: prefetcher >= {t['prefetcher_vs_raw']:.0%} of raw, data wait < "
            f"{t['prefetcher_data_wait']:.0%}: {'met' if t['met'] else 'NOT met'}"
        )
    env = result["env"]
    lines.append(f"cpu: {env['cpu']} ({env['cores']} cores), gpu: {env['gpu']}, torch {env['torch']}")
    return "\n".join(lines)
