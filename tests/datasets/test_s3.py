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
