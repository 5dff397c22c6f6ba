"""WeightedSampler: distribution, no 2^24 limit, replacement modes, ranks, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_test_save_load_state

from dataforge.samplers import WeightedSampler

W = [0.5, 0.0, 2.0, 1.0, 0.5, 0.0, 4.0, 2.0]


def test_distribution_with_replacement_matches_weights():
    s = WeightedSampler(W, num_samples=80_000, seed=0)
    counts = np.bincount(list(s), minlength=len(W))
    np.testing.assert_allclose(counts / 80_000, np.array(W) / sum(W), atol=0.01)
    assert counts[1] == counts[5] == 0


def test_without_replacement_distinct_and_first_draw_weighted():
    first = []
    for epoch in range(1500):
        s = WeightedSampler(W, num_samples=6, replacement=False, seed=1)
        s.set_epoch(epoch)
        out = list(s)
        assert len(set(out)) == 6 and 1 not in out and 5 not in out
        first.append(out[0])
    assert first.count(6) / 1500 == pytest.approx(4 / 10, abs=0.04)


def test_accepts_tensor_weights_like_torch_and_is_seeded():
    w = torch.tensor(W, dtype=torch.float64)
    a, b = WeightedSampler(w, 20, seed=3), WeightedSampler(w, 20, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_more_than_2_pow_24_weights():
    n = (1 << 24) + 10
    w = np.zeros(n, np.float32)
    w[-3:] = 1.0  # only the last indices (beyond 2^24) can be drawn
    out = list(WeightedSampler(w, num_samples=100, seed=0))
    assert len(out) == 100 and set(out) <= {n - 3, n - 2, n - 1}


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_take_strided_equal_slices(world):
    ref = list(WeightedSampler(W, 25, seed=2))
    shards = [list(WeightedSampler(W, 25, seed=2, num_replicas=world, rank=r)) for r in range(world)]
    assert {len(x) for x in shards} == {-(-25 // world)}
    assert [x for g in zip(*shards) for x in g] == (ref + ref)[: len(shards[0]) * world]


@pytest.mark.parametrize("replacement", [True, False])
def test_resume(replacement):
    run_test_save_load_state(
        lambda: WeightedSampler(W, 5, replacement=replacement, seed=4, num_replicas=2, rank=1),
        epochs=2,
    )


def test_streamed_chunks_resume_at_boundaries_and_ranks(monkeypatch):
    monkeypatch.setattr(WeightedSampler, "_draw_chunk", 16)
    make = lambda: WeightedSampler(W, 70, seed=4)  # noqa: E731
    run_test_save_load_state(make, checkpoints=[0, 1, 15, 16, 17, 32, 50, 69, 70], epochs=2)
    ranks = lambda: WeightedSampler(W, 70, seed=4, num_replicas=3, rank=2)  # noqa: E731
    run_test_save_load_state(ranks, checkpoints=[0, 5, 6, 23, 24])
    whole = list(make())
    assert len(whole) == 70 and np.bincount(whole, minlength=len(W))[[1, 5]].sum() == 0


def test_long_epoch_distribution_chi_square(monkeypatch):
    monkeypatch.setattr(WeightedSampler, "_draw_chunk", 1000)  # 60 chunks, each its own generator
    s = WeightedSampler(W, 60_000, seed=8)
    counts = np.bincount(list(s), minlength=len(W)).astype(float)
    w = np.array(W)
    expected = 60_000 * w / w.sum()
    pos = w > 0
    stat = ((counts[pos] - expected[pos]) ** 2 / expected[pos]).sum()
    assert stat < 22.5  # chi-square, 5 degrees of freedom, p = 0.0004
    assert counts[~pos].sum() == 0


@pytest.mark.parametrize(
    ("weights", "kwargs", "match"),
    [
        ([1.0, -0.5], {}, r"weights\[1\]=-0.5"),
        ([1.0, float("nan")], {}, r"weights\[1\]=nan"),
        ([float("inf"), 1.0], {}, r"weights\[0\]=inf"),
        ([0.0, 0.0], {}, "all zero"),
        ([], {}, "empty"),
        (["a", "b"], {}, "sequence of numbers"),
        ([1.0, 0.0, 1.0], {"num_samples": 3, "replacement": False}, "num_samples=3 exceeds the 2"),
        ([1.0], {"num_samples": 0}, "num_samples must be an int >= 1"),
    ],
)
def test_bad_input_errors(weights, kwargs, match):
    kwargs.setdefault("num_samples", 2)
    with pytest.raises(ValueError, match=match):
        WeightedSampler(weights, **kwargs)
