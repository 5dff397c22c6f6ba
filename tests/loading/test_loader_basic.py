from __future__ import annotations

import collections

import pytest
import torch
from helpers import to_plain
from loading_fixtures import Noisy

import dataforge
from dataforge.loading.loader import Loader


def _plain(loader) -> list:
    return [to_plain(b) for b in loader]


def test_public_names_resolve() -> None:
    assert dataforge.build_loader is dataforge.loading.build_loader
    assert dataforge.Loader is Loader
    assert callable(dataforge.seed_worker)
    assert dataforge.DevicePrefetcher is not None and dataforge.DataWaitMeter is not None


def test_sequential_batches_and_len() -> None:
    loader = dataforge.build_loader(torch.arange(10), batch_size=4, num_workers=0)
    assert len(loader) == 3
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    loader = dataforge.build_loader(torch.arange(10), batch_size=4, num_workers=0, drop_last=True)
    assert len(loader) == 2 and len(list(loader)) == 2


def test_unbatched_when_batch_size_none() -> None:
    loader = dataforge.build_loader([1, 2, 3], num_workers=0)
    assert len(loader) == 3 and list(loader) == [1, 2, 3]


def test_shuffle_is_a_function_of_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        loader = dataforge.build_loader(torch.arange(12), batch_size=5, shuffle=True, seed=seed, num_workers=0)
        loader.set_epoch(epoch)
        return torch.cat(list(loader)).tolist()

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(12))
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def test_epoch_advances_after_a_full_pass() -> None:
    loader = dataforge.build_loader(Noisy(8), batch_size=4, shuffle=True, num_workers=0)
    a, b = _plain(loader), _plain(loader)
    assert a != b and loader.epoch == 2
    loader.set_epoch(1)
    assert _plain(loader) == b


@pytest.mark.parametrize("engine", ["process", "thread"])
def test_engines_and_worker_counts_give_identical_batches(engine: str) -> None:
    # per-sample noise comes from (seed, epoch, index): independent of the worker count
    ref = dataforge.build_loader(Noisy(10), batch_size=3, shuffle=True, num_workers=0, seed=5)
    expected = [_plain(ref), _plain(ref)]
    loader = dataforge.build_loader(
        Noisy(10), batch_size=3, shuffle=True, num_workers=2, seed=5, engine=engine
    )
    got = [_plain(loader), _plain(loader)]  # two epochs: set_epoch reaches persistent workers
    loader.close()
    assert got == expected


def test_user_sampler_and_batch_sampler() -> None:
    sampler = list(reversed(range(6)))
    loader = dataforge.build_loader(torch.arange(6), batch_size=4, sampler=sampler, num_workers=0)
    assert [b.tolist() for b in loader] == [[5, 4, 3, 2], [1, 0]]
    bs = [[0, 5], [1, 2, 3]]
    loader = dataforge.build_loader(torch.arange(6), batch_sampler=bs, num_workers=0)
    assert len(loader) == 2 and [b.tolist() for b in loader] == [[0, 5], [1, 2, 3]]


def test_set_epoch_is_forwarded_to_sampler_and_dataset() -> None:
    class S(torch.utils.data.Sampler[int]):
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def set_epoch(self, e: int) -> None:
            self.epochs.append(e)

        def __iter__(self):
            return iter(range(4))

        def __len__(self) -> int:
            return 4

    ds, s = Noisy(4), S()
    loader = dataforge.build_loader(ds, batch_size=2, sampler=s, num_workers=0)
    loader.set_epoch(3)
    assert ds.epoch == 3 and s.epochs[-1] == 3
    list(loader)
    assert s.epochs[-1] == 3 and loader.epoch == 4


def test_nested_batches_and_custom_collate() -> None:
    Pair = collections.namedtuple("Pair", "a b")
    data = [Pair(torch.tensor(i), {"t": torch.ones(2) * i}) for i in range(4)]
    loader = dataforge.build_loader(data, batch_size=2, num_workers=0)
    first = next(iter(loader))
    assert isinstance(first, Pair) and first.b["t"].shape == (2, 2)
    loader = dataforge.build_loader(list(range(4)), batch_size=2, num_workers=0, collate_fn=sum)
    assert list(loader) == [1, 5]


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2, "num_workers": -1}, ValueError, "num_workers"),
        ({"batch_size": 2, "engine": "gpu"}, ValueError, "engine"),
        ({"batch_size": 2, "on_error": "ignore"}, ValueError, "on_error"),
        ({"batch_size": 2, "timeout": -1}, ValueError, "timeout"),
        ({"batch_size": 2, "shuffle": True, "sampler": [0, 1]}, ValueError, "shuffle"),
        ({"batch_size": 2, "batch_sampler": [[0]]}, ValueError, "batch_sampler"),
        ({"batch_size": 2, "collate_fn": 3}, TypeError, "collate_fn"),
        ({"batch_size": 2, "seed": "x"}, TypeError, "seed"),
        ({"batch_size": 2, "device": "nonsense"}, ValueError, "device"),
        ({"batch_size": 2, "prefetch_factor": 0}, ValueError, "prefetch_factor"),
    ],
)
def test_validation(kwargs: dict, exc: type, words: str) -> None:
    with pytest.raises(exc, match=words):
        dataforge.build_loader(list(range(4)), **kwargs)


def test_plain_iterator_is_refused() -> None:
    # an IterableDataset is supported (tests/loading/test_loader_iterable.py); a bare iterator is not
    with pytest.raises(TypeError, match="map-style.*IterableDataset"):
        dataforge.build_loader(iter(range(3)), batch_size=2)


def test_breaking_early_then_iterating_restarts_the_epoch() -> None:
    loader = dataforge.build_loader(torch.arange(8), batch_size=2, num_workers=0)
    it = iter(loader)
    next(it)
    assert [b.tolist() for b in loader][0] == [0, 1]


def test_persistent_workers_default() -> None:
    loader = dataforge.build_loader(list(range(4)), batch_size=2, num_workers=1)
    assert loader.persistent_workers is True
    loader = dataforge.build_loader(list(range(4)), batch_size=2, num_workers=0)
    assert loader.persistent_workers is False


@pytest.mark.slow
def test_spawn_context_gives_the_same_batches() -> None:
    # everything sent to spawned workers (fetcher, worker init, dataset) must pickle
    ref = _plain(dataforge.build_loader(Noisy(10), batch_size=3, shuffle=True, num_workers=0))
    loader = dataforge.build_loader(
        Noisy(10), batch_size=3, shuffle=True, num_workers=2, multiprocessing_context="spawn"
    )
    assert _plain(loader) == ref
    loader.close()


def test_timeout_with_zero_workers_is_accepted() -> None:
    # timeout bounds the wait on worker processes; in one process there is none to wait on
    import dataforge

    loader = dataforge.build_loader(dataforge.from_sequence(list(range(10))), 4, timeout=2, num_workers=0)
    assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
