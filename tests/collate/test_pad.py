"""PadCollate: parity with pad_sequence, masks, lengths, layouts, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

import dataforge
from dataforge.collate import PadCollate
from dataforge.collate.functional import padded_length


def _seqs(lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 1000, (n,), generator=g).tolist() for n in lengths]


def _flip_pad(seqs: list[torch.Tensor], value: float) -> torch.Tensor:
    """Left padding with pad_sequence: flip each sequence, pad right, flip back."""
    return pad_sequence([s.flip(0) for s in seqs], batch_first=True, padding_value=value).flip(1)


LENGTHS = st.lists(st.integers(0, 40), min_size=1, max_size=9)


@given(lengths=LENGTHS, as_tensor=st.booleans(), left=st.booleans())
def test_equals_pad_sequence(lengths: list[int], as_tensor: bool, left: bool) -> None:
    seqs = _seqs(lengths)
    tensors = [torch.tensor(s, dtype=torch.int64) for s in seqs]
    batch = [{"input_ids": t if as_tensor else s, "label": i} for i, (s, t) in
             enumerate(zip(seqs, tensors))]
    out = PadCollate(pad_value=-1, padding_side="left" if left else "right")(batch)
    ref = _flip_pad(tensors, -1) if left else pad_sequence(tensors, batch_first=True,
                                                          padding_value=-1)
    assert torch.equal(out["input_ids"], ref)
    assert out["input_ids"].dtype == torch.int64
    lengths_t = torch.tensor(lengths)
    positions = torch.arange(ref.shape[1])
    want_mask = (positions >= ref.shape[1] - lengths_t[:, None]) if left else (
        positions < lengths_t[:, None])
    assert torch.equal(out["input_ids_mask"], want_mask)
    assert out["input_ids_mask"].dtype == torch.bool
    assert torch.equal(out["input_ids_lengths"], lengths_t)
    assert out["label"].tolist() == list(range(len(lengths)))


def test_output_keys_and_order() -> None:
    out = PadCollate()([{"input_ids": [1, 2], "label": 0}, {"input_ids": [3], "label": 1}])
    assert list(out) == ["input_ids", "input_ids_mask", "input_ids_lengths", "label"]
    assert out["input_ids"].tolist() == [[1, 2], [3, 0]]
    assert out["input_ids_mask"].tolist() == [[True, True], [True, False]]
    assert out["input_ids_lengths"].tolist() == [2, 1]


def test_left_padding_mask_and_lengths() -> None:
    out = PadCollate(padding_side="left")([{"x": [1, 2, 3]}, {"x": [4]}])
    assert out["x"].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert out["x_mask"].tolist() == [[True, True, True], [False, False, True]]
    assert out["x_lengths"].tolist() == [3, 1]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("longest", [1, 7, 8, 9, 16, 17])
def test_pad_to_multiple_of_8(side: str, longest: int) -> None:
    batch = [{"x": list(range(1, longest + 1))}, {"x": [5]}]
    out = PadCollate(pad_to_multiple_of=8, padding_side=side)(batch)
    width = -(-longest // 8) * 8
    assert out["x"].shape == (2, width) and out["x_mask"].shape == (2, width)
    assert out["x_mask"].sum(1).tolist() == [longest, 1]
    row = out["x"][0][out["x_mask"][0]]
    assert row.tolist() == list(range(1, longest + 1))


def test_padded_length() -> None:
    assert [padded_length(n, 8) for n in (0, 1, 8, 9)] == [0, 8, 8, 16]
    assert padded_length(5, None) == 5


def test_truncation_right_keeps_head_left_keeps_tail() -> None:
    batch = [{"x": [1, 2, 3, 4, 5]}, {"x": [6, 7]}]
    right = PadCollate(max_length=3)(batch)
    assert right["x"].tolist() == [[1, 2, 3], [6, 7, 0]]
    assert right["x_lengths"].tolist() == [3, 2]
    left = PadCollate(max_length=3, padding_side="left")(batch)
    assert left["x"].tolist() == [[3, 4, 5], [0, 6, 7]]
    tensors = PadCollate(max_length=3, padding_side="left")(
        [{"x": torch.tensor(b["x"])} for b in batch])
    assert tensors["x"].tolist() == [[3, 4, 5], [0, 6, 7]]


def test_truncation_then_multiple() -> None:
    out = PadCollate(max_length=5, pad_to_multiple_of=4)([{"x": list(range(9))}])
    assert out["x"].shape == (1, 8) and out["x_lengths"].tolist() == [5]


def test_per_key_pad_values() -> None:
    batch = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    out = PadCollate(pad_values={"labels": -100})(batch)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out["labels"].tolist() == [[1, 2, 3], [4, -100, -100]]


def test_mask_names_and_switches() -> None:
    batch = [{"input_ids": [1, 2]}, {"input_ids": [3]}]
    out = PadCollate(mask_names={"input_ids": "attention_mask"}, return_lengths=False)(batch)
    assert list(out) == ["input_ids", "attention_mask"]
    assert list(PadCollate(return_mask=False, return_lengths=False)(batch)) == ["input_ids"]


def test_mask_name_collision_is_an_error() -> None:
    batch = [{"input_ids": [1, 2], "attention_mask": [1, 1]}]
    with pytest.raises(ValueError, match="attention_mask.*collides"):
        PadCollate(mask_names={"input_ids": "attention_mask"})(batch)


def test_dtypes_follow_input() -> None:
    out = PadCollate()([{"i": [1, 2], "f": [0.5], "m": [0, 1.5], "b": [True], "h": np.zeros(
        2, np.float16), "t": torch.zeros(3, dtype=torch.bfloat16)}])
    assert out["i"].dtype == torch.int64
    assert out["f"].dtype == torch.float32 and out["m"].dtype == torch.float32
    assert out["m"].tolist() == [[0.0, 1.5]]  # an int first does not truncate the floats
    assert out["b"].dtype == torch.bool
    assert out["h"].dtype == torch.float16
    assert out["t"].dtype == torch.bfloat16


def test_keys_none_pads_sequences_and_stacks_the_rest() -> None:
    batch = [
        {"ids": [1, 2], "vec": np.ones(3), "img": torch.zeros(3, 4, 4), "y": 1, "s": "a"},
        {"ids": [3], "vec": np.ones(2), "img": torch.zeros(3, 4, 4), "y": 0, "s": "b"},
    ]
    out = PadCollate()(batch)
    assert set(out) == {"ids", "ids_mask", "ids_lengths", "vec", "vec_mask", "vec_lengths",
                        "img", "y", "s"}
    assert out["img"].shape == (2, 3, 4, 4) and out["s"] == ["a", "b"]


def test_explicit_keys_only_pad_those() -> None:
    batch = [{"a": [1, 2], "b": [1, 2]}, {"a": [3], "b": [3, 4]}]
    out = PadCollate(keys=["a"])(batch)
    assert set(out) == {"a", "a_mask", "a_lengths", "b"}
    assert isinstance(out["b"], list)  # default_collate transposes equal-length lists


def test_multi_dim_padding_every_dim() -> None:
    a, b = torch.ones(3, 2, 5), torch.full((3, 4, 3), 2.0)
    out = PadCollate(pad_value=-1.0)([{"img": a}, {"img": b}])
    assert out["img"].shape == (2, 3, 4, 5)
    assert torch.equal(out["img"][0, :, :2, :5], a) and torch.equal(out["img"][1, :, :4, :3], b)
    assert (out["img"][0, :, 2:, :] == -1).all() and (out["img"][1, :, :, 3:] == -1).all()
    assert out["img_mask"].shape == (2, 3, 4, 5)
    assert out["img_mask"].sum().item() == a.numel() + b.numel()
    assert torch.equal(out["img_mask"][0], torch.nn.functional.pad(
        torch.ones(3, 2, 5, dtype=torch.bool), (0, 0, 0, 2)))
    assert out["img_lengths"].tolist() == [[3, 2, 5], [3, 4, 3]]
    assert out["img_lengths"].dtype == torch.int64


def test_multi_dim_left_padding_aligns_to_the_end() -> None:
    out = PadCollate(padding_side="left")([{"x": torch.ones(1, 1)}, {"x": torch.ones(2, 2)}])
    assert out["x"][0].tolist() == [[0, 0], [0, 1]]
    assert out["x_mask"][0].tolist() == [[False, False], [False, True]]


def test_sequence_of_feature_vectors_pads_first_dim() -> None:
    batch = [{"feats": np.ones((4, 3), np.float32)}, {"feats": np.ones((2, 3), np.float32)}]
    out = PadCollate(pad_to_multiple_of=8, max_length=3)(batch)
    assert out["feats"].shape == (2, 8, 3)
    assert out["feats_lengths"].tolist() == [[3, 3], [2, 3]]


def test_nested_lists_are_padded_as_arrays() -> None:
    out = PadCollate(keys=["grid"])([{"grid": [[1, 2], [3, 4]]}, {"grid": [[5, 6, 7]]}])
    assert out["grid"].tolist() == [[[1, 2, 0], [3, 4, 0]], [[5, 6, 7], [0, 0, 0]]]
    assert out["grid_lengths"].tolist() == [[2, 2], [1, 3]]


def test_tuple_samples_layout() -> None:
    out = PadCollate()([([1, 2, 3], 1, "a"), ([4], 0, "b")])
    assert len(out) == 4
    ids, labels, names, extras = out
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert labels.tolist() == [1, 0] and names == ["a", "b"]
    assert list(extras["mask"]) == [0] and extras["lengths"][0].tolist() == [3, 1]
    assert extras["mask"][0].tolist() == [[True, True, True], [True, False, False]]


def test_tuple_samples_keys_by_position_and_no_extras() -> None:
    batch = [([1, 2], [1, 2]), ([3], [3, 4])]
    ids, other, extras = PadCollate(keys=[0])(batch)
    assert list(extras["mask"]) == [0] and isinstance(other, list)
    out = PadCollate(keys=[-1], return_mask=False, return_lengths=False)(
        [([1], [1, 2]), ([3], [3])])
    assert len(out) == 2 and out[1].tolist() == [[1, 2], [3, 0]]


def test_bare_samples() -> None:
    values, mask, lengths = PadCollate()([[1, 2], [3]])
    assert values.tolist() == [[1, 2], [3, 0]] and lengths.tolist() == [2, 1]
    assert PadCollate(return_mask=False, return_lengths=False)([[1], [2, 3]]).shape == (2, 2)
    assert PadCollate()([1, 2]).tolist() == [1, 2]  # numbers: stacked


def test_nested_dicts_are_searched() -> None:
    out = PadCollate()([{"text": {"ids": [1, 2]}, "y": 0}, {"text": {"ids": [3]}, "y": 1}])
    assert set(out["text"]) == {"ids", "ids_mask", "ids_lengths"}


def test_empty_sequences() -> None:
    out = PadCollate()([{"x": []}, {"x": []}])
    assert out["x"].shape == (2, 0) and out["x"].dtype == torch.int64
    out = PadCollate(pad_to_multiple_of=8)([{"x": []}, {"x": [1]}])
    assert out["x"].shape == (2, 8) and out["x_lengths"].tolist() == [0, 1]


def test_public_and_picklable() -> None:
    assert dataforge.PadCollate is PadCollate
    collate = PadCollate(-1, keys=["x"], pad_values={"x": 2}, pad_to_multiple_of=4,
                         mask_names={"x": "m"})
    clone = pickle.loads(pickle.dumps(collate))
    batch = [{"x": [1, 2]}, {"x": [3]}]
    assert {k: v.tolist() for k, v in clone(batch).items()} == {
        k: v.tolist() for k, v in collate(batch).items()}
    assert "PadCollate(-1" in repr(collate)


# -- errors ------------------------------------------------------------------------------


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty"):
        PadCollate()([])


def test_mixed_sample_types() -> None:
    with pytest.raises(TypeError, match="sample 0 is a dict but sample 1 is a tuple"):
        PadCollate()([{"x": [1]}, ([1],)])


def test_missing_key() -> None:
    with pytest.raises(ValueError, match=r"sample 1 is missing \['y'\]"):
        PadCollate()([{"x": [1], "y": 1}, {"x": [1]}])


def test_non_numeric_field_asked_to_be_padded() -> None:
    with pytest.raises(TypeError, match=r'batch\[\*\]\["text"\]: sample 1 .*non-numeric'):
        PadCollate(keys=["text"])([{"text": [1, 2]}, {"text": [3, "a"]}])
    with pytest.raises(TypeError, match=r'batch\[\*\]\["text"\]: sample 0 is a str'):
        PadCollate(keys=["text"])([{"text": "hello"}, {"text": "hi"}])
    with pytest.raises(ValueError, match=r"sample 0 is a scalar"):
        PadCollate(keys=["y"])([{"y": 1}, {"y": 2}])


def test_keys_not_in_samples() -> None:
    with pytest.raises(ValueError, match=r"names \['ids'\]"):
        PadCollate(keys=["ids"])([{"input_ids": [1]}])
    with pytest.raises(ValueError, match="positions 0..1"):
        PadCollate(keys=[2])([([1], 0)])


def test_ragged_rank() -> None:
    with pytest.raises(ValueError, match="same number of dimensions"):
        PadCollate()([{"x": torch.zeros(2, 2)}, {"x": torch.zeros(2, 2, 2)}])


def test_float_pad_value_for_int_field() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        PadCollate(pad_value=0.5)([{"x": [1]}, {"x": [1, 2]}])


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"pad_to_multiple_of": 0}, ValueError, "pad_to_multiple_of must be a positive int"),
        ({"pad_to_multiple_of": -8}, ValueError, "pad_to_multiple_of"),
        ({"pad_to_multiple_of": 2.5}, TypeError, "pad_to_multiple_of"),
        ({"max_length": 0}, ValueError, "max_length"),
        ({"padding_side": "top"}, ValueError, "padding_side"),
        ({"pad_value": "x"}, TypeError, "pad_value"),
        ({"keys": "input_ids"}, TypeError, r"keys=\['input_ids'\]"),
        ({"keys": []}, ValueError, "keys"),
        ({"pad_values": {"x": None}}, TypeError, "pad_values"),
        ({"mask_names": {"a": 1}}, TypeError, "mask_names"),
        ({"mask_names": {"a": "m", "b": "m"}}, ValueError, "same mask name"),
        ({"return_mask": 1}, TypeError, "return_mask"),
    ],
)
def test_init_validation(kwargs: dict, exc: type, pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        PadCollate(**kwargs)
