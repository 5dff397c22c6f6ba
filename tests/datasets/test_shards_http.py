"""Streaming tar / JSONL shards over HTTP through fsspec, from a server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading
from collections import Counter

import pytest
from shard_files import write_jsonl, write_tar_shards

from dataforge.datasets.shards import ShardError, from_shards

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """(base_url, root, keys): 4 tar shards of 3, 2, 4, 1 samples served from tmp_path."""
    all_keys = write_tar_shards(tmp_path, [3, 2, 4, 1])
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path, all_keys
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_stream_tar_shards_over_http(served) -> None:
    base, _, all_keys = served
    url = f"{base}/shard-{{000..003}}.tar"
    ds = from_shards(url)
    out = list(ds)
    assert [x["__key__"] for x in out] == all_keys
    assert out[0]["__url__"] == f"{base}/shard-000.tar" and out[0]["txt"] == all_keys[0].encode()
    parts = [[x["__key__"] for x in from_shards(url, num_replicas=2, rank=r, equalize="pad")] for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 7 and set(parts[0] + parts[1]) == set(all_keys)


def test_glob_over_http(served) -> None:
    base, _, all_keys = served
    assert [x["__key__"] for x in from_shards(f"{base}/shard-*.tar")] == all_keys


def test_jsonl_over_http(served) -> None:
    base, root, _ = served
    rows = [{"i": i} for i in range(4)]
    write_jsonl(root / "rows.jsonl", rows)
    assert list(from_shards(f"{base}/rows.jsonl")) == rows


def test_missing_remote_shard(served) -> None:
    base, _, all_keys = served
    urls = [f"{base}/shard-000.tar", f"{base}/missing.tar"]
    with pytest.raises(ShardError, match="missing.tar"):
        list(from_shards(urls))
    ds = from_shards(urls, on_error="skip")
    assert Counter(x["__key__"] for x in ds) == Counter(all_keys[:3])
    assert ds.errors["skipped_shards"] == 1
