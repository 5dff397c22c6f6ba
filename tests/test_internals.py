"""Tests of the shared internals: rank resolution, seed mixing, per-sample RNG scoping, decode."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dataforge._dist import resolve_replicas, worker_info
from dataforge._rng import make_generator, mix_seed, sample_seed, seeded_rng


def test_resolve_replicas_defaults_without_distributed() -> None:
    assert resolve_replicas() == (1, 0)
    assert resolve_replicas(4, 3) == (4, 3)
    assert worker_info() == (0, 1)


@pytest.mark.parametrize(
    ("num_replicas", "rank", "match"),
    [(0, 0, "num_replicas"), (2, 2, "rank"), (2, -1, "rank"), (True, 0, "num_replicas"), (2.0, 0, "num_replicas")],
)
def test_resolve_replicas_rejects_bad_values(num_replicas, rank, match) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_replicas(num_replicas, rank)


def test_mix_seed_is_deterministic_and_spreads() -> None:
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    seeds = {sample_seed(0, e, i) for e in range(5) for i in range(1000)}
    assert len(seeds) == 5000
    assert all(0 <= s < 2**63 for s in seeds)
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_seeded_rng_reproduces_and_restores_global_state() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    with seeded_rng(7):
        a = (torch.rand(3).tolist(), np.random.rand(), random.random())
    after = (torch.rand(1).item(), np.random.rand(), random.random())
    assert after == before  # caller's streams untouched
    with seeded_rng(7):
        b = (torch.rand(3).tolist(), np.random.rand(), random.random())
    assert a == b
    with seeded_rng(8):
        c = (torch.rand(3).tolist(), np.random.rand(), random.random())
    assert c != a


def test_make_generator() -> None:
    assert torch.equal(torch.rand(4, generator=make_generator(5)), torch.rand(4, generator=make_generator(5)))
