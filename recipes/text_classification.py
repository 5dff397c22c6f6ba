"""Text classification with dataforge, end to end.

    python recipes/text_classification.py                       # long-tail demo corpus
    python recipes/text_classification.py --data corpus.jsonl    # or .csv, {"text", "label"}
    python recipes/text_classification.py --tokenizer tokenizer.json
    python recipes/text_classification.py --resume runs/text/checkpoint.pt  # continues in runs/text
    torchrun --nproc_per_node=2 recipes/text_classification.py   # DDP (gloo on CPU)

A tokenizer is trained on the train split (or loaded), the corpus is tokenized
once into packed storage, batches are formed by ``BucketBatchSampler`` under a
token budget (class-balanced when asked), and padded by ``PadCollate`` to a
multiple of 8.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import SequentialSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RecipeError,
    base_parser,
    cleanup_distributed,
    demo_data,
    pick_device,
    run_main,
    setup_distributed,
)
from models import BagOfEmbeddings, HFClassifier, TinyTransformer  # noqa: E402
from training import fit, prepare_run  # noqa: E402

import dataforge  # noqa: E402
from dataforge.datasets.packed import tokenize_dataset  # noqa: E402
from dataforge.datasets.readers import reader_for, readers  # noqa: E402

HERE = Path(__file__).resolve().parent


def demo_corpus(demo: dict[str, Any], rank: int) -> Path:
    """The long-tail demo corpus, generated once."""
    from dataforge.synthetic import make_text_corpus

    return demo_data("text", demo, rank, lambda path: make_text_corpus(
        path, num_docs=demo["num_docs"], num_classes=demo["num_classes"], imbalance=demo["imbalance"],
        seed=0, difficulty=demo.get("difficulty", 0.0)), suffix=".jsonl")


def read_corpus(path: Path, a: dict[str, Any]) -> Any:
    if not path.is_file():
        raise RecipeError(f"data path does not exist or is not a file: {str(path)!r}")
    try:
        reader_for(str(path))
    except ValueError:
        raise RecipeError(f"data: no reader claims the extension of {str(path)!r}; name the file with one "
                          f"of {sorted(e for r in readers().values() for e in r.extensions)}") from None
    try:  # any format of the reader registry, by the file's extension (CSV, JSONL, Parquet...)
        return dataforge.TextDataset.from_file(path, text_key=a["text_key"], label_key=a["label_key"])
    except (FileNotFoundError, ValueError) as exc:
        raise RecipeError(f"data: {exc}") from None


def get_tokenizer(cfg: dict[str, Any], train_txt: Any, path: str | None, saved: str | None, out: Path,
                  rank: int) -> Any:
    """The tokenizer: from the checkpoint when resuming, from ``--tokenizer``, or trained.

    NOTE [tokenizer determinism]: the Rust trainer breaks frequency ties in hash order,
    so two trainings on the same texts can differ. Rank 0 trains and saves; every rank
    loads that file, and the checkpoint carries it so a resumed run uses the same ids.
    """
    import tokenizers

    from dataforge.transforms.text import load_tokenizer, train_tokenizer

    if saved is not None:
        try:
            return tokenizers.Tokenizer.from_str(saved)
        except Exception as exc:  # the Rust parser's error types are not exported
            raise RecipeError(f"--resume: the checkpoint's tokenizer is not valid ({exc})") from None
    if path:
        try:
            return load_tokenizer(path)
        except (FileNotFoundError, ValueError) as exc:
            raise RecipeError(f"--tokenizer: {exc}") from None
    a = cfg["tokenizer"]["args"]
    tok_path = out / "tokenizer.json"
    if rank == 0:
        texts = (train_txt[i]["text"] for i in range(len(train_txt)))
        tok = train_tokenizer(texts, vocab_size=a["vocab_size"], kind=a["kind"])
        out.mkdir(parents=True, exist_ok=True)
        tok.save(str(tok_path))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return load_tokenizer(tok_path)


def build_model(cfg: dict[str, Any], vocab_size: int, num_classes: int, hf_model: str | None) -> nn.Module:
    """The model; a ``--hf-model`` is checked against the tokenizer and the longest batch."""
    if hf_model:
        try:
            model = HFClassifier(hf_model, num_classes)
        except (FileNotFoundError, ImportError, OSError, ValueError) as exc:
            raise RecipeError(f"--hf-model: {exc}") from None
        multiple = cfg["collate"]["args"].get("pad_to_multiple_of") or 1
        longest = -(-cfg["tokenizer"]["args"]["max_length"] // multiple) * multiple
        try:
            model.check_inputs(vocab_size, longest)
        except ValueError as exc:
            raise RecipeError(f"--hf-model {hf_model!r}: {exc}") from None
        return model
    kind, a = cfg["model"]["type"], cfg["model"]["args"]
    if kind == "BagOfEmbeddings":
        return BagOfEmbeddings(vocab_size, num_classes, **a)
    if kind == "TinyTransformer":
        return TinyTransformer(vocab_size, num_classes, **a)
    raise RecipeError(f"model.type must be 'BagOfEmbeddings' or 'TinyTransformer', got {kind!r}")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], HERE / "configs" / "text.json")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer.json to use instead of training one")
    parser.add_argument("--hf-model", default=None,
                        help="a local HuggingFace model folder to fine-tune (its tokenizer.json is used "
                             "unless --tokenizer names another)")
    args = parser.parse_args()
    cfg, out, state = prepare_run(args)
    seed = int(cfg["train"]["seed"])
    rank, world, local_rank = setup_distributed()
    device = pick_device(cfg["train"]["device"], local_rank)
    torch.manual_seed(seed)

    a = cfg["data"]["args"]
    path = Path(a["path"]) if a["path"] else demo_corpus(a["demo"], rank)
    full = read_corpus(path, a)
    if full.labels is None:
        raise RecipeError(f"data: {str(path)!r} has no labels under key {a['label_key']!r}")
    train_txt, val_txt = full.split([1 - a["val_fraction"], a["val_fraction"]], seed=seed, stratify=True)
    if state is not None and not isinstance(state.get("tokenizer"), str):
        raise RecipeError(f"--resume {args.resume!r} holds no tokenizer: it was not written by the text recipe")
    tok_file = args.tokenizer
    if args.hf_model and not tok_file and state is None and (Path(args.hf_model) / "tokenizer.json").is_file():
        tok_file = str(Path(args.hf_model) / "tokenizer.json")
        if rank == 0:
            print(f"tokenizer: {tok_file} (the --hf-model's own)")
    tok = get_tokenizer(cfg, train_txt, tok_file, state["tokenizer"] if state else None, out, rank)
    max_length = cfg["tokenizer"]["args"]["max_length"]
    train_ds = tokenize_dataset(train_txt, tok, max_length=max_length)
    val_ds = tokenize_dataset(val_txt, tok, max_length=max_length)
    val_ds = val_ds.subset(np.arange(rank, len(val_ds), world))

    s = cfg["sampler"]["args"]
    batch_sampler = dataforge.BucketBatchSampler(
        train_ds.lengths, max_tokens=s["max_tokens"], batch_size=s["batch_size"], seed=seed,
        labels=train_ds.labels if s["balance"] else None, balance=s["balance"], drop_last=False)
    collate = dataforge.PadCollate(train_ds.pad_id, keys=["input_ids"], mask_names={"input_ids": "attention_mask"},
                                   **cfg["collate"]["args"])
    lc = cfg["loader"]
    loader = dataforge.build_loader(train_ds, batch_sampler=batch_sampler, collate_fn=collate,
                                    num_workers=lc["num_workers"], engine=lc["engine"], device=device, seed=seed)
    # val_ds is already this rank's part: an explicit in-order sampler says so to build_loader
    val_loader = dataforge.build_loader(val_ds, 256, sampler=SequentialSampler(val_ds), collate_fn=collate,
                                        num_workers=lc["num_workers"], engine=lc["engine"], device=device)
    num_classes = len(full.classes) if getattr(full, "classes", None) is not None else int(full.labels.max()) + 1
    model = build_model(cfg, tok.get_vocab_size(), num_classes, args.hf_model).to(device)
    opt = getattr(torch.optim, cfg["optimizer"]["type"])(model.parameters(), **cfg["optimizer"]["args"])
    ddp_model = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def step_loss(batch: Any) -> torch.Tensor:
        logits = ddp_model(batch["input_ids"], batch["attention_mask"])
        return nn.functional.cross_entropy(logits, batch["label"])

    def predict(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch["input_ids"], batch["attention_mask"]).argmax(1), batch["label"]

    names = [str(c) for c in getattr(full, "classes", None) or range(num_classes)]
    try:
        fit(cfg=cfg, out=out, state=state, rank=rank, model=model, opt=opt, loader=loader,
            val_loader=val_loader, step_loss=step_loss, predict=predict, num_classes=num_classes,
            class_names=names, extra_state={"tokenizer": tok.to_str()})
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    raise SystemExit(run_main(main))
