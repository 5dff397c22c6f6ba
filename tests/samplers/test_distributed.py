"""DistributedSamplerWrapper over stock and dataforge samplers."""

from __future__ import annotations

import pytest
import torch
from helpers import run_test_save_load_state
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from dataforge.samplers import ClassBalancedSampler, DistributedSamplerWrapper


class EpochSeeded(torch.utils.data.Sampler[int]):
    """A user sampler that is deterministic given its epoch."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.calls = n, 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.calls.append(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(100 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_disjoint_and_equal(world, drop_last):
    shards = []
    for rank in range(world):
        w = DistributedSamplerWrapper(EpochSeeded(10), num_replicas=world, rank=rank, drop_last=drop_last)
        w.set_epoch(3)
        shards.append(list(w))
        assert len(w) == len(shards[-1])
    assert len({len(s) for s in shards}) == 1
    ref = list(iter(torch.randperm(10, generator=torch.Generator().manual_seed(103)).tolist()))
    flat = [x for g in zip(*shards) for x in g]
    assert flat == (ref + ref)[: len(flat)]
    if drop_last:
        assert len(set(flat)) == len(flat) == 10 // world * world


def test_set_epoch_is_forwarded_and_changes_order():
    inner = EpochSeeded(8)
    w = DistributedSamplerWrapper(inner, num_replicas=2, rank=0)
    a = list(w)
    w.set_epoch(1)
    assert inner.calls[-1] == 1 and list(w) != a


def test_batch_sampler_items_are_lists():
    bs = BatchSampler(SequentialSampler(range(9)), batch_size=2, drop_last=False)
    out = [list(DistributedSamplerWrapper(bs, num_replicas=2, rank=r)) for r in range(2)]
    assert out == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [0, 1]]]


def test_wraps_seeded_stock_random_sampler():
    def make(rank):
        g = torch.Generator().manual_seed(0)
        return DistributedSamplerWrapper(RandomSampler(range(6), generator=g), num_replicas=2, rank=rank)

    assert sorted(list(make(0)) + list(make(1))) == list(range(6))


def test_resume():
    run_test_save_load_state(
        lambda: DistributedSamplerWrapper(EpochSeeded(11), num_replicas=3, rank=2), epochs=2
    )


def test_resume_batches():
    def make():
        inner = ClassBalancedSampler([0, 0, 0, 1, 1, 2], seed=1, num_replicas=1, rank=0)
        return DistributedSamplerWrapper(BatchSampler(inner, 2, False), num_replicas=2, rank=0)

    run_test_save_load_state(make, epochs=2)


def test_errors():
    with pytest.raises(ValueError, match="already split across num_replicas=2"):
        DistributedSamplerWrapper(ClassBalancedSampler([0, 1], num_replicas=2, rank=0))
    with pytest.raises(TypeError, match="sampler must be iterable"):
        DistributedSamplerWrapper(5)
    w = DistributedSamplerWrapper(EpochSeeded(4))
    with pytest.raises(ValueError, match="num_items"):
        w.load_state_dict({**w.state_dict(), "num_items": 5})
