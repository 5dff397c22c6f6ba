"""IterDataset ops, mix, epochs and resume."""

from __future__ import annotations

import math
from collections import Counter
from unittest import mock

import pytest
from helpers import run_test_save_load_state

import dataforge
from dataforge.datasets import iterable, mixing
from dataforge.datasets.iterable import IterDataset


def src(n: int = 10) -> IterDataset[int]:
    return IterDataset.from_iterable(range(n))


class Unsharded(IterDataset[int]):
    """A minimal subclass: every consumer sees every item (no sharding)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def _iter(self):
        yield from range(self.n)


def _double(x: int) -> int:
    return 2 * x


def test_public_names_resolve() -> None:
    assert dataforge.IterDataset is IterDataset
    assert dataforge.mix is mixing.mix
    import torch.utils.data

    assert isinstance(src(), torch.utils.data.IterableDataset)


def test_map_filter_batch_take() -> None:
    ds = src(10)
    assert list(ds.map(_double)) == [2 * i for i in range(10)]
    assert list(ds.filter(lambda x: x % 3 == 0)) == [0, 3, 6, 9]
    assert list(ds.batch(4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(ds.batch(4, drop_last=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(ds.take(3)) == [0, 1, 2]
    assert list(ds.take(0)) == []
    assert list(ds.take(100)) == list(range(10))
    assert list(ds.filter(lambda x: x > 2).map(_double).take(2).batch(5)) == [[6, 8]]


def test_ops_return_new_datasets_and_leave_source_alone() -> None:
    ds = src(5)
    mapped = ds.map(_double)
    assert mapped is not ds and list(ds) == [0, 1, 2, 3, 4]
    assert list(mapped) == list(mapped)  # re-iterable


def test_take_does_not_pull_extra_items() -> None:
    pulled = []

    def gen():
        for i in range(100):
            pulled.append(i)
            yield i

    list(IterDataset.from_iterable(gen).take(3))
    assert pulled == [0, 1, 2]


def test_repeat() -> None:
    ds = src(3)
    assert list(ds.repeat(2)) == [0, 1, 2, 0, 1, 2]
    assert list(ds.repeat(0)) == []
    assert list(ds.repeat().take(7)) == [0, 1, 2, 0, 1, 2, 0]
    assert list(src(0).repeat()) == []  # an empty source repeated forever ends


def test_len_is_not_faked() -> None:
    with pytest.raises(TypeError):
        len(src(3))  # type: ignore[arg-type]


def test_subclass_contract() -> None:
    assert list(Unsharded(4).map(_double)) == [0, 2, 4, 6]
    with pytest.raises(NotImplementedError, match="_iter"):
        list(IterDataset())


def test_from_iterable_factory_and_split() -> None:
    assert list(IterDataset.from_iterable(lambda: iter("abc"))) == ["a", "b", "c"]
    parts = [list(IterDataset.from_iterable(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(7))
    with pytest.raises(TypeError, match="source"):
        IterDataset.from_iterable(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="re-iterable"):
        IterDataset.from_iterable(x for x in range(3))


@pytest.mark.parametrize(
    ("call", "exc", "word"),
    [
        (lambda d: d.map(3), TypeError, "fn"),
        (lambda d: d.filter(None), TypeError, "pred"),
        (lambda d: d.shuffle(0), ValueError, "buffer_size"),
        (lambda d: d.shuffle(10, seed=1.5), TypeError, "seed"),
        (lambda d: d.batch(0), ValueError, "n must"),
        (lambda d: d.take(-1), ValueError, "n must"),
        (lambda d: d.repeat(-2), ValueError, "times"),
        (lambda d: d.set_epoch(-1), ValueError, "epoch"),
        (lambda d: d.load_state_dict({"epoch": 0}), ValueError, "state"),
    ],
)
def test_validation(call, exc, word) -> None:
    with pytest.raises(exc, match=word):
        call(src())


def test_shuffle_is_a_reproducible_per_epoch_permutation() -> None:
    ds = src(50).shuffle(8, seed=3)
    a = list(ds)
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert list(src(50).shuffle(8, seed=3)) == a  # same seed, same order
    assert list(src(50).shuffle(8, seed=4)) != a
    ds.set_epoch(1)
    b = list(ds)
    assert sorted(b) == list(range(50)) and b != a
    ds.set_epoch(0)
    assert list(ds) == a
    assert list(src(20).shuffle(1)) == list(range(20))  # a buffer of 1 keeps the order


def test_shuffle_differs_per_worker() -> None:
    ds = Unsharded(30).shuffle(10, seed=0)
    orders = []
    for w in range(2):
        with mock.patch.object(iterable, "worker_info", return_value=(w, 2)):
            orders.append(list(ds))
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]


def test_set_epoch_propagates_to_sources() -> None:
    a, b = src(3), src(3).shuffle(2)
    ds = dataforge.mix([a.map(_double), b]).batch(2)
    ds.set_epoch(5)
    assert a.epoch == 5 and b.epoch == 5 and ds.epoch == 5


def test_mix_stop_modes() -> None:
    a = IterDataset.from_iterable(["a"] * 5)
    b = IterDataset.from_iterable(["b"] * 20)
    first = list(dataforge.mix([a, b], seed=1))
    assert Counter(first)["a"] == 5 and Counter(first)["b"] < 20  # ended when "a" ran out
    assert first == list(dataforge.mix([a, b], seed=1))  # reproducible
    assert Counter(dataforge.mix([a, b], stop="all_exhausted")) == {"a": 5, "b": 20}
    never = list(dataforge.mix([a, b], stop="never").take(200))
    assert len(never) == 200 and Counter(never)["a"] > 5  # "a" was restarted
    empty = IterDataset.from_iterable([])
    assert list(dataforge.mix([empty, a], stop="never").take(12)) == ["a"] * 12  # empty source dropped
    assert list(dataforge.mix([empty, a], stop="all_exhausted")) == ["a"] * 5


def test_mix_weights_and_epochs() -> None:
    a = IterDataset.from_iterable(["a"] * 10)
    b = IterDataset.from_iterable(["b"] * 10)
    out = list(dataforge.mix([a, b], [3, 1], stop="never").take(4000))
    assert abs(Counter(out)["a"] / 4000 - 0.75) < 0.04
    assert set(dataforge.mix([a, b], [1, 0], stop="all_exhausted")) == {"a"}  # weight 0: never drawn
    m = dataforge.mix([a, b], seed=0, stop="all_exhausted")
    e0 = list(m)
    m.set_epoch(1)
    assert list(m) != e0


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"weights": [1, -1]}, ValueError, "non-negative"),
        ({"weights": [1, math.nan]}, ValueError, "finite"),
        ({"weights": [1, math.inf]}, ValueError, "finite"),
        ({"weights": [0, 0]}, ValueError, "all be zero"),
        ({"weights": [1]}, ValueError, "one entry per dataset"),
        ({"weights": ["x", 1]}, TypeError, "numbers"),
        ({"stop": "longest"}, ValueError, "stop"),
    ],
)
def test_mix_validation(kwargs, exc, word) -> None:
    with pytest.raises(exc, match=word):
        dataforge.mix([src(), src()], **kwargs)


def test_mix_rejects_bad_datasets() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        dataforge.mix([])
    with pytest.raises(TypeError, match=r"datasets\[1\]"):
        dataforge.mix([src(), [1, 2]])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "make",
    [
        lambda: src(23).shuffle(5, seed=1).map(_double).batch(3),
        lambda: dataforge.mix([src(7), src(9).filter(lambda x: x % 2)], [2, 1], seed=3, stop="all_exhausted"),
        lambda: src(4).repeat(3).take(10),
    ],
    ids=["shuffle-map-batch", "mix", "repeat-take"],
)
def test_resume(make) -> None:
    run_test_save_load_state(make, epochs=2)


def test_state_dict_counts_yielded_items() -> None:
    ds = src(10)
    it = iter(ds)
    next(it), next(it)
    assert ds.state_dict() == {"epoch": 0, "yielded": 2}
    fresh = src(10)
    fresh.load_state_dict({"epoch": 0, "yielded": 2})
    assert list(fresh) == list(range(2, 10))
    assert list(fresh) == list(range(10))  # the skip applies to one iteration only
