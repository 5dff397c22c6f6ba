"""Streamed class-quota epochs: exact quotas, uniform positions, passes, resume, ranks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import run_test_save_load_state

from dataforge.samplers import ClassBalancedSampler
from dataforge.samplers import draws as D
from dataforge.samplers.quota_stream import QuotaEpoch

# a large class (100 members: the block path when block < 100), mid and tiny classes
LABELS = np.array([0] * 100 + [1] * 30 + [2] * 7 + [3] * 1)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 positions, blocks of 16 members: every path runs on small data."""
    monkeypatch.setattr(ClassBalancedSampler, "_epoch_chunk", 64)
    monkeypatch.setattr(ClassBalancedSampler, "_block", 16)
    monkeypatch.setattr(ClassBalancedSampler, "_chunk_per_class", 1)


def epoch(sampler, e=0):
    sampler.set_epoch(e)
    return np.asarray(list(sampler))


@pytest.mark.parametrize("strategy", ["oversample", "undersample", "sqrt", {0: 1.0, 3: 2.0}])
@pytest.mark.parametrize("num_samples", [None, 1000, 5])
def test_exact_quotas_every_epoch(small_chunks, strategy, num_samples):
    s = ClassBalancedSampler(LABELS, strategy=strategy, num_samples=num_samples, seed=1)
    for e in range(3):
        order = epoch(s, e)
        assert len(order) == len(s) == sum(s.class_quotas().values())
        got = Counter(LABELS[order].tolist())
        assert {c: q for c, q in s.class_quotas().items() if q} == dict(got)


def test_each_member_appears_whole_passes_plus_a_subset(small_chunks):
    # quota q = f * n + r: every member f or f + 1 times, exactly r of them f + 1 times
    s = ClassBalancedSampler(LABELS, strategy="oversample", num_samples=2000, seed=4)
    for e in range(2):
        counts = Counter(epoch(s, e).tolist())
        for c, q in s.class_quotas(e).items():
            members = np.flatnonzero(np.equal(LABELS, c))
            f, r = divmod(q, len(members))
            got = Counter(counts[int(i)] for i in members)
            assert got == Counter({f + 1: r, f: len(members) - r} if r else {f: len(members)})


def chi2_independent(table, z=3.09):
    """Whether a contingency table passes the chi-square independence test at p = 0.001
    (the 0.999 quantile by the Wilson-Hilferty approximation: no scipy needed)."""
    table = np.asarray(table, dtype=np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    k = (table.shape[0] - 1) * (table.shape[1] - 1)
    return stat < k * (1 - 2 / (9 * k) + z * np.sqrt(2 / (9 * k))) ** 3


def test_class_positions_are_uniform_over_the_epoch(small_chunks):
    # 4 classes, 20 position bins over an epoch of 12,000 spread over 188 chunks:
    # the class x position-bin table must look like independent rows and columns
    s = ClassBalancedSampler(LABELS, strategy="oversample", num_samples=12_000, seed=0)
    tables = []
    for e in range(3):
        classes = LABELS[epoch(s, e)]
        bins = np.arange(len(classes)) * 20 // len(classes)
        table = np.zeros((4, 20), np.int64)
        np.add.at(table, (classes, bins), 1)
        assert (table.sum(axis=1) == 3000).all()
        tables.append(table)
        assert chi2_independent(table)
    clustered = np.sort(classes)  # the test notices classes grouped in time
    table = np.zeros((4, 20), np.int64)
    np.add.at(table, (clustered, bins), 1)
    assert not chi2_independent(table)
    # and no class sits early or late: its mean position is within 4 standard errors
    classes = LABELS[epoch(s, 0)]
    pos = np.arange(len(classes))
    for c in range(4):
        p = pos[classes == c]
        se = len(classes) / np.sqrt(12 * len(p))
        assert abs(p.mean() - (len(classes) - 1) / 2) < 4 * se


def test_members_of_a_large_class_are_uniform_over_the_pass(small_chunks):
    # class 0 (100 members, blocks of 16): member bin x position-in-pass bin table
    s = ClassBalancedSampler(LABELS, strategy={0: 1.0}, num_samples=100 * 60, seed=2)
    table = np.zeros((5, 5), np.int64)
    for e in range(2):
        seq = epoch(s, e)
        for p in range(len(seq) // 100):
            members = seq[p * 100 : (p + 1) * 100]
            np.add.at(table, (members // 20, np.arange(100) // 20), 1)
    assert chi2_independent(table)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_slices_interleave_to_the_global_order(small_chunks, world, drop_last):
    common = dict(strategy="sqrt", num_samples=301, seed=5, drop_last=drop_last)
    full = epoch(ClassBalancedSampler(LABELS, **common), 1).tolist()
    shards = [epoch(ClassBalancedSampler(LABELS, num_replicas=world, rank=r, **common), 1).tolist()
              for r in range(world)]
    assert len({len(x) for x in shards}) == 1
    interleaved = [x for group in zip(*shards) for x in group]
    assert interleaved == (full + full)[: len(interleaved)]


def test_resume_at_start_mid_chunk_chunk_boundary_and_last(small_chunks):
    make = lambda: ClassBalancedSampler(LABELS, strategy="oversample", seed=3)  # noqa: E731
    n = len(make())
    assert n == 400
    run_test_save_load_state(make, checkpoints=[0, 1, 37, 64, 128, 200, n - 1, n], epochs=2)
    two = lambda: ClassBalancedSampler(LABELS, strategy="sqrt", seed=3, num_replicas=2, rank=1)  # noqa: E731
    run_test_save_load_state(two, checkpoints=[0, 32, 33, len(two()) - 1])


def test_every_start_gives_the_rest_of_the_epoch():
    grouped, offsets = np.arange(60), np.array([0, 40, 55, 60])
    quotas = np.array([90, 25, 17])
    full = np.concatenate(list(QuotaEpoch(grouped, offsets, quotas, (7, 1), np.empty(60, np.int64),
                                          chunk=16, block=8).chunks(0)))
    assert len(full) == 132
    for start in range(0, 133, 5):
        e = QuotaEpoch(grouped, offsets, quotas, (7, 1), np.empty(60, np.int64), chunk=16, block=8)
        rest = list(e.chunks(start))
        assert np.concatenate(rest or [np.empty(0, np.int64)]).tolist() == full[start:].tolist()


def test_many_small_classes_read_in_place():
    # 40 classes of 3..12 members, a chunk far below their passes: each class's share is
    # read from its work region (NOTE [small classes in place]), some across passes
    rng = np.random.default_rng(0)
    sizes, quotas = rng.integers(3, 13, 40), rng.integers(1, 30, 40)
    grouped, offsets = np.arange(int(sizes.sum())), np.concatenate(([0], np.cumsum(sizes)))
    labels = np.repeat(np.arange(40), sizes)

    def make():
        return QuotaEpoch(grouped, offsets, quotas, (5, 2), np.empty(len(grouped), np.int64),
                          chunk=32, block=16)

    full = np.concatenate(list(make().chunks(0)))
    assert np.bincount(labels[full], minlength=40).tolist() == quotas.tolist()
    seen = np.bincount(full, minlength=len(grouped))
    for c in range(40):  # whole passes, then a subset: each member f or f + 1 times
        f = quotas[c] // sizes[c]
        assert set(seen[offsets[c] : offsets[c + 1]].tolist()) <= {f, f + 1}
    for start in range(0, len(full) + 1, 7):
        rest = list(make().chunks(start))
        assert np.concatenate(rest or [np.empty(0, np.int64)]).tolist() == full[start:].tolist()


def test_concurrent_iterators_agree(small_chunks):
    s = ClassBalancedSampler(LABELS, seed=9)
    a, b = iter(s), iter(s)
    head = [next(a) for _ in range(50)]
    assert list(b) == head + list(a)


def test_hypergeometric_beyond_numpy_limit_matches_moments():
    rng = np.random.default_rng(0)
    good, bad, m = 3 * 10**9, 2 * 10**9, 4000
    x = np.array([D.hypergeometric(rng, good, bad, m) for _ in range(4000)])
    p = good / (good + bad)
    assert abs(x.mean() - m * p) < 4 * np.sqrt(m * p * (1 - p) / 4000)
    assert 0.9 < x.var() / (m * p * (1 - p)) < 1.1
    assert D.hypergeometric(rng, 10**9, 3, 5) >= 2  # at most 3 bad items exist


def test_multivariate_hypergeometric_any_total():
    rng = np.random.default_rng(1)
    colors = np.array([6 * 10**8, 9 * 10**8, 7, 0, 8 * 10**8])
    for m in (0, 1, 1000, 1 << 18):
        out = D.multivariate_hypergeometric(rng, colors, m)
        assert out.sum() == m and (out <= colors).all() and (out >= 0).all()
    assert D.multivariate_hypergeometric(rng, np.array([3, 4]), 7).tolist() == [3, 4]


@pytest.mark.parametrize("quota", [30, 5])  # blocks far from full and near empty (NOTE [pass cut short])
def test_a_pass_cut_short_is_a_uniform_subset(small_chunks, quota):
    # class 0 (100 members, blocks of 16) with a quota below 100: one pass cut short
    s = ClassBalancedSampler(LABELS, strategy={0: 1.0}, num_samples=quota, seed=6)
    hits = np.zeros(100, np.int64)
    first = np.zeros(100, np.int64)
    for e in range(300):
        order = epoch(s, e)
        assert len(set(order.tolist())) == quota  # without replacement
        hits[order] += 1
        first[order[0]] += 1
    assert chi2_independent(np.stack([hits.reshape(5, 20).sum(1), np.full(5, 60 * quota)]))
    assert chi2_independent(np.stack([first.reshape(5, 20).sum(1), np.full(5, 60)]))


def test_chunks_grow_with_the_number_of_classes(monkeypatch):
    monkeypatch.setattr(ClassBalancedSampler, "_epoch_chunk", 16)
    s = ClassBalancedSampler(np.arange(50) % 10, strategy="oversample", num_samples=2000, seed=0)
    sizes = [len(c) for c in s.epoch_chunks()]
    assert sizes[0] == 640 and sum(sizes) == 2000  # 64 positions per class, 10 classes


def test_scratch_rng_is_keyed_and_per_thread():
    import threading

    from dataforge.samplers.quota_stream import scratch_rng

    a = scratch_rng(1, 2, 3).integers(0, 2**62, 4).tolist()
    assert scratch_rng(1, 2, 4).integers(0, 2**62, 4).tolist() != a
    assert scratch_rng(1, 2, 3).integers(0, 2**62, 4).tolist() == a
    other: list[int] = []
    t = threading.Thread(target=lambda: other.extend(scratch_rng(1, 2, 3).integers(0, 2**62, 4).tolist()))
    g = scratch_rng(1, 2, 3)  # held across the other thread's use of its own generator
    t.start()
    t.join()
    assert other == a and g.integers(0, 2**62, 4).tolist() == a
