"""What the sampler benchmark measures in a fresh process (:mod:`dataforge.bench.samplers`
runs each by module path, so a probe's memory figure holds only its own arm): the labels,
the peak memory of the ``num_samples=N`` arm, and one whole epoch of a default-arguments
arm.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

import numpy as np

from dataforge.bench.common import BenchError

STREAMED_CLASSES = 100  # the default-arguments arms: 100 classes, 19% ... 0.19%


def make_labels(n: int, seed: int = 0, num_classes: int = 10) -> np.ndarray:
    """``n`` long-tailed class labels, ``P(k) ~ 1 / (k + 1)`` (deterministic); int8 up to
    128 classes, else int16 (up to 32,768 classes)."""
    if not 1 <= num_classes <= 1 << 15:
        raise BenchError(f"num_classes must be in 1..32768, got {num_classes}")
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, num_classes + 1)
    cdf = np.cumsum(p / p.sum())
    out = np.empty(n, np.int8 if num_classes <= 128 else np.int16)
    for s in range(0, n, 1 << 22):  # chunked: no n-sized float temporaries
        u = rng.random(min(1 << 22, n - s))
        out[s : s + len(u)] = np.searchsorted(cdf, u, side="right")
    return out


def class_balanced(labels: np.ndarray) -> Any:
    from dataforge.samplers import ClassBalancedSampler

    return ClassBalancedSampler(labels, strategy="oversample", num_samples=len(labels), seed=0,
                                num_replicas=1, rank=0)


def read_status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0  # kB -> MiB
    raise OSError(key)


def numpy_peak(labels: np.ndarray) -> int:
    """The tracemalloc peak (bytes; numpy's buffers) of the ``num_samples=N`` arm's setup and
    epoch generation over ``labels``."""
    gc.collect()
    tracemalloc.start()
    sampler = class_balanced(labels)
    for _ in sampler.epoch_chunks():
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def memory_child(n: int) -> dict[str, Any]:
    """Run in a fresh process: extra peak memory of setup + one epoch, per label."""
    labels = make_labels(n)
    gc.collect()
    base = read_status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the RSS high-water mark to the current RSS
        method = "peak RSS (VmHWM after clear_refs) minus RSS with labels allocated"
    except OSError:
        method = "peak RSS since process start (clear_refs unavailable) minus RSS with labels"
    sampler = class_balanced(labels)
    for _ in sampler:
        pass
    peak = read_status("VmHWM")
    del sampler
    np_peak = numpy_peak(labels)
    return {
        "labels_mib": labels.nbytes / 2**20,
        "rss_extra_mib": peak - base,
        "rss_extra_bytes_per_label": (peak - base) * 2**20 / n,
        "rss_method": method,
        "tracemalloc_peak_bytes_per_label": np_peak / n,
        "tracemalloc_method": "tracemalloc peak over setup + epoch generation (numpy buffers)",
    }


def _streamed_sampler(arm: str, labels: np.ndarray) -> Any:
    """The sampler of a default-arguments arm (built inside the timed, measured region)."""
    from dataforge.samplers import ClassBalancedSampler, WeightedSampler

    if arm == MANY_CLASSES_ARM:
        return ClassBalancedSampler(labels, strategy="sqrt", seed=0, num_replicas=1, rank=0)
    if arm.startswith("class_balanced_"):
        return ClassBalancedSampler(labels, strategy=arm.removeprefix("class_balanced_"), seed=0,
                                    num_replicas=1, rank=0)
    if arm == "weighted_20x":  # the weights are an input: made before the memory baseline
        inv = 1.0 / np.bincount(labels)
        weights = np.empty(len(labels), np.float64)
        for s in range(0, len(labels), 1 << 22):
            weights[s : s + (1 << 22)] = inv[labels[s : s + (1 << 22)]]
        return lambda: WeightedSampler(weights, 20 * len(labels), seed=0, num_replicas=1, rank=0)
    if arm == "bucket_oversample":  # the lengths are an input, made before the baseline
        from dataforge.samplers import BucketBatchSampler

        lengths = np.maximum(1, np.random.default_rng(1).lognormal(4.0, 0.8, len(labels)).round())
        lengths = lengths.astype(np.int64)
        return lambda: BucketBatchSampler(lengths, batch_size=64, labels=labels, balance="oversample",
                                          seed=0, num_replicas=1, rank=0)
    raise BenchError(f"unknown streamed arm {arm!r}; pick one of {STREAMED_ARMS}")


MANY_CLASSES_ARM = "class_balanced_sqrt_10000_classes"
MANY_CLASSES = 10_000
STREAMED_ARMS = ("class_balanced_oversample", "class_balanced_sqrt", "class_balanced_undersample",
                 "weighted_20x", "bucket_oversample", MANY_CLASSES_ARM)
def streamed_child(arm: str, n: int) -> dict[str, Any]:
    """One whole epoch of a sampler with its default arguments, measured in this process.

    Reports setup time, time from ``iter()`` to the first index, the whole epoch's
    rate iterated from Python, and the peak-RSS rise over setup + epoch per label
    (``VmHWM`` reset through ``/proc/self/clear_refs`` once the inputs exist).
    """
    labels = make_labels(n, num_classes=MANY_CLASSES if arm == MANY_CLASSES_ARM else STREAMED_CLASSES)
    make: Any = None
    if arm in ("weighted_20x", "bucket_oversample"):  # inputs beyond the labels come first
        make = _streamed_sampler(arm, labels)
    gc.collect()
    base = read_status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss_method = "peak RSS (VmHWM after clear_refs) minus RSS with the inputs allocated"
    except OSError:
        rss_method = "peak RSS since process start (clear_refs unavailable) minus RSS with inputs"
    w0, c0 = time.perf_counter(), time.process_time()
    sampler = make() if make is not None else _streamed_sampler(arm, labels)
    setup_w, setup_c = time.perf_counter() - w0, time.process_time() - c0
    w0, c0 = time.perf_counter(), time.process_time()
    it = iter(sampler)
    first_item = next(it)
    first, first_c = time.perf_counter() - w0, time.process_time() - c0
    if arm.startswith("bucket"):  # batches: count the indices they hold
        length = len(first_item)
        for batch in it:
            length += len(batch)
    else:
        for _ in it:
            pass
        length = len(sampler)
    epoch_w, epoch_c = time.perf_counter() - w0, time.process_time() - c0
    peak = read_status("VmHWM")
    return {
        "arm": arm, "num_labels": n, "epoch_length": length,
        "setup_s": setup_w, "setup_cpu_s": setup_c, "first_index_s": first,
        "first_index_cpu_s": first_c,
        "epoch_s": epoch_w, "epoch_cpu_s": epoch_c,
        "indices_per_s": length / epoch_w, "indices_per_cpu_s": length / epoch_c,
        "extra_bytes_per_label": (peak - base) * 2**20 / n, "rss_method": rss_method,
    }
