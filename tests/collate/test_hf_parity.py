"""PadCollate gives what transformers.DataCollatorWithPadding gives (offline tokenizer)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dataforge.collate import HFCollate, PadCollate

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


# -- HFCollate: the batch HF models take -----------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8])
def test_hf_collate_same_as_data_collator_on_tokenizer_output(
        tokenizer: Any, side: str, multiple: int | None) -> None:
    """The tokenizer's whole output (with its attention_mask) goes in; HF's exact batch comes out."""
    tokenizer.padding_side = side
    encoded = tokenizer(SENTENCES, return_token_type_ids=True)
    features = [{**{k: encoded[k][i] for k in encoded}, "label": i % 2, "text": s}
                for i, s in enumerate(SENTENCES)]
    hf = transformers.DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)(
        [{k: v for k, v in f.items() if k != "text"} for f in features])
    ours = HFCollate.from_tokenizer(tokenizer, pad_to_multiple_of=multiple)(features)
    assert sorted(ours) == sorted(hf) == ["attention_mask", "input_ids", "labels", "token_type_ids"]
    for k in hf:
        assert ours[k].dtype == hf[k].dtype, k
        assert torch.equal(ours[k], hf[k]), k


def test_pad_collate_refuses_a_mask_that_hf_collate_keeps(tokenizer: Any) -> None:
    tokenizer.padding_side = "right"
    features = [dict(e, label=0) for e in _rows(tokenizer(SENTENCES[:2]))]
    with pytest.raises(ValueError, match="collides"):
        PadCollate(mask_names={"input_ids": "attention_mask"})(features)
    out = HFCollate()(features)
    assert list(out) == ["input_ids", "attention_mask", "labels"]


def _rows(encoded: Any) -> list[dict[str, Any]]:
    return [{k: encoded[k][i] for k in encoded} for i in range(len(encoded["input_ids"]))]


def test_hf_collate_respects_a_given_mask() -> None:
    """A mask with zeros inside (pre-padded input) is kept as given, then padded with 0."""
    out = HFCollate()([{"input_ids": [5, 6, 0], "attention_mask": [1, 1, 0]},
                       {"input_ids": [7], "attention_mask": torch.tensor([True])}])
    assert out["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]
    assert out["attention_mask"].dtype == torch.int64


def test_hf_collate_builds_the_mask_left_and_truncates() -> None:
    out = HFCollate(pad_token_id=9, padding_side="left", max_length=2)(
        [{"input_ids": [1, 2, 3], "label": 1}, {"input_ids": [4], "label": 0}])
    assert out["input_ids"].tolist() == [[2, 3], [9, 4]]
    assert out["attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_hf_collate_token_labels_are_padded_with_minus_100() -> None:
    out = HFCollate(pad_to_multiple_of=4)(
        [{"input_ids": [1, 2, 3], "labels": [0, 1, 2]}, {"input_ids": [4], "labels": [3]}])
    assert out["labels"].tolist() == [[0, 1, 2, -100], [3, -100, -100, -100]]
    with pytest.raises(ValueError, match="sample 1 has a label of length 2 for 1 input_ids"):
        HFCollate(token_labels=True)([{"input_ids": [1, 2], "label": [0, 1]},
                                      {"input_ids": [3], "label": [0, 1]}])


def test_hf_collate_stacks_sample_labels() -> None:
    """Multi-hot vectors and floats (regression) are one value per sample, in float32."""
    multi = HFCollate()([{"input_ids": [1, 2], "label": [1.0, 0.0, 1.0]},
                         {"input_ids": [3], "label": [0.0, 1.0, 0.0]}])
    assert multi["labels"].tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    reg = HFCollate()([{"input_ids": [1], "label": 0.5}, {"input_ids": [2], "label": 2.0}])
    assert reg["labels"].dtype == torch.float32
    same = HFCollate(token_labels=False)([{"input_ids": [1, 2], "label": [1, 0]},
                                          {"input_ids": [3, 4], "label": [0, 1]}])
    assert same["labels"].tolist() == [[1, 0], [0, 1]]


def test_hf_collate_keeps_only_what_it_is_asked_to() -> None:
    rows = [{"input_ids": [1, 2], "special_tokens_mask": [1, 0], "idx": 3, "text": "a b"},
            {"input_ids": [3], "special_tokens_mask": [1], "idx": 4, "text": "c"}]
    assert list(HFCollate()(rows)) == ["input_ids", "attention_mask"]
    out = HFCollate(keep=["special_tokens_mask", "idx"])(rows)
    assert list(out) == ["input_ids", "attention_mask", "special_tokens_mask", "idx"]
    assert out["special_tokens_mask"].tolist() == [[1, 0], [1, 1]]  # padded as special tokens
    assert out["idx"].tolist() == [3, 4]


@pytest.mark.parametrize(("kwargs", "rows", "error", "match"), [
    ({}, [[1, 2]], TypeError, "sample 0 is a list; HFCollate takes dict samples"),
    ({}, [{"ids": [1]}], ValueError, "sample 0 has no 'input_ids'"),
    ({}, [{"input_ids": [1], "label": 0, "labels": 1}], ValueError, "both 'labels' and 'label'"),
    ({}, [{"input_ids": [1, 2], "attention_mask": [1]}], ValueError,
     r'\["attention_mask"\]: sample 0 has 1 items but 2 input_ids'),
    ({"keep": ["idx"]}, [{"input_ids": [1]}], ValueError, "no 'idx', which keep= names"),
    ({}, [], ValueError, "non-empty list of samples"),
])
def test_hf_collate_errors_name_the_sample(kwargs: dict[str, Any], rows: Any, error: type,
                                           match: str) -> None:
    with pytest.raises(error, match=match):
        HFCollate(**kwargs)(rows)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"pad_token_id": None}, TypeError, "pad_token_id must be an int"),
    ({"keep": "idx"}, TypeError, r"keep=\['idx'\]"),
    ({"pad_to_multiple_of": 0}, ValueError, "pad_to_multiple_of"),
    ({"padding_side": "top"}, ValueError, "padding_side"),
    ({"token_labels": "yes"}, TypeError, "token_labels"),
])
def test_hf_collate_validates_its_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        HFCollate(**kwargs)


def test_hf_collate_from_a_tokenizer_without_pad_token(tokenizer: Any) -> None:
    class NoPad:
        pad_token_id = None

    with pytest.raises(ValueError, match="no pad token"):
        HFCollate.from_tokenizer(NoPad())
    assert HFCollate.from_tokenizer(tokenizer).pad_token_id == tokenizer.pad_token_id


def test_hf_collate_pickles_for_worker_processes() -> None:
    import pickle

    collate = HFCollate(pad_to_multiple_of=8)
    collate([{"input_ids": [1]}])  # a cached layout travels too
    again = pickle.loads(pickle.dumps(collate))
    assert again([{"input_ids": [1, 2]}])["input_ids"].shape == (1, 8)
