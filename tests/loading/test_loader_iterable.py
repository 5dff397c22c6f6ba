"""build_loader over iterable datasets: batches, epochs, sharding, resume, errors."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
import torch
from helpers import run_test_save_load_state, to_plain

import dataforge
from dataforge.loading.loader import Loader


def shuffled(n: int = 23, buffer: int = 8) -> dataforge.IterDataset:
    return dataforge.IterDataset.from_iterable(range(n)).shuffle(buffer, seed=1)


def keys(samples: list[dict]) -> list[str]:
    return [s["__key__"] for s in samples]


def write_tar_shards(root: str, sizes: list[int]) -> list[str]:
    """Shards ``shard-000.tar``... with ``sizes[i]`` samples (``<key>.txt`` each); returns all keys."""
    keys_all = []
    for i, n in enumerate(sizes):
        with tarfile.open(os.path.join(root, f"shard-{i:03d}.tar"), "w") as tf:
            for j in range(n):
                key = f"s{i:03d}/{j:05d}"
                ti = tarfile.TarInfo(f"{key}.txt")
                ti.size = len(key)
                tf.addfile(ti, io.BytesIO(key.encode()))
                keys_all.append(key)
    return keys_all


def stock(ds: torch.utils.data.IterableDataset, epoch: int = 0, **kw) -> list:
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    return [to_plain(b) for b in torch.utils.data.DataLoader(ds, **kw)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_equal_a_stock_dataloader(num_workers: int) -> None:
    ds = shuffled()
    loader = dataforge.build_loader(ds, 4, num_workers=num_workers)
    assert isinstance(loader, Loader) and loader.iterable
    got = [to_plain(b) for b in loader]
    assert got == stock(ds, batch_size=4, num_workers=num_workers)
    assert sorted(x for b in got for x in b[2]) == list(range(23))
    s = loader.stats()
    assert (s["batches"], s["samples"], s["num_workers"]) == (len(got), 23, num_workers)


def test_drop_last_and_no_batch_size_match_torch() -> None:
    ds = shuffled(10)
    assert [to_plain(b) for b in dataforge.build_loader(ds, 4, num_workers=0, drop_last=True)] == stock(
        ds, batch_size=4, drop_last=True
    )
    assert [to_plain(b) for b in dataforge.build_loader(ds, None, num_workers=0)] == stock(ds, batch_size=None)


def test_from_shards_gives_every_sample_once_with_two_workers(tmp_path) -> None:
    expected = write_tar_shards(str(tmp_path), [5, 3, 4, 6])
    ds = dataforge.from_shards(str(tmp_path / "shard-{000..003}.tar"))
    loader = dataforge.build_loader(ds, 3, collate_fn=keys, num_workers=2)
    got = [k for b in loader for k in b]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_set_epoch_changes_the_order_reproducibly(num_workers: int) -> None:
    def epoch(e: int) -> list:
        loader = dataforge.build_loader(shuffled(), 5, num_workers=num_workers)
        loader.set_epoch(e)
        return [to_plain(b) for b in loader]

    e0, e1 = epoch(0), epoch(1)
    assert e0 != e1 and e1 == epoch(1)
    assert e1 == stock(shuffled(), 1, batch_size=5, num_workers=num_workers)  # workers saw epoch 1
    loader = dataforge.build_loader(shuffled(), 5, num_workers=num_workers)
    assert [[to_plain(b) for b in loader] for _ in range(2)] == [e0, e1]  # an epoch's end advances


def test_device_path_and_batch_transforms_on_cpu() -> None:
    loader = dataforge.build_loader(
        dataforge.IterDataset.from_iterable(range(6)), 4, num_workers=0, device="cpu",
        batch_transforms=lambda x: x * 2,
    )
    assert [b.tolist() for b in loader] == [[0, 2, 4, 6], [8, 10]]
    assert loader.stats()["device"] == "cpu"


def test_len_only_when_the_dataset_has_one() -> None:
    with pytest.raises(TypeError, match="no len"):
        len(dataforge.build_loader(shuffled(), 4, num_workers=0))

    class Sized(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(10))

        def __len__(self) -> int:
            return 10

    assert len(dataforge.build_loader(Sized(), 4, num_workers=0)) == 3
    assert len(dataforge.build_loader(Sized(), 4, num_workers=0, drop_last=True)) == 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_exactly(num_workers: int) -> None:
    run_test_save_load_state(
        lambda: dataforge.build_loader(shuffled(), 3, num_workers=num_workers, seed=5), epochs=2
    )


def test_resume_with_uneven_worker_streams_at_every_batch(tmp_path) -> None:
    # two workers split four shards: their streams end after different numbers of batches
    write_tar_shards(str(tmp_path), [7, 1, 5, 2])
    urls = str(tmp_path / "shard-{000..003}.tar")

    def make():
        return dataforge.build_loader(dataforge.from_shards(urls), 2, collate_fn=keys, num_workers=2)

    ref = [b for b in make()]
    assert len(ref) == 8  # worker 0: 12 samples in 6 batches, worker 1: 3 in 2
    run_test_save_load_state(make, checkpoints=range(len(ref) + 1))


def test_state_after_the_end_of_an_epoch_resumes_into_the_next() -> None:
    loader = dataforge.build_loader(shuffled(), 4, num_workers=0)
    list(loader)
    state = json.loads(json.dumps(loader.state_dict()))
    assert (state["epoch"], state["batches_yielded"], state["num_workers"]) == (1, 0, 0)
    resumed = dataforge.build_loader(shuffled(), 4, num_workers=0)
    resumed.load_state_dict(state)
    assert [to_plain(b) for b in resumed] == stock(shuffled(), 1, batch_size=4)


@pytest.mark.parametrize("arg", ["shuffle", "sampler", "batch_sampler"])
def test_order_arguments_point_to_ds_shuffle(arg: str) -> None:
    value = {"shuffle": True, "sampler": range(3), "batch_sampler": [[0, 1]]}[arg]
    with pytest.raises(ValueError, match=rf"{arg}=.*ds\.shuffle\(buffer_size\)"):
        dataforge.build_loader(shuffled(), None if arg == "batch_sampler" else 2, **{arg: value})


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"on_error": "skip"}, r"on_error='skip'.*indices.*from_shards\(.*on_error="),
        ({"batch_size": None, "drop_last": True}, "drop_last=True needs a batch_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_unsupported_options_are_clear_errors(kwargs: dict, words: str) -> None:
    kwargs = {"batch_size": 2, "num_workers": 0, **kwargs}
    with pytest.raises(ValueError, match=words):
        dataforge.build_loader(shuffled(), **kwargs)


@pytest.mark.parametrize(
    ("change", "field"),
    # another num_workers resumes (NOTE [elastic shards], tests/loading/test_elastic_shards.py)
    [({"batch_size": 4}, "batch_size"), ({"seed": 1}, "seed")],
)
def test_a_state_that_does_not_fit_names_the_field(change: dict, field: str) -> None:
    kw = {"batch_size": 3, "num_workers": 0, "seed": 0}
    loader = dataforge.build_loader(shuffled(), **kw)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    other = dataforge.build_loader(shuffled(), **{**kw, **change})
    with pytest.raises(ValueError, match=field):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="worker_batches"):
        loader.load_state_dict({**state, "worker_batches": [5]})
    map_state = dataforge.build_loader(torch.arange(4), 3, num_workers=0).state_dict()
    with pytest.raises(ValueError, match="num_workers|dataset_len"):
        loader.load_state_dict(map_state)


def test_breaking_early_stops_the_workers_and_restarts_the_epoch() -> None:
    import multiprocessing

    loader = dataforge.build_loader(shuffled(), 2, num_workers=2)
    full = [to_plain(b) for b in loader]
    loader.set_epoch(0)
    it = iter(loader)
    next(it)
    del it  # the pass is abandoned; the next iter() starts epoch 0 again
    assert [to_plain(b) for b in loader] == full
    loader.close()
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


# -- skipped records of the source (NOTE [iterable error counts]) ---------------------


def corrupt_tar_shards(root: str) -> tuple[str, list[str]]:
    """8 tar shards, two of them bad: shard 2 cut inside its 2nd member, shard 7 not a tar.

    Split over 2 workers, worker 1 reads shards 1, 3, 5, 7: 6 good samples, then the bad
    shard after its last full batch (batch_size 2 or 3), so only the end-of-stream batch
    can report that skip; worker 0 reads 9 samples, so with batch_size 2 that report
    arrives before worker 0's last batch. Returns the urls pattern and the readable keys.
    """
    write_tar_shards(root, [3, 2, 4, 1, 2, 3, 3, 0])
    cut = os.path.join(root, "shard-002.tar")
    with open(cut, "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: 1024 + 700])  # members: 512 header + 512 data each
    with open(os.path.join(root, "shard-007.tar"), "wb") as f:
        f.write(b"not a tar file at all " * 50)
    pattern = os.path.join(root, "shard-{000..007}.tar")
    readable = keys(dataforge.from_shards(pattern, on_error="skip"))
    # shard 2: only its 1st sample (complete: the damaged 2nd member starts another key)
    assert len(readable) == 3 + 2 + 1 + 1 + 2 + 3 + 3
    return pattern, readable


TWO_BAD_SHARDS = {"skipped_shards": 2, "skipped_lines": 0}


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep_last", "drop_last"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_skipped_shards_in_workers_reach_the_loader(tmp_path, num_workers: int, drop_last: bool) -> None:
    pattern, readable = corrupt_tar_shards(str(tmp_path))
    ds = dataforge.from_shards(pattern, on_error="skip")
    loader = dataforge.build_loader(ds, 3, collate_fn=keys, num_workers=num_workers, drop_last=drop_last)
    assert loader.errors == {"skipped_shards": 0, "skipped_lines": 0}  # the keys before any pass
    got = list(loader)
    # the end-of-stream batches change nothing in what is yielded
    assert got == stock(ds, batch_size=3, collate_fn=keys, num_workers=num_workers, drop_last=drop_last)
    if not drop_last:
        assert sorted(k for b in got for k in b) == sorted(readable)
    assert loader.errors == TWO_BAD_SHARDS
    assert loader.stats()["dataset_errors"] == TWO_BAD_SHARDS
    assert list(loader) == got  # epoch 1: same shard order
    assert loader.errors == {"skipped_shards": 4, "skipped_lines": 0}  # cumulative: 2 per epoch
    loader.reset_stats()
    assert loader.stats()["dataset_errors"] == {"skipped_shards": 4, "skipped_lines": 0}


def test_skipped_shards_unbatched_and_through_map(tmp_path) -> None:
    pattern, readable = corrupt_tar_shards(str(tmp_path))
    ds = dataforge.from_shards(pattern, on_error="skip").map(lambda s: s["__key__"])
    loader = dataforge.build_loader(ds, None, num_workers=2)  # one sample per "batch"
    assert sorted(loader) == sorted(readable)
    assert loader.errors == TWO_BAD_SHARDS


def test_warn_policy_still_warns_in_the_calling_process(tmp_path) -> None:
    pattern, readable = corrupt_tar_shards(str(tmp_path))
    loader = dataforge.build_loader(
        dataforge.from_shards(pattern, on_error="warn"), 4, collate_fn=keys, num_workers=0
    )
    with pytest.warns(RuntimeWarning, match="skipped") as record:
        got = [k for b in loader for k in b]
    assert got == readable
    assert len([w for w in record if "skipped" in str(w.message)]) == 2
    assert loader.errors == TWO_BAD_SHARDS


def test_a_dataset_without_counters_reports_none() -> None:
    loader = dataforge.build_loader(shuffled(), 4, num_workers=0)
    list(loader)
    assert loader.errors == {} and loader.stats()["dataset_errors"] == {}
    assert loader.state_dict()["dataset_errors"] == {"done": {}, "workers": [{}]}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_totals_resume_without_double_counting(tmp_path, num_workers: int) -> None:
    pattern, _ = corrupt_tar_shards(str(tmp_path))

    def make() -> Loader:
        ds = dataforge.from_shards(pattern, on_error="skip")
        return dataforge.build_loader(ds, 2, collate_fn=keys, num_workers=num_workers)

    ref = make()
    full = list(ref)
    assert ref.errors == TWO_BAD_SHARDS
    for k in range(len(full) + 1):  # every position, including after the last batch
        a = make()
        it = iter(a)
        head = [next(it) for _ in range(k)]
        state = json.loads(json.dumps(a.state_dict()))
        a.close()
        b = make()
        b.load_state_dict(state)
        assert b.errors == a.errors  # restored with the position
        assert head + list(b) == full
        assert b.errors == TWO_BAD_SHARDS, f"resumed after {k} batches"
    state = json.loads(json.dumps(b.state_dict()))  # after the end: epoch 1, totals kept
    assert (state["epoch"], state["dataset_errors"]["done"]) == (1, TWO_BAD_SHARDS)
    c = make()
    c.load_state_dict(state)
    assert c.errors == TWO_BAD_SHARDS
    list(c)
    assert c.errors == {"skipped_shards": 4, "skipped_lines": 0}


def test_error_totals_in_the_state_are_checked(tmp_path) -> None:
    pattern, _ = corrupt_tar_shards(str(tmp_path))
    loader = dataforge.build_loader(dataforge.from_shards(pattern, on_error="skip"), 2, num_workers=0)
    state = loader.state_dict()
    for bad in ({"done": {}, "workers": []}, {"done": {"skipped_shards": "1"}, "workers": [{}]}, [1]):
        with pytest.raises(ValueError, match="dataset_errors"):
            loader.load_state_dict({**state, "dataset_errors": bad})
    del state["dataset_errors"]  # a state from before the field: totals start from 0
    loader.load_state_dict(state)
    assert loader.errors == {"skipped_shards": 0, "skipped_lines": 0}
