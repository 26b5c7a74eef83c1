"""OLMo's data order: ``global_indices.npy``, a raw uint32 array of instance numbers.

Source: allenai/OLMo ``olmo/data/iterable_dataset.py``; see ``shared/reference/olmomia.md``
sections 2 and 8. Training step ``s``, slot ``b`` of a global batch of ``B`` read instance
``global_indices[s * B + b]``. Local files are memory-mapped; remote ones (http(s), fsspec)
are read by ranged requests of just the wanted entries (:mod:`anatomy.byte_ranges`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anatomy.byte_ranges import (
    ByteReader,
    PoolOwner,
    check_scheme,
    is_remote,
    local_path,
    map_ordered,
)
from anatomy.io import InputError, PathLike, atomic_write
from anatomy.progress import progress

ORDER_DTYPE = np.dtype("<u4")


class PositionOutOfRange(IndexError):
    """A data-order position at or beyond the length of ``global_indices``."""

    def __init__(self, position: int, length: int, source: str):
        self.position = int(position)
        self.length = int(length)
        super().__init__(f"position {self.position} is out of range: data order {source} holds "
                         f"{self.length} entries")



class DataOrder(PoolOwner):
    """OLMo's ``global_indices.npy``: a raw uint32 array, entry ``s * B + b`` = instance number.

    Local files are memory-mapped; remote ones are read by ranged GETs of just the wanted
    entries, contiguous positions merged into one request, ``num_workers`` requests at a time.
    """

    def __init__(self, path_or_url: PathLike, retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0, num_workers: int = 8):
        self.source = str(path_or_url)
        check_scheme(self.source)
        self.num_workers = num_workers
        self._bytes = ByteReader(retries, timeout, backoff)
        self._mm: np.ndarray | None = None
        size = self._bytes.size(self.source)
        if size % ORDER_DTYPE.itemsize:
            raise InputError(self.source, f"size {size} bytes is not a multiple of 4: not a raw "
                                          "uint32 data order (or a truncated download, OLMo #837)")
        if size == 0:
            raise InputError(self.source, "data order is empty")
        self._len = size // ORDER_DTYPE.itemsize
        if not is_remote(self.source):
            self._mm = np.memmap(local_path(self.source), dtype=ORDER_DTYPE, mode="r")

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
        chunks = map_ordered(self._read_run, runs, self._get_pool(self.num_workers))
        values = np.concatenate(chunks)
        return values[np.searchsorted(uniq, pos)]

    def _read_run(self, run: tuple[int, int]) -> np.ndarray:
        a, b = run
        item = ORDER_DTYPE.itemsize
        data = self._bytes.read(self.source, a * item, b * item)
        return np.frombuffer(data, dtype=ORDER_DTYPE).astype(np.int64)

    def max(self, chunk: int = 1 << 24) -> int:
        """Largest instance number in the whole order, read ``chunk`` entries at a time.

        For the OLMo #538 check (:func:`check_coverage`); a remote order is downloaded in
        full (several GB for OLMo-7B), one chunk in memory at a time.
        """
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
        self._bytes.close()

    def __enter__(self) -> DataOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




def write_data_order(path: PathLike, order: Sequence[int] | np.ndarray) -> None:
    """Write a data order as OLMo stores it: raw little-endian uint32, no header, atomically."""
    o = np.asarray(order)
    if o.size and (o.min() < 0 or int(o.max()) >= 2 ** 32):
        raise InputError(path, "data-order entries must lie in [0, 2**32)")
    with atomic_write(path, "wb") as f:
        f.write(np.ascontiguousarray(o, dtype=ORDER_DTYPE).tobytes())
