"""ClassBalancedSampler: exact quotas, epochs, ranks, resume, bad input, 100M labels."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import run_test_save_load_state

import dataforge
from dataforge.samplers import ClassBalancedSampler

LABELS = [0] * 50 + [1] * 20 + [2] * 7 + [5] * 3  # class ids need not be contiguous


def class_counts(sampler, labels):
    lab = np.asarray(labels)
    return Counter(lab[list(sampler)].tolist())


@pytest.mark.parametrize(
    ("strategy", "num_samples", "expected"),
    [
        ("oversample", None, {0: 50, 1: 50, 2: 50, 5: 50}),
        ("undersample", None, {0: 3, 1: 3, 2: 3, 5: 3}),
        ("oversample", 10, None),
        ("sqrt", None, None),
        ({0: 1.0, 2: 3.0}, 40, {0: 10, 2: 30}),
    ],
)
def test_quotas_are_exact_each_epoch(strategy, num_samples, expected):
    s = ClassBalancedSampler(LABELS, strategy=strategy, num_samples=num_samples, seed=3)
    counts = Counter(LABELS)
    for epoch in range(3):
        s.set_epoch(epoch)
        quotas = s.class_quotas()
        got = class_counts(s, LABELS)
        assert {c: q for c, q in quotas.items() if q} == dict(got)
        assert sum(quotas.values()) == len(s)
        if expected is not None:
            assert dict(got) == expected
        if strategy == "sqrt":  # floor or ceil of the sqrt(count) share
            w = {c: np.sqrt(n) for c, n in counts.items()}
            for c, q in quotas.items():
                share = len(s) * w[c] / sum(w.values())
                assert np.floor(share) <= q <= np.ceil(share)


def test_within_class_draws_without_replacement_first():
    s = ClassBalancedSampler(LABELS, strategy="oversample", seed=0)  # 50 of class 2 (7 members)
    got = Counter(list(s))
    reps = [got[i] for i in range(70, 77)]
    assert sum(reps) == 50 and max(reps) - min(reps) <= 1
    assert all(got[i] == 1 for i in range(50))  # the largest class: each exactly once
    under = list(ClassBalancedSampler(LABELS, strategy="undersample", seed=0))
    assert len(under) == len(set(under)) == 12


def test_distribution_over_epochs_matches_target():
    labels = np.random.default_rng(0).choice(4, size=2000, p=[0.7, 0.2, 0.07, 0.03])
    s = ClassBalancedSampler(labels, strategy="sqrt", num_samples=1001, seed=1)
    total: Counter[int] = Counter()
    for epoch in range(4):
        s.set_epoch(epoch)
        total.update(labels[list(s)].tolist())
    counts = np.bincount(labels)
    target = np.sqrt(counts) / np.sqrt(counts).sum()
    got = np.array([total[c] for c in range(4)]) / sum(total.values())
    np.testing.assert_allclose(got, target, atol=2e-3)


def test_set_epoch_changes_order_and_seed_epoch_reproduce():
    def order(seed, epoch):
        s = ClassBalancedSampler(LABELS, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2)
    assert order(0, 1) != order(1, 1)
    s = ClassBalancedSampler(LABELS, seed=0)
    assert list(s) == list(s)  # no set_epoch: the same epoch again


@pytest.mark.parametrize("world", [2, 3, 7])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_slices_of_one_epoch(world, drop_last):
    common = dict(strategy={0: 50, 1: 20, 2: 7, 5: 3}, seed=5, drop_last=drop_last)  # no repeats
    full = ClassBalancedSampler(LABELS, **common)
    full.set_epoch(2)
    ref = list(full)
    shards = []
    for rank in range(world):
        s = ClassBalancedSampler(LABELS, num_replicas=world, rank=rank, **common)
        s.set_epoch(2)
        shards.append(list(s))
        assert len(shards[-1]) == len(s)
    assert len({len(x) for x in shards}) == 1
    interleaved = [x for group in zip(*shards) for x in group]
    n = len(interleaved)
    assert interleaved == (ref + ref)[:n]  # rank r holds positions r, r + world, ...
    assert n == (len(ref) // world * world if drop_last else -(-len(ref) // world) * world)
    if drop_last:
        assert len(set(interleaved)) == n  # disjoint


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(strategy="oversample"),
        dict(strategy="undersample", num_replicas=3, rank=2),
        dict(strategy="sqrt", num_replicas=4, rank=1, drop_last=True),
    ],
)
def test_resume_mid_epoch(kwargs):
    run_test_save_load_state(lambda: ClassBalancedSampler(LABELS, seed=7, **kwargs), epochs=2)


def test_resume_across_chunks_and_completed_epoch(monkeypatch):
    monkeypatch.setattr(ClassBalancedSampler, "_chunk", 16)
    run_test_save_load_state(lambda: ClassBalancedSampler(LABELS, seed=1), checkpoints=[15, 16, 17])
    s = ClassBalancedSampler(LABELS, seed=1)
    full = list(s)
    state = json.loads(json.dumps(s.state_dict()))
    assert state["position"] == len(full)
    t = ClassBalancedSampler(LABELS, seed=1)
    t.load_state_dict(state)
    assert list(t) == []  # the epoch was finished
    t.set_epoch(1)
    assert len(list(t)) == len(full)


def test_load_state_then_set_same_epoch_keeps_resume():
    s = ClassBalancedSampler(LABELS, seed=2)
    s.set_epoch(3)
    it = iter(s)
    head = [next(it) for _ in range(5)]
    state = s.state_dict()
    t = ClassBalancedSampler(LABELS, seed=2)
    t.load_state_dict(state)
    t.set_epoch(3)
    s2 = ClassBalancedSampler(LABELS, seed=2)
    s2.set_epoch(3)
    assert head + list(t) == list(s2)


@pytest.mark.parametrize(
    ("field", "other"),
    [("seed", dict(seed=1)), ("num_labels", dict(labels=LABELS + [0])),
     ("drop_last", dict(drop_last=True)), ("num_samples", dict(num_samples=9))],
)
def test_load_state_mismatch_names_field(field, other):
    s = ClassBalancedSampler(LABELS, seed=0)
    kwargs = dict(seed=0)
    labels = other.pop("labels", LABELS)
    kwargs.update(other)
    with pytest.raises(ValueError, match=field):
        ClassBalancedSampler(labels, **kwargs).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="'position'.*past the end"):
        s.load_state_dict({**s.state_dict(), "position": 10_000})
    with pytest.raises(ValueError, match="no 'version'"):
        s.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="missing the field 'sampler'"):
        s.load_state_dict({"version": 2, "epoch": 0})


class WithLabels:
    labels = np.array(LABELS, dtype=np.int8)


@pytest.mark.parametrize(
    "labels",
    [LABELS, np.array(LABELS, np.uint8), torch.tensor(LABELS), np.array(LABELS, float), WithLabels()],
)
def test_label_sources(labels):
    assert sorted(ClassBalancedSampler(labels, seed=0)) == sorted(ClassBalancedSampler(LABELS, seed=0))


def test_public_name_and_len():
    s = dataforge.ClassBalancedSampler([1, 1, 1, 0], strategy="oversample", num_replicas=4, rank=3)
    assert len(s) == 2 == len(list(s))
    assert s.class_counts == {0: 1, 1: 3}


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        ([], {}, "labels is empty"),
        ([0, 1.5], {}, r"labels\[1\]=1.5"),
        ([0, float("nan")], {}, r"labels\[1\]=nan"),
        (["cat", "dog"], {}, "integer class ids.*dtype <U3"),
        ([0, -1, 2], {}, r"non-negative.*labels\[1\]=-1"),
        ([[0, 1]], {}, "1-D"),
        ([0, 1], {"strategy": "balanced"}, "strategy must be one of.*'balanced'"),
        ([0, 1], {"strategy": {0: 1.0, 7: 1.0}}, "class 7, which does not occur"),
        ([0, 1], {"strategy": {0: -1.0}}, r"strategy\[0\].*-1.0"),
        ([0, 1], {"strategy": {0: float("nan")}}, r"strategy\[0\]"),
        ([0, 1], {"strategy": {0: 0.0, 1: 0}}, "every class weight 0"),
        ([0, 1], {"num_samples": 0}, "num_samples must be an int >= 1, got 0"),
        ([0, 1], {"num_replicas": 2, "rank": 2}, "rank must be"),
    ],
)
def test_bad_input_errors(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassBalancedSampler(labels, **kwargs)


def test_bad_types():
    with pytest.raises(TypeError, match="seed must be an int"):
        ClassBalancedSampler([0, 1], seed=1.5)
    with pytest.raises(TypeError, match="drop_last must be a bool"):
        ClassBalancedSampler([0, 1], drop_last="yes")


def test_huge_sparse_class_ids_are_remapped():
    labels = np.array([10**12, 5, 10**12, 5, 5], dtype=np.int64)
    s = ClassBalancedSampler(labels, strategy="oversample", seed=0)
    assert s.classes.tolist() == [5, 10**12]
    assert Counter(labels[list(s)].tolist()) == {5: 3, 10**12: 3}


@pytest.mark.slow
def test_100_million_labels():
    labels = np.random.default_rng(0).integers(0, 10, 100_000_000, dtype=np.int8)
    s = ClassBalancedSampler(labels, strategy="oversample", seed=0)
    assert len(s) == 10 * int(np.bincount(labels).max())
    it = iter(s)
    head = [next(it) for _ in range(1000)]
    assert all(0 <= i < len(labels) for i in head)
    assert s.state_dict()["position"] == 1000
