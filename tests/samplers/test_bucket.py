"""BucketBatchSampler: budgets, padding efficiency, balance, ranks, resume, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import run_test_save_load_state

from dataforge.samplers import BucketBatchSampler, ClassBalancedSampler
from dataforge.samplers.bucket import _length_keys, _window_order
from dataforge.samplers.functional import padding_efficiency

RNG = np.random.default_rng(0)
LOGNORMAL = np.maximum(1, RNG.lognormal(4.0, 0.8, 20_000).round()).astype(np.int64)
SMALL = np.array([5, 1, 4, 2, 8, 1, 3, 3, 7, 2, 6, 9, 1, 4])


def test_batch_size_partition_and_efficiency():
    s = BucketBatchSampler(LOGNORMAL, batch_size=32, seed=0)
    batches = list(s)
    assert len(batches) == len(s)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LOGNORMAL)))  # each index exactly once
    assert max(len(b) for b in batches) == 32
    assert sum(len(b) < 32 for b in batches) <= len(s.bucket_boundaries) + 1
    eff = padding_efficiency(LOGNORMAL, batches)
    perm = np.random.default_rng(1).permutation(len(LOGNORMAL))
    random_eff = padding_efficiency(LOGNORMAL, np.array_split(perm, len(perm) // 32))
    assert eff >= 0.95 > random_eff


@pytest.mark.parametrize("batch_size", [None, 16])
def test_max_tokens_budget_holds(batch_size):
    budget = 4096
    s = BucketBatchSampler(LOGNORMAL, max_tokens=budget, batch_size=batch_size, seed=1, oversize="single")
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(LOGNORMAL)))
    for b in batches:
        longest = int(LOGNORMAL[b].max())
        assert len(b) * longest <= budget or (len(b) == 1 and longest > budget)
        assert batch_size is None or len(b) <= batch_size
    assert padding_efficiency(LOGNORMAL, batches) >= 0.95


def test_oversize_policies():
    with pytest.raises(ValueError, match=r"lengths\[4\]=8 exceeds max_tokens=6.*oversize='single'"):
        BucketBatchSampler(SMALL, max_tokens=6)
    batches = list(BucketBatchSampler(SMALL, max_tokens=6, oversize="single", seed=0))
    assert [4] in batches and [8] in batches and [11] in batches


def test_explicit_boundaries_are_not_crossed():
    bounds = [3, 6]
    batches = list(BucketBatchSampler(SMALL, batch_size=3, bucket_boundaries=bounds, seed=2))
    for b in batches:
        assert len(set(np.searchsorted(bounds, SMALL[b], side="right").tolist())) == 1


def test_shuffle_false_is_deterministic_and_epoch_changes_order():
    a = list(BucketBatchSampler(SMALL, batch_size=4, shuffle=False))
    b = BucketBatchSampler(SMALL, batch_size=4, shuffle=False, seed=9)
    b.set_epoch(5)
    assert a == list(b)
    s = BucketBatchSampler(LOGNORMAL, batch_size=8, seed=0)
    first = list(s)
    assert first == list(s)
    s.set_epoch(1)
    assert first != list(s)


def test_balance_uses_class_quotas():
    labels = np.array([0] * 30 + [1] * 6)
    lengths = np.arange(1, 37)
    s = BucketBatchSampler(lengths, batch_size=4, labels=labels, balance="oversample", seed=3)
    flat = [i for b in s for i in b]
    assert Counter(labels[flat].tolist()) == {0: 30, 1: 30}
    assert ClassBalancedSampler(labels).class_quotas() == {0: 30, 1: 30}


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("kw", [dict(batch_size=7), dict(max_tokens=300)])
def test_ranks_same_batch_count_disjoint(world, drop_last, kw):
    lengths = LOGNORMAL[:500].clip(max=300)
    ref = list(BucketBatchSampler(lengths, seed=4, **kw))
    shards = [
        list(BucketBatchSampler(lengths, seed=4, num_replicas=world, rank=r, drop_last=drop_last, **kw))
        for r in range(world)
    ]
    counts = {len(x) for x in shards}
    assert len(counts) == 1
    per = counts.pop()
    assert per == (len(ref) // world if drop_last else -(-len(ref) // world))
    flat = [b for g in zip(*shards) for b in g]
    assert flat == (ref + ref)[: per * world]
    real = [i for b in flat[: min(len(ref), per * world)] for i in b]
    assert len(real) == len(set(real))  # disjoint apart from padding


@pytest.mark.parametrize(
    "kw",
    [dict(batch_size=3), dict(max_tokens=12, num_replicas=2, rank=1), dict(batch_size=2, labels=SMALL % 3, balance="sqrt")],
)
def test_resume(kw):
    run_test_save_load_state(lambda: BucketBatchSampler(SMALL, seed=5, **kw), epochs=2)


class HasLengths:
    lengths = [3, 1, 2]


def test_length_sources():
    assert sorted(i for b in BucketBatchSampler(HasLengths(), batch_size=2) for i in b) == [0, 1, 2]
    assert len(BucketBatchSampler(np.array([2.0, 3.0]), batch_size=1)) == 2


@pytest.mark.parametrize(
    ("lengths", "kw", "match"),
    [
        ([1, 0, 2], dict(batch_size=2), r"lengths\[1\]=0"),
        ([1, -3], dict(batch_size=2), r"lengths\[1\]=-3"),
        ([1, 2.5], dict(batch_size=2), r"lengths\[1\]=2.5"),
        (["a"], dict(batch_size=2), "positive ints"),
        ([], dict(batch_size=2), "non-empty"),
        ([1, 2], {}, "batch_size=, max_tokens="),
        ([1, 2], dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
        ([1, 2], dict(max_tokens=-1), "max_tokens must be an int >= 1"),
        ([1, 2], dict(batch_size=1, oversize="skip"), "oversize must be"),
        ([1, 2], dict(batch_size=1, bucket_boundaries=[5, 3]), "strictly increasing"),
        ([1, 2], dict(batch_size=1, bucket_boundaries=[0]), "positive ints"),
        ([1, 2], dict(batch_size=1, labels=[0, 1]), "labels and balance go together"),
        ([1, 2], dict(batch_size=1, labels=[0, 1, 1], balance="sqrt"), "labels has 3 entries"),
        ([1, 2], dict(batch_size=1, labels=[0, 1], balance="nope"), "strategy must be one of"),
    ],
)
def test_bad_input_errors(lengths, kw, match):
    with pytest.raises(ValueError, match=match):
        BucketBatchSampler(lengths, **kw)


def test_works_in_a_stock_dataloader():
    import torch

    from dataforge.samplers import ClassBalancedSampler

    data = list(range(len(SMALL)))
    bs = BucketBatchSampler(SMALL, batch_size=4, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=bs)
    assert [b.tolist() for b in loader] == list(bs)
    cbs = ClassBalancedSampler(SMALL % 2, seed=0)
    loader = torch.utils.data.DataLoader(data, sampler=cbs, batch_size=5)
    assert [i for b in loader for i in b.tolist()] == list(cbs)


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 64 items (pools of 100 batches would make one window hold everything)."""
    monkeypatch.setattr(BucketBatchSampler, "_window", 64)
    monkeypatch.setattr(ClassBalancedSampler, "_epoch_chunk", 32)
    monkeypatch.setattr(ClassBalancedSampler, "_block", 8)
    monkeypatch.setattr(ClassBalancedSampler, "_chunk_per_class", 1)


def streamed(n=3000, bounds=(), pool_size=None, **kw):
    labels = np.arange(n) % 7 * (np.arange(n) % 5 == 0)  # class 0 dominant
    s = BucketBatchSampler(LOGNORMAL[:n], batch_size=4, labels=labels, balance="oversample",
                           bucket_boundaries=list(bounds), **kw)
    if pool_size is not None:  # small pools: windows of several pools and a remainder
        s.pool_size = pool_size
    return s, labels


BOUNDS = [(), (40, 60, 90)]


@pytest.mark.parametrize("bounds", BOUNDS)
def test_streamed_balanced_batches_are_full_and_exact(small_windows, bounds):
    s, labels = streamed(seed=1, bounds=bounds, pool_size=8)
    for e in range(2):
        s.set_epoch(e)
        batches = list(s)
        balancer = ClassBalancedSampler(labels, strategy="oversample", seed=1)
        assert len(batches) == len(s) == -(-balancer.num_samples // 4)
        assert sum(len(b) < 4 for b in batches) <= 1  # only the epoch's last batch may be short
        flat = [i for b in batches for i in b]
        quotas = balancer.class_quotas(e)
        assert Counter(labels[flat].tolist()) == {c: q for c, q in quotas.items() if q}


@pytest.mark.parametrize("bounds", BOUNDS)
def test_streamed_balanced_resume_and_ranks(small_windows, bounds):
    def make(**kw):
        return lambda: streamed(300, bounds=bounds, pool_size=8, seed=2, **kw)[0]

    run_test_save_load_state(make(), checkpoints=[0, 1, 15, 16, 17, 40], epochs=2)
    run_test_save_load_state(make(num_replicas=3, rank=1), checkpoints=[0, 5, 6])


def test_streamed_balanced_keeps_padding_low():
    lengths = LOGNORMAL
    labels = (np.arange(len(lengths)) % 10 == 0).astype(int)  # 10% minority, oversampled
    s = BucketBatchSampler(lengths, batch_size=32, labels=labels, balance="oversample", seed=0)
    batches = list(s)
    assert padding_efficiency(lengths, batches) >= 0.95


def reference_window(lengths, bucket_ids, batch_size):
    """The streamed window's batches: each bucket's items sorted longest first (ties in
    stream order) and cut into whole batches; the rest of every bucket (its shortest)
    pooled, sorted longest first, and cut."""
    batches, rest = [], []
    buckets = np.zeros(len(lengths), int) if bucket_ids is None else bucket_ids
    for b in np.unique(buckets):
        members = np.flatnonzero(buckets == b)
        members = members[np.argsort(-lengths[members], kind="stable")]
        cut = len(members) // batch_size * batch_size
        rest += members[cut:].tolist()
        batches += [tuple(members[s : s + batch_size].tolist()) for s in range(0, cut, batch_size)]
    rest = np.asarray(rest, np.int64)
    rest = rest[np.lexsort((rest, -lengths[rest]))]
    return batches + [tuple(rest[s : s + batch_size].tolist()) for s in range(0, len(rest), batch_size)]


@pytest.mark.parametrize(
    ("n", "top", "bounds", "batch"),
    [
        (5000, 300, [20, 40, 80, 160], 8),  # partial batches in every bucket
        (3000, 50, None, 4),  # one bucket
        (4000, 3000, list(range(5, 3000, 10)), 4),  # hundreds of buckets
        (100_000, 300_000, [100, 1000, 20_000], 16),  # > 2^16 distinct lengths: uint32 keys
        (5, 10, [5], 8),  # fewer items than a batch
    ],
)
def test_window_order_sorts_each_bucket_and_pools_the_rest(n, top, bounds, batch):
    rng = np.random.default_rng(n)
    lengths = rng.integers(1, top, n)
    boundaries = None if bounds is None else np.asarray(bounds)
    keys, edges = _length_keys(lengths, boundaries)
    assert keys.dtype == (np.uint16 if len(np.unique(lengths)) <= 1 << 16 else np.uint32)
    assert (np.argsort(keys, kind="stable") == np.argsort(-lengths, kind="stable")).all()
    order = _window_order(keys, edges, batch)
    assert sorted(order.tolist()) == list(range(n))
    ours = [tuple(order[s : s + batch].tolist()) for s in range(0, n, batch)]
    bucket_ids = None if boundaries is None else np.searchsorted(boundaries, lengths, side="right")
    assert sorted(ours) == sorted(reference_window(lengths, bucket_ids, batch))
    assert all(len(b) == batch for b in ours[:-1])


def test_length_keys_beyond_the_lookup_table():
    lengths = np.array([5, 3_000_000, 5, 7, 2_000_000])
    keys, edges = _length_keys(lengths, np.array([6, 2_500_000]))
    assert keys.tolist() == [3, 0, 3, 2, 1]
    assert edges.tolist() == [0, 1, 3, 4]  # buckets longest first: {3M}, {2M, 7}, {5}


def test_window_lists_short_last_batch():
    s = BucketBatchSampler(np.ones(10, np.int64), batch_size=4, labels=np.zeros(10, int), balance="oversample")
    flat = np.arange(10, dtype=np.int32)
    assert s._window_lists(flat, np.array([2, 0, 2, 1])) == [[8, 9], [0, 1, 2, 3], [8, 9], [4, 5, 6, 7]]
    assert s._window_lists(flat[:3], np.array([0, 0])) == [[0, 1, 2], [0, 1, 2]]
    assert s._window_lists(flat[:8], np.array([1, 0])) == [[4, 5, 6, 7], [0, 1, 2, 3]]
