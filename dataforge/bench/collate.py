"""Collate benchmark: padding 64 variable-length sequences into a batch.

Arms, all measured in the same run on the same batch, interleaved (repeats are
the outer loop, arms the inner one, the arm order rotated each repeat), median
over repeats:

- ``dataforge``: ``dataforge.PadCollate(mask_names={"input_ids": "attention_mask"})``;
- ``hf``: ``transformers.DataCollatorWithPadding`` with a fast tokenizer built
  offline (only its pad token matters); reported as absent without transformers;
- ``pad_sequence``: the usual hand-written collate: one tensor per sample,
  ``torch.nn.utils.rnn.pad_sequence``, the mask from the lengths, labels stacked.

Batches/s is wall-clock; the process CPU time per batch is reported beside it
(see NOTE [cpu time]). Every arm returns ``input_ids`` ``(B, L)``, an attention mask and ``labels``
(dataforge also returns the lengths). Samples are dicts
``{"input_ids": list[int], "label": int}`` as a tokenizer returns them, and, as a
second input form, ``input_ids`` as 1-D int64 tensors. Lengths are log-normal
(mean about 150 tokens, sigma 0.5, seed fixed).

Example:
    >>> from dataforge.bench import collate
    >>> result = collate.run(quick=True)  # doctest: +SKIP
    >>> print(collate.format_table(result))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dataforge.bench.common import BenchError, env_info, median, rotated
from dataforge.bench.runner import timed_window

__all__ = ["make_batch", "run", "format_table"]

Collate = Callable[[list[dict[str, Any]]], Any]


def make_batch(
    batch_size: int = 64, mean_length: float = 150.0, *, seed: int = 0, vocab: int = 30_000
) -> list[dict[str, Any]]:
    """``batch_size`` samples ``{"input_ids": list[int], "label": int}``, log-normal lengths."""
    rng = np.random.default_rng(seed)
    sigma = 0.5
    lengths = rng.lognormal(np.log(mean_length) - sigma**2 / 2, sigma, batch_size)
    lengths = np.clip(np.round(lengths).astype(np.int64), 1, None)
    return [
        {"input_ids": rng.integers(5, vocab, int(n)).tolist(), "label": int(rng.integers(0, 2))}
        for n in lengths
    ]


def pad_sequence_collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The usual hand-written padding collate, the stock-PyTorch baseline."""
    from torch.nn.utils.rnn import pad_sequence

    ids = [torch.as_tensor(s["input_ids"]) for s in batch]
    lengths = torch.tensor([len(t) for t in ids])
    input_ids = pad_sequence(ids, batch_first=True, padding_value=0)
    mask = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]
    labels = torch.tensor([s["label"] for s in batch])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def hf_collator() -> tuple[Collate | None, str | None]:
    """``DataCollatorWithPadding`` with an offline fast tokenizer, or ``(None, why)``."""
    try:
        import transformers
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
    except ImportError as exc:
        return None, f"transformers/tokenizers not installed ({exc.name})"
    tok = Tokenizer(WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]")
    return transformers.DataCollatorWithPadding(fast, return_tensors="pt"), None


def _rate(fn: Collate, batch: list[dict[str, Any]], min_seconds: float) -> tuple[float, float]:
    """``(batches/s, CPU ms/batch)`` of ``fn(batch)`` over a window of at least ``min_seconds``
    (:func:`~dataforge.bench.runner.timed_window`).

    NOTE [cpu time]: wall-clock batches/s is the result; the process CPU time per
    batch is recorded beside it because, on a machine shared with other jobs, it
    is far less disturbed by them than the wall clock.
    """
    def once() -> int:
        fn(batch)
        return 1

    w = timed_window(once, min_seconds)
    return w.done / w.wall_s, w.cpu_s * 1e3 / w.done


def run(
    *,
    quick: bool = False,
    seconds: float | None = None,
    device: str = "cpu",
    data: str | None = None,
    out: str | None = None,
    batch_size: int = 64,
    mean_length: float = 150.0,
    repeats: int | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Measure batches/s of each arm; ``seconds`` is the measured time per arm and input form.

    ``device`` is recorded only: collation runs on the CPU, in the loader.
    ``data`` is not used (the batch is synthetic and seeded).
    """
    import dataforge

    if kw:
        raise BenchError(f"collate benchmark: unknown options {sorted(kw)}")
    if batch_size <= 0 or mean_length <= 0:
        raise BenchError("collate benchmark: batch_size and mean_length must be positive")
    repeats = repeats or (3 if quick else 5)
    total = seconds if seconds is not None else (0.3 if quick else 4.0)
    window = max(total / repeats, 0.02)

    lists = make_batch(batch_size, mean_length)
    tensors = [{"input_ids": torch.tensor(s["input_ids"]), "label": s["label"]} for s in lists]
    pad = dataforge.PadCollate(mask_names={"input_ids": "attention_mask"})
    hf, hf_absent = hf_collator()
    _check_same_output(pad, hf, lists)
    arms = {name: fn for name, fn in (("dataforge", pad), ("hf", hf), ("pad_sequence", pad_sequence_collate))
            if fn is not None}
    rates, cpu_ms = _measure(arms, {"lists": lists, "tensors": tensors}, repeats, window)
    lengths = [len(s["input_ids"]) for s in lists]
    return {
        "benchmark": "collate",
        "env": env_info(device),
        "config": {
            "batch_size": batch_size,
            "mean_length_target": mean_length,
            "mean_length": float(np.mean(lengths)),
            "max_length": int(max(lengths)),
            "length_distribution": "log-normal, sigma 0.5, seed 0",
            "repeats": repeats,
            "seconds_per_window": window,
            "quick": quick,
        },
        "absent": {"hf": hf_absent} if hf_absent else {},
        "input_forms": {
            "lists": "input_ids as list[int] (as a tokenizer returns them)",
            "tensors": "input_ids as 1-D int64 tensors",
        },
        "forms": {form: _summarise(rates[form], cpu_ms[form]) for form in rates},
        "targets": {"dataforge_vs_hf": 20.0, "dataforge_vs_pad_sequence": 2.0},
    }


Runs = dict[str, dict[str, list[float]]]  # input form -> arm -> one value per repeat


def _measure(arms: dict[str, Collate], inputs: dict[str, list[dict[str, Any]]], repeats: int,
             window: float) -> tuple[Runs, Runs]:
    """``(batches/s, CPU ms/batch)`` of each arm on each input form, once per repeat.

    Every arm runs once on each form first (warm-up, excluded). Then, per repeat, the
    forms in turn, each arm on it in the :func:`rotated` order (NOTE [interleaving]).
    """
    for batch in inputs.values():
        for fn in arms.values():
            fn(batch)
    rates: Runs = {form: {name: [] for name in arms} for form in inputs}
    cpu_ms: Runs = {form: {name: [] for name in arms} for form in inputs}
    for r in range(repeats):
        order = rotated(list(arms), r)
        for form, batch in inputs.items():
            for name in order:
                rate, cpu = _rate(arms[name], batch, window)
                rates[form][name].append(rate)
                cpu_ms[form][name].append(cpu)
    return rates, cpu_ms


def _summarise(rates: dict[str, list[float]], cpu_ms: dict[str, list[float]]) -> dict[str, Any]:
    """One input form's medians per arm, and dataforge's ratios to each other arm."""
    arms_out: dict[str, dict[str, Any]] = {
        name: {
            "batches_per_s": median(rs),
            "ms_per_batch": 1e3 / median(rs),
            "cpu_ms_per_batch": median(cpu_ms[name]),
            "repeats": rs,
            "cpu_ms_repeats": cpu_ms[name],
        }
        for name, rs in rates.items()
    }
    ours = arms_out["dataforge"]
    others = [name for name in arms_out if name != "dataforge"]
    return {
        "arms": arms_out,
        "ratios": {
            f"dataforge_vs_{name}": ours["batches_per_s"] / arms_out[name]["batches_per_s"]
            for name in others
        },
        "cpu_ratios": {
            f"dataforge_vs_{name}": arms_out[name]["cpu_ms_per_batch"] / ours["cpu_ms_per_batch"]
            for name in others
        },
    }


def _check_same_output(pad: Collate, hf: Collate | None, batch: list[dict[str, Any]]) -> None:
    """Refuse to time arms that do not compute the same batch."""
    ours = pad(batch)
    ref = pad_sequence_collate(batch)
    same = torch.equal(ours["input_ids"], ref["input_ids"]) and torch.equal(
        ours["attention_mask"], ref["attention_mask"]
    )
    if hf is not None:
        theirs = hf(batch)
        same = same and torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(
            ours["attention_mask"].long(), theirs["attention_mask"].long()
        )
    if not same:
        raise BenchError("collate benchmark: the arms disagree on the padded batch")


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width table."""
    cfg = result["config"]
    lines = [
        f"collate: {cfg['batch_size']} sequences, mean length {cfg['mean_length']:.1f} "
        f"(max {cfg['max_length']}), median of {cfg['repeats']} interleaved repeats",
        f"{'input':<8} {'arm':<14} {'batches/s':>11} {'ms/batch':>9} {'dataforge x':>12} "
        f"{'cpu ms/batch':>13} {'cpu x':>7}",
    ]
    for form, res in result["forms"].items():
        for name, arm in res["arms"].items():
            ratio = res["ratios"].get(f"dataforge_vs_{name}")
            cpu_ratio = res["cpu_ratios"].get(f"dataforge_vs_{name}")
            lines.append(
                f"{form:<8} {name:<14} {arm['batches_per_s']:>11,.0f} {arm['ms_per_batch']:>9.3f} "
                f"{(f'{ratio:.1f}x' if ratio else '-'):>12} {arm['cpu_ms_per_batch']:>13.3f} "
                f"{(f'{cpu_ratio:.1f}x' if cpu_ratio else '-'):>7}"
            )
    for name, why in result.get("absent", {}).items():
        lines.append(f"{name}: absent ({why})")
    env = result["env"]
    lines.append(f"cpu: {env['cpu']} ({env['cores']} cores), torch {env['torch']}")
    return "\n".join(lines)
