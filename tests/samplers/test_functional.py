"""Pure math of dataforge.samplers.functional and dataforge.samplers.draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataforge.samplers import draws as D
from dataforge.samplers import functional as F


@given(
    total=st.integers(0, 10_000),
    weights=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=30),
)
def test_largest_remainder_is_exact(total, weights):
    w = np.asarray(weights)
    if not (w > 0).any():
        w[0] = 1.0
    q = F.largest_remainder(total, w, tie_break=np.random.default_rng(0).random(len(w)))
    exact = total * w / w.sum()
    assert q.sum() == total
    assert (q >= np.floor(exact) - 1e-9).all() and (q <= np.ceil(exact) + 1e-9).all()
    assert (q[w == 0] == 0).all()


def test_largest_remainder_tie_break_picks_larger():
    assert F.largest_remainder(4, np.ones(3), np.array([0.1, 0.9, 0.5])).tolist() == [1, 2, 1]
    assert F.largest_remainder(4, np.ones(3)).tolist() == [2, 1, 1]


@pytest.mark.parametrize(("n", "k", "chunk"), [(1, 1, 4), (1000, 3, 64), (5000, 2000, 128)])
def test_counting_sort_matches_stable_argsort(n, k, chunk):
    keys = np.random.default_rng(n).integers(0, k, n).astype(np.int16)
    out, offsets = F.counting_sort(keys, k, chunk=chunk)
    assert out.tolist() == np.argsort(keys, kind="stable").tolist()
    assert offsets.tolist() == [0, *np.cumsum(np.bincount(keys, minlength=k)).tolist()]


def test_counting_sort_with_values_and_alignment_error():
    keys = np.array([1, 0, 1, 0])
    out, _ = F.counting_sort(keys, 2, [np.array([10, 11]), np.array([12, 13])], chunk=3)
    assert out.tolist() == [11, 13, 10, 12]
    with pytest.raises(ValueError, match="align"):
        F.counting_sort(keys, 2, [np.array([1, 2])])


def slot_probabilities(thresholds, aliases):
    keep = thresholds.astype(np.float64) / 2**32
    prob = keep.copy()
    np.add.at(prob, aliases, 1.0 - keep)
    return prob / len(thresholds)


@pytest.mark.parametrize(
    "weights",
    [[1.0, 0.0, 3.0], [1.0] * 7, [0.0, 0.0, 5.0], [3.0, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 3.0],
     [1.0, 1.0, 0.5, 1.5], "pareto", "power"],
)
@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_alias_table_gives_each_index_its_weight(weights, chunk):
    rng = np.random.default_rng(0)
    if weights == "pareto":
        weights = rng.pareto(1.0, 5000)
    elif weights == "power":
        weights = rng.random(1000) ** 4
    w = np.asarray(weights, dtype=np.float64)
    thresholds, aliases = D.alias_table(w, chunk=chunk)
    assert thresholds.dtype == np.uint32 and len(aliases) == len(w)
    target = w / w.sum()
    np.testing.assert_allclose(slot_probabilities(thresholds, aliases), target, rtol=0, atol=1e-9 * target.max())
    out = D.alias_draw(thresholds, aliases, 20_000, rng, np.int64)
    assert not np.isin(out, np.flatnonzero(w == 0)).any()


def test_gumbel_top_k_distinct_and_weighted():
    w = np.array([1.0, 0.0, 8.0, 1.0])
    first = [int(D.gumbel_top_k(w, 3, np.random.default_rng(s))[0]) for s in range(2000)]
    assert 1 not in first and first.count(2) / 2000 == pytest.approx(0.8, abs=0.03)
    out = D.gumbel_top_k(w, 3, np.random.default_rng(0))
    assert sorted(out.tolist()) == [0, 2, 3]


def test_pool_sort_and_pack_batches_respect_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, 1000)
    order, pools = F.pool_sort(lengths, 100, np.searchsorted([10, 20], lengths, side="right"))
    assert sorted(order.tolist()) == list(range(1000))
    starts = F.pack_batches(lengths[order], pools, 16, 200)
    for a, b in zip(starts[:-1], starts[1:]):
        batch = lengths[order[a:b]]
        assert 1 <= len(batch) <= 16 and len(batch) * batch.max() <= 200
    assert starts[-1] == 1000


@pytest.mark.parametrize(("n", "top", "buckets"), [(1, 5, False), (5000, 60, True), (5000, 70_000, True),
                                                  (3000, 9, False)])
def test_pool_sort_equals_lexsort(n, top, buckets):
    rng = np.random.default_rng(n)
    lengths = rng.integers(1, top, n)
    bucket_ids = rng.integers(0, 4, n) if buckets else None
    order, starts = F.pool_sort(lengths, 64, bucket_ids)
    b = np.zeros(n, np.int64) if bucket_ids is None else bucket_ids
    rank = np.empty(n, np.int64)
    for k in np.unique(b):  # the pool: bucket, then position // 64 within the bucket
        where = np.flatnonzero(b == k)
        rank[where] = np.arange(len(where)) // 64
    ref = np.lexsort((np.arange(n), -lengths, rank, b))
    assert order.tolist() == ref.tolist()
    key = list(zip(b[order].tolist(), rank[order].tolist()))
    assert starts.tolist() == [i for i in range(n) if i == 0 or key[i] != key[i - 1]] + [n]


def test_pack_batches_oversize_item_alone():
    starts = F.pack_batches(np.array([30, 5, 5]), np.array([0, 3]), None, 10)
    assert starts.tolist() == [0, 1, 3]


def test_geometric_boundaries_merge_sparse_tail():
    lengths = np.concatenate([np.full(100, 10), np.full(100, 20), [500, 900]])
    b = F.geometric_boundaries(lengths, min_count=50, ratio=1.5)
    buckets = np.searchsorted(b, lengths, side="right")
    assert len(set(buckets[:100])) == 1 and buckets[0] != buckets[100]
    assert buckets[-1] == buckets[-2] == buckets[100]  # tail merged into the last full bucket


def test_padding_efficiency():
    assert F.padding_efficiency(np.array([2, 4, 4]), [[0, 1], [2]]) == pytest.approx(10 / 12)


def test_rechunk_joins_small_and_splits_large_pieces():
    pieces = [np.arange(i, i + 1) for i in range(50)] + [np.arange(50, 250), np.arange(250, 260)]
    chunks = list(F._rechunk(pieces, 64))
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 4]
    assert np.concatenate(chunks).tolist() == list(range(260))


def test_block_sample_takes_uniform_ordered_subsets_of_each_run():
    src = np.arange(25) + 100
    counts = np.array([3, 10, 2])
    dst = np.empty(15, np.int64)
    rng = np.random.default_rng(0)
    hits, first = np.zeros(25, np.int64), np.zeros(25, np.int64)
    for _ in range(3000):
        D.block_sample(src, counts, 10, dst, rng)
        runs = dst[:3] - 100, dst[3:13] - 100, dst[13:] - 100
        assert [len(set(r.tolist())) for r in runs] == [3, 10, 2]
        assert runs[0].max() < 10 and sorted(runs[1].tolist()) == list(range(10, 20)) and runs[2].min() >= 20
        hits[dst - 100] += 1
        first[runs[0][0]] += 1
        first[runs[2][0]] += 1
    # each member of a run is taken with probability count / length, each first equally often
    for (lo, hi), c in zip([(0, 10), (20, 25)], [3, 2]):
        p = c / (hi - lo)
        assert np.abs(hits[lo:hi] - 3000 * p).max() < 5 * np.sqrt(3000 * p * (1 - p))
        q = 1 / (hi - lo)
        assert np.abs(first[lo:hi] - 3000 * q).max() < 5 * np.sqrt(3000 * q * (1 - q))
    big = np.empty(1000, np.int64)  # runs above 10,000 items: numpy's partial shuffle path
    D.block_sample(np.arange(40_000), np.array([600, 400]), 20_000, big, rng)
    assert len(set(big.tolist())) == 1000 and big[:600].max() < 20_000 <= big[600:].min()
    with pytest.raises(ValueError, match=r"counts\[1\]=6 exceeds run 1's 5 items"):
        D.block_sample(np.arange(10), np.array([1, 6]), 5, dst, rng)
