"""OLMo training data: flat token files, the ``global_indices`` data order, local or over HTTP.

Source: allenai/OLMo ``olmo/data/memmap_dataset.py`` (``MemMapDataset``), ``olmo/util.py``
(``file_size``, ``get_bytes_range``), ``olmo/data/iterable_dataset.py`` (the data order) and
``configs/official/OLMo-7B.yaml``; see ``shared/reference/olmomia.md`` sections 2, 8 and 9.

Layout (what OLMo writes and reads):

- token files: raw little-endian arrays of ``memmap_dtype`` (uint16 for OLMo-7B) with NO
  header, whatever the ``.npy`` name says. Each file is cut into consecutive instances of
  ``max_sequence_length`` tokens; a tail shorter than one instance is dropped. Instances are
  numbered across files in config-list order.
- data order: ``global_indices.npy``, a raw uint32 array (no header) of instance numbers.
  Training step ``s``, slot ``b`` of a global batch of ``B`` read instance
  ``global_indices[s * B + b]``.

Files are local paths or http(s) URLs. Remote sizes come from HEAD (``content-length``);
reads are GETs with ``Range: bytes=a-b`` covering only the wanted instance (or the wanted
4-byte data-order entries, contiguous ones merged into one request), over one keep-alive
connection per thread and host. Short reads and 5xx answers (OLMo #766, #706) are retried with
exponential backoff; what still fails raises :class:`FetchError`. An instance number beyond the
files (OLMo #538: the data order refers to more instances than the files hold) raises
:class:`InstanceOutOfRange`, which batch readers return per item so callers count and log it.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import numpy as np

from anatomy.io import InputError, PathLike, read_yaml

log = logging.getLogger("anatomy")
T = TypeVar("T")

#: OLMo ``DataConfig.memmap_dtype`` values; stored little-endian.
DTYPES = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8"}
ORDER_DTYPE = np.dtype("<u4")
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
_MAX_REDIRECTS = 5


class InstanceOutOfRange(IndexError):
    """An instance number at or beyond the files' instance count (OLMo #538)."""

    def __init__(self, instance: int, n_instances: int):
        self.instance = int(instance)
        self.n_instances = int(n_instances)
        super().__init__(f"instance {self.instance} is out of range: the token files hold "
                         f"{self.n_instances} instances (OLMo #538)")


class PositionOutOfRange(IndexError):
    """A data-order position at or beyond the length of ``global_indices``."""

    def __init__(self, position: int, length: int, source: str):
        self.position = int(position)
        self.length = int(length)
        super().__init__(f"position {self.position} is out of range: data order {source} holds "
                         f"{self.length} entries")


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
    return urlsplit(str(path)).scheme.lower() in ("http", "https")


def _check_scheme(path: str) -> None:
    scheme = urlsplit(path).scheme.lower()
    # One-letter schemes are Windows drive letters, i.e. local paths.
    if len(scheme) > 1 and scheme not in ("http", "https", "file"):
        raise InputError(path, f"unsupported URL scheme {scheme!r}: only local paths and "
                               "http(s) URLs are read")


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


def _local_path(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


class _Local:
    """A local file read with ``os.pread`` (thread-safe: no shared file position)."""

    def __init__(self, path: str):
        self.path = _local_path(path)
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


def _map_ordered(fn: Callable[[Any], T], items: Sequence[Any], pool: cf.Executor | None
                 ) -> list[T]:
    if pool is None or len(items) <= 1:
        return [fn(x) for x in items]
    return list(pool.map(fn, items))


class _PoolOwner:
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


# ---------------------------------------------------------------------------------------
# token files


class TokenFiles(_PoolOwner):
    """OLMo's ``MemMapDataset``: token files cut into ``seq_len``-token instances.

    File sizes are looked up on first use (HEAD requests for URLs, ``num_workers`` at a
    time); pass ``sizes`` (bytes per file) to skip that. A file's tail shorter than one
    instance is ignored, exactly as OLMo does.
    """

    def __init__(self, paths: Sequence[PathLike], seq_len: int, dtype: str = "uint16",
                 retries: int = 5, timeout: float = 60.0, backoff: float = 1.0,
                 sizes: Sequence[int] | None = None, num_workers: int = 8):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("no token files given")
        for p in self.paths:
            _check_scheme(p)
        if sizes is not None and len(sizes) != len(self.paths):
            raise ValueError(f"{len(sizes)} sizes for {len(self.paths)} files")
        self.seq_len = seq_len
        self.dtype = np.dtype(DTYPES[dtype])
        self.instance_bytes = seq_len * self.dtype.itemsize
        self.num_workers = num_workers
        self._http = _Http(retries, timeout, backoff)
        self._local = {p: _Local(p) for p in self.paths if not is_url(p)}
        self._sizes = None if sizes is None else [int(s) for s in sizes]
        self._ends: np.ndarray | None = None
        self._init_lock = threading.Lock()

    # sizes and offsets ----------------------------------------------------------------------
    def _size_of(self, path: str) -> int:
        return self._http.size(path) if is_url(path) else self._local[path].size()

    def _read(self, path: str, start: int, end: int) -> bytes:
        if is_url(path):
            return self._http.read(path, start, end)
        return self._local[path].read(start, end)

    def _offsets(self) -> np.ndarray:
        if self._ends is None:
            with self._init_lock:
                if self._ends is None:
                    if self._sizes is None:
                        pool = self._get_pool(self.num_workers)
                        self._sizes = _map_ordered(self._size_of, self.paths, pool)
                    for p, s in zip(self.paths, self._sizes, strict=True):
                        if s % self.dtype.itemsize:
                            raise InputError(p, f"size {s} bytes is not a multiple of "
                                                f"{self.dtype.itemsize} ({self.dtype.name} "
                                                "tokens); wrong memmap_dtype or a truncated file?")
                    counts = np.array(self._sizes, dtype=np.int64) // self.instance_bytes
                    self._ends = np.cumsum(counts)
        return self._ends

    @property
    def sizes(self) -> list[int]:
        """Bytes per file, in config order."""
        self._offsets()
        assert self._sizes is not None
        return list(self._sizes)

    @property
    def counts(self) -> np.ndarray:
        """Instances per file (tails dropped)."""
        ends = self._offsets()
        return np.diff(ends, prepend=0)

    def __len__(self) -> int:
        ends = self._offsets()
        return int(ends[-1])

    def file_of(self, instance: int) -> tuple[int, int]:
        """``(file index, index within that file)`` of a global instance number."""
        ends = self._offsets()
        i = int(instance)
        if not 0 <= i < ends[-1]:
            raise InstanceOutOfRange(i, int(ends[-1]))
        f = int(np.searchsorted(ends, i, side="right"))  # skips files with no instances
        start = int(ends[f - 1]) if f else 0
        return f, i - start

    def instance(self, i: int) -> np.ndarray:
        """Tokens of instance ``i`` as int64, length ``seq_len``; only its bytes are read."""
        f, j = self.file_of(i)
        a = j * self.instance_bytes
        data = self._read(self.paths[f], a, a + self.instance_bytes)
        return np.frombuffer(data, dtype=self.dtype).astype(np.int64)

    def _instance_or_error(self, i: int) -> np.ndarray | Exception:
        try:
            return self.instance(i)
        except Exception as e:  # returned to the caller, who records it per item
            return e

    def instances(self, ids: Iterable[int], num_workers: int = 8
                  ) -> list[np.ndarray | Exception]:
        """Many instances, ``num_workers`` threads at a time, in input order.

        Each result is the token array or the exception reading it raised
        (:class:`InstanceOutOfRange`, :class:`FetchError`, ...). Errors that concern the
        whole dataset (a missing file, an unreachable server while sizing) are raised.
        """
        ids = [int(i) for i in ids]
        self._offsets()
        return _map_ordered(self._instance_or_error, ids, self._get_pool(num_workers))

    def close(self) -> None:
        self._close_pool()
        self._http.close()
        for src in self._local.values():
            src.close()

    def __enter__(self) -> TokenFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# data order


class DataOrder(_PoolOwner):
    """OLMo's ``global_indices.npy``: a raw uint32 array, entry ``s * B + b`` = instance number.

    Local files are memory-mapped; remote ones are read by ranged GETs of just the wanted
    entries, contiguous positions merged into one request, ``num_workers`` requests at a time.
    """

    def __init__(self, path_or_url: PathLike, retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0, num_workers: int = 8):
        self.source = str(path_or_url)
        _check_scheme(self.source)
        self.num_workers = num_workers
        self._http = _Http(retries, timeout, backoff)
        self._mm: np.ndarray | None = None
        if is_url(self.source):
            size = self._http.size(self.source)
        else:
            size = _Local(self.source).size()
        if size % ORDER_DTYPE.itemsize:
            raise InputError(self.source, f"size {size} bytes is not a multiple of 4: not a raw "
                                          "uint32 data order (or a truncated download, OLMo #837)")
        if size == 0:
            raise InputError(self.source, "data order is empty")
        self._len = size // ORDER_DTYPE.itemsize
        if not is_url(self.source):
            self._mm = np.memmap(_local_path(self.source), dtype=ORDER_DTYPE, mode="r")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, positions: int | slice | Sequence[int] | np.ndarray
                    ) -> int | np.ndarray:
        """Instance number(s) at data-order position(s); no negative indexing."""
        if isinstance(positions, slice):
            start, stop, step = positions.indices(self._len)
            positions = np.arange(start, stop, step, dtype=np.int64)
        if np.ndim(positions) == 0:
            return int(self._lookup(np.array([int(positions)], dtype=np.int64))[0])
        return self._lookup(np.asarray(positions, dtype=np.int64).ravel())

    def _lookup(self, pos: np.ndarray) -> np.ndarray:
        if pos.size == 0:
            return np.zeros(0, dtype=np.int64)
        bad = np.flatnonzero((pos < 0) | (pos >= self._len))
        if bad.size:
            raise PositionOutOfRange(int(pos[bad[0]]), self._len, self.source)
        if self._mm is not None:
            return self._mm[pos].astype(np.int64)
        uniq = np.unique(pos)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(uniq, cut)]
        chunks = _map_ordered(self._read_run, runs, self._get_pool(self.num_workers))
        values = np.concatenate(chunks)
        return values[np.searchsorted(uniq, pos)]

    def _read_run(self, run: tuple[int, int]) -> np.ndarray:
        a, b = run
        item = ORDER_DTYPE.itemsize
        data = self._http.read(self.source, a * item, b * item)
        return np.frombuffer(data, dtype=ORDER_DTYPE).astype(np.int64)

    def max(self, chunk: int = 1 << 24) -> int:
        """Largest instance number in the whole order, read ``chunk`` entries at a time.

        For the OLMo #538 check (:func:`check_coverage`); a remote order is downloaded in
        full (several GB for OLMo-7B), one chunk in memory at a time.
        """
        from anatomy.progress import progress

        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        best = 0
        starts = range(0, self._len, chunk)
        for a in progress(starts, desc="data order max", unit="chunk",
                          total=len(starts), disable=None if len(starts) > 1 else True):
            b = min(a + chunk, self._len)
            if self._mm is not None:
                part = self._mm[a:b]
            else:
                part = self._read_run((a, b))
            best = max(best, int(part.max()))
        return best

    def close(self) -> None:
        self._close_pool()
        self._http.close()

    def __enter__(self) -> DataOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class OlmoDataConfig:
    """What the data readers need from an OLMo ``TrainConfig`` YAML.

    ``paths`` and ``global_indices`` are resolved: relative local paths are joined to the
    config file's folder, URLs and absolute paths are kept. ``batch_size`` is the true global
    batch size (``data_anatomy.batch_size`` when given, else ``global_train_batch_size``);
    ``config_batch_size`` is the file's ``global_train_batch_size``. ``extra`` is the raw
    ``data_anatomy`` section.
    """

    path: str
    paths: list[str]
    seq_len: int
    batch_size: int
    config_batch_size: int
    eos_token_id: int
    pad_token_id: int
    dtype: str
    global_indices: str | None
    model_name: str
    tokenizer: str | None
    extra: dict = field(default_factory=dict)
    vocab_size: int | None = None
    run_name: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.path).parent

    def resolve(self, value: PathLike) -> str:
        """A config path as usable here: URLs and absolute paths as is, else under the root."""
        return _resolve(self.root, str(value))

    def resolve_name(self, value: str) -> str:
        """A path-or-hub-name: resolved under the root if that exists there, else kept."""
        if is_url(value) or os.path.isabs(value):
            return value
        local = self.root / value
        return str(local) if local.exists() else value

    @property
    def checkpoints(self) -> dict[int, str]:
        """``data_anatomy.checkpoints``: training step -> checkpoint name (revision)."""
        return {int(k): str(v) for k, v in (self.extra.get("checkpoints") or {}).items()}


def _resolve(root: Path, value: str) -> str:
    if is_url(value) or os.path.isabs(value):
        return value
    return str(root / value)


class _Section:
    """Typed look-ups in one YAML mapping, errors naming the file and the dotted key."""

    def __init__(self, path: Path, data: Any, prefix: str = ""):
        if not isinstance(data, dict):
            what = f'"{prefix.rstrip(".")}"' if prefix else "the top level"
            raise InputError(path, f"expected a mapping at {what}, got {type(data).__name__}")
        self.path, self.data, self.prefix = path, data, prefix

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise InputError(self.path, f'missing key "{self.prefix}{key}"')
            return None
        return self.data[key]

    def section(self, key: str, required: bool = True) -> _Section | None:
        value = self._get(key, required)
        return None if value is None else _Section(self.path, value, f"{self.prefix}{key}.")

    def get_int(self, key: str, required: bool = True, positive: bool = False,
                nonneg: bool = False) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(self.path, f'"{self.prefix}{key}" must be an integer, got '
                                        f"{value!r}")
        if positive and value <= 0:
            raise InputError(self.path, f'"{self.prefix}{key}" must be positive, got {value}')
        if nonneg and value < 0:
            raise InputError(self.path, f'"{self.prefix}{key}" must be >= 0, got {value}')
        return value

    def get_str(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise InputError(self.path, f'"{self.prefix}{key}" must be a non-empty string, '
                                        f"got {value!r}")
        return value


def load_olmo_config(path: PathLike) -> OlmoDataConfig:
    """Read an OLMo ``TrainConfig`` YAML (plus our optional ``data_anatomy:`` section).

    Read: ``model.max_sequence_length``, ``model.eos_token_id``, ``model.pad_token_id``,
    ``model.vocab_size`` (optional), ``data.paths``, ``data.memmap_dtype`` (default uint16),
    ``global_train_batch_size``, ``run_name`` and ``tokenizer.identifier`` (optional).
    ``data_anatomy`` may set ``global_indices``, ``batch_size`` (the true batch size where the
    file's is wrong, as for OLMo-7B: 2160, not 2048), ``model_name``, ``tokenizer`` and
    ``checkpoints`` (step -> name). Missing keys and wrong types raise :class:`InputError`
    naming the file and key.
    """
    p = Path(path)
    top = _Section(p, read_yaml(p))
    model = top.section("model")
    data = top.section("data")
    assert model is not None and data is not None
    seq_len = model.get_int("max_sequence_length", positive=True)
    eos = model.get_int("eos_token_id", nonneg=True)
    pad = model.get_int("pad_token_id", nonneg=True)
    vocab = model.get_int("vocab_size", required=False, positive=True)
    config_b = top.get_int("global_train_batch_size", positive=True)
    run_name = top.get_str("run_name", required=False)

    raw_paths = data._get("paths", True)
    if not isinstance(raw_paths, list) or not raw_paths:
        raise InputError(p, '"data.paths" must be a non-empty list of paths or URLs')
    for k, item in enumerate(raw_paths):
        if not isinstance(item, str) or not item:
            raise InputError(p, f'"data.paths[{k}]" must be a non-empty string, got {item!r}')
    dtype = data.get_str("memmap_dtype", required=False) or "uint16"
    if dtype not in DTYPES:
        raise InputError(p, f'"data.memmap_dtype" must be one of {sorted(DTYPES)}, got {dtype!r}')

    ext = top.section("data_anatomy", required=False) or _Section(p, {}, "data_anatomy.")
    batch = ext.get_int("batch_size", required=False, positive=True) or config_b
    order = ext.get_str("global_indices", required=False)
    model_name = ext.get_str("model_name", required=False) or run_name or p.stem
    ckpts = ext._get("checkpoints", False)
    if ckpts is not None and not isinstance(ckpts, dict):
        raise InputError(p, '"data_anatomy.checkpoints" must be a mapping step -> name')
    tok_section = top.section("tokenizer", required=False)
    tokenizer = ext.get_str("tokenizer", required=False) or (
        tok_section.get_str("identifier", required=False) if tok_section else None)

    root = p.parent
    for raw in [*raw_paths, *([order] if order else [])]:
        _check_scheme(raw)
    cfg = OlmoDataConfig(
        path=str(p), paths=[_resolve(root, x) for x in raw_paths], seq_len=seq_len,
        batch_size=batch, config_batch_size=config_b, eos_token_id=eos, pad_token_id=pad,
        dtype=dtype, global_indices=None if order is None else _resolve(root, order),
        model_name=model_name, tokenizer=None, extra=dict(ext.data), vocab_size=vocab,
        run_name=run_name)
    if tokenizer is not None:
        object.__setattr__(cfg, "tokenizer", cfg.resolve_name(tokenizer))
    return cfg


# ---------------------------------------------------------------------------------------
# checks


_REVISION = re.compile(r"step(\d+)-tokens(\d+)([KMBT])")
_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def batch_sizes_from_checkpoints(names: Iterable[str], seq_len: int) -> list[int]:
    """Global batch sizes consistent with every ``step{S}-tokens{N}{K|M|B|T}`` name.

    A name says the token count ``S * B * seq_len`` rounds to ``N`` units, so each name
    allows a small interval of ``B``; the result is their intersection (OLMo-7B's four
    MIA checkpoints leave only 2160, not the config's 2048; olmomia.md section 8).
    Names that do not match the pattern are ignored; step 0 says nothing.
    """
    lo, hi = 1, math.inf
    for name in names:
        m = _REVISION.search(name)
        if m is None or int(m.group(1)) == 0:
            continue
        step, n, unit = int(m.group(1)), int(m.group(2)), _UNITS[m.group(3)]
        per_b = step * seq_len
        # round(x / unit) == n  =>  (n - 0.5) * unit <= x <= (n + 0.5) * unit (ties either way)
        lo = max(lo, -((-(2 * n - 1) * unit) // (2 * per_b)))
        hi = min(hi, (2 * n + 1) * unit // (2 * per_b))
    if hi is math.inf:
        return []
    return list(range(lo, int(hi) + 1))


@dataclass(frozen=True)
class Coverage:
    """Do the token files hold every instance the data order names? (OLMo #538)."""

    n_instances: int  # instances in the token files
    order_max: int  # largest instance number in the data order

    @property
    def ok(self) -> bool:
        return self.order_max < self.n_instances

    @property
    def n_missing(self) -> int:
        """Instance numbers in ``[n_instances, order_max]``: what the files lack at least."""
        return max(0, self.order_max + 1 - self.n_instances)

    def message(self) -> str:
        if self.ok:
            return (f"data order covered: max instance {self.order_max} < "
                    f"{self.n_instances} instances in the token files")
        return (f"data order refers to instance {self.order_max} but the token files hold only "
                f"{self.n_instances} (OLMo #538): {self.n_missing} instance numbers have no "
                "data; fetching them raises InstanceOutOfRange")


def check_coverage(config: OlmoDataConfig | None, data_order_max: int, n_instances: int,
                   strict: bool = False) -> Coverage:
    """The OLMo #538 check: ``max(global_indices) < instances in the files``.

    Returns the :class:`Coverage`; with ``strict`` a failed check raises InputError naming
    the config file, otherwise it is logged as a warning.
    """
    cov = Coverage(int(n_instances), int(data_order_max))
    if not cov.ok:
        if strict:
            raise InputError(None if config is None else config.path, cov.message())
        log.warning("%s%s", "" if config is None else f"{config.path}: ", cov.message())
    return cov


# ---------------------------------------------------------------------------------------
# the two together


class OlmoData:
    """A training run's data: step ``s``, slot ``b`` -> the tokens trained there."""

    def __init__(self, config: OlmoDataConfig, global_indices: str | None = None,
                 batch_size: int | None = None, retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0, num_workers: int = 8):
        self.config = config
        order = global_indices if global_indices is not None else config.global_indices
        if order is None:
            raise InputError(config.path, 'no data order: set "data_anatomy.global_indices" '
                                          "or pass the global_indices path/URL")
        self.batch_size = int(batch_size if batch_size is not None else config.batch_size)
        if self.batch_size <= 0:
            raise InputError(config.path, f"batch size must be positive, got {self.batch_size}")
        self.num_workers = num_workers
        self.files = TokenFiles(config.paths, config.seq_len, config.dtype, retries=retries,
                                timeout=timeout, backoff=backoff, num_workers=num_workers)
        self.order = DataOrder(order, retries=retries, timeout=timeout, backoff=backoff,
                               num_workers=num_workers)

    @property
    def n_steps(self) -> int:
        """Whole global batches in the data order."""
        return len(self.order) // self.batch_size

    def position(self, step: int, index: int) -> int:
        """Data-order position ``step * B + index``."""
        if step < 0 or not 0 <= index < self.batch_size:
            raise InputError(None, f"need step >= 0 and 0 <= index < {self.batch_size}, got "
                                   f"step {step}, index {index}")
        return step * self.batch_size + index

    def instance_at(self, position: int) -> int:
        return int(self.order[position])

    def batch(self, step: int) -> np.ndarray:
        """Instance numbers of a whole training step (one ranged read when remote)."""
        a = self.position(step, 0)
        return self.order[a:a + self.batch_size]

    def tokens_at(self, step: int, index: int) -> np.ndarray:
        return self.files.instance(self.instance_at(self.position(step, index)))

    def tokens_at_positions(self, positions: Sequence[int], num_workers: int | None = None
                            ) -> list[np.ndarray | Exception]:
        """Tokens at many data-order positions, in input order, each array or its exception.

        The ``fetch_many`` of :func:`anatomy.mia.sampling.sample_records`. A position beyond
        the data order gives :class:`PositionOutOfRange`, an instance beyond the files
        :class:`InstanceOutOfRange`.
        """
        workers = self.num_workers if num_workers is None else num_workers
        pos = np.asarray(positions, dtype=np.int64).ravel()
        valid = (pos >= 0) & (pos < len(self.order))
        ids = self.order[pos[valid]]
        fetched = iter(self.files.instances(ids, num_workers=workers))
        return [next(fetched) if ok else PositionOutOfRange(int(p), len(self.order),
                                                            self.order.source)
                for p, ok in zip(pos, valid, strict=True)]

    def coverage(self, strict: bool = False, chunk: int = 1 << 24) -> Coverage:
        """The OLMo #538 check over the whole data order and all token files."""
        return check_coverage(self.config, self.order.max(chunk), len(self.files), strict)

    def close(self) -> None:
        self.files.close()
        self.order.close()

    def __enter__(self) -> OlmoData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
