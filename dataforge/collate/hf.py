"""HuggingFace interop: the batch ``transformers`` models take, and a ``Trainer`` fed by dataforge.

- :class:`HFCollate`: tokenizer output (``input_ids``, optional ``attention_mask`` and
  ``token_type_ids``) plus a label -> exactly the keys a model's ``forward`` takes:
  ``input_ids``, ``attention_mask`` (kept when the samples have it, else built from
  the lengths), ``token_type_ids`` when present, and ``labels``. Nothing else unless
  asked (``keep=``), so ``Trainer`` never sees ``input_ids_lengths`` or a ``text``.
- :class:`DataforgeTrainer` (needs ``transformers`` and ``accelerate``): a
  ``transformers.Trainer`` that trains on a dataforge loader (bucketing, balanced
  sampling, workers, resume) instead of building its own ``DataLoader``.

NOTE [HF batch layout]: the batch matches ``DataCollatorWithPadding``: int64
``input_ids`` padded with the pad token, int64 ``attention_mask`` (1 on real
tokens), ``token_type_ids`` padded with ``pad_token_type_id``, and ``label`` /
``label_ids`` renamed ``labels``. A label that is a sequence as long as the
sample's ``input_ids`` is a per-token label (token classification) and is padded
with ``label_pad_id`` (-100, which the models' losses ignore); any other label
(an int, a float, a fixed-size multi-hot vector) is stacked.

Example:
    >>> from dataforge.collate.hf import HFCollate
    >>> out = HFCollate(pad_token_id=0)([{"input_ids": [5, 6, 7], "label": 1, "text": "a b c"},
    ...                                  {"input_ids": [8], "label": 0, "text": "d"}])
    >>> list(out)
    ['input_ids', 'attention_mask', 'labels']
    >>> out["input_ids"].tolist(), out["attention_mask"].tolist(), out["labels"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]], [1, 0])
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dataforge.collate.default import ROOT, a_describe, child_path
from dataforge.collate.pad import PadCollate

# DataforgeTrainer is left out of __all__: a star import must not import transformers.
__all__ = ["HFCollate"]

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
LABELS = "labels"
LABEL_ALIASES = ("label", "label_ids")  # renamed to "labels", as DataCollatorWithPadding does
# Per-token fields a tokenizer returns, with the value their padding takes.
_TOKEN_FIELD_PADS = {ATTENTION_MASK: 0, "special_tokens_mask": 1}


def _seq_len(x: Any) -> int | None:
    """The length of a per-token field (a list of numbers or a 1-D tensor / array), else None."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return int(x.shape[0]) if x.ndim == 1 else None
    if isinstance(x, (list, tuple)):
        return len(x)
    return None


class HFCollate:
    """Collate tokenized samples into the batch a ``transformers`` model takes.

    Args:
        pad_token_id: the tokenizer's pad token id (``tokenizer.pad_token_id``).
        pad_to_multiple_of: round the padded length up to a multiple of this (8 for
            tensor cores).
        max_length: truncate every per-token field to this many tokens.
        padding_side: ``"right"`` or ``"left"`` (``tokenizer.padding_side``).
        pad_token_type_id: padding of ``token_type_ids`` (``tokenizer.pad_token_type_id``).
        label_pad_id: padding of per-token labels; -100 is ignored by HF losses.
        keep: other sample keys to pass through: a sequence must be per-token (as
            long as ``input_ids``, e.g. ``special_tokens_mask``) and is padded with the
            rest; other values are stacked. Keys not named here and not model inputs
            are dropped.
        token_labels: ``None`` infers per batch (NOTE [HF batch layout]); ``True``
            requires per-token labels, ``False`` always stacks labels.

    Use :meth:`from_tokenizer` to read the pad id, side and token type pad from a
    tokenizer. The output is a plain dict of tensors: ``model(**batch)``.
    """

    def __init__(
        self,
        pad_token_id: int = 0,
        *,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        pad_token_type_id: int = 0,
        label_pad_id: int = -100,
        keep: Iterable[str] = (),
        token_labels: bool | None = None,
    ) -> None:
        for name, value in (("pad_token_id", pad_token_id), ("pad_token_type_id", pad_token_type_id),
                            ("label_pad_id", label_pad_id)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int (a token id), got {value!r}")
        if isinstance(keep, str) or not isinstance(keep, Iterable):
            raise TypeError(f"keep must be a list of sample keys, got {keep!r}; write keep=[{keep!r}]")
        keep = tuple(keep)
        bad = [k for k in keep if not isinstance(k, str)]
        if bad:
            raise TypeError(f"keep must list str keys, got {bad!r}")
        if token_labels not in (None, True, False):
            raise TypeError(f"token_labels must be None, True or False, got {token_labels!r}")
        # PadCollate validates pad_to_multiple_of, max_length and padding_side.
        self._pad_args: dict[str, Any] = dict(pad_to_multiple_of=pad_to_multiple_of,
                                              max_length=max_length, padding_side=padding_side)
        PadCollate(pad_token_id, **self._pad_args)
        self.pad_token_id = int(pad_token_id)
        self.pad_token_type_id = int(pad_token_type_id)
        self.label_pad_id = int(label_pad_id)
        self.keep = keep
        self.token_labels = token_labels
        self._layouts: dict[tuple[tuple[str, ...], bool], PadCollate] = {}

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> HFCollate:
        """An ``HFCollate`` with ``tokenizer``'s pad token id, padding side and token type pad.

        Args:
            tokenizer: a ``transformers`` tokenizer (``PreTrainedTokenizerFast`` ...).
            **kwargs: any other :class:`HFCollate` argument (they override the tokenizer's).
        """
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            raise ValueError(
                "the tokenizer has no pad token (pad_token_id is None); set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, or pass pad_token_id=")
        kwargs.setdefault("pad_token_id", pad)
        kwargs.setdefault("padding_side", getattr(tokenizer, "padding_side", "right"))
        kwargs.setdefault("pad_token_type_id", getattr(tokenizer, "pad_token_type_id", 0))
        return cls(**kwargs)

    def __repr__(self) -> str:
        args = [f"pad_token_id={self.pad_token_id}"]
        args += [f"{k}={v!r}" for k, v in self._pad_args.items() if v not in (None, "right")]
        if self.keep:
            args.append(f"keep={list(self.keep)!r}")
        return f"HFCollate({', '.join(args)})"

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)) or not batch:
            raise ValueError(f"{ROOT}: a batch must be a non-empty list of samples, got {batch!r:.80}")
        rows = [self._select(s, i) for i, s in enumerate(batch)]
        token_keys = [k for k, v in rows[0].items() if k != LABELS and _seq_len(v) is not None
                      and k != INPUT_IDS and (k in (ATTENTION_MASK, TOKEN_TYPE_IDS) or k in self.keep)]
        lengths = [_seq_len(r[INPUT_IDS]) for r in rows]
        for k in token_keys:  # per-token fields must line up with input_ids
            for i, r in enumerate(rows):
                if _seq_len(r[k]) != lengths[i]:
                    raise ValueError(
                        f"{child_path(ROOT, k)}: sample {i} has {_seq_len(r[k])} items but "
                        f"{lengths[i]} input_ids; per-token fields must be as long as input_ids")
        if LABELS in rows[0] and self._token_labels(rows, lengths):
            token_keys.append(LABELS)
        elif LABELS in rows[0]:
            for r in rows:  # a list label is one value (multi-hot), not a field to transpose
                if isinstance(r[LABELS], list):
                    r[LABELS] = torch.as_tensor(r[LABELS])
        out = self._pad_collate(tuple(token_keys), ATTENTION_MASK in rows[0])(rows)
        if out[ATTENTION_MASK].dtype != torch.int64:
            out[ATTENTION_MASK] = out[ATTENTION_MASK].long()
        if LABELS in out and out[LABELS].dtype == torch.float64:
            out[LABELS] = out[LABELS].float()  # Python floats (regression): the models' float32
        order = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS, *self.keep, LABELS]
        return {k: out[k] for k in order if k in out}

    def _select(self, sample: Any, i: int) -> dict[str, Any]:
        """The model's keys of one sample (label renamed to ``labels``), and ``keep``."""
        if not isinstance(sample, Mapping):
            raise TypeError(f"{ROOT}: sample {i} is {a_describe(sample)}; HFCollate takes dict samples "
                            "with 'input_ids' (tokenizer output), e.g. {'input_ids': [...], 'label': 1}")
        if INPUT_IDS not in sample:
            raise ValueError(f"{ROOT}: sample {i} has no 'input_ids' (keys {list(sample)}); tokenize "
                             "the text first, e.g. TextDataset.tokenize(tokenizer)")
        row = {INPUT_IDS: sample[INPUT_IDS]}
        for k in (ATTENTION_MASK, TOKEN_TYPE_IDS, *self.keep):
            if k in sample:
                row[k] = sample[k]
            elif k in self.keep:
                raise ValueError(f"{ROOT}: sample {i} has no {k!r}, which keep= names (keys {list(sample)})")
        names = [k for k in (LABELS, *LABEL_ALIASES) if k in sample]
        if len(names) > 1:
            raise ValueError(f"{ROOT}: sample {i} has both {names[0]!r} and {names[1]!r}; keep one "
                             "label key (it is returned as 'labels')")
        if names:
            row[LABELS] = sample[names[0]]
        return row

    def _token_labels(self, rows: list[dict[str, Any]], lengths: list[int | None]) -> bool:
        """Whether the labels are per-token (padded) rather than one value per sample (stacked)."""
        if self.token_labels is False:
            return False
        match = [_seq_len(r[LABELS]) == n for r, n in zip(rows, lengths)]
        if self.token_labels and not all(match):
            i = match.index(False)
            raise ValueError(
                f"{child_path(ROOT, LABELS)}: sample {i} has a label of length {_seq_len(rows[i][LABELS])} "
                f"for {lengths[i]} input_ids; token_labels=True needs one label per token")
        return all(match)

    def _pad_collate(self, token_keys: tuple[str, ...], has_mask: bool) -> PadCollate:
        """The ``PadCollate`` for one layout: which per-token fields, and whether a mask came."""
        found = self._layouts.get((token_keys, has_mask))
        if found is not None:
            return found
        pads: dict[str | int, float] = {k: _TOKEN_FIELD_PADS.get(k, 0) for k in token_keys}
        pads[TOKEN_TYPE_IDS] = self.pad_token_type_id
        pads[LABELS] = self.label_pad_id
        collate = PadCollate(self.pad_token_id, keys=[INPUT_IDS, *token_keys], pad_values=pads,
                             return_mask=not has_mask, return_lengths=False,
                             mask_names={INPUT_IDS: ATTENTION_MASK}, **self._pad_args)
        self._layouts[(token_keys, has_mask)] = collate
        return collate


@functools.cache
def _trainer_class() -> type:
    try:
        from transformers import Trainer
    except ImportError as exc:
        raise ImportError(
            f"DataforgeTrainer needs transformers and accelerate ({exc}); install them "
            "(pip install transformers accelerate) or dataforge's text extra (README, Install)"
        ) from None

    class DataforgeTrainer(Trainer):  # type: ignore[misc]
        """A ``transformers.Trainer`` that trains (and evaluates) on dataforge loaders.

        Args:
            *args: ``transformers.Trainer`` arguments (``model``, ``args``, ...).
            train_loader: an iterable of batches (``dataforge.build_loader(...)`` with
                ``collate_fn=HFCollate.from_tokenizer(tok)``); its ``set_epoch`` is
                called every epoch. Without ``__len__``, set ``TrainingArguments.max_steps``.
            eval_loader: the same for ``evaluate()`` (optional).
            **kwargs: more ``transformers.Trainer`` arguments; ``train_dataset`` is
                not needed when ``train_loader`` is given.

        NOTE [loader replaces DataLoader]: the loader is handed to the training loop
        as is: batch size, sampler, workers, pinning and shuffling are the loader's,
        and the ``dataloader_*`` / ``per_device_train_batch_size`` training arguments
        do not apply to it (``per_device_train_batch_size`` still feeds the Trainer's
        sample counts in its logs). ``accelerate`` does not shard it: in a
        distributed run, give the sampler its rank (dataforge samplers read it from
        ``torch.distributed`` once ``TrainingArguments`` has set the process group up).
        """

        def __init__(self, *args: Any, train_loader: Iterable[Any] | None = None,
                     eval_loader: Iterable[Any] | None = None, **kwargs: Any) -> None:
            for name, loader in (("train_loader", train_loader), ("eval_loader", eval_loader)):
                if loader is not None and not isinstance(loader, Iterable):
                    raise TypeError(f"{name} must be an iterable of batches such as "
                                    f"dataforge.build_loader(...), got {type(loader).__name__}")
            super().__init__(*args, **kwargs)
            self.train_loader = train_loader
            self.eval_loader = eval_loader

        def get_train_dataloader(self) -> Any:
            if self.train_loader is None:
                return super().get_train_dataloader()
            return self.train_loader

        def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
            if self.eval_loader is None or eval_dataset is not None:
                return super().get_eval_dataloader(eval_dataset)
            return self.eval_loader

    DataforgeTrainer.__module__ = __name__
    return DataforgeTrainer


def __getattr__(name: str) -> Any:
    # NOTE [lazy Trainer]: the class derives from transformers.Trainer, so it is built
    # on first access; importing this module never imports transformers.
    if name == "DataforgeTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
