"""The one place that reads and writes files: JSONL (plain, ``.gz``, ``.zst``), JSON, NPY, YAML.

Every writer is atomic: it writes a temporary file in the destination folder, fsyncs it and
``os.replace``s it onto the final name, so an interrupted run never leaves a truncated file
that the next pipeline step would read. Every reader turns a user's bad input into one
:class:`InputError` naming the file, the line (when there is one) and the problem; scripts
print it as one stderr line and exit with code 2 (see :mod:`anatomy.cli`).

Records are written with a fixed key order (insertion order), ``ensure_ascii=False`` and no
timestamps, so a rerun with the same inputs gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

PathLike = str | os.PathLike


class InputError(Exception):
    """A problem with a user's input: printed as ``error: FILE:LINE: problem``, exit code 2."""

    def __init__(self, path: PathLike | None, problem: str, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return f"{where}{self.problem}"


# ---------------------------------------------------------------------------------------
# atomic writes


_HOST = socket.gethostname().replace(".", "-") or "host"
_STALE_ELSEWHERE_S = 24 * 3600


def _remove_stale_temporaries(path: Path) -> None:
    prefix = f".{path.name}."
    try:
        entries = [e for e in os.scandir(path.parent)
                   if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    except FileNotFoundError:
        return
    for e in entries:
        parts = e.name[len(prefix):].split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            continue  # not ours
        host, pid = parts[0], int(parts[1])
        if host == _HOST:
            if pid == os.getpid() or _alive(pid):
                continue
        else:
            try:
                if time.time() - e.stat().st_mtime < _STALE_ELSEWHERE_S:
                    continue
            except FileNotFoundError:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(e.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """A temporary file's name beside ``path``; on success it is fsynced and renamed onto
    ``path``, on an exception removed (``path`` is left untouched).

    Temporary names carry the writer's host and pid (``.NAME.HOST.PID.XXXX.tmp``), so the
    next writer of ``path`` removes what a killed one left: its own host's temporaries whose
    process is gone, other hosts' after a day.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    Binary modes ignore ``encoding``.
    """
    binary = "b" in mode
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if binary else encoding,
                                        newline=None if binary else "\n") as f:
        yield f


def _compressed_writer(path: Path, raw: IO[bytes]) -> IO[bytes]:
    if path.suffix == ".gz":
        # mtime=0 and no file name in the header: byte-identical reruns.
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    if path.suffix == ".zst":
        import zstandard

        return zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
    return raw


def dumps_record(record: dict[str, Any]) -> str:
    """One JSONL line (no newline): insertion key order, UTF-8 kept, no spaces after commas."""
    return json.dumps(record, ensure_ascii=False, separators=(", ", ": "))


def write_jsonl(path: PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write records as JSON lines (``.gz``/``.zst`` compressed by suffix).

    Returns the number of records written.
    """
    path = Path(path)
    n = 0
    with atomic_write(path, "wb") as raw:
        out = _compressed_writer(path, raw)
        for rec in records:
            out.write((dumps_record(rec) + "\n").encode("utf-8"))
            n += 1
        if out is not raw:
            out.close()  # ends the gzip member / zstd frame; raw stays open (closefd=False)
    return n


def write_lines(path: PathLike, lines: Iterable[str]) -> int:
    """Atomically write text lines as given (each ends with one newline; ``.gz``/``.zst``
    compressed by suffix): a filtered JSONL file keeps its kept lines byte for byte."""
    path = Path(path)
    n = 0
    with atomic_write(path, "wb") as raw:
        out = _compressed_writer(path, raw)
        for line in lines:
            out.write((line.rstrip("\n") + "\n").encode("utf-8"))
            n += 1
        if out is not raw:
            out.close()
    return n


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write one JSON document (sorted as given, UTF-8, trailing newline)."""
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def write_text(path: PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomically save one array in NPY format."""
    with atomic_write(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


@contextlib.contextmanager
def atomic_npy(path: PathLike, shape: tuple[int, ...], dtype: Any = np.float32
               ) -> Iterator[np.ndarray]:
    """A writable memory-mapped NPY beside ``path``, renamed onto it when the block ends.

    For arrays filled piece by piece (merging ranks' rows) without holding them in memory.
    """
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield arr
        arr.flush()
        del arr


def write_yaml(path: PathLike, obj: Any) -> None:
    import yaml

    with atomic_write(path) as f:
        yaml.safe_dump(obj, f, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------
# readers


def require_file(path: PathLike, what: str = "file") -> Path:
    """Return ``Path(path)`` or raise InputError if it is not an existing file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{what} not found" if not p.exists() else f"{what} is not a file")
    return p


class ZstdFrames(io.RawIOBase):
    """Decompress a ``.zst`` file frame by frame, refusing what is not a whole stream.

    zstandard's stream reader returns what it could decode and then EOF when the file ends
    inside a frame (a shard truncated by a failed copy reads as a short shard, exit 0); here
    a file that ends mid-frame, or holds no frame at all, raises :class:`InputError`.
    """

    def __init__(self, raw: IO[bytes], path: PathLike, chunk: int = 1 << 16):
        import zstandard

        self.raw, self.path, self.chunk = raw, path, chunk
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = self._dctx.decompressobj()
        self._buf = b""
        self._mid_frame = False
        self._frames = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._done:
            data = self.raw.read(self.chunk)
            if not data:
                self._done = True
                if self._mid_frame:
                    raise InputError(self.path, "truncated zstd stream (the file ends inside a "
                                                "frame): a partial copy?")
                if self._frames == 0:
                    raise InputError(self.path, "empty .zst file (no zstd frame)")
                return
            out = []
            while data:
                self._mid_frame = True
                out.append(self._dobj.decompress(data))
                if not self._dobj.eof:
                    break
                self._frames += 1
                self._mid_frame = False
                data = self._dobj.unused_data
                self._dobj = self._dctx.decompressobj()
            self._buf = b"".join(out)

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_text(path: PathLike) -> IO[str]:
    """Open a text file for reading, decompressing ``.gz`` and ``.zst`` by suffix."""
    p = require_file(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    if p.suffix == ".zst":
        raw = open(p, "rb")  # noqa: SIM115 - closed with the wrapper
        return io.TextIOWrapper(io.BufferedReader(ZstdFrames(raw, p)), encoding="utf-8")
    return open(p, encoding="utf-8")  # noqa: SIM115


def iter_jsonl(path: PathLike, required: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file; blank lines are skipped.

    Raises InputError naming the line for invalid JSON, a non-object line, a missing
    required field, or a corrupt compressed stream.
    """
    for _, rec in iter_jsonl_numbered(path, required):
        yield rec


def iter_jsonl_numbered(path: PathLike, required: Iterable[str] = ()
                        ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Like :func:`iter_jsonl`, yielding ``(line number, record)`` (numbers count blank
    lines, so they point into the file)."""
    required = tuple(required)
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):  # noqa: B007 - used in the except
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(path, f"invalid JSON ({e.msg})", lineno) from None
                if not isinstance(rec, dict):
                    raise InputError(path, "expected a JSON object", lineno)
                if "\\ud" in line or "\\uD" in line:  # a \uXXXX escape of a surrogate
                    _check_unicode(rec, path, lineno)
                for key in required:
                    if key not in rec:
                        raise InputError(path, f'missing field "{key}"', lineno)
                yield lineno, rec
    except (OSError, EOFError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise InputError(path, "file not found") from None
        raise InputError(path, f"cannot read ({type(e).__name__}: {e})", lineno + 1) from None
    except Exception as e:  # zstandard.ZstdError and friends
        if type(e).__module__.startswith("zstandard"):
            raise InputError(path, f"corrupt zstd stream ({e})", lineno + 1) from None
        raise


def _check_unicode(rec: dict[str, Any], path: PathLike, lineno: int) -> None:
    """JSON can escape a lone surrogate ("\\ud83d"), which no UTF-8 writer or tokenizer
    accepts: one clear error at read time instead of a traceback far downstream."""
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start:e.end].encode("unicode_escape").decode()
        raise InputError(path, f"a string holds a lone surrogate ({bad}): not valid Unicode",
                         lineno) from None


def read_jsonl(path: PathLike, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, required))


def read_json(path: PathLike) -> Any:
    p = require_file(path)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(p, f"invalid JSON ({e.msg})", e.lineno) from None


def read_yaml(path: PathLike) -> Any:
    import yaml

    p = require_file(path)
    try:
        with open(p, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        raise InputError(p, f"invalid YAML ({getattr(e, 'problem', e)})", line) from None


def load_npy(path: PathLike, mmap: bool = False) -> np.ndarray:
    p = require_file(path)
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(p, f"not a valid .npy file ({e})") from None


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(require_file(path), "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
