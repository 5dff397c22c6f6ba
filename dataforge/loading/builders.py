"""High-level builders for the recipes' common cases: ``(train_loader, val_loader)``.

Each wires the pieces a classification run needs, every choice overridable:

- images: ``ImageFolder`` -> stratified split -> uint8 presets per sample
  (``train_transforms`` / ``eval_transforms``) -> ``ClassBalancedSampler`` (or a
  rank-aware uniform shuffle) -> ``build_loader`` with ``ToFloat`` + ``Normalize``
  run on the device as one batch op;
- text: ``TextDataset`` (CSV / JSONL) -> stratified split -> tokenized once into
  packed storage -> ``BucketBatchSampler`` (token budget, optional class
  balance) -> ``PadCollate`` (to a multiple of 8, attention mask).

The validation loader never shuffles; under ``torch.distributed`` each rank gets
a disjoint slice of the validation set, and the training samplers split the
training set across ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dataforge._dist import resolve_replicas
from dataforge.loading.loader import Loader

PRESET = "preset"


def _parts(source: Any, val_fraction: float, seed: int, make: Callable[[Any], Any]) -> tuple[Any, Any]:
    """``(train, val)`` from a path (via ``make``), a dataset (split) or a pair."""
    if isinstance(source, tuple) and len(source) == 2:
        return source
    if isinstance(source, (str, os.PathLike)):
        source = make(source)
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(
            f"val_fraction must be in (0, 1), got {val_fraction!r}; "
            "or pass a (train, val) pair of datasets"
        )
    if not hasattr(source, "split"):
        from dataforge.datasets.map_style import from_sequence

        source = from_sequence(source)
    train, val = source.split(
        [1 - val_fraction, val_fraction], seed=seed, stratify=source.labels is not None
    )
    return train, val


def _rank_slice(val: Any) -> Any:
    world, rank = resolve_replicas()
    return val if world == 1 else val.subset(np.arange(rank, len(val), world))


def build_image_loaders(
    root_or_dataset: Any,
    *,
    batch_size: int = 64,
    val_batch_size: int | None = None,
    val_fraction: float = 0.2,
    size: int | tuple[int, int] = 224,
    resize: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    balance: str | None = "oversample",
    train_transform: Any = PRESET,
    val_transform: Any = PRESET,
    batch_transforms: Any = PRESET,
    sampler: Any = None,
    device: Any = None,
    num_workers: int | str = "auto",
    engine: str = "auto",
    seed: int = 0,
    drop_last: bool = True,
    **loader_kwargs: Any,
) -> tuple[Loader[Any], Loader[Any]]:
    """Train and validation loaders for image classification.

    Args:
        root_or_dataset: an ``ImageFolder`` root, a labelled map-style dataset of
            ``{"image", "label"}`` dicts (split by ``val_fraction``, stratified), or a
            ``(train, val)`` pair.
        batch_size / val_batch_size: per loader (val defaults to ``batch_size``).
        size / resize / scale: the presets' output size, eval shorter side (default
            ``size * 8 / 7``) and crop-area range.
        balance: ``ClassBalancedSampler`` strategy (``"oversample"``, ``"undersample"``,
            ``"sqrt"``); ``None`` for a uniform shuffle.
        train_transform / val_transform: per-sample transforms; ``"preset"`` for
            ``train_transforms`` / ``eval_transforms``, ``None`` for none.
        batch_transforms: on-device batch transforms of ``batch["image"]``; ``"preset"``
            for ``ToFloat`` + ``Normalize`` (ImageNet statistics).
        sampler: a training sampler replacing the one ``balance`` picks.
        device, num_workers, engine, seed, drop_last, **loader_kwargs: as in
            :func:`dataforge.build_loader` (``drop_last`` applies to training only).

    Example:
        >>> train, val = build_image_loaders("data/pets", size=160, device="cuda")  # doctest: +SKIP
    """
    from dataforge.transforms import batch as B
    from dataforge.transforms.image import eval_transforms, train_transforms, with_decode

    def make(root: Any) -> Any:
        from dataforge.datasets.image_folder import ImageFolder

        return ImageFolder(root, decode=False)  # decoded by the transforms (see below)

    train, val = _parts(root_or_dataset, val_fraction, seed, make)
    if train_transform == PRESET:
        train_transform = train_transforms(size, scale=scale)
    if val_transform == PRESET:
        biggest = size if isinstance(size, int) else max(size)
        val_transform = eval_transforms(size, resize=resize or round(biggest * 8 / 7))
    if isinstance(root_or_dataset, (str, os.PathLike)):
        # The folder yields encoded files: the training preset decodes only its crop;
        # any other transform gets a decoded image first.
        train_transform, val_transform = with_decode(train_transform), with_decode(val_transform)
    if train_transform is not None:
        train = train.map(train_transform, seed=seed)
    if val_transform is not None:
        val = val.map(val_transform)
    if batch_transforms == PRESET:
        batch_transforms = B.Compose([B.ToFloat(), B.Normalize()])
    if sampler is None:
        sampler = _image_sampler(train, balance, seed)
    common = {"device": device, "num_workers": num_workers, "engine": engine,
              "batch_transforms": batch_transforms, **loader_kwargs}
    train_loader: Loader[Any] = Loader(train, batch_size, sampler=sampler, seed=seed, drop_last=drop_last, **common)
    val_loader: Loader[Any] = Loader(_rank_slice(val), val_batch_size or batch_size, seed=seed, **common)
    return train_loader, val_loader


def _image_sampler(train: Any, balance: str | None, seed: int) -> Any:
    from dataforge.samplers.class_balanced import ClassBalancedSampler
    from dataforge.samplers.weighted import WeightedSampler

    if balance is not None:
        if getattr(train, "labels", None) is None:
            raise ValueError(
                f"balance={balance!r} needs class labels, but the training set has none; "
                "pass balance=None or a dataset with .labels"
            )
        return ClassBalancedSampler(train.labels, strategy=balance, seed=seed)
    # a uniform shuffle that is rank-aware and resumable
    return WeightedSampler(np.ones(len(train)), num_samples=len(train), replacement=False, seed=seed)


def build_text_loaders(
    path_or_dataset: Any,
    tokenizer: Any,
    *,
    text_key: str = "text",
    label_key: str | None = "label",
    val_fraction: float = 0.2,
    max_length: int | None = 256,
    max_tokens: int | None = 8192,
    batch_size: int | None = 128,
    val_batch_size: int = 256,
    balance: str | None = "sqrt",
    pad_to_multiple_of: int | None = 8,
    collate_fn: Any = None,
    batch_sampler: Any = None,
    device: Any = None,
    num_workers: int | str = 0,
    engine: str = "thread",
    seed: int = 0,
    **loader_kwargs: Any,
) -> tuple[Loader[Any], Loader[Any]]:
    """Train and validation loaders for text classification.

    Args:
        path_or_dataset: a CSV / JSONL file (``TextDataset``), a map-style dataset of
            ``{text_key, label_key}`` dicts (split by ``val_fraction``), or a ``(train, val)``
            pair.
        tokenizer: a ``tokenizers.Tokenizer``, a transformers fast tokenizer, a
            ``Tokenize`` or a path to a ``tokenizer.json``.
        max_length: truncate texts to this many ids.
        max_tokens / batch_size: the training ``BucketBatchSampler``'s token budget and
            batch-size cap.
        balance: class balance of the buckets (``"sqrt"``, ``"oversample"``...) or ``None``.
        pad_to_multiple_of: ``PadCollate`` padding multiple.
        collate_fn / batch_sampler: replace the defaults above.
        device, num_workers, engine, seed, **loader_kwargs: as in
            :func:`dataforge.build_loader` (tokens are precomputed, so threads suffice).

    Example:
        >>> train, val = build_text_loaders("reviews.jsonl", "tokenizer.json")  # doctest: +SKIP
    """
    from dataforge.collate.pad import PadCollate
    from dataforge.datasets.packed import tokenize_dataset
    from dataforge.samplers.bucket import BucketBatchSampler

    def make(path: Any) -> Any:
        from dataforge.datasets.readers import reader_for
        from dataforge.datasets.text import TextDataset

        try:  # any registered format by its extension (CSV, JSONL, Parquet, ...)
            reader_for(str(path))
            fmt = None
        except ValueError:  # an extension no reader claims: JSON lines
            fmt = "jsonl"
        return TextDataset.from_file(path, text_key=text_key, label_key=label_key, format=fmt)

    train_txt, val_txt = _parts(path_or_dataset, val_fraction, seed, make)
    train = tokenize_dataset(train_txt, tokenizer, text_key=text_key, label_key=label_key, max_length=max_length)
    val = tokenize_dataset(val_txt, tokenizer, text_key=text_key, label_key=label_key, max_length=max_length)
    if batch_sampler is None:
        labels = train.labels if balance is not None else None
        if balance is not None and labels is None:
            raise ValueError(f"balance={balance!r} needs labels; pass balance=None for unlabelled text")
        batch_sampler = BucketBatchSampler(
            train.lengths, max_tokens=max_tokens, batch_size=batch_size, seed=seed,
            labels=labels, balance=balance, drop_last=False,
        )
    if collate_fn is None:
        collate_fn = PadCollate(
            keys=["input_ids"], mask_names={"input_ids": "attention_mask"},
            pad_to_multiple_of=pad_to_multiple_of,
        )
    common = {"device": device, "num_workers": num_workers, "engine": engine,
              "collate_fn": collate_fn, "seed": seed, **loader_kwargs}
    train_loader: Loader[Any] = Loader(train, batch_sampler=batch_sampler, **common)
    val_loader: Loader[Any] = Loader(_rank_slice(val), val_batch_size, **common)
    return train_loader, val_loader


__all__: Sequence[str] = ["build_image_loaders", "build_text_loaders"]
