"""Per-sample feature tables: one row per ``sequence_id``, parquet or JSONL by the file suffix.

Every pipeline-C script writes one of these (EleutherAI's semantic-memorization keeps its
features as parquet columns with these names, ``usvsnsp/semantic-filters``). Parquet is
written with pyarrow, no pandas index and a fixed row group size, so a rerun gives the same
bytes; JSONL through :func:`anatomy.io.write_jsonl`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from anatomy import io
from anatomy.io import InputError, PathLike

ID = "sequence_id"
SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


def table_format(path: PathLike) -> str:
    name = str(path)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return "jsonl"
    raise InputError(path, "a feature table is .parquet or .jsonl[.gz]: cannot tell the format "
                           "from this name")


def _py(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def write_table(path: PathLike, columns: Mapping[str, np.ndarray | list], key: str = ID) -> int:
    """Atomically write columns (``key`` first) as parquet or JSONL; returns rows."""
    if key not in columns:
        raise ValueError(f"a feature table needs a {key!r} column")
    names = [key] + [k for k in columns if k != key]
    n = len(columns[key])
    for k in names:
        if len(columns[k]) != n:
            raise ValueError(f"column {k!r} has {len(columns[k])} rows, {key} has {n}")
    if table_format(path) == "jsonl":
        cols = {k: columns[k] for k in names}
        return io.write_jsonl(path, ({k: _py(cols[k][i]) for k in names} for i in range(n)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = []
    for k in names:
        v = columns[k]
        if isinstance(v, np.ndarray) and v.ndim == 2:  # e.g. token windows: list<int> column
            v = list(v)
        arrays.append(pa.array(v))
    table = pa.table(dict(zip(names, arrays, strict=True)))
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=1 << 16, compression="zstd")
    return n


def read_table(path: PathLike, columns: list[str] | None = None):
    """A feature table as a pandas DataFrame (one clear error for a missing or bad file)."""
    import pandas as pd

    p = io.require_file(path, "feature table")
    if table_format(p) == "jsonl":
        df = pd.DataFrame(io.read_jsonl(p))
        if columns is not None:
            missing = [c for c in columns if c not in df.columns]
            if missing:
                raise InputError(p, f"no column(s) {', '.join(missing)}")
            df = df[columns]
    else:
        import pyarrow.parquet as pq

        try:
            df = pq.read_table(p, columns=columns).to_pandas()
        except Exception as e:  # pyarrow's errors name neither file nor fix
            raise InputError(p, f"cannot read as parquet: {e}") from None
    if ID not in df.columns:
        raise InputError(p, f"no {ID!r} column")
    return df


def sequence_ids_from_file(path: PathLike) -> np.ndarray:
    """Sample ids from a ``.npy`` of integers or a table/JSONL with ``sequence_id``."""
    p = io.require_file(path, "sequence id file")
    if str(p).endswith(".npy"):
        a = io.load_npy(p)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise InputError(p, f"expected a 1-D integer array, got {a.dtype} {a.shape}")
        ids = a.astype(np.int64)
    else:
        ids = read_table(p, [ID])[ID].to_numpy(np.int64)
    if len(ids) == 0:
        raise InputError(p, "no sequence ids")
    if (ids < 0).any():
        raise InputError(p, f"negative sequence id {int(ids[ids < 0][0])}")
    u, c = np.unique(ids, return_counts=True)
    if (c > 1).any():
        raise InputError(p, f"{int((c > 1).sum())} sequence ids listed twice, e.g. "
                            f"{int(u[c > 1][0])}")
    return ids


def out_path(path: PathLike) -> Path:
    table_format(path)
    return Path(path)
