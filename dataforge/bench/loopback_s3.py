"""A loopback S3-compatible server (moto's server mode) for tests and benchmarks.

``LoopbackS3`` starts moto's S3 on ``127.0.0.1`` (a free port) in a daemon thread of
this process; nothing outside loopback is reached. DataLoader workers, forked or
spawned, reach it over TCP like any client. fsspec/s3fs take ``storage_options``;
a subprocess that reads ``s3://`` URLs through boto/s3fs defaults takes ``env``.

NOTE [dropped connections]: ``fail_next(n, after_bytes=k)`` makes the next ``n`` object
GET responses stop after ``k`` body bytes and close the connection, the way a server
or a proxy dying mid-object looks to a client: the headers promised more bytes than
came. Listing and HEAD requests are never cut. ``requests`` counts GETs per object
key, so a test can count downloads (cache hits are the GETs that did not happen).

Needs ``moto[server]`` (``pip install dataforge[dev]``); imported lazily.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LoopbackS3"]

_CREDENTIALS = {"key": "testing", "secret": "testing"}


def _moto() -> tuple[Any, Any, Any]:
    try:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server
    except ImportError as e:  # pragma: no cover - dev extra installed in CI
        raise ImportError(
            "LoopbackS3 needs moto's server mode: pip install 'dataforge[dev]' "
            "(or pip install 'moto[server]')"
        ) from e
    return DomainDispatcherApplication, create_backend_app, make_server


class _Faults:
    """The WSGI middleware of NOTE [dropped connections] and the GET counter."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.cut_left = 0
        self.cut_after = 0
        self.cut_done = 0
        self.requests: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        is_object_get = environ.get("REQUEST_METHOD") == "GET" and path.strip("/").count("/") >= 1
        if not is_object_get:
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        with self.lock:
            self.requests[path.lstrip("/")] += 1
            cut = self.cut_left > 0
            if cut:
                self.cut_left -= 1
                self.cut_done += 1
        body = self.app(environ, start_response)
        return self._cut(body, self.cut_after) if cut else body

    @staticmethod
    def _cut(body: Iterable[bytes], after: int) -> Iterator[bytes]:
        sent = 0
        try:
            for chunk in body:
                if sent + len(chunk) >= after:
                    if after > sent:
                        yield chunk[: after - sent]
                    # werkzeug closes the connection when the app fails after the headers
                    raise ConnectionAbortedError("LoopbackS3: connection dropped on purpose (fail_next)")
                sent += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def _quiet_handler() -> Any:
    """werkzeug's request handler without its one log line per request."""
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Quiet


class LoopbackS3:
    """An S3-compatible server on 127.0.0.1 for the life of the object (or ``with`` block).

    Attributes:
        endpoint_url: ``http://127.0.0.1:<port>``.
        storage_options: the ``storage_options`` fsspec/s3fs take to reach it.
        env: ``AWS_*`` variables (and ``AWS_ENDPOINT_URL``) for a subprocess.
        requests: GET requests per object (``"bucket/key"``), counted since start.

    Example:
        >>> with LoopbackS3() as s3:  # doctest: +SKIP
        ...     s3.make_bucket("data")
        ...     ds = from_shards("s3://data/x-{000..003}.tar", storage_options=s3.storage_options)
    """

    def __init__(self) -> None:
        dispatcher, create_backend_app, make_server = _moto()
        # moto keeps its state in module globals; the app answers any bucket of any account.
        # No region in client_kwargs: s3fs would send it as a LocationConstraint, which S3
        # rejects for us-east-1; botocore takes the region from the environment instead.
        for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(k, v)
        self._faults = _Faults(dispatcher(create_backend_app))
        self._server = make_server(
            "127.0.0.1", 0, self._faults, threaded=True, request_handler=_quiet_handler(),
        )
        self.endpoint_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-s3", daemon=True)
        self._thread.start()
        self.storage_options: dict[str, Any] = {
            **_CREDENTIALS, "client_kwargs": {"endpoint_url": self.endpoint_url},
        }
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint_url,
        }
        self._closed = False

    @property
    def requests(self) -> Counter[str]:
        return self._faults.requests

    @property
    def dropped(self) -> int:
        """How many GET responses were cut by :meth:`fail_next` so far."""
        return self._faults.cut_done

    def filesystem(self) -> Any:
        """A fresh s3fs filesystem on this server (not from fsspec's instance cache)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (an existing one is kept); returns ``"s3://<name>"``."""
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        return f"s3://{name}"

    def fail_next(self, n: int, after_bytes: int = 1024) -> None:
        """Cut the next ``n`` object GETs after ``after_bytes`` body bytes (NOTE [dropped connections])."""
        if n < 0 or after_bytes < 0:
            raise ValueError(f"fail_next needs n >= 0 and after_bytes >= 0, got n={n}, after_bytes={after_bytes}")
        with self._faults.lock:
            self._faults.cut_left, self._faults.cut_after = n, after_bytes

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
