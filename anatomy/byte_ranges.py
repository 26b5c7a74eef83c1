"""Byte ranges of local files and remote objects, with retries: what the data readers stand on.

:class:`ByteReader` answers ``size(path)`` and ``read(path, start, end)`` for:

- local paths (and ``file://``): ``os.pread``, thread-safe, no shared file position;
- ``http(s)://``: our client (below). HEAD for the size (``content-length``, else the total of
  a 1-byte ranged GET); ``GET`` with ``Range: bytes=a-b`` for exactly the wanted bytes, over
  one keep-alive connection per thread and host; redirects followed and remembered. Short
  reads and 408/425/429/5xx answers (OLMo #766, #706) are retried with exponential backoff;
  a server that ignores ``Range`` is refused rather than streaming a whole multi-GB data
  file; what still fails raises :class:`FetchError`. (fsspec's HTTP filesystem reads
  whatever the server sends for a ranged request and does not retry short reads, which is
  why http(s) keeps its own client.)
- any other scheme fsspec knows (``s3://``, ``gs://``, ``hf://``, ``memory://`` ...):
  ``fsspec`` ``size`` and ``cat_file(path, start, end)`` under the same retry loop and length
  check; a scheme whose fsspec package is missing (e.g. ``s3fs``) is one clear error.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from anatomy.io import InputError

log = logging.getLogger("anatomy")
T = TypeVar("T")

_REDIRECTS = (301, 302, 303, 307, 308)
_RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
_MAX_REDIRECTS = 5


class FetchError(OSError):
    """Reading a token file or the data order failed (after retries where retrying helps)."""

    def __init__(self, url: str, problem: str, status: int | None = None):
        self.url = url
        self.status = status
        self.problem = problem
        super().__init__(f"{url}: {problem}")


class _Retryable(Exception):
    """One failed attempt worth repeating (short read, 5xx, dropped connection)."""

    def __init__(self, problem: str, status: int | None = None):
        self.status = status
        super().__init__(problem)


def is_url(path: str) -> bool:
    """http(s) URLs, read by our own client."""
    return urlsplit(str(path)).scheme.lower() in ("http", "https")


def scheme_of(path: str) -> str:
    """``""`` for local paths (one-letter schemes are Windows drive letters), else the scheme."""
    scheme = urlsplit(str(path)).scheme.lower()
    return "" if len(scheme) <= 1 or scheme == "file" else scheme


def is_remote(path: str) -> bool:
    """Anything not on the local disk: http(s) or an fsspec protocol."""
    return scheme_of(path) != ""


def check_scheme(path: str) -> None:
    """One clear error for a scheme that cannot be read here (unknown, or its fsspec
    package not installed)."""
    scheme = scheme_of(path)
    if scheme in ("", "http", "https"):
        return
    _fsspec(path)


# ---------------------------------------------------------------------------------------
# byte sources: local files and HTTP


class _Http:
    """HTTP HEAD/ranged GET with retries, redirects and one keep-alive connection per thread."""

    def __init__(self, retries: int = 5, timeout: float = 60.0, backoff: float = 1.0):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[http.client.HTTPConnection] = []
        self._moved: dict[str, str] = {}  # url -> where it redirected to (skip the hop later)

    # connections ------------------------------------------------------------------------
    def _conn(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.timeout)
            conns[(scheme, netloc)] = conn
            with self._lock:
                self._opened.append(conn)
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = getattr(self._local, "conns", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()

    # one attempt --------------------------------------------------------------------------
    def _exchange(self, method: str, url: str, headers: dict[str, str],
                  accept: Callable[[http.client.HTTPResponse], bool]
                  ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send one request (following redirects); return the response and its body.

        ``accept(resp)`` is asked before the body is read: False closes the connection
        unread, so a server that ignores ``Range`` never streams a whole data file to us.
        """
        target = self._moved.get(url, url)
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(target)
            scheme, netloc = parts.scheme.lower(), parts.netloc
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            conn = self._conn(scheme, netloc)
            try:
                conn.request(method, path, headers={"Accept-Encoding": "identity", **headers})
                resp = conn.getresponse()
                if resp.status in _REDIRECTS and resp.getheader("Location"):
                    resp.read()
                    target = urljoin(target, resp.getheader("Location"))
                    self._moved[url] = target
                    continue
                if not accept(resp):
                    self._drop(scheme, netloc)
                    return resp, b""
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                # Covers timeouts, resets, IncompleteRead, RemoteDisconnected: reconnect.
                self._drop(scheme, netloc)
                raise _Retryable(f"{type(e).__name__}: {e}") from None
            if resp.status in _RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status} {resp.reason}", resp.status)
            return resp, body
        raise FetchError(url, f"more than {_MAX_REDIRECTS} redirects")

    def _with_retries(self, url: str, what: str, attempt: Callable[[], T]) -> T:
        last: _Retryable | None = None
        for k in range(self.retries + 1):
            try:
                return attempt()
            except _Retryable as e:
                last = e
                if k < self.retries:
                    delay = self.backoff * 2 ** k
                    log.warning("%s %s failed (%s); retry %d/%d in %.1fs", what, url, e, k + 1,
                                self.retries, delay)
                    time.sleep(delay)
        assert last is not None
        raise FetchError(url, f"{what} failed after {self.retries + 1} attempts: {last}",
                         last.status)

    # public -------------------------------------------------------------------------------
    def size(self, url: str) -> int:
        """Bytes in ``url``: HEAD ``content-length``, else the total of a 1-byte ranged GET."""

        def attempt() -> int:
            resp, _ = self._exchange("HEAD", url, {}, lambda r: True)
            length = resp.getheader("Content-Length")
            if resp.status == 200 and length is not None and length.isdigit():
                return int(length)
            if resp.status not in (200, 405, 501):  # 405/501: no HEAD here, try a GET
                _raise_status(url, resp, ok=(200,))
            resp, _ = self._exchange("GET", url, {"Range": "bytes=0-0"},
                                     lambda r: r.status == 206)
            _raise_status(url, resp, ok=(206,))
            total = _content_range(resp)[2]
            if total is None:
                raise FetchError(url, "server reports no size (no content-length on HEAD, no "
                                      "total in content-range)")
            return total

        return self._with_retries(url, "HEAD", attempt)

    def read(self, url: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``url`` by one ranged GET; retried until complete."""
        want = end - start
        if want <= 0:
            return b""

        def accept(resp: http.client.HTTPResponse) -> bool:
            if resp.status == 206:
                return True
            if resp.status == 200:  # Range ignored: only fine if the whole file is the range
                return start == 0 and resp.getheader("Content-Length") == str(want)
            return resp.status in _RETRY_STATUS or resp.status >= 400

        def attempt() -> bytes:
            resp, body = self._exchange("GET", url, {"Range": f"bytes={start}-{end - 1}"},
                                        accept)
            if resp.status == 200 and not body:
                raise FetchError(url, f"server ignored the Range header (HTTP 200 for bytes "
                                      f"{start}-{end - 1}); refusing to download the whole file")
            _raise_status(url, resp, ok=(200, 206))
            if resp.status == 206:
                first = _content_range(resp)[0]
                if first is not None and first != start:
                    raise FetchError(url, f"asked for bytes from {start}, server sent from "
                                          f"{first}")
            if len(body) != want:  # OLMo #766: "expected 16384 bytes, got 7170"
                raise _Retryable(f"short read: expected {want} bytes, got {len(body)}")
            return body

        return self._with_retries(url, "GET", attempt)


def _raise_status(url: str, resp: http.client.HTTPResponse, ok: tuple[int, ...]) -> None:
    if resp.status not in ok:
        raise FetchError(url, f"HTTP {resp.status} {resp.reason}", resp.status)


def _content_range(resp: http.client.HTTPResponse) -> tuple[int | None, int | None, int | None]:
    """``(first, last, total)`` from ``Content-Range: bytes first-last/total``."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", resp.getheader("Content-Range") or "")
    if m is None:
        return None, None, None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class _Local:
    """A local file read with ``os.pread`` (thread-safe: no shared file position)."""

    def __init__(self, path: str):
        self.path = local_path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            raise InputError(self.path, "file not found") from None
        except OSError as e:
            raise InputError(self.path, f"cannot stat ({e.strerror})") from None

    def read(self, start: int, end: int) -> bytes:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    try:
                        self._fd = os.open(self.path, os.O_RDONLY)
                    except FileNotFoundError:
                        raise InputError(self.path, "file not found") from None
        data = os.pread(self._fd, end - start, start)
        if len(data) != end - start:
            raise FetchError(self.path, f"short read: expected {end - start} bytes at {start}, "
                                        f"got {len(data)} (file changed since it was sized?)")
        return data

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def map_ordered(fn: Callable[[Any], T], items: Sequence[Any], pool: cf.Executor | None
                 ) -> list[T]:
    if pool is None or len(items) <= 1:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


class PoolOwner:
    """A lazily made thread pool, kept across calls so HTTP connections stay warm."""

    _pool: cf.ThreadPoolExecutor | None = None
    _pool_size = 0

    def _get_pool(self, num_workers: int) -> cf.ThreadPoolExecutor | None:
        if num_workers <= 1:
            return None
        if self._pool is None or self._pool_size != num_workers:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = cf.ThreadPoolExecutor(num_workers, thread_name_prefix="olmo-data")
            self._pool_size = num_workers
        return self._pool

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None




class _Fsspec:
    """Byte ranges through fsspec (s3, gs, hf, memory ...), retried like HTTP."""

    def __init__(self, retries: int, backoff: float):
        self.retries, self.backoff = retries, backoff

    def _with_retries(self, path: str, what: str, attempt: Callable[[], T]) -> T:
        last: Exception | None = None
        for k in range(self.retries + 1):
            try:
                return attempt()
            except FileNotFoundError:
                raise FetchError(path, "not found") from None
            except (OSError, TimeoutError, _Retryable) as e:  # network errors, short reads
                last = e
                if k < self.retries:
                    delay = self.backoff * 2 ** k
                    log.warning("%s %s failed (%s); retry %d/%d in %.1fs", what, path, e,
                                k + 1, self.retries, delay)
                    time.sleep(delay)
        raise FetchError(path, f"{what} failed after {self.retries + 1} attempts: {last}")

    def size(self, path: str) -> int:
        fs, p = _fsspec(path)
        return int(self._with_retries(path, "size", lambda: fs.size(p)))

    def read(self, path: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        fs, p = _fsspec(path)

        def attempt() -> bytes:
            data = fs.cat_file(p, start=start, end=end)
            if len(data) != end - start:
                raise _Retryable(f"short read: expected {end - start} bytes, got {len(data)}")
            return data

        return self._with_retries(path, "read", attempt)


def _fsspec(path: str):
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec comes with torch and datasets
        raise InputError(path, "reading this URL needs fsspec (pip install fsspec)") from None
    scheme = scheme_of(path)
    try:
        fsspec.get_filesystem_class(scheme)
        return url_to_fs(path)
    except ValueError:
        raise InputError(path, f"unsupported URL scheme {scheme!r}: local paths, http(s) "
                               "and fsspec's protocols are read") from None
    except ImportError as e:
        raise InputError(path, f"reading {scheme}:// needs an fsspec backend ({e})") from None


class ByteReader:
    """``size``/``read`` of local paths, http(s) URLs and fsspec URLs, with retries."""

    def __init__(self, retries: int = 5, timeout: float = 60.0, backoff: float = 1.0):
        self._http = _Http(retries, timeout, backoff)
        self._fsspec = _Fsspec(retries, backoff)
        self._local: dict[str, _Local] = {}
        self._lock = threading.Lock()

    def _local_source(self, path: str) -> _Local:
        with self._lock:
            if path not in self._local:
                self._local[path] = _Local(path)
            return self._local[path]

    def size(self, path: str) -> int:
        scheme = scheme_of(path)
        if scheme == "":
            return self._local_source(path).size()
        return self._http.size(path) if is_url(path) else self._fsspec.size(path)

    def read(self, path: str, start: int, end: int) -> bytes:
        scheme = scheme_of(path)
        if scheme == "":
            return self._local_source(path).read(start, end)
        if is_url(path):
            return self._http.read(path, start, end)
        return self._fsspec.read(path, start, end)

    def close(self) -> None:
        self._http.close()
        with self._lock:
            for src in self._local.values():
                src.close()
