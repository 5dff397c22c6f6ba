from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from loading_fixtures import GlobalDraws

import dataforge
from dataforge.loading.seeding import seed_worker, worker_seed


def _first_draws(seed: int, epochs: int = 2) -> list[dict[int, tuple]]:
    # batch_size=1 and 2 workers: batch b goes to worker b % 2, so indices 0 and 1 are
    # each worker's first draws of the epoch
    loader = dataforge.build_loader(
        GlobalDraws(), batch_size=None, num_workers=2, seed=seed, persistent_workers=True
    )
    out = []
    for _ in range(epochs):
        items = list(loader)
        out.append({int(w): (r, n, t) for w, r, n, t in items[:2]})
    loader.close()
    return out


def test_per_worker_streams_distinct_reproducible_and_per_epoch() -> None:
    run1, run2 = _first_draws(0), _first_draws(0)
    assert run1 == run2  # same seed: same numbers
    for epoch in run1:
        assert set(epoch) == {0, 1}
        for k in range(3):  # random, numpy, torch each differ across workers
            assert epoch[0][k] != epoch[1][k]
    for w in (0, 1):
        assert all(run1[0][w][k] != run1[1][w][k] for k in range(3))  # epochs differ
    assert _first_draws(1, epochs=1)[0] != run1[0]


def test_seed_worker_is_a_pure_function_of_seed_rank_epoch_worker() -> None:
    seeds = {
        worker_seed(0, w, epoch=e, rank=r) for w in range(3) for e in range(3) for r in range(2)
    }
    assert len(seeds) == 18
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        s = seed_worker(2, seed=5, epoch=1, rank=0)
        a = (random.random(), np.random.rand(), torch.rand(1).item())
        assert seed_worker(2, seed=5, epoch=1, rank=0) == s
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def test_seed_worker_as_worker_init_fn_of_a_stock_dataloader() -> None:
    def draws() -> list:
        dl = torch.utils.data.DataLoader(
            GlobalDraws(), batch_size=None, num_workers=2, worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(3),
        )
        return [tuple(x) for x in dl][:2]

    a, b = draws(), draws()
    assert a == b and a[0][2] != a[1][2]  # numpy differs per worker (torch alone would not)


def test_seed_worker_validates() -> None:
    with pytest.raises(ValueError, match="worker_id"):
        seed_worker(-1)


def test_main_process_rng_is_not_touched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    list(dataforge.build_loader(list(range(6)), batch_size=2, shuffle=True, num_workers=1))
    assert torch.rand(1) == expected
