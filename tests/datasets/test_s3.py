"""s3:// shards through a loopback S3-compatible server (moto) started by the tests."""

from __future__ import annotations

import pytest

pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (pip install dataforge[dev])")
pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install dataforge[dev])")

from dataforge.bench.loopback_s3 import LoopbackS3  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    with LoopbackS3() as server:
        yield server


def test_loopback_server_stores_lists_and_counts_gets(s3) -> None:
    url = s3.make_bucket("srv")
    assert url == "s3://srv"
    fs = s3.filesystem()
    fs.pipe("srv/a/x.bin", b"x" * 5000)
    assert fs.ls("srv/a") == ["srv/a/x.bin"]
    before = s3.requests["srv/a/x.bin"]
    assert s3.filesystem().cat("srv/a/x.bin") == b"x" * 5000
    assert s3.requests["srv/a/x.bin"] == before + 1


def test_fail_next_cuts_object_gets_mid_body(s3) -> None:
    s3.make_bucket("srv")
    fs = s3.filesystem()
    fs.pipe("srv/cut.bin", bytes(range(256)) * 400)
    dropped = s3.dropped
    s3.fail_next(100, after_bytes=1000)
    try:
        f = s3.filesystem().open("srv/cut.bin", "rb", block_size=0)
        with f, pytest.raises(Exception, match="content length|payload"):
            f.read()
    finally:
        s3.fail_next(0)
    assert s3.dropped > dropped
    assert s3.filesystem().cat("srv/cut.bin") == bytes(range(256)) * 400


# -- from_shards over s3:// ----------------------------------------------------------

import torch  # noqa: E402

from dataforge.datasets.shards import ShardError, from_shards  # noqa: E402
from dataforge.datasets.writer import write_shards  # noqa: E402

N_SAMPLES, PER_SHARD = 40, 10  # 4 shards


@pytest.fixture(scope="module")
def written(s3):
    """4 tar shards of 10 samples (a text, a class, some bytes) written to s3://shards/train."""
    s3.make_bucket("shards")
    samples = [{"__key__": f"{i:04d}", "txt": f"sample {i}", "cls": i % 7, "bin": bytes([i]) * 3000}
               for i in range(N_SAMPLES)]
    out = write_shards(samples, "s3://shards/train", max_count=PER_SHARD, storage_options=s3.storage_options)
    assert len(out.urls) == 4 and all(u.startswith("s3://shards/train/") for u in out.urls)
    return out


def _keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


def _all_keys() -> list[str]:
    return [f"{i:04d}" for i in range(N_SAMPLES)]


@pytest.mark.slow  # DataLoader worker processes
def test_write_list_and_read_s3_shards_with_two_workers(s3, written) -> None:
    glob = from_shards("s3://shards/train/*.tar", storage_options=s3.storage_options)
    assert glob.shards == written.urls  # listed through s3fs
    ds = from_shards(written.pattern, storage_options=s3.storage_options)
    first = next(iter(ds))
    assert first["txt"] == b"sample 0" and first["cls"] == b"0" and first["bin"] == b"\0" * 3000
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert sorted(_keys(loader)) == _all_keys()


@pytest.mark.slow  # DataLoader worker processes
def test_two_ranks_by_two_workers_read_every_sample_once(s3, written) -> None:
    seen: list[str] = []
    for rank in range(2):
        ds = from_shards(written.pattern, storage_options=s3.storage_options, num_replicas=2, rank=rank)
        mine = [_keys(ds.consumer_iter(rank, 2, w, 2)) for w in range(2)]
        assert all(len(m) == PER_SHARD for m in mine)  # one shard per consumer
        seen += mine[0] + mine[1]
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        assert sorted(_keys(loader)) == sorted(mine[0] + mine[1])  # the same split in real workers
    assert sorted(seen) == _all_keys()


def test_missing_object_is_named_and_skip_counts_it(s3, written) -> None:
    urls = [*written.urls[:1], "s3://shards/train/missing.tar"]
    with pytest.raises(ShardError, match=r"s3://shards/train/missing\.tar.*FileNotFoundError"):
        list(from_shards(urls, storage_options=s3.storage_options))
    ds = from_shards(urls, storage_options=s3.storage_options, on_error="skip")
    with pytest.warns(RuntimeWarning, match="missing.tar"):
        assert _keys(ds) == _all_keys()[:PER_SHARD]
    assert ds.errors == {"skipped_shards": 1, "skipped_lines": 0, "retried_reads": 0}  # not transient


def test_dropped_connection_is_retried_then_on_error(s3, written) -> None:
    url = written.urls[1]
    # s3fs retries a cut GET itself 5 times (backoff inside); 6 cuts make it give up once,
    # and dataforge's own retry reads the shard on the 7th GET.
    ds = from_shards(url, storage_options=s3.storage_options, retries=2, retry_backoff=0.01)
    s3.fail_next(6, after_bytes=2000)
    try:
        assert _keys(ds) == _all_keys()[PER_SHARD : 2 * PER_SHARD]
    finally:
        s3.fail_next(0)
    assert ds.errors["retried_reads"] == 1
    ds = from_shards(url, storage_options=s3.storage_options, retries=0, on_error="skip")
    s3.fail_next(5, after_bytes=2000)
    try:
        with pytest.warns(RuntimeWarning, match="skipped the rest of the shard"):
            got = _keys(ds)
    finally:
        s3.fail_next(0)
    assert got == [] and ds.errors == {"skipped_shards": 1, "skipped_lines": 0, "retried_reads": 0}


def test_retry_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="retries must be an int >= 0"):
        from_shards("s3://b/x.tar", retries=-1)
    with pytest.raises(ValueError, match="retry_backoff must be seconds >= 0"):
        from_shards("s3://b/x.tar", retry_backoff=-0.5)


def test_what_is_transient() -> None:
    import errno

    from dataforge.datasets.remote import RetryPolicy, is_transient

    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(OSError(errno.ECONNRESET, "reset"))
    assert not is_transient(FileNotFoundError("s3://b/x.tar")) and not is_transient(PermissionError())
    assert not is_transient(ValueError("bad member")) and not is_transient(OSError("no errno"))
    try:
        try:
            raise ConnectionResetError("cut")
        except ConnectionResetError as cause:
            raise ShardError("cannot read", url="s3://b/x.tar") from cause
    except ShardError as e:
        assert is_transient(e)  # through its cause
    calls, retried = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("cut")
        return "ok"

    assert RetryPolicy(2, 0).call(flaky, retried.append) == "ok" and len(retried) == 2
    calls.clear()
    with pytest.raises(ConnectionResetError):
        RetryPolicy(1, 0).call(flaky, retried.append)


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_torchrun_two_ranks_two_workers_share_one_cache(s3, written, tmp_path) -> None:
    """A real 2-process torchrun (gloo), 2 DataLoader workers each, one cache_dir: every
    sample read once per split, every shard downloaded once for the machine."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from collections import Counter

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = [s3.requests[u.removeprefix("s3://")] for u in written.urls]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={port}",
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchrun_s3_main.py"),
        written.pattern, s3.endpoint_url, str(tmp_path / "cache"), str(tmp_path),
    ]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for split in ("by_shard", "by_sample"):
        seen = Counter(ranks[0][split]) + Counter(ranks[1][split])
        assert seen == Counter(_all_keys()), split
    after = [s3.requests[u.removeprefix("s3://")] for u in written.urls]
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1, 1]


def test_equalize_takes_the_counts_from_the_remote_index_without_downloading_shards(s3, written) -> None:
    from dataforge.datasets.shards import counts_from_index

    before = [s3.requests[u.removeprefix("s3://")] for u in written.urls]
    assert counts_from_index(written.urls, s3.storage_options) == [PER_SHARD] * 4  # NOTE [index counts]
    ds = from_shards(written.pattern, storage_options=s3.storage_options, equalize="pad", num_replicas=3, rank=0)
    assert [s3.requests[u.removeprefix("s3://")] for u in written.urls] == before  # no shard downloaded
    assert len(_keys(ds)) == 2 * PER_SHARD  # rank 0 of 3 reads shards 0 and 3 (the others pad to 20)
    # a shard the index does not describe (another size) falls back to counting
    fs, key = s3.filesystem(), written.urls[0].removeprefix("s3://")
    original = fs.cat_file(key)
    fs.pipe_file(key, original + b"\0" * 512)
    try:
        assert counts_from_index(written.urls, s3.storage_options) is None
    finally:
        fs.pipe_file(key, original)
