"""Sampler benchmark: ClassBalancedSampler / WeightedSampler vs stock WeightedRandomSampler,
and BucketBatchSampler padding efficiency vs random batching. All arms run in the same run,
on the same data, with repeats; medians are reported.

Measured:

- ``ClassBalancedSampler`` over ``N`` long-tailed int8 labels (10 classes,
  ``strategy="oversample"``, ``num_samples=N``): setup time (grouping by class), one
  whole epoch iterated from Python (``for i in sampler: pass``, epoch generation
  included) as indices/s, and extra peak memory per label beyond the labels, as
  the peak-RSS rise of a fresh subprocess over setup + a whole epoch
  (``VmHWM`` reset through ``/proc/self/clear_refs`` after the labels exist) and
  as the tracemalloc peak of numpy allocations over setup + epoch generation.
- Stock ``torch.utils.data.WeightedRandomSampler`` with the usual class-balancing
  weights ``1 / count[label]`` on the same labels: its error past 2^24 is caught
  and reported; at 2^24 labels (the first 2^24 of the same labels) it is timed on
  a bounded number of indices (a full 2^24 epoch takes tens of seconds), beside
  dataforge's samplers on a full 2^24 epoch.
- ``BucketBatchSampler`` on log-normal lengths: padding efficiency (real tokens /
  padded tokens) with ``batch_size=32`` and with a ``max_tokens`` budget, beside
  random batching of the same batch size (``BatchSampler(RandomSampler)``).

Wall time is what a user waits for; CPU time of this process is reported beside
it because on a shared machine wall time includes waiting for a core.

Example:
    >>> from dataforge.bench import samplers
    >>> result = samplers.run(quick=True)  # doctest: +SKIP
    >>> print(samplers.format_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dataforge.bench.common import BenchError, env_info, median
from dataforge.bench.sampler_probes import (
    MANY_CLASSES,
    MANY_CLASSES_ARM,
    STREAMED_ARMS,
    STREAMED_CLASSES,
    class_balanced,
    make_labels,
    numpy_peak,
    streamed_child,
)

_STOCK_BOUNDED = 1 << 21  # stock indices timed at 2^24 categories


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _drain(sampler: Any) -> tuple[int, float]:
    """Iterate a whole epoch; return (items, seconds to the first item)."""
    t0 = time.perf_counter()
    it = iter(sampler)
    n = 0
    first = float("nan")
    for _ in it:
        n += 1
        first = time.perf_counter() - t0
        break
    for _ in it:
        pass
    n = len(sampler) if hasattr(sampler, "__len__") else n
    return n, first


def _epochs(make: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Setup (``make``) and whole-epoch timings over ``repeats`` fresh samplers."""
    setup_w, setup_c, ep_w, ep_c, first, n = [], [], [], [], [], 0
    for r in range(repeats):
        gc.collect()
        sampler, w, c = _timed(make)
        setup_w.append(w)
        setup_c.append(c)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(r)
        (n, f), w, c = _timed(functools.partial(_drain, sampler))
        ep_w.append(w)
        ep_c.append(c)
        first.append(f)
        del sampler
    return {
        "indices": n,
        "repeats": repeats,
        "setup_s": median(setup_w),
        "setup_cpu_s": median(setup_c),
        "epoch_s": median(ep_w),
        "epoch_cpu_s": median(ep_c),
        "first_index_s": median(first),
        "indices_per_s": n / median(ep_w),
        "indices_per_cpu_s": n / median(ep_c),
        "epoch_s_all": ep_w,
    }


def _stock(labels: np.ndarray, num_samples: int) -> Any:
    counts = np.bincount(labels)
    weights = torch.from_numpy((1.0 / counts)[labels])
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples, generator=g)  # type: ignore[arg-type]


def _weighted(labels: np.ndarray) -> Any:
    from dataforge.samplers import WeightedSampler

    weights = (1.0 / np.bincount(labels))[labels]
    return WeightedSampler(weights, len(labels), seed=0, num_replicas=1, rank=0)


def _memory_in_process(labels: np.ndarray) -> dict[str, Any]:
    return {
        "tracemalloc_peak_bytes_per_label": numpy_peak(labels) / len(labels),
        "tracemalloc_method": "tracemalloc peak over setup + epoch generation (numpy buffers); "
        "includes ~40 MB of fixed chunk buffers, large beside 1M labels",
    }


def _memory(n: int) -> dict[str, Any]:
    code = (
        "import json,sys; from dataforge.bench.sampler_probes import memory_child; "
        "print(json.dumps(memory_child(int(sys.argv[1]))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise BenchError(f"memory probe failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# NOTE [arm names]: ``run(arms=...)`` / ``--arms`` take these short names (or a streamed
# arm's full name), so one arm can be measured without the whole run (~30 min at 1e8).
ARMS: dict[str, str] = {
    "num_samples_n": "ClassBalancedSampler(oversample, num_samples=N), 10 classes",
    "memory": "extra peak memory of the num_samples_n arm (a fresh process)",
    "stock": "WeightedRandomSampler and WeightedSampler at N and at 2^24 labels",
    "padding": "BucketBatchSampler padding efficiency against random batches",
    "oversample": "class_balanced_oversample (default arguments)",
    "sqrt": "class_balanced_sqrt (default arguments)",
    "undersample": "class_balanced_undersample (default arguments)",
    "weighted": "weighted_20x: WeightedSampler(num_samples=20 * N)",
    "bucket": "bucket_oversample: BucketBatchSampler(batch_size=64, balance='oversample')",
    "many_classes": f"{MANY_CLASSES_ARM}: ClassBalancedSampler(sqrt) over {MANY_CLASSES:,} classes",
}
_STREAMED_BY_SHORT = dict(zip(("oversample", "sqrt", "undersample", "weighted", "bucket",
                               "many_classes"), STREAMED_ARMS))


def select_arms(arms: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The short arm names to run, in :data:`ARMS` order (``None``: all of them).

    Accepts a comma list or a sequence of short names (:data:`ARMS`) or full streamed
    arm names (:data:`STREAMED_ARMS`).

    Raises:
        BenchError: an unknown or empty name (the valid names are listed).

    Example:
        >>> select_arms("bucket,undersample")
        ['undersample', 'bucket']
    """
    if arms is None:
        return list(ARMS)
    names = arms.split(",") if isinstance(arms, str) else list(arms)
    full = {v: k for k, v in _STREAMED_BY_SHORT.items()}
    chosen = set()
    for name in names:
        name = str(name).strip()
        short = full.get(name, name)
        if short not in ARMS:
            raise BenchError(f"--arms: unknown arm {name!r}; pick a comma list of "
                             f"{', '.join(ARMS)} (or full names {', '.join(STREAMED_ARMS)})")
        chosen.add(short)
    if not chosen:
        raise BenchError(f"--arms is empty; pick a comma list of {', '.join(ARMS)}")
    return [a for a in ARMS if a in chosen]


def _streamed(n: int, arms: list[str], fresh_process: bool = True) -> dict[str, Any]:
    """The default-argument ``arms``, each in a fresh process (``--quick``: in this one,
    where the memory figure includes what earlier arms left mapped)."""
    out: dict[str, Any] = {}
    code = ("import json,sys; from dataforge.bench.sampler_probes import streamed_child; "
            "print(json.dumps(streamed_child(sys.argv[1], int(sys.argv[2]))))")
    for arm in arms:
        if not fresh_process:
            out[arm] = streamed_child(arm, n)
            continue
        proc = subprocess.run([sys.executable, "-c", code, arm, str(n)], capture_output=True,
                              text=True, timeout=7200)
        if proc.returncode != 0:
            out[arm] = {"error": proc.stderr.strip()[-500:]}
        else:
            out[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _stock_failure(labels: np.ndarray) -> str | None:
    try:
        sampler = _stock(labels, 10)
        next(iter(sampler))
    except RuntimeError as e:
        return f"{type(e).__name__}: {e}"
    return None


def _padding(lengths: np.ndarray, batches: list[list[int]]) -> float:
    from dataforge.samplers.functional import padding_efficiency

    return padding_efficiency(lengths, batches)


def _bucket(n: int, repeats: int) -> dict[str, Any]:
    from dataforge.samplers import BucketBatchSampler

    rng = np.random.default_rng(1)
    lengths = np.maximum(1, rng.lognormal(4.0, 0.8, n).round()).astype(np.int64)
    max_tokens = 32 * int(np.median(lengths)) * 2
    arms: dict[str, Callable[[], Any]] = {
        "random_batch_size_32": lambda: torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(0)),
            32, drop_last=False),
        "bucket_batch_size_32": lambda: BucketBatchSampler(lengths, batch_size=32, seed=0,
                                                           num_replicas=1, rank=0),
        "bucket_max_tokens": lambda: BucketBatchSampler(lengths, max_tokens=max_tokens, seed=0,
                                                        oversize="single", num_replicas=1, rank=0),
    }
    out: dict[str, Any] = {"num_lengths": n, "lengths": "round(lognormal(mean=4, sigma=0.8)), >= 1",
                           "max_tokens": max_tokens}
    for name, make in arms.items():
        effs, times = [], []
        for r in range(repeats):
            sampler = make()
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(r)
            batches, w, _ = _timed(functools.partial(list, sampler))
            times.append(w)
            effs.append(_padding(lengths, batches))
        out[name] = {"padding_efficiency": median(effs), "batches": len(batches),
                     "mean_batch": n / len(batches), "epoch_s": median(times)}
    return out


def run(
    *,
    quick: bool = False,
    seconds: float | None = None,
    device: str = "cpu",
    data: str | None = None,
    out: str | None = None,
    num_labels: int | None = None,
    repeats: int | None = None,
    arms: str | list[str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Run the benchmark; ``num_labels`` defaults to 1,000,000 (quick) / 100,000,000.

    ``arms`` picks what runs (a comma list of :data:`ARMS` names, default all); the
    result holds only their sections. ``seconds`` and ``data`` are accepted for the
    common contract and unused (the work is a fixed number of epochs); ``device`` is
    recorded only (samplers run on CPU).
    """
    if kw:
        raise BenchError(f"unknown options for the samplers benchmark: {sorted(kw)}")
    chosen = select_arms(arms)
    n = num_labels or (1_000_000 if quick else 100_000_000)
    repeats = repeats or 3
    result: dict[str, Any] = {
        "benchmark": "samplers",
        "env": env_info(device),
        "config": {"quick": quick, "num_labels": n, "repeats": repeats, "arms": chosen,
                   "labels": "int8, 10 classes, P(k) ~ 1/(k+1)",
                   "class_balanced": "strategy='oversample', num_samples=N"},
    }
    if {"num_samples_n", "memory", "stock"} & set(chosen):
        labels = make_labels(n)
        if "num_samples_n" in chosen:
            result["class_balanced"] = _epochs(lambda: class_balanced(labels), repeats)
        if "memory" in chosen:
            result["memory"] = _memory_in_process(labels) if quick else _memory(n)
        if "stock" in chosen:
            result.update(_stock_arms(labels, n, repeats, quick))
        del labels
        gc.collect()
    if "padding" in chosen:
        result["bucket"] = _bucket(min(n, 100_000) if quick else 1_000_000, repeats)
    streamed = [_STREAMED_BY_SHORT[a] for a in chosen if a in _STREAMED_BY_SHORT]
    if streamed:
        result["streamed"] = _streamed(n, streamed, fresh_process=not quick)
    return result


def _stock_arms(labels: np.ndarray, n: int, repeats: int, quick: bool) -> dict[str, Any]:
    """Stock ``WeightedRandomSampler`` beside dataforge's at ``n`` and at 2^24 labels."""
    cap = 1 << 24
    out: dict[str, Any] = {"stock_at_n": {"error": _stock_failure(labels)}}
    if out["stock_at_n"]["error"] is None:  # n <= 2^24: stock works, time it on the same labels
        out["stock_at_n"].update(_epochs(lambda: _stock(labels, n), repeats))
        out["weighted_at_n"] = _epochs(lambda: _weighted(labels), repeats)
        out["stock_at_2_24_plus_1"] = {"error": _stock_failure(make_labels(cap + 1))}
    if not quick and n >= cap:
        sub = np.ascontiguousarray(labels[:cap])
        out["at_2_24"] = {
            "class_balanced": _epochs(lambda: class_balanced(sub), repeats),
            "weighted_sampler": _epochs(lambda: _weighted(sub), repeats),
            "stock_bounded": {**_epochs(lambda: _stock(sub, _STOCK_BOUNDED), repeats),
                              "note": f"stock timed on {_STOCK_BOUNDED} indices drawn from 2^24 "
                                      "categories (a full 2^24 epoch takes tens of seconds)"},
        }
    return out


def _rate(d: dict[str, Any]) -> str:
    return (f"{d['indices_per_s'] / 1e6:7.2f} M/s wall ({d['indices_per_cpu_s'] / 1e6:6.2f} M/s CPU), "
            f"setup {d['setup_s']:.2f} s, epoch {d['epoch_s']:.2f} s")


def format_table(result: dict[str, Any]) -> str:
    cfg, env = result["config"], result["env"]
    lines = [
        f"samplers benchmark: N={cfg['num_labels']:,} labels ({cfg['labels']}), "
        f"median of {cfg['repeats']}; {env['cpu']} x{env['cores']}, torch {env['torch']}"
        + (f"; arms {','.join(cfg['arms'])}" if cfg.get("arms", list(ARMS)) != list(ARMS) else ""),
    ]
    if "class_balanced" in result:
        lines.append(f"ClassBalancedSampler   N:     {_rate(result['class_balanced'])}")
    if "memory" in result:
        mem = result["memory"]
        rss = mem.get("rss_extra_bytes_per_label")
        lines.append("  extra peak memory: "
                     + (f"{rss:.2f} B/label (RSS, subprocess, whole epoch), " if rss is not None else "")
                     + f"{mem['tracemalloc_peak_bytes_per_label']:.2f} B/label (numpy, tracemalloc)")
    stock = result.get("stock_at_n")
    if stock is not None and stock.get("error"):
        lines.append(f"WeightedRandomSampler  N:     fails: {stock['error']}")
    elif stock is not None:
        lines.append(f"WeightedRandomSampler  N:     {_rate(stock)}")
        lines.append(f"WeightedSampler        N:     {_rate(result['weighted_at_n'])}")
    if "stock_at_2_24_plus_1" in result:
        lines.append(f"WeightedRandomSampler 2^24+1: fails: {result['stock_at_2_24_plus_1']['error']}")
    if "at_2_24" in result:
        a = result["at_2_24"]
        lines.append(f"ClassBalancedSampler   2^24:  {_rate(a['class_balanced'])}")
        lines.append(f"WeightedSampler        2^24:  {_rate(a['weighted_sampler'])}")
        lines.append(f"WeightedRandomSampler  2^24:  {_rate(a['stock_bounded'])} "
                     f"[{a['stock_bounded']['indices']:,} indices]")
    if result.get("streamed"):
        lines.append(f"default arguments, whole epoch, {cfg['num_labels']:,} labels over "
                     f"{STREAMED_CLASSES} classes ({MANY_CLASSES:,} for {MANY_CLASSES_ARM}; "
                     f"{'this process' if cfg['quick'] else 'fresh process each'}):")
    for arm, d in result.get("streamed", {}).items():
        if "error" in d:
            lines.append(f"  {arm:28s} failed: {d['error']}")
            continue
        lines.append(f"  {arm:28s} {d['epoch_length']:>13,} indices: first index {d['first_index_s']:.2f} s "
                     f"({d.get('first_index_cpu_s', float('nan')):.2f} CPU-s; setup {d['setup_s']:.2f} s, "
                     f"{d['setup_cpu_s']:.2f} CPU-s), {d['indices_per_s'] / 1e6:.2f} M/s wall "
                     f"({d['indices_per_cpu_s'] / 1e6:.2f} M/s CPU), "
                     f"{d['extra_bytes_per_label']:.2f} B/label extra peak RSS")
    if "bucket" in result:
        b = result["bucket"]
        lines.append(f"padding efficiency, {b['num_lengths']:,} lengths {b['lengths']}:")
        for name in ("random_batch_size_32", "bucket_batch_size_32", "bucket_max_tokens"):
            d = b[name]
            extra = f" (max_tokens={b['max_tokens']})" if name == "bucket_max_tokens" else ""
            lines.append(f"  {name:22s} {d['padding_efficiency']:.4f}  {d['batches']:,} batches, "
                         f"mean {d['mean_batch']:.1f}/batch, epoch {d['epoch_s']:.2f} s{extra}")
    return "\n".join(lines)
