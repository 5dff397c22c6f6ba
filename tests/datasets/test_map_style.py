from __future__ import annotations

import pickle
import random
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, IterableDataset

import dataforge
from dataforge.datasets.map_style import MapDataset
from dataforge.datasets.storage import StringStorage


class Squares(MapDataset[int]):
    """A minimal subclass: only __len__ and _get."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __len__(self) -> int:
        return self.n

    def _get(self, index: int) -> int:
        self.calls += 1
        return index * index


def items(ds: Dataset) -> list:
    return [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]


# ---- base class -------------------------------------------------------------
def test_subclass_contract_and_indexing() -> None:
    ds = Squares(5)
    assert isinstance(ds, torch.utils.data.Dataset)
    assert items(ds) == [0, 1, 4, 9, 16]
    assert ds[-1] == 16 and ds[np.int64(2)] == 4 and ds[torch.tensor(3)] == 9
    assert ds.__getitems__([4, -5, 1]) == [16, 0, 1]
    assert list(ds) == [0, 1, 4, 9, 16]
    assert ds.labels is None


@pytest.mark.parametrize("index", [5, -6, 100])
def test_index_out_of_range_names_index_and_length(index: int) -> None:
    with pytest.raises(IndexError, match=f"index {index} is out of range for a dataset of length 5"):
        Squares(5)[index]
    with pytest.raises(IndexError, match=f"index {index} is out of range"):
        Squares(5).__getitems__([0, index])


@pytest.mark.parametrize("index", [1.0, "1", None, True])
def test_index_type_error(index: object) -> None:
    with pytest.raises(TypeError, match="index must be an int"):
        Squares(5)[index]  # type: ignore[index]


def test_base_must_be_implemented() -> None:
    with pytest.raises(NotImplementedError, match="__len__"):
        len(MapDataset())
    with pytest.raises(NotImplementedError, match="_get"):
        MapDataset()._get(0)


def test_dataloader_uses_getitems() -> None:
    calls: list[list[int]] = []

    class Spy(Squares):
        def _get_batch(self, indices: list[int]) -> list[int]:
            calls.append(indices)
            return super()._get_batch(indices)

    batches = list(DataLoader(Spy(10), batch_size=4))
    assert [b.tolist() for b in batches] == [[0, 1, 4, 9], [16, 25, 36, 49], [64, 81]]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_set_epoch_propagates_and_validates() -> None:
    base = Squares(6)
    other = Squares(2)
    ds = dataforge.concat([base.map(str).subset([0, 1]).cache(), other])
    ds.set_epoch(3)
    assert ds.epoch == 3 and base.epoch == 3 and other.epoch == 3
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="epoch must be a non-negative int"):
            ds.set_epoch(bad)  # type: ignore[arg-type]


# ---- from_sequence ----------------------------------------------------------
def test_from_sequence_sources() -> None:
    assert items(dataforge.from_sequence([3, 4])) == [3, 4]
    assert items(dataforge.from_sequence((3, 4))) == [3, 4]
    assert items(dataforge.from_sequence(range(2, 4))) == [2, 3]
    arr = dataforge.from_sequence(np.arange(6).reshape(3, 2))
    assert arr[2].tolist() == [4, 5] and [x.tolist() for x in arr.__getitems__([2, 0])] == [[4, 5], [0, 1]]
    t = dataforge.from_sequence(torch.arange(6).reshape(3, 2))
    assert torch.equal(t[1], torch.tensor([2, 3]))
    assert [x.tolist() for x in t.__getitems__([2, 1])] == [[4, 5], [2, 3]]
    assert t.__getitems__([]) == []
    s = dataforge.from_sequence(StringStorage(["a", "b"]))
    assert items(s) == ["a", "b"]

    class Plain(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> str:
            return "xy"[i]

    assert items(dataforge.from_sequence(Plain())) == ["x", "y"]
    inner = dataforge.from_sequence([1, 2], labels=[0, 1])
    outer = dataforge.from_sequence(inner)
    assert outer.labels.tolist() == [0, 1] and outer.__getitems__([1]) == [2]


def test_from_sequence_delegates_to_getitems() -> None:
    class Batched(Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> int:
            raise AssertionError("should use __getitems__")

        def __getitems__(self, idx: list[int]) -> list[int]:
            return [i + 100 for i in idx]

    assert dataforge.from_sequence(Batched()).__getitems__([2, 0]) == [102, 100]


def test_from_sequence_labels() -> None:
    ds = dataforge.from_sequence(["a", "b", "c"], labels=np.array([2, 0, 1], dtype=np.int32))
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="read-only"):
        ds.labels[0] = 5
    assert dataforge.from_sequence([1, 2], labels=torch.tensor([1, 0])).labels.tolist() == [1, 0]
    assert dataforge.from_sequence([1, 2], labels=[1.0, 0.0]).labels.tolist() == [1, 0]


def test_from_sequence_bad_input() -> None:
    with pytest.raises(TypeError, match="from_sequence.*got int"):
        dataforge.from_sequence(5)
    with pytest.raises(TypeError, match="got str"):
        dataforge.from_sequence("abc")

    class It(IterableDataset):
        def __iter__(self):
            yield 1

    with pytest.raises(TypeError, match="IterableDataset"):
        dataforge.from_sequence(It())
    with pytest.raises(TypeError, match="0-d"):
        dataforge.from_sequence(torch.tensor(3))
    with pytest.raises(ValueError, match=r"labels must be a 1-D sequence with one int per item \(3\), got shape \(2,\)"):
        dataforge.from_sequence([1, 2, 3], labels=[0, 1])
    with pytest.raises(TypeError, match="labels must be integer class ids, got dtype <U3"):
        dataforge.from_sequence([1, 2], labels=["cat", "dog"])
    with pytest.raises(TypeError, match="labels must be integer class ids, got dtype float64"):
        dataforge.from_sequence([1, 2], labels=[0.5, 1.0])


# ---- map --------------------------------------------------------------------
def test_map_is_lazy_and_keeps_labels() -> None:
    base = Squares(4)
    ds = dataforge.from_sequence(base, labels=[0, 1, 0, 1])
    mapped = ds.map(lambda x: x + 1)
    assert base.calls == 0
    assert items(mapped) == [1, 2, 5, 10] and mapped.__getitems__([3, 0]) == [10, 1]
    assert mapped.labels.tolist() == [0, 1, 0, 1]
    assert items(ds) == [0, 1, 4, 9]  # source untouched
    assert "map(<lambda>" in repr(mapped)


def _augment(x: int) -> tuple[int, float, float, int]:
    return x, torch.rand(()).item(), float(np.random.rand()), random.randint(0, 10**9)


def test_map_seed_reproduces_per_epoch_and_index() -> None:
    ds = dataforge.from_sequence(list(range(8))).map(_augment, seed=7)
    before = torch.random.get_rng_state()
    a = items(ds)
    assert torch.equal(before, torch.random.get_rng_state())  # caller's stream untouched
    assert items(ds) == a
    assert ds.__getitems__([5, 2]) == [a[5], a[2]]
    assert len({x[1] for x in a}) == 8  # distinct per index
    ds.set_epoch(1)
    b = items(ds)
    assert all(x[1] != y[1] for x, y in zip(a, b))
    ds.set_epoch(0)
    assert items(ds) == a
    other_seed = items(dataforge.from_sequence(list(range(8))).map(_augment, seed=8))
    assert other_seed != a


@pytest.mark.parametrize("workers", [0, 2])
def test_map_seed_independent_of_workers(workers: int) -> None:
    ds = dataforge.from_sequence(list(range(12))).map(_augment, seed=3)
    ds.set_epoch(2)
    expected = items(ds)
    loader = DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=list)
    got = [x for batch in loader for x in batch]
    assert got == expected


def test_map_bad_input() -> None:
    with pytest.raises(TypeError, match="map\\(fn\\) needs a callable, got int"):
        Squares(2).map(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map\\(seed=...\\) must be an int or None, got '1'"):
        Squares(2).map(str, seed="1")  # type: ignore[arg-type]


# ---- subset -----------------------------------------------------------------
def test_subset() -> None:
    ds = dataforge.from_sequence(list("abcde"), labels=[0, 1, 2, 3, 4])
    sub = ds.subset([4, 0, -2, 0])
    assert items(sub) == ["e", "a", "d", "a"] and sub.labels.tolist() == [4, 0, 3, 0]
    assert sub.__getitems__([1, 2]) == ["a", "d"]
    assert items(ds.subset(np.array([1, 2]))) == ["b", "c"]
    assert items(ds.subset(torch.tensor([2]))) == ["c"]
    assert items(ds.subset(range(1, 3))) == ["b", "c"]
    empty = ds.subset([])
    assert len(empty) == 0 and empty.labels.tolist() == []
    assert items(sub.subset([0, 1])) == ["e", "a"]


def test_subset_bad_input() -> None:
    ds = dataforge.from_sequence(list("abc"))
    with pytest.raises(IndexError, match="subset\\(indices\\): index 3 is out of range for a dataset of length 3"):
        ds.subset([0, 3])
    with pytest.raises(IndexError, match="index -4 is out of range"):
        ds.subset([-4])
    with pytest.raises(TypeError, match="1-D sequence of ints, got dtype float64"):
        ds.subset([0.5])
    with pytest.raises(TypeError, match="1-D sequence of ints"):
        ds.subset([[0, 1]])


# ---- split ------------------------------------------------------------------
def test_split_random_is_a_deterministic_partition() -> None:
    ds = dataforge.from_sequence(list(range(103)))
    parts = ds.split([0.7, 0.2, 0.1], seed=5)
    assert [len(p) for p in parts] == [72, 21, 10]
    all_items = sorted(x for p in parts for x in items(p))
    assert all_items == list(range(103))
    again = ds.split([0.7, 0.2, 0.1], seed=5)
    assert [items(p) for p in parts] == [items(p) for p in again]
    assert items(ds.split([0.7, 0.2, 0.1], seed=6)[1]) != items(parts[1])
    assert items(parts[0]) == sorted(items(parts[0]))  # source order kept inside a part
    assert parts[0].labels is None


def test_split_stratified() -> None:
    labels = [0] * 50 + [1] * 20 + [2] * 3 + [3] * 1
    ds = dataforge.from_sequence(list(range(len(labels))), labels=labels)
    train, val, test = ds.split([0.8, 0.1, 0.1], seed=0, stratify=True)
    assert sum(len(p) for p in (train, val, test)) == len(labels)
    assert sorted(x for p in (train, val, test) for x in items(p)) == list(range(len(labels)))
    c_train, c_val, c_test = (Counter(p.labels.tolist()) for p in (train, val, test))
    assert (c_train[0], c_val[0], c_test[0]) == (40, 5, 5)
    assert (c_train[1], c_val[1], c_test[1]) == (16, 2, 2)
    for c in (0, 1, 2):  # every class with >= 3 items is in every part
        assert c_train[c] >= 1 and c_val[c] >= 1 and c_test[c] >= 1
    assert c_train[3] == 1  # a single item cannot be shared
    for p in (train, val, test):  # labels match the items they describe
        assert [labels[x] for x in items(p)] == p.labels.tolist()
    again = ds.split([0.8, 0.1, 0.1], seed=0, stratify=True)
    assert [items(p) for p in again] == [items(p) for p in (train, val, test)]


def test_split_zero_fraction_part() -> None:
    ds = dataforge.from_sequence(list(range(10)), labels=[0, 1] * 5)
    a, b = ds.split([1.0, 0.0], stratify=True)
    assert len(a) == 10 and len(b) == 0


def test_split_bad_input() -> None:
    ds = dataforge.from_sequence(list(range(10)))
    with pytest.raises(ValueError, match=r"fractions must sum to 1 \(within 1e-6\), got \[0.5, 0.4\] summing to 0.9"):
        ds.split([0.5, 0.4])
    with pytest.raises(ValueError, match="fractions must be non-negative"):
        ds.split([1.5, -0.5])
    with pytest.raises(ValueError, match="fractions must be non-negative"):
        ds.split([])
    with pytest.raises(TypeError, match="fractions must be a sequence of floats"):
        ds.split(0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fractions must be a sequence of floats"):
        ds.split(["a", "b"])
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        ds.split([0.5, 0.5], seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split\\(stratify=True\\) needs labels"):
        ds.split([0.5, 0.5], stratify=True)
    assert len(ds.split([0.3, 0.7 + 1e-7])) == 2  # within tolerance


# ---- cache ------------------------------------------------------------------
def test_cache_memoizes_per_process() -> None:
    base = Squares(5)
    cached = dataforge.from_sequence(base, labels=[0, 0, 1, 1, 1]).cache()
    assert items(cached) == [0, 1, 4, 9, 16] and base.calls == 5
    assert items(cached) == [0, 1, 4, 9, 16] and base.calls == 5
    assert cached.__getitems__([4, 4, 0]) == [16, 16, 0] and base.calls == 5
    assert cached.labels.tolist() == [0, 0, 1, 1, 1]
    fresh = Squares(3).cache()
    assert fresh.__getitems__([2, 2, 1]) == [4, 4, 1] and fresh.source.calls == 2
    clone = pickle.loads(pickle.dumps(cached))
    assert clone._memo == {} and items(clone) == items(cached)


# ---- concat / zip -----------------------------------------------------------
def test_concat() -> None:
    a = dataforge.from_sequence(list("ab"), labels=[0, 1])
    b = dataforge.from_sequence(list("cde"), labels=[2, 2, 1])
    ds = dataforge.concat([a, b])
    assert len(ds) == 5 and items(ds) == list("abcde") and ds[-1] == "e"
    assert ds.__getitems__([4, 0, 2, 1]) == ["e", "a", "c", "b"]
    assert ds.labels.tolist() == [0, 1, 2, 2, 1]
    assert dataforge.concat([a, dataforge.from_sequence([1])]).labels is None
    assert items(a + b) == list("abcde")
    assert items(dataforge.concat([a, [7, 8]])) == ["a", "b", 7, 8]
    assert items(dataforge.concat([a, dataforge.from_sequence([]), b])) == list("abcde")
    assert items(dataforge.concat((a,))) == ["a", "b"]


def test_concat_bad_input() -> None:
    a = dataforge.from_sequence([1])
    with pytest.raises(ValueError, match="concat\\(datasets\\) needs at least one dataset"):
        dataforge.concat([])
    with pytest.raises(TypeError, match="takes a list of datasets.*concat\\(\\[a, b\\]\\)"):
        dataforge.concat(a)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be map-style datasets, got int"):
        dataforge.concat([a, 3])  # type: ignore[list-item]


def test_zip() -> None:
    a = dataforge.from_sequence([1, 2, 3], labels=[0, 1, 0])
    b = dataforge.from_sequence(list("xyz")).map(str.upper)
    ds = dataforge.zip(a, b, [True, False, True])
    assert items(ds) == [(1, "X", True), (2, "Y", False), (3, "Z", True)]
    assert ds.__getitems__([2, 0]) == [(3, "Z", True), (1, "X", True)]
    assert ds.labels is None
    batch = next(iter(DataLoader(dataforge.zip(a, a), batch_size=3)))
    assert [t.tolist() for t in batch] == [[1, 2, 3], [1, 2, 3]]


def test_zip_bad_input() -> None:
    with pytest.raises(ValueError, match=r"zip\(\*datasets\) needs datasets of equal length, got lengths \[3, 2\]"):
        dataforge.zip(dataforge.from_sequence([1, 2, 3]), dataforge.from_sequence([1, 2]))
    with pytest.raises(ValueError, match="needs at least one dataset"):
        dataforge.zip()


def _double(x: int) -> int:
    return x * 2


def test_pipeline_in_multiworker_loader() -> None:
    ds = dataforge.from_sequence(np.arange(40), labels=np.arange(40) % 3)
    train, _ = ds.split([0.75, 0.25], stratify=True, seed=1)
    pipe = dataforge.concat([train.map(_double), train]).cache()
    loader = DataLoader(pipe, batch_size=8, num_workers=2, shuffle=False)
    got = torch.cat(list(loader)).tolist()
    assert got == [int(x) for x in items(pipe)]
    assert len(pipe.labels) == len(pipe)


@given(
    n=st.integers(0, 60),
    weights=st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda w: sum(w) > 0),
    num_classes=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    stratify=st.booleans(),
)
def test_split_property(n: int, weights: list[int], num_classes: int, seed: int, stratify: bool) -> None:
    fractions = [w / sum(weights) for w in weights]
    labels = [(i * 7 + seed) % num_classes for i in range(n)]
    ds = dataforge.from_sequence(list(range(n)), labels=labels)
    parts = ds.split(fractions, seed=seed, stratify=stratify)
    got = [items(p) for p in parts]
    assert sorted(x for g in got for x in g) == list(range(n))  # a partition
    assert got == [items(p) for p in ds.split(fractions, seed=seed, stratify=stratify)]
    slack = num_classes * len(fractions) if stratify else 1  # rounding + "every class in every part"
    for g, f in zip(got, fractions):
        assert abs(len(g) - f * n) <= slack + 1e-9
        if f == 0:
            assert g == []
    if stratify:
        for c in range(num_classes):
            members = labels.count(c)
            positive = sum(f > 0 for f in fractions)
            if members >= positive:
                assert all(c in p.labels.tolist() for p, f in zip(parts, fractions) if f > 0)
