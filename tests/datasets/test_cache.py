"""The local shard cache (NOTE [shard cache] in dataforge/datasets/cache.py) over LoopbackS3."""

from __future__ import annotations

import multiprocessing
import os

import pytest

pytest.importorskip("moto.server", reason="the cache tests need moto[server] (pip install dataforge[dev])")
pytest.importorskip("s3fs", reason="the cache tests need s3fs (pip install dataforge[dev])")

from helpers import run_test_save_load_state  # noqa: E402

from dataforge.bench.loopback_s3 import LoopbackS3  # noqa: E402
from dataforge.datasets.cache import ShardCache  # noqa: E402
from dataforge.datasets.shards import from_shards  # noqa: E402
from dataforge.datasets.writer import write_shards  # noqa: E402

N_SAMPLES, PER_SHARD, BODY = 40, 10, 3000  # 4 shards of about 40 KB


@pytest.fixture(scope="module")
def s3():
    with LoopbackS3() as server:
        yield server


@pytest.fixture(scope="module")
def written(s3):
    s3.make_bucket("cached")
    samples = [{"__key__": f"{i:04d}", "bin": bytes([i]) * BODY} for i in range(N_SAMPLES)]
    out = write_shards(samples, "s3://cached/train", max_count=PER_SHARD, storage_options=s3.storage_options)
    assert len(out.urls) == 4
    return out


def _gets(s3, urls) -> list[int]:
    return [s3.requests[u.removeprefix("s3://")] for u in urls]


def _keys(ds) -> list[str]:
    return [s["__key__"] for s in ds]


def _all_keys() -> list[str]:
    return [f"{i:04d}" for i in range(N_SAMPLES)]


def test_second_epoch_reads_the_cached_copies(s3, written, tmp_path) -> None:
    ds = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path, cache_ahead=0)
    before = _gets(s3, written.urls)
    assert _keys(ds) == _all_keys()
    after_first = _gets(s3, written.urls)
    assert [a - b for a, b in zip(after_first, before)] == [1, 1, 1, 1]  # one download each
    ds.set_epoch(1)
    assert _keys(ds) == _all_keys()
    assert _gets(s3, written.urls) == after_first  # epoch 2: all hits
    again = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path)
    assert _keys(again) == _all_keys()  # a new dataset on the same folder: hits too
    assert _gets(s3, written.urls) == after_first
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted(
        os.path.basename(ds.cache.path(u)) for u in written.urls
    )


def test_download_ahead_fetches_the_next_shards_once(s3, written, tmp_path) -> None:
    ds = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path, cache_ahead=2)
    before = _gets(s3, written.urls)
    it = iter(ds)
    assert next(it)["__key__"] == "0000"
    for url in written.urls[1:3]:
        ds.cache._wait_ahead(url)  # the background downloads of shards 1 and 2
        assert os.path.exists(ds.cache.path(url))
    assert not os.path.exists(ds.cache.path(written.urls[3]))  # only 2 ahead
    assert ["0000", *_keys(it)] == _all_keys()
    assert [a - b for a, b in zip(_gets(s3, written.urls), before)] == [1, 1, 1, 1]  # none twice


def _open_in_child(cache: ShardCache, url: str, out) -> None:
    with cache.open(url) as f:
        out.put(len(f.read()))


def test_processes_of_one_machine_download_a_shard_once(s3, written, tmp_path) -> None:
    url = written.urls[2]
    cache = ShardCache(tmp_path, storage_options=s3.storage_options)
    before = s3.requests[url.removeprefix("s3://")]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_open_in_child, args=(cache, url, out)) for _ in range(3)]
    for p in procs:
        p.start()
    sizes = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(set(sizes)) == 1 and sizes[0] > PER_SHARD * BODY
    assert s3.requests[url.removeprefix("s3://")] == before + 1  # the others waited on the lock


def test_eviction_keeps_the_total_under_the_limit_and_spares_open_shards(s3, written, tmp_path) -> None:
    urls = written.urls
    size = len(s3.filesystem().cat(urls[0].removeprefix("s3://")))
    cache = ShardCache(tmp_path, limit_bytes=2 * size + size // 2, storage_options=s3.storage_options)

    def copies() -> set[str]:
        return {u for u in urls if os.path.exists(cache.path(u))}

    (tmp_path / "notes.txt").write_bytes(b"n" * 3 * size)  # not the cache's: neither counted nor evicted
    with cache.open(urls[0]):
        pass
    held = cache.open(urls[1])  # open: its lock is held shared
    with held:
        for u in urls[2:]:
            with cache.open(u):
                pass
        # the limit fits two copies; the least recently used closed one went first,
        # the open one stayed whatever its age
        assert copies() == {urls[1], urls[3]}
    os.utime(cache.path(urls[3]))  # now urls[1] is the oldest, and closed
    with cache.open(urls[0]):
        pass
    assert copies() == {urls[0], urls[3]}
    assert sum(os.path.getsize(cache.path(u)) for u in copies()) <= cache.limit_bytes
    assert (tmp_path / "notes.txt").stat().st_size == 3 * size


def test_a_shard_larger_than_the_limit_is_still_read(s3, written, tmp_path) -> None:
    ds = from_shards(written.urls[0], storage_options=s3.storage_options, cache_dir=tmp_path,
                     cache_limit_bytes=1000)
    assert _keys(ds) == _all_keys()[:PER_SHARD]


def test_cached_download_is_retried_on_a_dropped_connection(s3, written, tmp_path) -> None:
    ds = from_shards(written.urls[1], storage_options=s3.storage_options, cache_dir=tmp_path,
                     retries=2, retry_backoff=0.01)
    s3.fail_next(6, after_bytes=2000)  # s3fs gives up once after 6 cuts (NOTE [shard retries])
    try:
        assert _keys(ds) == _all_keys()[PER_SHARD : 2 * PER_SHARD]
    finally:
        s3.fail_next(0)
    assert ds.errors["retried_reads"] == 1
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no half-written copy


def test_resume_is_exact_through_the_cache(s3, written, tmp_path) -> None:
    run_test_save_load_state(
        lambda: from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path,
                            shuffle_shards=True).shuffle(3).map(lambda s: s["__key__"]),
        epochs=2,
    )


def test_cache_arguments_are_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="cache_limit_bytes needs cache_dir"):
        from_shards("s3://b/x.tar", cache_limit_bytes=10)
    with pytest.raises(ValueError, match="cache_limit_bytes must be a positive int"):
        ShardCache(tmp_path, 0)
    with pytest.raises(ValueError, match="cache_ahead must be an int >= 0"):
        ShardCache(tmp_path, ahead=-1)


def test_two_open_readers_of_one_shard_in_one_process(s3, written, tmp_path) -> None:
    # a suspended iterator holds its shard's lock shared; another one of this process
    # must not wait on it (NOTE [shard cache])
    ds = from_shards(written.urls[0], storage_options=s3.storage_options, cache_dir=tmp_path)
    first, second = iter(ds), iter(ds)
    assert next(first)["__key__"] == "0000"
    assert _keys(second) == _all_keys()[:PER_SHARD]
    assert len(_keys(first)) == PER_SHARD - 1


def test_equalize_counts_remote_shards_through_the_cache(s3, written, tmp_path) -> None:
    before = _gets(s3, written.urls)
    got = []
    for rank in range(3):
        ds = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path,
                         equalize="pad", num_replicas=3, rank=rank, cache_ahead=0)
        got.append(_keys(ds))
    assert len({len(g) for g in got}) == 1  # equal per rank
    assert set(_all_keys()) <= {k for g in got for k in g}
    # counting read every shard once into the cache; the reads were hits
    assert [a - b for a, b in zip(_gets(s3, written.urls), before)] == [1, 1, 1, 1]


@pytest.mark.slow  # DataLoader worker processes
def test_workers_forked_after_a_parent_read_share_one_download_per_shard(s3, written, tmp_path) -> None:
    import torch

    # split by sample: every worker reads every shard, the cache downloads each once
    ds = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path, split="sample")
    before = _gets(s3, written.urls)
    assert next(iter(ds))["__key__"] == "0000"  # the parent's ahead thread exists before the fork
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=60)
    for epoch in range(2):
        ds.set_epoch(epoch)
        assert sorted(s["__key__"] for s in loader) == _all_keys()
    assert [a - b for a, b in zip(_gets(s3, written.urls), before)] == [1, 1, 1, 1]


def test_download_ahead_retries_are_counted(s3, written, tmp_path) -> None:
    urls = written.urls[:2]
    ds = from_shards(urls, storage_options=s3.storage_options, cache_dir=tmp_path, cache_ahead=1,
                     retries=2, retry_backoff=0.01)
    ds.cache.open(urls[0]).close()  # shard 0 cached: the next GETs are shard 1's, ahead
    s3.fail_next(6, after_bytes=2000)
    try:
        assert _keys(ds) == _all_keys()[: 2 * PER_SHARD]
    finally:
        s3.fail_next(0)
    assert ds.errors["retried_reads"] == 1 and ds.cache.retried == 1


def test_without_posix_locks_the_cache_says_so(monkeypatch, tmp_path) -> None:
    import dataforge.datasets.cache as cache_module

    monkeypatch.setattr(cache_module, "fcntl", None)
    with pytest.raises(OSError, match="cache_dir needs POSIX file locks"):
        ShardCache(tmp_path)


def test_jsonl_shards_and_sample_split_read_from_the_cache(s3, written, tmp_path) -> None:
    rows = [{"__key__": f"{i:04d}", "x": i} for i in range(12)]
    out = write_shards(rows, "s3://cached/rows", max_count=4, format="jsonl", storage_options=s3.storage_options)
    ds = from_shards(out.pattern, storage_options=s3.storage_options, cache_dir=tmp_path)
    assert [r["x"] for r in ds] == list(range(12))
    # split by sample: each consumer reads every cached copy and keeps every 2nd item
    tars = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path, split="sample")
    halves = [_keys(tars.consumer_iter(0, 1, w, 2)) for w in range(2)]
    assert sorted(halves[0] + halves[1]) == _all_keys() and len(halves[0]) == N_SAMPLES // 2


@pytest.mark.parametrize("engine", ["thread", "process"])
def test_loader_workers_share_the_cache_and_download_each_shard_once(s3, written, tmp_path, engine) -> None:
    import dataforge

    before = _gets(s3, written.urls)
    ds = from_shards(written.pattern, storage_options=s3.storage_options, cache_dir=tmp_path)
    next(iter(ds))  # the main process has used the cache (its lock and pool) before the workers copy it
    loader = dataforge.build_loader(ds, 4, num_workers=2, engine=engine, collate_fn=_keys)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert sorted(k for b in loader for k in b) == _all_keys()
    loader.close()
    # two epochs by two workers, and the main process's first read: one download a shard
    assert [a - b for a, b in zip(_gets(s3, written.urls), before)] == [1, 1, 1, 1]
