"""Transforms benchmark: per-core cost of the image and text per-sample pipelines.

Image, samples/s on ONE core (single process, ``torch.set_num_threads(1)``), on
the same generated JPEGs (300-500 px), in batches of ``batch_size``:

- ``stock``: the torchvision tutorial pipeline per sample: PIL open + convert
  RGB, v2 ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip``, ``ToImage`` +
  ``ToDtype(float32, scale=True)`` + ``Normalize``, then ``torch.stack``.
- ``dataforge``: uint8 ``train_transforms`` given the file, as ``ImageFolder``
  hands it over: the crop is drawn from the header and only the crop is decoded
  (libjpeg-turbo region decode, see NOTE [region decode]; torchvision.io decode
  of the whole image when the C extension is not built), then resize + flip;
  dataforge's collate (``collate.functional.stack``, which keeps the images'
  channels-last layout) of uint8, then batch ``ToFloat`` + ``Normalize`` (on
  ``device``; the stock float batch is moved there too).
- ``dataforge-whole``: the same, but ``decode_image`` (torchvision.io) of the
  whole image first and the preset on the tensor: what the region decode buys.

Both arms draw their crops from torch's global RNG, reseeded identically before
each run, so they crop the same regions of the same images. Arms are
interleaved, their order rotated each repeat; medians of the repeats are
reported. The headline speedup is per core: samples per CPU-second of this
single-threaded process (robust to time-slicing on a shared machine), as the
median of per-repeat ratios; the wall-clock ratio is reported beside it.
Target: ``dataforge`` >= 1.8x ``stock``.

Text, tokens/s over a later epoch (single process), same corpus, same
tokenizer, same batches of shuffled indices:

- ``per_sample``: tokenization in ``__getitem__`` (the torchtext-era pattern):
  every epoch re-tokenizes every text, one call each.
- ``packed``: ``tokenize_dataset`` once (batched; its one-off cost is reported
  apart), then each epoch only slices ``PackedTokenDataset.__getitems__``.

Example:
    >>> r = run(quick=True, seconds=0.05, repeats=1, num_images=4, num_docs=50,
    ...         batch_size=4)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataforge.bench.common import BenchError, env_info, interleaved, median
from dataforge.bench.runner import timed_window

__all__ = ["format_table", "run"]

TARGET_SPEEDUP = 1.8
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_QUICK = {"num_images": 64, "seconds": 0.5, "repeats": 3, "num_docs": 1000, "vocab_size": 2000}
_FULL = {"num_images": 256, "seconds": 3.0, "repeats": 5, "num_docs": 10000, "vocab_size": 8000}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_window(
    step: Callable[[Sequence[Any]], int], batches: Sequence[Sequence[Any]], seconds: float, seed: int
) -> dict[str, float]:
    """Run ``step`` over ``batches`` (cycling) for at least ``seconds`` (and one batch)
    (:func:`~dataforge.bench.runner.timed_window`)."""
    torch.manual_seed(seed)
    cycle = itertools.cycle(batches)
    w = timed_window(lambda: step(next(cycle)), seconds)
    cpu = max(w.cpu_s, 1e-9)
    return {
        "samples": w.done,
        "wall_s": w.wall_s,
        "cpu_s": cpu,
        "samples_per_s": w.done / w.wall_s,
        "samples_per_cpu_s": w.done / cpu,
        "cpu_util": cpu / w.wall_s,
    }


def _after_each(
    repeats: int, progress: Callable[[str], None] | None
) -> Callable[[int, str, Any], None] | None:
    """A progress line after each run of :func:`common.interleaved`, or ``None``."""
    if progress is None:
        return None
    return lambda r, name, _: progress(f"transforms: repeat {r + 1}/{repeats} {name}")


_IMAGE_LABELS = {
    "stock": "PIL + v2 RandomResizedCrop/Flip + ToImage/ToDtype/Normalize per sample (float32)",
    "dataforge": "uint8 train_transforms on the file (decodes only the crop), batch ToFloat+Normalize",
    "dataforge-whole": "torchvision.io decode of the whole image, then the same preset and batch ops",
}


def _image_part(
    files: list[str],
    *,
    batch_size: int,
    image_size: int,
    seconds: float,
    repeats: int,
    device: torch.device,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    steps, out_bytes = _image_steps(image_size, device)
    for step in steps.values():  # warm-up (allocators, lazy imports), excluded
        step(batches[0])
    # Run r of each arm uses seed r: all arms crop the same regions in a repeat.
    seeds = {name: itertools.count() for name in steps}

    def arm(name: str) -> Callable[[], dict[str, float]]:
        return lambda: _time_window(steps[name], batches, seconds, seed=next(seeds[name]))

    runs = interleaved({name: arm(name) for name in steps}, repeats, _after_each(repeats, progress))
    result: dict[str, Any] = {"arms": {
        name: {
            "label": _IMAGE_LABELS[name],
            "samples_per_s": median([r["samples_per_s"] for r in rs]),
            "samples_per_cpu_s": median([r["samples_per_cpu_s"] for r in rs]),
            "cpu_util": median([r["cpu_util"] for r in rs]),
            "bytes_per_sample_out": out_bytes[name],
            "runs": rs,
        }
        for name, rs in runs.items()
    }}
    result.update(_image_speedups(runs), num_images=len(files))
    return result


def _image_steps(
    image_size: int, device: torch.device
) -> tuple[dict[str, Callable[[Sequence[str]], int]], dict[str, int]]:
    """Each image arm as ``step(paths) -> samples done`` (the batch finished on ``device``),
    and the bytes per sample each hands over, filled in as the steps run."""
    from PIL import Image
    from torchvision.transforms import v2

    from dataforge.collate.functional import stack
    from dataforge.transforms.batch import Compose, Normalize, ToFloat
    from dataforge.transforms.decode import decode_image
    from dataforge.transforms.image import train_transforms

    tutorial = v2.Compose(
        [
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    preset = train_transforms(image_size)
    on_device = Compose([ToFloat(), Normalize(MEAN, STD)]).to(device)
    out_bytes: dict[str, int] = {}

    def stock(paths: Sequence[str]) -> int:
        x = torch.stack([tutorial(Image.open(p).convert("RGB")) for p in paths])
        out_bytes["stock"] = x[0].nbytes
        x = x.to(device)
        _sync(device)
        return len(paths)

    def uint8_arm(name: str, load: Callable[[str], torch.Tensor]) -> Callable[[Sequence[str]], int]:
        def step(paths: Sequence[str]) -> int:
            u8 = stack([load(p) for p in paths])  # dataforge's collate: NOTE [stack keeps the layout]
            out_bytes[name] = u8[0].nbytes
            x = on_device(u8.to(device))
            _sync(device)
            return len(paths) if x.dtype == torch.float32 else 0
        return step

    steps = {
        "stock": stock,
        "dataforge": uint8_arm("dataforge", preset),
        "dataforge-whole": uint8_arm("dataforge-whole", lambda p: preset(decode_image(p))),
    }
    return steps, out_bytes


def _image_speedups(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """dataforge's speedups over stock, per core and wall, and the whole-decode one.

    NOTE [speedup]: the median over repeats of the per-repeat ratio (the two arms
    of a repeat ran back to back, so machine drift cancels), on CPU time (samples
    per CPU-second of this single-threaded process = per-core throughput, robust
    to time-slicing on a shared machine) and on wall time.
    """
    from dataforge.transforms.decode import HAVE_ROI_DECODE

    pairs = list(zip(runs["stock"], runs["dataforge"]))
    cpu_ratios = [b["samples_per_cpu_s"] / a["samples_per_cpu_s"] for a, b in pairs]
    wall_ratios = [b["samples_per_s"] / a["samples_per_s"] for a, b in pairs]
    whole_ratios = [b["samples_per_cpu_s"] / a["samples_per_cpu_s"]
                    for a, b in zip(runs["stock"], runs["dataforge-whole"])]
    speedup = median(cpu_ratios)
    return {
        "region_decode": HAVE_ROI_DECODE,
        "speedup_whole_decode": median(whole_ratios),
        "speedup": speedup,
        "speedup_wall": median(wall_ratios),
        "speedup_per_repeat": cpu_ratios,
        "speedup_wall_per_repeat": wall_ratios,
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
    }


class _PerSampleTokenized(torch.utils.data.Dataset):
    """The stock pattern: tokenize in ``__getitem__``, every epoch."""

    def __init__(self, texts: Sequence[str], labels: np.ndarray | None, tokenize: Any) -> None:
        self.texts, self.labels, self.tokenize = texts, labels, tokenize

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids = torch.tensor(self.tokenize(self.texts[index]), dtype=torch.int64)
        if self.labels is None:
            return {"input_ids": ids}
        return {"input_ids": ids, "label": int(self.labels[index])}


_TEXT_LABELS = {
    "per_sample": "Tokenize(text) in __getitem__, every epoch",
    "packed": "tokenize_dataset once, then PackedTokenDataset.__getitems__",
}


def _text_part(
    path: str,
    *,
    batch_size: int,
    repeats: int,
    vocab_size: int,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    from dataforge.datasets.packed import tokenize_dataset
    from dataforge.datasets.text import TextDataset
    from dataforge.transforms.text import Tokenize, train_tokenizer

    text_ds = TextDataset.from_jsonl(path)
    texts = list(text_ds.texts)
    t0 = time.perf_counter()
    tok = Tokenize(train_tokenizer(texts, vocab_size=vocab_size), max_length=512)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = tokenize_dataset(text_ds, tok)
    tokenize_once_s = time.perf_counter() - t0
    per_sample = _PerSampleTokenized(texts, text_ds.labels, tok.encode)

    order = np.random.default_rng(0).permutation(len(texts)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    tokens = int(packed.lengths.sum())
    for i in order[:50]:  # both paths must give the same ids
        if not torch.equal(per_sample[i]["input_ids"], packed[i]["input_ids"]):
            raise BenchError(f"text: packed ids differ from per-sample ids at index {i}")

    arms = {
        "per_sample": lambda: _epoch(lambda b: [per_sample[i] for i in b], batches),
        "packed": lambda: _epoch(packed.__getitems__, batches),
    }
    runs = interleaved(arms, repeats, _after_each(repeats, progress))
    ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(runs["per_sample"], runs["packed"])]
    return {
        "arms": {
            name: {
                "label": _TEXT_LABELS[name],
                "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
                "tokens_per_cpu_s": median([r["tokens_per_cpu_s"] for r in rs]),
                "runs": rs,
            }
            for name, rs in runs.items()
        },
        "speedup": median(ratios),
        "speedup_per_repeat": ratios,
        "num_docs": len(texts),
        "tokens_per_epoch": tokens,
        "vocab_size": tok.vocab_size,
        "train_tokenizer_s": train_s,
        "tokenize_once_s": tokenize_once_s,
        "tokenize_once_tokens_per_s": tokens / tokenize_once_s,
    }


def _epoch(fetch: Callable[[list[int]], list[dict[str, Any]]], batches: list[list[int]]) -> dict[str, float]:
    """Tokens/s of one timed pass of ``fetch`` over ``batches``: a later epoch.

    The packed arm's first pass was ``tokenize_dataset`` (timed apart); a few batches
    warm up both arms, then one whole epoch is timed.
    """
    for b in batches[:5]:
        fetch(b)
    n_tok = 0
    cpu0, t = time.process_time(), time.perf_counter()
    for b in batches:
        n_tok += sum(len(x["input_ids"]) for x in fetch(b))
    wall = time.perf_counter() - t
    cpu = max(time.process_time() - cpu0, 1e-9)
    return {
        "tokens": n_tok, "wall_s": wall, "cpu_s": cpu,
        "tokens_per_s": n_tok / wall, "tokens_per_cpu_s": n_tok / cpu,
    }


_NOTES = [
    "per core: one process, torch.set_num_threads(1); arms interleaved, medians",
    "text one-off tokenize_dataset uses the tokenizers thread pool (all cores)",
]


def _check_options(window: float, reps: int, bs: int, parts: Sequence[str], device: str) -> torch.device:
    """The checked device of :func:`run`; ``BenchError`` names a bad option."""
    if window <= 0 or reps < 1 or bs < 1:
        raise BenchError(
            f"seconds, repeats and batch_size must be positive, got {window}, {reps}, {bs}"
        )
    unknown = set(parts) - {"image", "text"}
    if unknown:
        raise BenchError(f"parts must be 'image' and/or 'text', got {sorted(unknown)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked but no CUDA device is available")
    return dev


def run(
    *, quick: bool = False, seconds: float | None = None, device: str = "cpu",
    data: str | None = None, out: str | None = None, repeats: int | None = None,
    batch_size: int | None = None, num_images: int | None = None, num_docs: int | None = None,
    image_size: int = 224, parts: Sequence[str] = ("image", "text"),
    progress: Callable[[str], None] | None = None, **kw: Any,
) -> dict[str, Any]:
    """Measure the image and text per-sample pipelines (see the module docstring).

    Args:
        quick: small data and short windows (a few seconds in all).
        seconds: measured seconds per image run (default 0.5 quick, 3 full).
        device: where the batch ``ToFloat`` + ``Normalize`` run (``"cpu"``, ``"cuda"``).
        data: an image folder (``ROOT/<class>/*.jpg``) for the image part, or a JSONL
            file (``{"text", "label"}`` per line) for the text part; demo data otherwise.
        out: unused (the script writes the JSON); accepted for the common contract.
        repeats: interleaved repeats per arm (median reported; at least 3 advised).
        batch_size: images / texts per batch (default 64).
        num_images: demo images (default 64 quick, 256 full).
        num_docs: demo documents (default 2000 quick, 20000 full).
        image_size: output side of the crop.
        parts: which parts to run, ``"image"`` and / or ``"text"``.
        progress: called with a short line after each run.
    """
    if kw:
        raise BenchError(f"unknown options for the transforms benchmark: {sorted(kw)}")
    cfg = dict(_QUICK if quick else _FULL)
    window = float(seconds if seconds is not None else cfg["seconds"])
    reps = int(repeats if repeats is not None else cfg["repeats"])
    bs = int(batch_size) if batch_size is not None else 64
    dev = _check_options(window, reps, bs, parts, device)
    data_path = Path(data).expanduser() if data is not None else None
    result: dict[str, Any] = {
        "benchmark": "transforms", "env": env_info(device), "notes": list(_NOTES),
        "params": {"quick": quick, "seconds": window, "repeats": reps, "batch_size": bs,
                   "image_size": image_size, "threads": 1, "device": str(dev)},
    }
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if "image" in parts:
            root, files = _image_files(data_path, num_images, int(cfg["num_images"]))
            result["image"] = _image_part(files, batch_size=bs, image_size=image_size, seconds=window,
                                          repeats=reps, device=dev, progress=progress)
            result["image"]["data"] = str(root)
        if "text" in parts:
            path = _text_file(data_path, int(num_docs or cfg["num_docs"]))
            result["text"] = _text_part(path, batch_size=bs, repeats=reps,
                                        vocab_size=int(cfg["vocab_size"]), progress=progress)
            result["text"]["data"] = path
    finally:
        torch.set_num_threads(old_threads)
    return result


def _image_files(data: Path | None, num_images: int | None, default: int) -> tuple[Path, list[str]]:
    """The image folder (``data`` when it is a folder, else demo images) and its first
    ``num_images`` files (all when ``None``)."""
    from dataforge.bench.data import check_image_folder, demo_image_folder

    root = data if data is not None and data.is_dir() else demo_image_folder(
        int(num_images or default), progress=False)
    files = [p for p, _ in check_image_folder(root)]
    return root, files[: int(num_images)] if num_images else files


def _text_file(data: Path | None, num_docs: int) -> str:
    """The JSONL corpus: ``data`` when it is a file, else ``num_docs`` demo documents."""
    from dataforge.bench.data import demo_text_corpus

    if data is not None and data.is_file():
        return str(data)
    return str(demo_text_corpus(num_docs, progress=False))


def format_table(result: dict[str, Any]) -> str:
    """The result as a few aligned lines for the terminal."""
    env = result.get("env", {})
    lines = [
        f"transforms benchmark ({env.get('cpu', '?')}, {env.get('cores', '?')} cores, "
        f"torch {env.get('torch', '?')}, device {result.get('params', {}).get('device', '?')})"
    ]
    img = result.get("image")
    if img:
        lines.append(
            f"image, per core, {img['num_images']} JPEGs, batch {result['params']['batch_size']}:"
        )
        lines.append(f"  {'arm':<15} {'samples/cpu-s':>13} {'samples/s':>10} {'KiB out':>8}")
        for name, arm in img["arms"].items():
            lines.append(
                f"  {name:<15} {arm['samples_per_cpu_s']:>13.1f} {arm['samples_per_s']:>10.1f} "
                f"{arm['bytes_per_sample_out'] / 1024:>8.0f}  {arm['label']}"
            )
        verdict = "meets" if img["meets_target"] else "MISSES"
        lines.append(
            f"  speedup    {img['speedup']:.2f}x per core (CPU time; target {img['target_speedup']}x: "
            f"{verdict}), {img['speedup_wall']:.2f}x wall; median of per-repeat ratios "
            f"[{', '.join(f'{r:.2f}' for r in img['speedup_per_repeat'])}]"
        )
        if "speedup_whole_decode" in img:
            region = "built" if img.get("region_decode") else "NOT built: whole-image decode"
            lines.append(
                f"  whole decode {img['speedup_whole_decode']:.2f}x per core (region-decode extension: {region})"
            )
    txt = result.get("text")
    if txt:
        lines.append(
            f"text, {txt['num_docs']} docs, {txt['tokens_per_epoch']} tokens/epoch, "
            f"vocab {txt['vocab_size']}, a later epoch:"
        )
        for name, arm in txt["arms"].items():
            lines.append(f"  {name:<10} {arm['tokens_per_s']:>12,.0f} tokens/s  {arm['label']}")
        lines.append(
            f"  speedup    {txt['speedup']:.1f}x (median of per-repeat ratios); one-off: train tokenizer "
            f"{txt['train_tokenizer_s']:.2f} s, tokenize_dataset {txt['tokenize_once_s']:.2f} s "
            f"({txt['tokenize_once_tokens_per_s']:,.0f} tokens/s on {env.get('cores', '?')} cores)"
        )
    return "\n".join(lines)
