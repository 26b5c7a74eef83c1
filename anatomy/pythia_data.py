"""Pythia's training data: GPT-NeoX / Megatron ``MMapIndexedDataset`` files, read and written.

Sources (read for the format, not copied):

* EleutherAI/gpt-neox ``megatron/data/indexed_dataset.py``: ``MMapIndexedDataset``,
  ``MMapIndexedDataset.Index`` (``_HDR_MAGIC``, ``writer``), ``MMapIndexedDatasetBuilder``
  (``add_item`` / ``end_document`` / ``finalize``) and the ``dtypes`` code table.
* EleutherAI/pythia ``utils/mmap_dataset.py`` (the reader Pythia ships; it strips a ``.bin`` /
  ``.idx`` suffix from the path and assumes 2049-token rows), ``utils/batch_viewer.py`` (step
  ``s`` is rows ``[s*1024, (s+1)*1024)``), ``utils/unshard_memmap.py`` and ``README.md``.
* NVIDIA/Megatron-LM ``megatron/core/datasets/indexed_dataset.py`` (``_IndexWriter``,
  ``_IndexReader``, ``DType``) and its test fixture ``assets/datasets/train/
  test_text_document.idx`` (commit 9966cd30d139), whose bytes this module's writer reproduces
  exactly (``tests/test_pythia_data.py``).

A dataset ``PREFIX`` is two files. ``PREFIX.bin`` is the tokens of every sequence, back to
back, raw little-endian, no header. ``PREFIX.idx`` is, all little-endian::

    9 bytes   magic b"MMIDIDX\\x00\\x00"
    uint64    version, always 1
    uint8     dtype code of the .bin tokens (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
              8 uint16; see below for 6 and 7)
    uint64    n, the number of sequences
    uint64    d, the number of document-index entries
    int32     sizes[n]     tokens per sequence
    int64     pointers[n]  byte offset of each sequence in the .bin
    int64     doc_idx[d]   sequence index at which each document starts; the builder starts
                           it at [0] and appends len(sizes) at every end_document()

so the header is 34 bytes and the file ``34 + 12 n + 8 d`` bytes (Megatron-LM's multimodal
variant appends ``int8 modes[n]``; such a file is read, the modes ignored). Codes 6 and 7 are
floats whose meaning differs between the sources (GPT-NeoX: 6 float32, 7 float64; older
GPT-NeoX: both float64; Megatron-LM: 6 float64, 7 float32); token files are never float, so
both are refused rather than guessed.

Pythia's pre-shuffled Pile (HF datasets ``EleutherAI/pile-standard-pythia-preshuffled`` and
``EleutherAI/pile-deduped-pythia-preshuffled``) holds one 2049-token uint16 row per training
sequence, in training order, so the sequence id is the row index and step ``s`` (batch 1024)
is rows ``[1024 s, 1024 (s+1))``. It is published as one ``document.idx`` and the ``.bin``
cut by bytes into 21 shards ``document-00000-of-00020.bin`` ... ``document-00020-of-00020.bin``;
Pythia's README merges them with ``python utils/unshard_memmap.py --input_file
.../document-00000-of-00020.bin --num_shards 21 --output_dir MERGED`` and then copies
``document.idx`` beside the merged ``document.bin``: open that as ``PythiaData("MERGED/
document")``. (The README's retraining recipe instead uses the document-level tokenized Pile,
``pile_20B_tokenizer_text_document`` in its config, the deduped one published as
``EleutherAI/pythia_deduped_pile_idxmaps`` in 83 ``pile_0.87_deduped_text_document-000NN-of-
00082.bin`` shards; :class:`IndexedDataset` reads those too, but their rows are documents,
which GPT-NeoX shuffles and packs at training time, not training sequences.)
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from anatomy.io import InputError, PathLike, atomic_path, require_file

#: First 9 bytes of every ``MMapIndexedDataset`` index (GPT-NeoX ``Index._HDR_MAGIC``).
MAGIC = b"MMIDIDX\x00\x00"
#: The only index version any source writes or reads.
VERSION = 1
#: magic, version, dtype code, number of sequences, number of document-index entries.
_HEADER = struct.Struct("<9sQBQQ")
HEADER_BYTES = _HEADER.size  # 34

#: Dtype codes shared by GPT-NeoX and Megatron-LM (integers only; see the module docstring).
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype("<u1"),
    2: np.dtype("<i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    8: np.dtype("<u2"),
}
_FLOAT_CODES = {6, 7}
#: The magic of GPT-NeoX's older, non-memory-mapped ``IndexedDataset`` (``--dataset-impl
#: lazy/cached``), recognised only to name it in the error.
_LEGACY_MAGIC = b"TNTIDX\x00\x00"

_CHUNK = 1 << 20  # sequences per block when streaming or checking the index arrays
_INT32_MAX = np.iinfo(np.int32).max


def _paths(prefix: PathLike) -> tuple[Path, Path]:
    """``(PREFIX.bin, PREFIX.idx)``; a trailing ``.bin``/``.idx`` on ``prefix`` is dropped, as
    Pythia's ``utils/mmap_dataset.py`` does."""
    s = os.fspath(prefix)
    if s.endswith((".bin", ".idx")):
        s = s[:-4]
    return Path(s + ".bin"), Path(s + ".idx")


def _code_of(dtype) -> int:
    dt = np.dtype(dtype).newbyteorder("<")
    for code, known in DTYPE_CODES.items():
        if known == dt:
            return code
    raise ValueError(f"dtype {np.dtype(dtype)} has no MMapIndexedDataset code; token files use "
                     f"one of {sorted(str(d) for d in DTYPE_CODES.values())}")


# ---------------------------------------------------------------------------------------
# writing


def _as_row(row, dtype: np.dtype, i: int) -> np.ndarray:
    a = np.asarray(row)
    if a.ndim != 1:
        raise ValueError(f"row {i}: expected a 1-D array of tokens, got shape {a.shape}")
    if a.size > _INT32_MAX:
        raise ValueError(f"row {i}: {a.size} tokens do not fit the index's int32 sizes")
    if a.dtype != dtype:
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"row {i}: tokens must be integers, got {a.dtype}")
        if a.size:
            info = np.iinfo(dtype)
            lo, hi = int(a.min()), int(a.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"row {i}: token ids {lo}..{hi} do not fit {dtype.name}")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


def write_indexed_dataset(prefix: PathLike, rows: Iterable[np.ndarray],
                          dtype=np.uint16) -> int:
    """Write ``rows`` as ``PREFIX.bin`` + ``PREFIX.idx``, one document per row; return the count.

    The index is what GPT-NeoX's ``MMapIndexedDatasetBuilder`` writes after ``add_item(row);
    end_document()`` per row: sizes, byte pointers (running sum of ``size * itemsize``) and
    ``doc_idx = [0, 1, ..., n]`` (``n + 1`` entries). Rows are streamed: only their sizes pass
    through memory, a block at a time. Both files are written under temporary names in the
    destination folder (:func:`anatomy.io.atomic_path`) and renamed only when complete, the
    ``.bin`` first and the ``.idx`` last (a previous ``.idx`` is removed just before, so a
    crash between the renames leaves no index pointing into the wrong ``.bin``); an
    exception, e.g. from the ``rows`` iterator, removes both temporaries and leaves the
    destination as it was.
    """
    dt = np.dtype(dtype).newbyteorder("<")
    code = _code_of(dt)
    bin_path, idx_path = _paths(prefix)
    n = 0
    with atomic_path(idx_path) as idx_tmp, atomic_path(bin_path) as bin_tmp:
        with open(bin_tmp, "wb", buffering=1 << 20) as fb, open(idx_tmp, "w+b") as fi:
            fi.write(bytes(HEADER_BYTES))  # placeholder until n is known
            pending: list[int] = []
            for row in rows:
                a = _as_row(row, dt, n)
                fb.write(a.data)
                pending.append(a.size)
                n += 1
                if len(pending) >= _CHUNK:
                    fi.write(np.asarray(pending, dtype="<i4").tobytes())
                    pending.clear()
            fi.write(np.asarray(pending, dtype="<i4").tobytes())
            fi.flush()
            # pointers[n], from the sizes just written (read back a block at a time)
            fd = fi.fileno()
            address = 0
            for start in range(0, n, _CHUNK):
                k = min(_CHUNK, n - start)
                raw = os.pread(fd, 4 * k, HEADER_BYTES + 4 * start)
                nbytes = np.frombuffer(raw, dtype="<i4").astype(np.int64) * dt.itemsize
                ends = np.cumsum(nbytes) + address
                fi.write((ends - nbytes).astype("<i8").tobytes())
                address = int(ends[-1])
            # doc_idx[n + 1] = 0..n
            for start in range(0, n + 1, _CHUNK):
                stop = min(start + _CHUNK, n + 1)
                fi.write(np.arange(start, stop, dtype="<i8").tobytes())
            fi.seek(0)
            fi.write(_HEADER.pack(MAGIC, VERSION, code, n, n + 1))
            fi.flush()
            os.fsync(fi.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(idx_path)
    return n


# ---------------------------------------------------------------------------------------
# reading


class IndexedDataset:
    """A ``MMapIndexedDataset`` read through read-only memory maps of both files.

    ``prefix`` is the path without ``.bin``/``.idx`` (a trailing one is dropped). Opening
    reads the 34-byte header and checks the magic, the version, the dtype code, that the
    ``.idx`` is as long as its counts say, and that every sequence's bytes
    ``[pointer, pointer + size * itemsize)`` lie inside the ``.bin`` (one pass over the index
    arrays, a block at a time; the ``.bin`` itself is never read). A bad file raises one
    :class:`anatomy.io.InputError` naming it and the problem.
    """

    def __init__(self, prefix: PathLike):
        self.bin_path, self.idx_path = _paths(prefix)
        idx = require_file(self.idx_path, "index file (.idx)")
        binp = require_file(self.bin_path, "data file (.bin)")
        idx_bytes = idx.stat().st_size
        with open(idx, "rb") as f:
            head = f.read(HEADER_BYTES)
        if head[:len(_LEGACY_MAGIC)] == _LEGACY_MAGIC:
            raise InputError(idx, "a legacy GPT-NeoX IndexedDataset index (magic TNTIDX, "
                                  "--dataset-impl lazy/cached), not an MMapIndexedDataset one")
        if len(head) >= len(MAGIC) and head[:len(MAGIC)] != MAGIC:
            raise InputError(idx, f"bad magic {head[:len(MAGIC)]!r}, expected {MAGIC!r}: not a "
                                  "Megatron/GPT-NeoX MMapIndexedDataset index")
        if len(head) < HEADER_BYTES:
            raise InputError(idx, f"truncated index: {idx_bytes} bytes, shorter than the "
                                  f"{HEADER_BYTES}-byte header")
        _, version, code, n, d = _HEADER.unpack(head)
        if version != VERSION:
            raise InputError(idx, f"index version {version}, only version {VERSION} exists")
        if code in _FLOAT_CODES:
            raise InputError(idx, f"dtype code {code} is a float type whose meaning differs "
                                  "between GPT-NeoX and Megatron-LM; token data is integer")
        if code not in DTYPE_CODES:
            raise InputError(idx, f"unknown dtype code {code} (known: {sorted(DTYPE_CODES)})")
        self._dtype = DTYPE_CODES[code]
        need = HEADER_BYTES + 12 * n + 8 * d
        if idx_bytes < need:
            raise InputError(idx, f"truncated index: {idx_bytes} bytes, but its header counts "
                                  f"{n} sequences and {d} document entries, which need {need}")
        if idx_bytes not in (need, need + n):  # + n: Megatron-LM's multimodal int8 modes
            raise InputError(idx, f"{idx_bytes - need} unexpected bytes after the index arrays "
                                  f"({n} sequences, {d} document entries need {need} bytes)")
        self._idx_map = np.memmap(idx, dtype=np.uint8, mode="r")
        self._sizes = np.frombuffer(self._idx_map, dtype="<i4", count=n, offset=HEADER_BYTES)
        self._pointers = np.frombuffer(self._idx_map, dtype="<i8", count=n,
                                       offset=HEADER_BYTES + 4 * n)
        self._doc_idx = np.frombuffer(self._idx_map, dtype="<i8", count=d,
                                      offset=HEADER_BYTES + 12 * n)
        self.bin_bytes = binp.stat().st_size
        self._check_extents(binp)
        self._bin_map = (np.memmap(binp, dtype=np.uint8, mode="r") if self.bin_bytes
                         else np.zeros(0, dtype=np.uint8))

    def _check_extents(self, binp: Path) -> None:
        size = self._dtype.itemsize
        for start in range(0, len(self._sizes), _CHUNK):
            sizes = self._sizes[start:start + _CHUNK]
            ptrs = self._pointers[start:start + _CHUNK]
            ends = ptrs + sizes.astype(np.int64) * size
            bad = (sizes < 0) | (ptrs < 0) | (ends > self.bin_bytes)
            if bad.any():
                i = int(np.argmax(bad))
                row, p, e = start + i, int(ptrs[i]), int(ends[i])
                if sizes[i] < 0 or p < 0:
                    raise InputError(self.idx_path, f"row {row} has a negative size or pointer "
                                                    f"(size {int(sizes[i])}, pointer {p})")
                raise InputError(binp, f".bin is shorter than its index says: {self.bin_bytes} "
                                       f"bytes, but row {row} needs bytes [{p}, {e}) (an "
                                       "incomplete download or unshard?)")

    # ------------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """Token dtype of the ``.bin`` (little-endian)."""
        return self._dtype

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per sequence (int32, a read-only view of the index)."""
        return self._sizes

    @property
    def pointers(self) -> np.ndarray:
        """Byte offset of each sequence in the ``.bin`` (int64, read-only view)."""
        return self._pointers

    @property
    def doc_idx(self) -> np.ndarray:
        """The index's document boundaries (int64, read-only view)."""
        return self._doc_idx

    def __len__(self) -> int:
        return len(self._sizes)

    def _row(self, i) -> int:
        n = len(self._sizes)
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"row index must be an integer, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {int(i)} out of range for {n} rows ({self.idx_path})")
        return j

    def get(self, i: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``[offset, offset + length)`` of row ``i`` (to its end when ``length`` is
        None): a read-only view into the ``.bin``, like GPT-NeoX ``MMapIndexedDataset.get``
        (which, unlike this, does not check the bounds)."""
        j = self._row(i)
        size = int(self._sizes[j])
        if not 0 <= offset <= size:
            raise IndexError(f"offset {offset} outside row {j} of {size} tokens")
        if length is None:
            length = size - offset
        if not 0 <= length <= size - offset:
            raise IndexError(f"length {length} at offset {offset} runs past row {j} of "
                             f"{size} tokens")
        start = int(self._pointers[j]) + offset * self._dtype.itemsize
        return np.frombuffer(self._bin_map, dtype=self._dtype, count=length, offset=start)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get(i)

    def rows(self, ids: np.ndarray, length: int | None = None) -> np.ndarray:
        """A new ``(len(ids), length)`` array of the first ``length`` tokens of each listed
        row; with ``length`` None every listed row must have the same size, which is used."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        n = len(self._sizes)
        if ids.size and (ids.min() < -n or ids.max() >= n):
            bad = ids[(ids < -n) | (ids >= n)][0]
            raise IndexError(f"row {int(bad)} out of range for {n} rows ({self.idx_path})")
        ids = np.where(ids < 0, ids + n, ids).astype(np.int64)
        sizes = self._sizes[ids]
        if length is None:
            if ids.size == 0:
                raise ValueError("length is required when no ids are given")
            if (sizes != sizes[0]).any():
                j = int(np.argmax(sizes != sizes[0]))
                raise ValueError(f"rows differ in size (row {int(ids[0])}: {int(sizes[0])} "
                                 f"tokens, row {int(ids[j])}: {int(sizes[j])}); pass length")
            length = int(sizes[0])
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if (sizes < length).any():
            j = int(np.argmax(sizes < length))
            raise ValueError(f"row {int(ids[j])} has {int(sizes[j])} tokens, fewer than "
                             f"length={length}")
        out = np.empty((ids.size, length), dtype=self._dtype)
        for k, j in enumerate(ids.tolist()):
            out[k] = self.get(j, 0, length)
        return out


class PythiaData:
    """Pythia's pre-shuffled training data in training order: row ``i`` is sequence ``i``.

    Every row must hold ``seq_len`` tokens (2049: 2048 inputs plus one for the shifted
    labels); step ``s`` is rows ``[s * batch_size, (s + 1) * batch_size)``, as in Pythia's
    ``utils/batch_viewer.py`` (whose ``--end_iteration`` is inclusive; :meth:`rows_for_steps`
    is half-open).
    """

    def __init__(self, prefix: PathLike, batch_size: int = 1024, seq_len: int = 2049):
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, "
                             f"{seq_len}")
        self.data = IndexedDataset(prefix)
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        sizes = self.data.sizes
        for start in range(0, len(sizes), _CHUNK):
            bad = sizes[start:start + _CHUNK] != seq_len
            if bad.any():
                i = start + int(np.argmax(bad))
                raise InputError(self.data.idx_path,
                                 f"row {i} has {int(sizes[i])} tokens, expected seq_len="
                                 f"{seq_len}: not Pythia's pre-shuffled one-row-per-sequence "
                                 "data (the unshuffled per-document files are read with "
                                 "IndexedDataset)")

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_steps(self) -> int:
        """Steps the rows cover, a last partial batch included."""
        return -(-len(self.data) // self.batch_size)

    def rows_for_steps(self, start_step: int, end_step: int) -> np.ndarray:
        """Row (= sequence) ids of steps ``[start_step, end_step)``, clipped to the rows held."""
        if start_step < 0 or end_step < start_step:
            raise ValueError(f"need 0 <= start_step <= end_step, got {start_step}, {end_step}")
        n = len(self.data)
        lo = min(start_step * self.batch_size, n)
        hi = min(end_step * self.batch_size, n)
        return np.arange(lo, hi, dtype=np.int64)

    def sequence(self, i: int) -> np.ndarray:
        """The ``seq_len`` tokens of training sequence ``i`` (a read-only view)."""
        return self.data.get(i)

    def batch(self, step: int) -> np.ndarray:
        """The ``(batch_size, seq_len)`` tokens of one step (fewer rows for a partial last)."""
        return self.data.rows(self.rows_for_steps(step, step + 1), self.seq_len)
