"""A bounded local cache of remote shards, shared by the workers and ranks of a machine.

NOTE [shard cache]: ``from_shards(..., cache_dir=d, cache_limit_bytes=n)`` reads each
remote shard from a local copy in ``d``:

- One download per shard per machine. The copy of ``url`` is
  ``d/<sha1(url)[:16]>-<basename>``, guarded by ``fcntl.flock`` on ``<copy>.lock``. The
  first process to take the lock exclusively downloads to a temporary name in ``d``
  and publishes with ``os.replace`` (a copy is complete or absent, never half
  written); the others wait on the lock and then read the copy. Workers and ranks on
  one machine must share ``d`` (a local disk; flock on network file systems varies),
  and other files in ``d`` are left alone (neither counted nor evicted).
- A reader holds the lock SHARED while the shard is open, and a use touches the copy
  (mtime = last use). The lock is taken shared first and exclusive only to download a
  missing copy, so readers of one process (an unfinished iterator, a replayed stream)
  never wait on each other.
- Eviction: after a download, while the copies in ``d`` total more than
  ``cache_limit_bytes``, the least recently used copy (oldest mtime) whose lock can be
  taken exclusively without waiting is deleted. A copy being read or downloaded is
  never evicted, so the total can pass the limit by the shards open at once (one per
  consumer, plus the download-ahead ones); a single shard larger than the limit is
  still read. Lock files (empty) are left in place: deleting one could let two
  processes lock different files for the same copy.
- Download-ahead: while a consumer reads its shard k, a background thread of that
  consumer downloads its next ``cache_ahead`` shards (default 2) into the cache, so the
  next open is a local read (each process, forked workers included, runs its own
  thread). Ahead copies are not locked while they wait to be read,
  so a cache smaller than the shards in flight can evict one and it is downloaded again.
- The cache is transparent to resume: the state is per-shard positions, and a shard
  reads the same from its copy as from the server.

Downloads are retried per NOTE [shard retries] in ``remote.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dataforge.datasets.remote import RetryPolicy, open_remote

fcntl: Any
try:
    import fcntl
except ImportError:  # not POSIX (Windows): the package imports, ShardCache says why it cannot run
    fcntl = None

__all__ = ["ShardCache"]

_CHUNK = 1 << 20
_COPY = re.compile(r"^[0-9a-f]{16}-.*(?<!\.lock)$")  # see path(); not a lock file
_TMP = re.compile(r"\.tmp\d+\.\d+$")  # a download in progress: f"{copy}.tmp{pid}.{thread}"


class _Locked(io.BufferedReader):
    """A cached copy opened for reading, with its shared lock held until ``close``. A
    real ``BufferedReader``, so readers take their local-file paths (seeking past
    members not kept, text wrappers)."""

    def __init__(self, path: str, lock_fd: int) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._lock_fd = lock_fd

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1


class ShardCache:
    """The cache of NOTE [shard cache]; picklable (threads start lazily in each process).

    Args:
        cache_dir: the folder of the copies (created).
        limit_bytes: the total size of copies kept; ``None`` for no limit.
        ahead: shards downloaded ahead of the one being read (0: none).
        storage_options: for :func:`~dataforge.datasets.remote.open_remote`.
        retry: the retry policy of downloads.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        limit_bytes: int | None = None,
        *,
        ahead: int = 2,
        storage_options: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if limit_bytes is not None and (isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or limit_bytes <= 0):
            raise ValueError(f"cache_limit_bytes must be a positive int (bytes) or None, got {limit_bytes!r}")
        if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 0:
            raise ValueError(f"cache_ahead must be an int >= 0 (shards downloaded ahead), got {ahead!r}")
        if fcntl is None:
            raise OSError("cache_dir needs POSIX file locks (fcntl: Linux, macOS); stream the shards "
                          "instead (cache_dir=None)")
        self.dir = os.fspath(cache_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.limit_bytes, self.ahead = limit_bytes, ahead
        self.storage_options = dict(storage_options or {})
        self.retry = retry or RetryPolicy()
        self.downloads = 0  # in this process
        self.retried = 0  # download retries in this process
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[Any]] = {}
        self._mutex: threading.Lock | None = None
        self._pid = -1  # the process _pool and _mutex belong to

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pool=None, _pending={}, _mutex=None, _pid=-1)
        return state

    def _this_process(self) -> threading.Lock:
        """The mutex of this process's download-ahead thread. A forked DataLoader worker
        inherits the parent's pool without its thread (a future submitted there would
        never run), so a new process starts its own."""
        if self._pid != os.getpid() or self._mutex is None:
            self._pool, self._pending, self._mutex = None, {}, threading.Lock()
            self._pid = os.getpid()
        return self._mutex

    def path(self, url: str) -> str:
        """Where the copy of ``url`` lives."""
        digest = hashlib.sha1(url.encode()).hexdigest()[:16]
        return os.path.join(self.dir, f"{digest}-{os.path.basename(url.rstrip('/')) or 'shard'}")

    # -- reading ------------------------------------------------------------
    def open(self, url: str, on_retry: Callable[[BaseException], None] | None = None) -> _Locked:
        """The local copy of ``url`` (downloaded when missing), open, its lock held shared."""
        for e in self._wait_ahead(url):  # retries of its download ahead, reported in this thread
            if on_retry is not None:
                on_retry(e)
        path = self.path(url)
        fd = self._acquire(url, path, on_retry)
        try:
            return _Locked(path, fd)
        except BaseException:
            os.close(fd)
            raise

    def _acquire(self, url: str, path: str, on_retry: Callable[[BaseException], None] | None) -> int:
        """The lock fd of ``path``, held shared, once the copy exists (downloaded here if
        missing); touches the copy.

        The lock is taken shared first and exclusive only to download a missing copy: a
        suspended reader of this process (an iterator not finished, a replayed stream)
        holds it shared, and an exclusive request of the same process would wait on it
        forever. A missing copy has no shared holder (eviction spares held copies), so
        the exclusive request only waits for other downloaders. flock converts a lock by
        releasing it first, so the copy is checked again once shared is held.
        """
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if os.path.exists(path):
                    os.utime(path)
                    return fd
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not os.path.exists(path):
                    self._download(url, path, on_retry)
        except BaseException:
            os.close(fd)
            raise

    def fetch_ahead(self, urls: Sequence[str]) -> None:
        """Start downloading ``urls`` (missing ones) in this process's background thread;
        the retries of one are passed to ``on_retry`` of the :meth:`open` that reads it."""
        if not self.ahead or not urls:
            return
        with self._this_process():
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="dataforge-shard-ahead")
            for url in urls[: self.ahead]:
                if url not in self._pending and not os.path.exists(self.path(url)):
                    self._pending[url] = self._pool.submit(self._fetch_quietly, url)

    def _fetch_quietly(self, url: str) -> list[BaseException]:
        """The download's retried errors; a failure is left to the reader (its own open
        downloads again, with retries and on_error)."""
        retried: list[BaseException] = []
        with contextlib.suppress(Exception):
            os.close(self._acquire(url, self.path(url), retried.append))
        return retried

    def _wait_ahead(self, url: str) -> list[BaseException]:
        with self._this_process():
            fut = self._pending.pop(url, None)
        return [] if fut is None else fut.result()  # type: ignore[no-any-return]

    # -- internals -------------------------------------------------------------
    def _download(self, url: str, path: str, on_retry: Callable[[BaseException], None] | None) -> None:
        tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"

        def once() -> None:
            try:
                with open_remote(url, self.storage_options) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

        def retried(e: BaseException) -> None:
            with self._this_process():  # counters shared with the download-ahead thread
                self.retried += 1
            if on_retry is not None:
                on_retry(e)

        self.retry.call(once, retried)
        with self._this_process():
            self.downloads += 1
        self._evict(keep=path)

    def _copies(self) -> list[tuple[float, int, str]]:
        out = []
        for name in os.listdir(self.dir):
            if not _COPY.match(name) or _TMP.search(name):
                continue
            full = os.path.join(self.dir, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue  # evicted meanwhile
            out.append((st.st_mtime, st.st_size, full))
        return sorted(out)

    def _evict(self, keep: str) -> None:
        if self.limit_bytes is None:
            return
        copies = self._copies()
        total = sum(size for _, size, _ in copies)
        for _, size, full in copies:
            if total <= self.limit_bytes:
                return
            if full == keep:
                continue
            fd = os.open(full + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # open or downloading: never evicted
            try:
                os.unlink(full)
                total -= size
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
