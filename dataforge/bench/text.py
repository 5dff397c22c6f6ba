"""End-to-end text benchmark: per-sample tokenization (stock) vs packed storage (dataforge).

Both arms read the same JSONL corpus with the same tokenizer (a WordPiece
tokenizer trained offline on the corpus itself; nothing is downloaded) and the
same truncation, and a sample counts once its padded batch is on the target
device:

1. ``stock``: a ``Dataset`` whose ``__getitem__`` tokenizes one text with a
   transformers fast tokenizer (``PreTrainedTokenizerFast`` wrapping the trained
   tokenizer), ``DataLoader(shuffle=True)``, ``DataCollatorWithPadding``.
2. ``dataforge``: the corpus tokenized once into packed storage
   (``TextDataset.tokenize``), ``BucketBatchSampler`` (batches of similar
   lengths), ``PadCollate`` (pad to a multiple of 8), ``build_loader``.

Reported per arm: samples/s and tokens/s (real tokens, from the attention mask)
in the steady state, padding efficiency (real / padded tokens), and the first
epoch separately: its wall time from the in-memory texts, including dataforge's
one-off tokenization.

The limit, measured in the same run for each arm's own pipeline (one process, one
thread, no loader, times the cores in use): ``tokenize+pad`` for ``stock`` (the fast
tokenizer's batch call with ``padding=True`` on batches of texts) and ``packed+pad``
for ``dataforge`` (fetch a bucketed batch from the packed storage, ``PadCollate``).
NOTE [text limits]: a pre-tokenized pipeline does no tokenization in the steady state,
so a fraction of the tokenization limit would say nothing about it (it read 3861% in
one run); each arm is measured against the work it does, and ``x stock`` says what
skipping the tokenization buys.

NOTE [tokenizer threads]: ``TOKENIZERS_PARALLELISM`` is set to ``false`` (unless
already set) so that the Rust thread pool neither competes with the loader's
workers nor warns after ``fork``; the limit is then single-threaded as stated.

Example:
    >>> result = run(quick=True)          # doctest: +SKIP
    >>> print(format_table(result))       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from dataforge.bench import report
from dataforge.bench.common import BenchError, env_info, median, usable_cores
from dataforge.bench.runner import (
    Arm,
    ArmSummary,
    Counters,
    check_workers,
    cores_in_use,
    cpu_seconds_per_call,
    resolve_device,
    run_arms,
)

FULL = {"num_docs": 20_000, "batch_size": 64, "seconds": 10.0, "warmup": 1.0}
QUICK = {"num_docs": 2_000, "batch_size": 64, "seconds": 1.0, "warmup": 0.3}
VOCAB_SIZE = 8_000
MAX_LENGTH = 512
PAD_MULTIPLE = 8
PIPELINE = "tokenize+pad"  # stock: tokenizes every text of every epoch
PACKED = "packed+pad"  # dataforge: reads pre-tokenized ids, pads (NOTE [text limits])
BATCH_TIMEOUT = 300.0  # seconds: a stuck worker fails its arm instead of hanging the run


class StockTextDataset(torch.utils.data.Dataset):
    """Tokenizes one text per ``__getitem__`` with a transformers fast tokenizer."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer: Any, max_length: int) -> None:
        self.texts, self.labels, self.tokenizer, self.max_length = texts, labels, tokenizer, max_length

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        enc = self.tokenizer(self.texts[index], truncation=True, max_length=self.max_length)
        enc["label"] = self.labels[index]
        return enc


class _ToDevice:
    """Iterate ``loader`` and move each batch's tensors to ``device``."""

    def __init__(self, loader: Iterable[Any], device: torch.device) -> None:
        self.loader, self.device = loader, device

    def __iter__(self) -> Iterator[Any]:
        nb = self.device.type == "cuda"
        for batch in self.loader:
            yield {k: v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v
                   for k, v in batch.items()}


def _consumer(device: torch.device) -> Callable[[Any], Counters]:
    def consume(batch: Any) -> Counters:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if not (isinstance(ids, torch.Tensor) and ids.ndim == 2 and ids.device.type == device.type
                and mask.shape == ids.shape):
            got = f"{tuple(ids.shape)} on {ids.device}" if isinstance(ids, torch.Tensor) else type(ids)
            raise RuntimeError(f"arm produced input_ids {got}; expected a padded (B, L) batch on {device}")
        real = int(mask.sum())  # a device sync on CUDA
        return {"samples": float(ids.shape[0]), "tokens": float(real), "padded_tokens": float(ids.numel())}

    return consume


def hf_tokenizer(tok: Any, max_length: int = MAX_LENGTH) -> Any:
    """Wrap a trained ``tokenizers.Tokenizer`` (a private copy) as a transformers fast tokenizer."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()), pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]", model_max_length=max_length)


def packed_collate() -> Any:
    """The dataforge arm's collate: pad ``input_ids`` to a multiple of 8, with the mask."""
    from dataforge.collate.pad import PadCollate

    return PadCollate(0, keys=["input_ids"], pad_to_multiple_of=PAD_MULTIPLE,
                      mask_names={"input_ids": "attention_mask"}, return_lengths=False)


def make_arms(text_ds: Any, tok: Any, *, batch_size: int, device: torch.device,
              packed: Any = None) -> tuple[list[Arm], dict[str, Callable[[int], Iterable[Any]]]]:
    """The text arms, and for each a builder *from scratch* (for the first epoch)."""
    from transformers import DataCollatorWithPadding

    cuda = device.type == "cuda"
    hf = hf_tokenizer(tok)
    texts = list(text_ds.texts)
    labels = [int(x) for x in text_ds.labels] if text_ds.labels is not None else [0] * len(texts)
    stock_ds = StockTextDataset(texts, labels, hf, MAX_LENGTH)
    collator = DataCollatorWithPadding(hf, return_tensors="pt")
    consume = _consumer(device)

    def make_stock(workers: int) -> Iterable[Any]:
        return _ToDevice(torch.utils.data.DataLoader(
            stock_ds, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=cuda,
            collate_fn=collator, persistent_workers=workers > 0,
            timeout=BATCH_TIMEOUT if workers > 0 else 0,
            generator=torch.Generator().manual_seed(0)), device)

    arms = [Arm("stock", "DataLoader, tokenize in __getitem__, DataCollatorWithPadding",
                make_stock, consume, pipeline=PIPELINE)]
    fresh: dict[str, Callable[[int], Iterable[Any]]] = {"stock": make_stock}
    from dataforge.loading.loader import build_loader
    from dataforge.samplers.bucket import BucketBatchSampler

    def loader_over(ds: Any, workers: int) -> Iterable[Any]:
        sampler = BucketBatchSampler(ds.lengths, batch_size=batch_size, seed=0)
        return build_loader(ds, batch_sampler=sampler, collate_fn=packed_collate(), num_workers=workers,
                            pin_memory=cuda, device=device, seed=0,
                            timeout=BATCH_TIMEOUT if workers > 0 else 0)

    def make_df(workers: int) -> Iterable[Any]:
        return loader_over(packed, workers)

    def fresh_df(workers: int) -> Iterable[Any]:
        return loader_over(text_ds.tokenize(tok, max_length=MAX_LENGTH), workers)

    arms.append(Arm("dataforge", "packed tokens + BucketBatchSampler + PadCollate, build_loader",
                    make_df, consume, pipeline=PACKED))
    fresh["dataforge"] = fresh_df
    return arms, fresh


def first_epoch(make: Callable[[int], Iterable[Any]], workers: int,
                consume: Callable[[Any], Counters]) -> dict[str, float]:
    """Wall time and counters of one whole first epoch built from scratch by ``make``."""
    t0 = time.perf_counter()
    totals: dict[str, float] = {}
    loader = make(workers)
    for batch in loader:
        for k, v in consume(batch).items():
            totals[k] = totals.get(k, 0.0) + v
    totals["seconds"] = time.perf_counter() - t0
    del loader
    return totals


def measure_limit(hf: Any, texts: list[str], *, batch_size: int, min_seconds: float) -> float:
    """CPU seconds per sample of tokenization + padding alone: the fast tokenizer's batch
    call (``padding=True``, truncation, tensors out) on batches of texts, one thread."""
    k = max(1, min(len(texts), 8 * batch_size))
    batches = [texts[i:i + batch_size] for i in range(0, k, batch_size)]
    state = {"i": 0}

    def step() -> None:
        hf(batches[state["i"] % len(batches)], padding=True, truncation=True,
           max_length=MAX_LENGTH, return_tensors="pt")
        state["i"] += 1

    per_batch = cpu_seconds_per_call(step, min_seconds=min_seconds)
    return per_batch * len(batches) / k  # batches are cycled, so this is the mean per sample


def measure_packed_limit(packed: Any, *, batch_size: int, min_seconds: float) -> float:
    """CPU seconds per sample of the dataforge arm's own work (NOTE [text limits]): fetch
    a bucketed batch from the packed storage and pad it with the arm's collate, one thread."""
    from dataforge.samplers.bucket import BucketBatchSampler

    batches = []
    for idx in BucketBatchSampler(packed.lengths, batch_size=batch_size, seed=0):
        batches.append(list(idx))
        if len(batches) == 16:
            break
    collate = packed_collate()
    get = getattr(packed, "__getitems__", None)
    state = {"i": 0}

    def step() -> None:
        idx = batches[state["i"] % len(batches)]
        collate(get(idx) if get is not None else [packed[i] for i in idx])
        state["i"] += 1

    per_batch = cpu_seconds_per_call(step, min_seconds=min_seconds)
    return per_batch * len(batches) / sum(map(len, batches))  # batches are cycled: the mean


def _arm_dict(s: ArmSummary, firsts: list[dict[str, float]]) -> dict[str, Any]:
    d = s.to_dict()
    if d["status"] != "ok":
        return d
    tokens = sum(r.counters.get("tokens", 0.0) for r in s.runs)
    padded = sum(r.counters.get("padded_tokens", 0.0) for r in s.runs)
    d["tokens_per_s"] = s.rate("tokens")
    d["padding_efficiency"] = tokens / padded if padded else None
    if firsts:
        secs = median([f["seconds"] for f in firsts])
        d["first_epoch_s"] = secs
        d["first_epoch_samples_per_s"] = median([f["samples"] / f["seconds"] for f in firsts])
        d["first_epoch_tokens_per_s"] = median([f["tokens"] / f["seconds"] for f in firsts])
    return d


def run(*, quick: bool = False, seconds: float | None = None, device: str = "cpu",
        data: str | None = None, out: str | None = None, workers: list[int] | None = None,
        batch_size: int | None = None, repeats: int = 3, num_docs: int | None = None,
        text_key: str = "text", label_key: str | None = "label", warmup: float | None = None,
        progress: Callable[[str], None] | None = None, **_: Any) -> dict[str, Any]:
    """Run the text benchmark and return its result (schema in :mod:`dataforge.bench.report`).

    Args:
        quick: small defaults (2,000 demo documents, 1 s windows, workers 0).
        seconds: steady-state seconds per arm and repeat.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        data: a JSONL file with ``text_key`` (and ``label_key``) per line; default: demo corpus.
        out: a folder to write ``text.png`` into (``None``: no plot).
        workers: workers counts to sweep (default ``0,<cores>``; quick: ``0``).
        batch_size: texts per batch (default 64).
        repeats: measured runs per arm and workers count; the median is reported.
        num_docs: demo corpus size (ignored with ``data``).
        text_key / label_key: the JSONL fields.
        warmup: seconds excluded after the first batch.
        progress: called with a line of text before each measured run.
    """
    from dataforge.bench.data import check_jsonl, demo_text_corpus

    _need_text_extra()
    cfg = QUICK if quick else FULL
    dev = resolve_device(device)
    seconds = float(seconds if seconds is not None else cfg["seconds"])
    batch_size = int(batch_size or cfg["batch_size"])
    if batch_size < 1:
        raise BenchError(f"--batch-size must be a positive int, got {batch_size!r}")
    workers_list = check_workers(workers, [0] if quick else sorted({0, usable_cores()}))
    path = str(data) if data is not None else str(demo_text_corpus(int(num_docs or cfg["num_docs"])))
    n_docs = check_jsonl(path, text_key, label_key)
    warm = float(warmup if warmup is not None else min(cfg["warmup"], seconds))

    bench = _TextBench(path, text_key, label_key, batch_size=batch_size, device=dev,
                        workers=workers_list, repeats=repeats, window=min(1.0, seconds / 2),
                        progress=progress)
    summaries = run_arms(bench.arms, workers_list, seconds=seconds, repeats=repeats, warmup=warm,
                         progress=progress, on_repeat=bench.measure)
    arm_dicts = [_arm_dict(s, bench.firsts.get((s.arm.name, s.workers), [])) for s in summaries]
    config = {
        "data": path, "demo_data": data is None, "num_samples": n_docs,
        "batch_size": batch_size, "workers": workers_list, "seconds": seconds,
        "warmup_s": warm, "repeats": repeats, "device": str(dev), "quick": quick,
        "vocab_size": VOCAB_SIZE, "max_length": MAX_LENGTH, "pad_to_multiple_of": PAD_MULTIPLE,
        "tokens_in_corpus": int(bench.packed.num_tokens),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
    }
    result: dict[str, Any] = {"benchmark": "text", "status": "ok", "unit": "samples/s",
                              "env": env_info(str(dev)), "config": config,
                              "limit": bench.report(arm_dicts), "arms": arm_dicts}
    if out is not None:
        from dataforge.bench.plot import plot_throughput

        png = plot_throughput(result, os.path.join(out, "text.png"))
        result["plot"] = str(png) if png else None
    return result


def _need_text_extra() -> None:
    """Raise a :class:`BenchError` naming the extra when tokenizers or transformers is missing;
    set ``TOKENIZERS_PARALLELISM`` (NOTE [tokenizer threads])."""
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise BenchError(f"the text benchmark needs the text extra ({exc}); "
                         "pip install 'dataforge[text]'") from None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _TextBench:
    """The benchmark's corpus, tokenizer and arms, and what is measured once per repeat
    between the arms (``measure``, ``run_arms``' ``on_repeat``): each arm's limit and
    first epochs."""

    def __init__(self, path: str, text_key: str, label_key: str | None, *, batch_size: int,
                 device: torch.device, workers: list[int], repeats: int, window: float,
                 progress: Callable[[str], None] | None) -> None:
        from dataforge.datasets.text import TextDataset
        from dataforge.transforms.text import train_tokenizer

        self.batch_size, self.workers, self.repeats = batch_size, workers, repeats
        self.window, self.progress = window, progress
        text_ds = TextDataset.from_jsonl(path, text_key=text_key, label_key=label_key)
        self._say("training the tokenizer on the corpus (offline, not timed)")
        tok = train_tokenizer(iter(text_ds.texts), vocab_size=VOCAB_SIZE)
        self.packed = text_ds.tokenize(tok, max_length=MAX_LENGTH)  # steady state starts pre-tokenized
        self.arms, self.fresh = make_arms(text_ds, tok, batch_size=batch_size, device=device,
                                          packed=self.packed)
        self.hf = hf_tokenizer(tok)
        self.texts = list(text_ds.texts)
        self.consume = _consumer(device)
        self.limit_runs: list[float] = []
        self.packed_runs: list[float] = []
        self.firsts: dict[tuple[str, int], list[dict[str, float]]] = {}

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def measure(self, r: int) -> None:
        self._say(f"repeat {r + 1}/{self.repeats}  limit and first epochs")
        self.limit_runs.append(measure_limit(self.hf, self.texts, batch_size=self.batch_size,
                                             min_seconds=self.window))
        self.packed_runs.append(measure_packed_limit(self.packed, batch_size=self.batch_size,
                                                     min_seconds=self.window))
        for w in self.workers:
            for arm in self.arms:
                if arm.absent or arm.name not in self.fresh:
                    continue
                # an arm that fails here fails again in its measured run, which records the error
                with contextlib.suppress(Exception):
                    self.firsts.setdefault((arm.name, w), []).append(
                        first_epoch(self.fresh[arm.name], w, self.consume))

    def report(self, arm_dicts: list[dict[str, Any]]) -> dict[str, Any]:
        """The result's ``limit`` entry; adds each arm's ratios to it."""
        per_sample = {PIPELINE: median(self.limit_runs), PACKED: median(self.packed_runs)}
        by_workers = {str(w): {p: cores_in_use(w, main_threads=1) / s for p, s in per_sample.items()}
                      for w in self.workers}
        report.add_ratios(arm_dicts, by_workers)
        return {
            "method": f"CPU time, 1 process, 1 thread, each arm's own work: {PIPELINE} = the fast "
                      "tokenizer's batch call with padding=True, truncation to max_length, tensors "
                      f"out; {PACKED} = a bucketed batch fetched from the packed tokens and padded "
                      "by the arm's PadCollate; times the cores in use (the workers, 1 for "
                      "workers=0); median over repeats, interleaved with the arms",
            "per_sample_ms": {p: s * 1e3 for p, s in per_sample.items()},
            "cores_in_use": {str(w): cores_in_use(w, main_threads=1) for w in self.workers},
            "by_workers": by_workers,
        }


def format_table(result: dict[str, Any]) -> str:
    return report.format_throughput_table(result)
