"""SplitCollate: pairs and dicts into tuples of batches, inner collates, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import dataforge
from dataforge.collate import PadCollate, SplitCollate, default_collate


def test_pairs_to_data_and_labels() -> None:
    x, y = SplitCollate()([(torch.zeros(3), 1), (torch.ones(3), 0)])
    assert x.shape == (2, 3) and y.tolist() == [1, 0]


def test_tuple_positions_selected_and_reordered() -> None:
    y, x = SplitCollate(keys=[1, 0])([(np.zeros(2), 1, "a"), (np.ones(2), 0, "b")])
    assert y.tolist() == [1, 0] and x.shape == (2, 2)
    (names,) = SplitCollate(keys=[-1])([(1, "a"), (2, "b")])
    assert names == ["a", "b"]


def test_dicts_to_tuple_in_key_order() -> None:
    batch = [{"image": torch.zeros(3, 2, 2), "label": 3, "id": "a"},
             {"image": torch.zeros(3, 2, 2), "label": 4, "id": "b"}]
    labels, images = SplitCollate(keys=("label", "image"))(batch)
    assert labels.tolist() == [3, 4] and images.shape == (2, 3, 2, 2)


def test_inner_pad_collate_on_pairs() -> None:
    (ids, mask, lengths), labels = SplitCollate(inner=PadCollate())([([1, 2, 3], 1), ([4], 0)])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[True] * 3, [True, False, False]]
    assert lengths.tolist() == [3, 1] and labels.tolist() == [1, 0]


def test_inner_pad_collate_on_dicts_with_nested_part() -> None:
    batch = [{"text": {"ids": [1, 2]}, "y": 1}, {"text": {"ids": [3]}, "y": 0}]
    text, y = SplitCollate(keys=["text", "y"], inner=PadCollate(return_lengths=False))(batch)
    assert set(text) == {"ids", "ids_mask"} and y.tolist() == [1, 0]


def test_inner_any_callable() -> None:
    parts = SplitCollate(inner=len)([(1, 2), (3, 4)])
    assert parts == (2, 2)


def test_errors_name_the_part() -> None:
    with pytest.raises(ValueError, match=r'batch\[\*\]\["x"\]: .*sample 1 has shape \(3,\)'):
        SplitCollate(keys=["x"])([{"x": torch.zeros(2)}, {"x": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"batch\[\*\]\[0\].*PadCollate"):
        SplitCollate()([([1, 2], 0), ([1], 0)])


def test_dicts_need_keys() -> None:
    with pytest.raises(ValueError, match=r"keys=\['a', 'b'\]"):
        SplitCollate()([{"a": 1, "b": 2}])


def test_missing_key_names_sample() -> None:
    with pytest.raises(ValueError, match=r"sample 1 has no key 'b'"):
        SplitCollate(keys=["a", "b"])([{"a": 1, "b": 2}, {"a": 1}])


def test_mixed_kinds_and_bad_positions() -> None:
    with pytest.raises(TypeError, match="sample 0 is a dict but sample 1 is a tuple"):
        SplitCollate(keys=["a"])([{"a": 1}, (1,)])
    with pytest.raises(TypeError, match="sample 1 is a dict"):
        SplitCollate()([(1, 2), {"a": 1}])
    with pytest.raises(ValueError, match="sample 1 has 3"):
        SplitCollate()([(1, 2), (1, 2, 3)])
    with pytest.raises(ValueError, match="positions in 0..1"):
        SplitCollate(keys=[2])([(1, 2)])
    with pytest.raises(TypeError, match="single-field"):
        SplitCollate()([torch.zeros(1)])
    with pytest.raises(ValueError, match="empty"):
        SplitCollate()([])


def test_init_validation() -> None:
    with pytest.raises(TypeError, match=r"keys=\['label'\]"):
        SplitCollate(keys="label")
    with pytest.raises(ValueError, match="at least one"):
        SplitCollate(keys=[])
    with pytest.raises(TypeError, match="inner"):
        SplitCollate(inner=3)  # type: ignore[arg-type]


def test_public_and_picklable() -> None:
    assert dataforge.SplitCollate is SplitCollate
    split = SplitCollate(keys=["ids", "y"], inner=PadCollate(pad_value=-1))
    clone = pickle.loads(pickle.dumps(split))
    (ids, _, _), y = clone([{"ids": [1], "y": 0}, {"ids": [1, 2], "y": 1}])
    assert ids.tolist() == [[1, -1], [1, 2]]
    assert pickle.loads(pickle.dumps(SplitCollate())).inner is default_collate
