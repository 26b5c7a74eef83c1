"""OLMo's token files: flat memmaps of token ids cut into fixed-length instances; read and write.

Source: allenai/OLMo ``olmo/data/memmap_dataset.py`` (``MemMapDataset``); see
``shared/reference/olmomia.md`` sections 2 and 9. A token file is a raw little-endian array
of ``memmap_dtype`` (uint16 for OLMo-7B; uint32 for vocabularies over 65,536) with NO header,
whatever its ``.npy`` name says. Each file is cut into consecutive instances of
``max_sequence_length`` tokens; a tail shorter than one instance is dropped. Instances are
numbered across files in config-list order.

:class:`TokenFiles` reads instances from local files, http(s) or fsspec URLs (only the
instance's bytes; :mod:`anatomy.byte_ranges`); :class:`TokenFileWriter` and
:func:`write_token_file` write them (atomically), for the miniworld builder, pretokenized
corpora and selection pools.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from anatomy.byte_ranges import ByteReader, PoolOwner, check_scheme, map_ordered
from anatomy.io import InputError, PathLike, atomic_path

#: OLMo ``DataConfig.memmap_dtype`` values; stored little-endian.
DTYPES = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8"}


class InstanceOutOfRange(IndexError):
    """An instance number at or beyond the files' instance count (OLMo #538)."""

    def __init__(self, instance: int, n_instances: int):
        self.instance = int(instance)
        self.n_instances = int(n_instances)
        super().__init__(f"instance {self.instance} is out of range: the token files hold "
                         f"{self.n_instances} instances (OLMo #538)")



class TokenFiles(PoolOwner):
    """OLMo's ``MemMapDataset``: token files cut into ``seq_len``-token instances.

    File sizes are looked up on first use (HEAD requests for URLs, ``num_workers`` at a
    time); pass ``sizes`` (bytes per file) to skip that. ``expected_sizes`` (what each file
    held at training time, e.g. a config's ``data_anatomy.token_file_bytes``) makes a changed
    file one clear error: OLMo numbers instances from file sizes, so one truncated file
    shifts every later instance. A file's tail shorter than one instance is ignored, exactly
    as OLMo does.
    """

    def __init__(self, paths: Sequence[PathLike], seq_len: int, dtype: str = "uint16",
                 retries: int = 5, timeout: float = 60.0, backoff: float = 1.0,
                 sizes: Sequence[int] | None = None, num_workers: int = 8,
                 expected_sizes: Sequence[int] | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("no token files given")
        for p in self.paths:
            check_scheme(p)
        if sizes is not None and len(sizes) != len(self.paths):
            raise ValueError(f"{len(sizes)} sizes for {len(self.paths)} files")
        self.seq_len = seq_len
        self.dtype = np.dtype(DTYPES[dtype])
        self.instance_bytes = seq_len * self.dtype.itemsize
        self.num_workers = num_workers
        self._bytes = ByteReader(retries, timeout, backoff)
        self._sizes = None if sizes is None else [int(s) for s in sizes]
        if expected_sizes is not None and len(expected_sizes) != len(self.paths):
            raise ValueError(f"{len(expected_sizes)} expected sizes for {len(self.paths)} files")
        self.expected_sizes = None if expected_sizes is None else [int(s) for s in
                                                                    expected_sizes]
        self._ends: np.ndarray | None = None
        self._init_lock = threading.Lock()

    # sizes and offsets ----------------------------------------------------------------------
    def _size_of(self, path: str) -> int:
        return self._bytes.size(path)

    def _read(self, path: str, start: int, end: int) -> bytes:
        return self._bytes.read(path, start, end)

    def _offsets(self) -> np.ndarray:
        if self._ends is None:
            with self._init_lock:
                if self._ends is None:
                    if self._sizes is None:
                        pool = self._get_pool(self.num_workers)
                        self._sizes = map_ordered(self._size_of, self.paths, pool)
                    for k, (p, s) in enumerate(zip(self.paths, self._sizes, strict=True)):
                        want = None if self.expected_sizes is None else self.expected_sizes[k]
                        if want is not None and s != want:
                            raise InputError(p, f"holds {s} bytes, the config records {want} "
                                                "(data_anatomy.token_file_bytes): the file "
                                                "changed since training, and every later "
                                                "instance would be read from the wrong "
                                                "offset; restore it or fix the config")
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

    def block(self, start: int, stop: int) -> np.ndarray:
        """Instances ``[start, stop)`` as a ``(stop - start, seq_len)`` array in the files'
        dtype: one ranged read per file touched (corpus-wide passes read files in order)."""
        ends = self._offsets()
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise InstanceOutOfRange(stop - 1, n)
        out = np.empty((stop - start, self.seq_len), dtype=self.dtype)
        f = int(np.searchsorted(ends, start, side="right"))
        i = start
        while i < stop:
            first = int(ends[f - 1]) if f else 0
            j = min(stop, int(ends[f]))
            a = (i - first) * self.instance_bytes
            data = self._read(self.paths[f], a, a + (j - i) * self.instance_bytes)
            out[i - start: j - start] = np.frombuffer(data, dtype=self.dtype).reshape(
                j - i, self.seq_len)
            i, f = j, f + 1
        return out

    def instances(self, ids: Iterable[int], num_workers: int = 8
                  ) -> list[np.ndarray | Exception]:
        """Many instances, ``num_workers`` threads at a time, in input order.

        Each result is the token array or the exception reading it raised
        (:class:`InstanceOutOfRange`, :class:`FetchError`, ...). Errors that concern the
        whole dataset (a missing file, an unreachable server while sizing) are raised.
        """
        ids = [int(i) for i in ids]
        self._offsets()
        return map_ordered(self._instance_or_error, ids, self._get_pool(num_workers))

    def close(self) -> None:
        self._close_pool()
        self._bytes.close()

    def __enter__(self) -> TokenFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




def _check_tokens(tokens: np.ndarray, dtype: str, where: PathLike) -> np.ndarray:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    t = np.asarray(tokens)
    bits = 8 * np.dtype(DTYPES[dtype]).itemsize
    if t.size and (not np.issubdtype(t.dtype, np.integer) or t.min() < 0
                   or int(t.max()) >= 2 ** bits):
        raise InputError(where, f"token ids must be integers in [0, 2**{bits}) for {dtype} "
                                "token files")
    return np.ascontiguousarray(t.ravel(), dtype=DTYPES[dtype])


class TokenFileWriter:
    """Stream token ids into one raw OLMo token file, atomically (temp file + rename).

    ``with TokenFileWriter(path, "uint16") as w: w.write(ids)`` appends arrays; the file
    appears under its name only when the block ends without an error. ``n_tokens`` counts
    what was written; ``instances(seq_len)`` is what a reader will see (tail dropped).
    """

    def __init__(self, path: PathLike, dtype: str = "uint16"):
        self.path = Path(path)
        self.dtype = dtype
        _check_tokens(np.zeros(0, np.int64), dtype, path)
        self.n_tokens = 0
        self._stack = contextlib.ExitStack()
        self._f = None
        self._lock = threading.Lock()

    def __enter__(self) -> TokenFileWriter:
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._f = self._stack.enter_context(open(tmp, "wb"))  # noqa: SIM115 - on the stack
        return self

    def write(self, tokens: np.ndarray | Sequence[int]) -> None:
        data = _check_tokens(np.asarray(tokens), self.dtype, self.path)
        with self._lock:
            self._f.write(data.tobytes())
            self.n_tokens += data.size

    def instances(self, seq_len: int) -> int:
        return self.n_tokens // seq_len

    def __exit__(self, *exc) -> None:
        self._f = None
        self._stack.__exit__(*exc)


def write_token_file(path: PathLike, tokens: np.ndarray | Iterable[np.ndarray],
                     dtype: str = "uint16") -> int:
    """Write one token file (an array, or several written one after another); returns the
    number of tokens. Raw little-endian ``dtype``, no header: what OLMo's readers expect."""
    with TokenFileWriter(path, dtype) as w:
        if isinstance(tokens, np.ndarray):
            w.write(tokens)
        else:
            for part in tokens:
                w.write(part)
    return w.n_tokens
