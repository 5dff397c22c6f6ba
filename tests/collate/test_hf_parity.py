"""PadCollate gives what transformers.DataCollatorWithPadding gives (offline tokenizer)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dataforge.collate import PadCollate

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SENTENCES = [
    "the cat sat on the mat",
    "a dog",
    "the quick brown fox jumps over the lazy dog again and again",
    "hello world",
    "padding is what a collate does for text batches of different lengths",
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A WordLevel tokenizer trained on a few sentences; no hub download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8])
def test_same_as_data_collator_with_padding(tokenizer: Any, side: str, multiple: int | None) -> None:
    tokenizer.padding_side = side
    encoded = tokenizer(SENTENCES)
    features = [
        {"input_ids": ids, "label": i % 2} for i, ids in enumerate(encoded["input_ids"])
    ]
    hf = transformers.DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)(
        [dict(f) for f in features])
    ours = PadCollate(
        tokenizer.pad_token_id,
        pad_to_multiple_of=multiple,
        padding_side=side,
        mask_names={"input_ids": "attention_mask"},
    )(features)
    assert torch.equal(ours["input_ids"], hf["input_ids"])
    assert torch.equal(ours["attention_mask"].long(), hf["attention_mask"])
    assert torch.equal(ours["label"], hf["labels"])
    assert ours["input_ids_lengths"].tolist() == [len(x) for x in encoded["input_ids"]]


def test_same_with_tensor_inputs(tokenizer: Any) -> None:
    tokenizer.padding_side = "right"
    encoded = tokenizer(SENTENCES)
    features = [{"input_ids": torch.tensor(ids)} for ids in encoded["input_ids"]]
    hf = transformers.DataCollatorWithPadding(tokenizer)([dict(f) for f in features])
    ours = PadCollate(tokenizer.pad_token_id, mask_names={"input_ids": "attention_mask"})(features)
    assert torch.equal(ours["input_ids"], hf["input_ids"])
    assert torch.equal(ours["attention_mask"].long(), hf["attention_mask"])
