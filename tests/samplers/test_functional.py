"""Pure math of dataforge.samplers.functional."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("total", [0, 5, 4 * (1 << 18) + 7])
def test_shuffle_concat_is_a_permutation(total):
    rng = np.random.default_rng(1)
    pieces = [np.arange(total // 2), np.arange(total // 2, total)]
    out = F.shuffle_concat(pieces, total, rng, np.int32)
    assert out.dtype == np.int32 and len(out) == total
    assert np.array_equal(np.sort(out), np.arange(total))
    if total > 1000:  # two-level path: no position keeps a strong bias to its origin
        assert abs(np.corrcoef(out[:100_000], np.arange(100_000))[0, 1]) < 0.02


def test_shuffle_concat_is_uniform_on_small_sets():
    rng = np.random.default_rng(2)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(6000):
        p = tuple(F.shuffle_concat([np.arange(3)], 3, rng, np.int64).tolist())
        counts[p] = counts.get(p, 0) + 1
    assert len(counts) == 6 and all(800 < c < 1200 for c in counts.values())


def test_quota_pieces_repeat_whole_class_then_subset():
    grouped = np.array([0, 1, 2, 3, 4])
    offsets = np.array([0, 3, 5])
    pieces = list(F.quota_pieces(grouped, offsets, np.array([7, 1]), np.random.default_rng(0)))
    flat = np.concatenate(pieces).tolist()
    assert len(flat) == 8
    assert sorted(flat.count(i) for i in (0, 1, 2)) == [2, 2, 3]
    assert sum(flat.count(i) for i in (3, 4)) == 1


def test_searchsorted_draw_never_picks_zero_weight():
    w = np.array([0.0, 1.0, 0.0, 3.0, 0.0])
    out = F.searchsorted_draw(np.cumsum(w), 40_000, np.random.default_rng(0), 3, np.int32)
    counts = np.bincount(out, minlength=5)
    assert counts[[0, 2, 4]].sum() == 0
    assert abs(counts[3] / 40_000 - 0.75) < 0.02


def test_gumbel_top_k_distinct_and_weighted():
    w = np.array([1.0, 0.0, 8.0, 1.0])
    first = [int(F.gumbel_top_k(w, 3, np.random.default_rng(s))[0]) for s in range(2000)]
    assert 1 not in first and first.count(2) / 2000 == pytest.approx(0.8, abs=0.03)
    out = F.gumbel_top_k(w, 3, np.random.default_rng(0))
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


def test_random_subset_is_uniform_across_chunks(monkeypatch):
    monkeypatch.setattr(F, "CHUNK", 8)
    block = np.arange(30)
    rng = np.random.default_rng(0)
    hits = np.zeros(30)
    for k in (10, 25):
        hits[:] = 0
        for _ in range(3000):
            sub = np.concatenate(list(F.random_subset(block, k, rng)))
            assert len(sub) == k == len(np.unique(sub))
            hits[sub] += 1
        np.testing.assert_allclose(hits / 3000, k / 30, atol=0.05)


def test_rechunk_joins_small_and_splits_large_pieces():
    pieces = [np.arange(i, i + 1) for i in range(50)] + [np.arange(50, 250), np.arange(250, 260)]
    chunks = list(F._rechunk(pieces, 64))
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 4]
    assert np.concatenate(chunks).tolist() == list(range(260))
