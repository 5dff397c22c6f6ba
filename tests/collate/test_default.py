"""default_collate: torch parity, registry, errors, pickling."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch
from helpers import to_plain
from torch.utils.data import default_collate as torch_collate

import dataforge
from dataforge.collate import CollateContext, DefaultCollate, default_collate, register_collate

Point = collections.namedtuple("Point", ["x", "y"])


class Box:
    """A user type collated through the registry (module level: picklable)."""

    def __init__(self, xyxy: list[float]) -> None:
        self.xyxy = xyxy


def collate_boxes(samples: list[Box], ctx: CollateContext) -> torch.Tensor:
    return ctx.stack([torch.tensor(b.xyxy) for b in samples])


PARITY_BATCHES = [
    [torch.zeros(2, 3), torch.ones(2, 3)],
    [np.arange(4, dtype=np.float32), np.arange(4, dtype=np.float32)],
    [np.float32(1.5), np.float32(2.5)],
    [np.int16(1), np.int16(2)],
    [np.bool_(True), np.bool_(False)],
    [1, 2, 3],
    [1.5, 2.5],
    [True, False],
    [1, 2.5],  # mixed numbers: torch.tensor's dtype rules, whatever the fast path
    [True, 1],
    [1, True],
    [2.5, 1, True],
    [2**62, -(2**62)],
    ["a", "b"],
    [b"a", b"b"],
    [{"x": torch.zeros(2), "y": 1, "s": "a"}, {"x": torch.ones(2), "y": 0, "s": "b"}],
    [{"a": {"b": [1, 2], "c": (3.0, 4)}}, {"a": {"b": [5, 6], "c": (7.0, 8)}}],
    [(torch.zeros(1), 1), (torch.ones(1), 2)],
    [[1, 2], [3, 4]],
    [Point(1, 2.0), Point(3, 4.0)],
    [collections.OrderedDict(a=1, b=2), collections.OrderedDict(a=3, b=4)],
]


@pytest.mark.parametrize("batch", PARITY_BATCHES, ids=range(len(PARITY_BATCHES)))
def test_same_result_as_torch_default_collate(batch: list) -> None:
    ours, theirs = default_collate(batch), torch_collate(batch)
    assert to_plain(ours) == to_plain(theirs)
    assert type(ours) is type(theirs)


def test_dtypes_match_torch() -> None:
    out = default_collate([{"i": 1, "f": 1.0, "b": True}, {"i": 2, "f": 2.0, "b": False}])
    assert out["i"].dtype == torch.int64
    assert out["f"].dtype == torch.float64
    assert out["b"].dtype == torch.bool


def test_none_is_kept_as_list() -> None:
    assert default_collate([{"meta": None}, {"meta": None}]) == {"meta": [None, None]}


def test_namedtuple_keeps_its_type() -> None:
    out = default_collate([Point(1, 2), Point(3, 4)])
    assert isinstance(out, Point) and out.x.tolist() == [1, 3]


def test_is_public_and_same_object() -> None:
    assert dataforge.default_collate is default_collate


# -- errors ----------------------------------------------------------------------------


def test_ragged_tensor_names_path_indices_shapes_and_padcollate() -> None:
    batch = [{"input_ids": torch.zeros(3)}, {"input_ids": torch.zeros(3)},
             {"input_ids": torch.zeros(5)}]
    with pytest.raises(ValueError) as info:
        default_collate(batch)
    msg = str(info.value)
    assert 'batch[*]["input_ids"]' in msg
    assert "sample 0 has shape (3,)" in msg and "sample 2 has shape (5,)" in msg
    assert "PadCollate" in msg


def test_ragged_list_names_position_and_lengths() -> None:
    with pytest.raises(ValueError) as info:
        default_collate([(1, [1, 2]), (2, [1, 2, 3])])
    msg = str(info.value)
    assert "batch[*][1]" in msg and "sample 1 has length 3" in msg and "PadCollate" in msg


def test_ragged_numpy_arrays() -> None:
    with pytest.raises(ValueError, match=r"sample 1 has shape \(2, 2\).*PadCollate"):
        default_collate([np.zeros((2, 3)), np.zeros((2, 2))])


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty"):
        default_collate([])


def test_dict_beside_tuple() -> None:
    with pytest.raises(TypeError, match=r"batch\[\*\]: .*sample 0 is a dict but sample 1 is a tuple"):
        default_collate([{"a": 1}, (1,)])


def test_missing_key_names_sample_and_key() -> None:
    with pytest.raises(ValueError) as info:
        default_collate([{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 3}])
    msg = str(info.value)
    assert "sample 2" in msg and "'b'" in msg and "missing" in msg


def test_extra_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample 1 has extra"):
        default_collate([{"a": 1}, {"a": 1, "z": 2}])


def test_mixed_leaf_types_name_the_nested_path() -> None:
    with pytest.raises(TypeError, match=r'batch\[\*\]\["x"\]\[0\].*sample 1 is a str'):
        default_collate([{"x": (torch.zeros(1),)}, {"x": ("a",)}])


def test_string_numpy_array_refused() -> None:
    with pytest.raises(TypeError, match="strings or objects"):
        default_collate([np.array(["a"]), np.array(["b"])])


def test_unknown_type_suggests_register() -> None:
    with pytest.raises(TypeError, match=r"register\(object"):
        default_collate([object(), object()])


def test_batch_must_be_a_sequence() -> None:
    with pytest.raises(TypeError, match="list of samples"):
        default_collate({"a": 1})  # type: ignore[arg-type]


# -- registry --------------------------------------------------------------------------


def test_register_decorator_on_a_copy_leaves_default_alone() -> None:
    collate = default_collate.copy()

    @collate.register(Box)
    def _boxes(samples: list[Box], ctx: CollateContext) -> torch.Tensor:
        assert ctx.path == 'batch[*]["box"]'
        return ctx.stack([torch.tensor(b.xyxy) for b in samples])

    out = collate([{"box": Box([0, 0, 1, 1]), "y": 1}, {"box": Box([1, 1, 2, 2]), "y": 0}])
    assert out["box"].tolist() == [[0, 0, 1, 1], [1, 1, 2, 2]]
    with pytest.raises(TypeError):
        default_collate([Box([0, 0, 1, 1])])


def test_registered_function_can_recurse_with_context() -> None:
    class Pair:
        def __init__(self, a: object, b: object) -> None:
            self.a, self.b = a, b

    collate = DefaultCollate()
    collate.register(
        Pair,
        lambda s, ctx: {"a": ctx.collate([p.a for p in s], "a"), "b": ctx.collate([p.b for p in s], "b")},
    )
    out = collate([Pair(torch.zeros(2), 1), Pair(torch.ones(2), 2)])
    assert out["a"].shape == (2, 2) and out["b"].tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"batch\[\*\]\[\"a\"\]"):
        collate([Pair(torch.zeros(2), 1), Pair(torch.ones(3), 2)])


def test_subclass_dispatch_and_override_builtin() -> None:
    collate = DefaultCollate()
    collate.register(int, lambda s, ctx: torch.tensor(s, dtype=torch.int32))
    assert collate([1, 2]).dtype == torch.int32
    assert default_collate([1, 2]).dtype == torch.int64

    class MyTensorList(list):
        pass

    collate.register(MyTensorList, lambda s, ctx: "custom")
    assert collate([MyTensorList([1]), MyTensorList([2])]) == "custom"


def test_register_validates() -> None:
    with pytest.raises(TypeError, match="expected a class"):
        DefaultCollate().register("int", lambda s, c: s)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        DefaultCollate().register(int, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="registry must be a mapping"):
        DefaultCollate([int])  # type: ignore[arg-type]


def test_register_collate_on_the_shared_instance_and_pickle_carries_it() -> None:
    before = default_collate.registry
    try:
        register_collate(Box, collate_boxes)
        assert default_collate([Box([0, 1]), Box([2, 3])]).tolist() == [[0, 1], [2, 3]]
        payload = pickle.dumps(default_collate)
        # simulate a fresh (spawned) process: drop the registration, then unpickle
        default_collate._registry.pop(Box)
        default_collate._cache.clear()
        restored = pickle.loads(payload)
        assert restored is default_collate
        assert Box in default_collate.registry
    finally:
        default_collate._registry.clear()
        default_collate._registry.update(before)
        default_collate._cache.clear()


def test_pickle_roundtrip_of_instances() -> None:
    assert pickle.loads(pickle.dumps(default_collate)) is default_collate
    collate = DefaultCollate()
    collate.register(Box, collate_boxes)
    clone = pickle.loads(pickle.dumps(collate))
    assert clone is not collate and clone.registry[Box] is collate_boxes
    assert clone([Box([1]), Box([2])]).tolist() == [[1], [2]]
