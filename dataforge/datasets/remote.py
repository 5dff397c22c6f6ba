"""Opening remote shards: fsspec with ``storage_options``, transient errors, retries.

NOTE [shard retries]: a remote read that fails with a transient error (in the error or
its cause chain: a ``ConnectionError``, a ``TimeoutError``, an ``OSError`` with a
network errno such as ``ECONNRESET``, or any exception of the client libraries
``aiohttp``/``botocore``/``requests``/``urllib3``/fsspec backends, e.g. a dropped
connection or a 5xx the client gave up on; never a missing or forbidden object) is
retried ``retries`` times, waiting ``backoff * 2**attempt``
seconds (capped at 30 s) before attempt ``attempt`` (0-based). A retry of a shard
already partly read reopens it and skips the records already yielded, so no sample is
repeated or lost. Each retry is counted in ``errors["retried_reads"]`` (the retries of
a shard cache's download ahead when that shard is opened, in the reading thread). When the
retries are spent, or the error is not transient (a missing object, a corrupt
member), ``on_error`` applies. The client's own retries (s3fs retries a GET 5 times)
come first, inside each attempt.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

__all__ = ["RetryPolicy", "is_transient", "open_remote"]

_CLIENT_MODULES = ("aiohttp", "botocore", "requests", "urllib3", "s3fs", "gcsfs", "adlfs")
_MAX_WAIT_S = 30.0
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN, errno.EIO,
}


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as e:
        raise ImportError(
            "reading remote shards (http://, s3://, ...) needs fsspec: pip install dataforge[remote]"
        ) from e
    return fsspec


def open_remote(url: str, storage_options: Mapping[str, Any] | None = None) -> IO[bytes]:
    """Open ``url`` through fsspec for streaming binary reads.

    ``storage_options`` go to the filesystem (``{"key": ..., "client_kwargs":
    {"endpoint_url": ...}}`` for s3fs). Plain http(s) is streamed without range reads.
    """
    kw: dict[str, Any] = dict(storage_options or {})
    if url.startswith(("http://", "https://")):
        kw.setdefault("block_size", 0)
    return _fsspec().open(url, "rb", **kw).open()  # type: ignore[no-any-return]


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or an exception in its cause chain) is worth a retry (NOTE [shard retries])."""
    seen = 0
    e: BaseException | None = error
    while e is not None and seen < 8:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if type(e).__module__.split(".")[0] in _CLIENT_MODULES:
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


class RetryPolicy:
    """``retries`` attempts after the first, ``backoff * 2**attempt`` seconds apart."""

    def __init__(self, retries: int = 3, backoff: float = 0.5) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0 (retries of a failed remote read), got {retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
            raise ValueError(f"retry_backoff must be seconds >= 0, got {backoff!r}")
        self.retries, self.backoff = retries, float(backoff)

    def wait(self, attempt: int) -> None:
        time.sleep(min(self.backoff * 2**attempt, _MAX_WAIT_S))

    def call(self, fn: Callable[[], Any], on_retry: Callable[[BaseException], None]) -> Any:
        """``fn()``, retried on transient errors; the last error propagates."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if attempt >= self.retries or not is_transient(e):
                    raise
                on_retry(e)
                self.wait(attempt)
                attempt += 1
