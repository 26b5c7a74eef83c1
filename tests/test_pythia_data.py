"""Pythia / GPT-NeoX ``MMapIndexedDataset`` files: the writer's bytes, the reader, the errors.

The checks of the written bytes use a parser written here with ``struct`` and plain file
reads, independent of :mod:`anatomy.pythia_data`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from anatomy.io import InputError
from anatomy.pythia_data import IndexedDataset, PythiaData, write_indexed_dataset

# NVIDIA/Megatron-LM assets/datasets/train/test_text_document.idx at commit
# 9966cd30d139a9660a0dc377f53c4fd0ce90c6b3: 1000 int32 sequences of 5 tokens, 1001 document
# entries, 20042 bytes. Its index depends only on the sizes, so ours must match it exactly.
MEGATRON_FIXTURE_SHA256 = "900a0d4d8ab83b113db5618f0ad99b227d8e04281387ca1b4b8a83c2d661925f"
MEGATRON_FIXTURE_BYTES = 20042


def _random_rows(rng: np.random.Generator, n: int, lo: int = 0, hi: int = 40) -> list:
    return [rng.integers(0, 50_277, size=int(rng.integers(lo, hi)), dtype=np.uint16)
            for _ in range(n)]


def _parse(prefix: Path) -> dict:
    """An independent reading of PREFIX.idx: header fields and the three arrays."""
    with open(str(prefix) + ".idx", "rb") as f:
        magic = f.read(9)
        (version,) = struct.unpack("<Q", f.read(8))
        (code,) = struct.unpack("<B", f.read(1))
        n, d = struct.unpack("<QQ", f.read(16))
        sizes = list(struct.unpack(f"<{n}i", f.read(4 * n)))
        pointers = list(struct.unpack(f"<{n}q", f.read(8 * n)))
        doc_idx = list(struct.unpack(f"<{d}q", f.read(8 * d)))
        rest = f.read()
    return dict(magic=magic, version=version, code=code, n=n, d=d, sizes=sizes,
                pointers=pointers, doc_idx=doc_idx, rest=rest)


def _read_row(prefix: Path, pointer: int, size: int) -> list[int]:
    with open(str(prefix) + ".bin", "rb") as f:
        f.seek(pointer)
        return list(struct.unpack(f"<{size}H", f.read(2 * size)))


def test_round_trip_random_uint16(tmp_path):
    rng = np.random.default_rng(0)
    rows = _random_rows(rng, 300)
    rows[7] = np.zeros(0, dtype=np.uint16)  # an empty sequence is legal
    prefix = tmp_path / "doc"
    assert write_indexed_dataset(prefix, iter(rows)) == 300
    ds = IndexedDataset(prefix)
    assert len(ds) == 300 and ds.dtype == np.uint16
    assert ds.sizes.tolist() == [len(r) for r in rows]
    assert ds.doc_idx.tolist() == list(range(301))
    for i, r in enumerate(rows):
        assert np.array_equal(ds[i], r) and np.array_equal(ds.get(i), r)
    assert np.array_equal(ds[-1], rows[-1])
    big = next(i for i, r in enumerate(rows) if len(r) >= 10)
    v = ds.get(big, offset=3, length=5)
    assert np.array_equal(v, rows[big][3:8]) and not v.flags.writeable
    ids = np.array([i for i, r in enumerate(rows) if len(r) >= 6][:5])
    assert np.array_equal(ds.rows(ids, 6), np.stack([rows[i][:6] for i in ids]))
    with pytest.raises(ValueError, match="differ in size"):
        ds.rows(np.arange(10))
    with pytest.raises(IndexError):
        ds.get(big, offset=2, length=len(rows[big]))
    with pytest.raises(IndexError):
        ds[300]
    # a .bin / .idx suffix on the prefix is dropped, as Pythia's mmap_dataset.py does
    assert len(IndexedDataset(str(prefix) + ".idx")) == 300


def test_independent_parser_agrees(tmp_path):
    rng = np.random.default_rng(1)
    rows = _random_rows(rng, 50, lo=1)
    prefix = tmp_path / "doc"
    write_indexed_dataset(prefix, rows)
    p = _parse(prefix)
    assert (p["magic"], p["version"], p["code"]) == (b"MMIDIDX\x00\x00", 1, 8)
    assert p["n"] == 50 and p["d"] == 51 and p["rest"] == b""
    assert p["sizes"] == [len(r) for r in rows]
    assert p["pointers"] == [2 * sum(len(r) for r in rows[:i]) for i in range(50)]
    assert p["doc_idx"] == list(range(51))
    assert os.path.getsize(str(prefix) + ".bin") == 2 * sum(len(r) for r in rows)
    ds = IndexedDataset(prefix)
    assert ds.sizes.tolist() == p["sizes"] and ds.pointers.tolist() == p["pointers"]
    for i in (0, 1, 17, 49):
        tokens = _read_row(prefix, p["pointers"][i], p["sizes"][i])
        assert tokens == rows[i].tolist() == ds[i].tolist()


def test_exact_header_bytes(tmp_path):
    prefix = tmp_path / "doc"
    write_indexed_dataset(prefix, [np.arange(3, dtype=np.uint16), np.arange(2, dtype=np.uint16)])
    raw = Path(str(prefix) + ".idx").read_bytes()
    assert raw[:34] == (b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + b"\x08"
                        + (2).to_bytes(8, "little") + (3).to_bytes(8, "little"))
    assert raw[34:] == (struct.pack("<2i", 3, 2) + struct.pack("<2q", 0, 6)
                        + struct.pack("<3q", 0, 1, 2))
    assert Path(str(prefix) + ".bin").read_bytes() == struct.pack("<5H", 0, 1, 2, 0, 1)


def test_index_matches_megatron_fixture(tmp_path):
    prefix = tmp_path / "test_text_document"
    rows = (np.arange(5, dtype=np.int32) + i for i in range(1000))
    assert write_indexed_dataset(prefix, rows, dtype=np.int32) == 1000
    raw = Path(str(prefix) + ".idx").read_bytes()
    assert len(raw) == MEGATRON_FIXTURE_BYTES
    assert hashlib.sha256(raw).hexdigest() == MEGATRON_FIXTURE_SHA256
    assert IndexedDataset(prefix).dtype == np.int32


def test_step_to_row_mapping(tmp_path):
    rng = np.random.default_rng(2)
    rows = [rng.integers(0, 50_000, size=7, dtype=np.uint16) for _ in range(10)]
    prefix = tmp_path / "document"
    write_indexed_dataset(prefix, rows)
    pd = PythiaData(prefix, batch_size=4, seq_len=7)
    assert len(pd) == 10 and pd.num_steps == 3
    assert pd.rows_for_steps(0, 1).tolist() == [0, 1, 2, 3]
    assert pd.rows_for_steps(1, 3).tolist() == list(range(4, 10))  # clipped to 10 rows
    assert pd.rows_for_steps(5, 9).tolist() == []
    assert pd.rows_for_steps(2, 2).tolist() == []
    assert np.array_equal(pd.batch(1), np.stack(rows[4:8]))
    assert pd.batch(2).shape == (2, 7)
    assert np.array_equal(pd.sequence(9), rows[9])
    with pytest.raises(ValueError):
        pd.rows_for_steps(3, 1)
    # Pythia's default: step s is rows [1024 s, 1024 (s + 1))
    assert PythiaData(prefix, seq_len=7).rows_for_steps(0, 1).tolist() == list(range(10))


def test_pythia_rejects_wrong_row_length(tmp_path):
    rows = [np.zeros(7, dtype=np.uint16)] * 3 + [np.zeros(6, dtype=np.uint16)]
    prefix = tmp_path / "document"
    write_indexed_dataset(prefix, rows)
    with pytest.raises(InputError, match=r"row 3 has 6 tokens, expected seq_len=7") as e:
        PythiaData(prefix, seq_len=7)
    assert e.value.path == str(prefix) + ".idx"


@pytest.fixture
def small(tmp_path) -> Path:
    prefix = tmp_path / "doc"
    write_indexed_dataset(prefix, _random_rows(np.random.default_rng(3), 20, lo=1))
    return prefix


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_bad_magic(small):
    idx = str(small) + ".idx"
    _patch(idx, 0, b"X")
    with pytest.raises(InputError, match="bad magic") as e:
        IndexedDataset(small)
    assert e.value.path == idx and idx in str(e.value)


def test_bad_version_and_dtype_code(small):
    idx = str(small) + ".idx"
    _patch(idx, 9, struct.pack("<Q", 2))
    with pytest.raises(InputError, match="version 2"):
        IndexedDataset(small)
    _patch(idx, 9, struct.pack("<Q", 1))
    _patch(idx, 17, b"\x06")
    with pytest.raises(InputError, match="dtype code 6"):
        IndexedDataset(small)
    _patch(idx, 17, b"\x09")
    with pytest.raises(InputError, match="unknown dtype code 9"):
        IndexedDataset(small)


@pytest.mark.parametrize("keep", [10, 34, -8])
def test_truncated_index(small, keep):
    idx = str(small) + ".idx"
    raw = Path(idx).read_bytes()
    Path(idx).write_bytes(raw[:keep])
    with pytest.raises(InputError, match="truncated index") as e:
        IndexedDataset(small)
    assert e.value.path == idx


def test_short_bin(small):
    binp = str(small) + ".bin"
    os.truncate(binp, os.path.getsize(binp) - 2)
    with pytest.raises(InputError, match=r"\.bin is shorter than its index says") as e:
        IndexedDataset(small)
    assert e.value.path == binp and "row 19" in str(e.value)


def test_missing_bin(small):
    os.unlink(str(small) + ".bin")
    with pytest.raises(InputError, match="not found") as e:
        IndexedDataset(small)
    assert e.value.path == str(small) + ".bin"


def test_interrupted_write_leaves_nothing(tmp_path):
    def rows():
        for i in range(5):
            yield np.full(4, i, dtype=np.uint16)
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        write_indexed_dataset(tmp_path / "doc", rows())
    assert os.listdir(tmp_path) == []
    # an out-of-range token is refused the same way
    with pytest.raises(ValueError, match="do not fit uint16"):
        write_indexed_dataset(tmp_path / "doc", [np.array([1, 70_000])])
    assert os.listdir(tmp_path) == []


def test_interrupted_overwrite_keeps_previous(small):
    before = {s: Path(str(small) + s).read_bytes() for s in (".bin", ".idx")}

    def rows():
        yield np.arange(3, dtype=np.uint16)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_indexed_dataset(small, rows())
    assert sorted(os.listdir(small.parent)) == ["doc.bin", "doc.idx"]
    assert {s: Path(str(small) + s).read_bytes() for s in (".bin", ".idx")} == before
    assert len(IndexedDataset(small)) == 20
