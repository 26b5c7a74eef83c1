"""Candidate pools and text sources for dataset selection (pipeline D).

DsDm's candidate set is a Hugging Face dataset of fixed-length token rows
(``loganengstrom/dsdm-candidate-c4``: 891 parquet shards, column ``input_ids``, 1024 Pythia
tokens per row, 216,948,746 rows; score index i = global row i with the shards in order), used
as ``ds.select(indices)``. :func:`get_candidate_dataset` returns such a dataset, memory-mapped
Arrow, from a hub name, a local ``save_to_disk`` folder, local parquet shards, or OLMo-format
token files (an OLMo config or a miniworld: row i = stored instance i). :class:`CandidatePool`
adds what the selectors need: decoded texts in row ranges, token rows by index, an identity
for fingerprints and, on the miniworld, each row's category. A JSONL pool (field ``text``) is a
pool of texts, tokenised one row per text when a model needs tokens.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from anatomy import io
from anatomy.io import InputError, PathLike

ROWS_PER_BATCH = 8192  # Arrow record batches written for token-file pools
TEXT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json")


@runtime_checkable
class TextSource(Protocol):
    """What the text-based selectors (DSIR, the classifier, SemDeDup) read: ``len(src)``
    candidates, decoded in row ranges, so a 200M-row pool is never held as one list."""

    def __len__(self) -> int: ...

    def texts(self, start: int, stop: int) -> list[str]: ...


class ListTexts:
    """A :class:`TextSource` over texts in memory (tests, JSONL pools and targets)."""

    def __init__(self, texts: Sequence[str]):
        self._texts = list(texts)

    def __len__(self) -> int:
        return len(self._texts)

    def texts(self, start: int, stop: int) -> list[str]:
        return self._texts[start:stop]


# ---------------------------------------------------------------------------------------
# candidate datasets of token rows


def _olmo_config_path(p: Path) -> Path | None:
    if p.is_dir() and (p / "config.yaml").is_file() and (p / "truth.json").is_file():
        return p / "config.yaml"  # a miniworld
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        return p
    return None


def _token_files_dataset(config_path: Path, cache_dir: Path, column: str):
    """The instances of an OLMo config's token files, in storage order, as an Arrow file
    (written once per token-file identity, atomically), memory-mapped."""
    import datasets
    import pyarrow as pa

    from anatomy.execution import identity
    from anatomy.olmo_config import load_olmo_config
    from anatomy.token_files import TokenFiles

    cfg = load_olmo_config(config_path)
    ident = json.dumps(identity(cfg.paths), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{ident}:{cfg.seq_len}:{cfg.dtype}:{column}".encode()
                            ).hexdigest()[:16]
    path = cache_dir / f"{cfg.model_name}-{digest}.arrow"
    if not path.is_file():
        files = TokenFiles(cfg.paths, cfg.seq_len, cfg.dtype)
        n = len(files)
        vtype = pa.int32() if np.dtype(files.dtype).itemsize <= 2 else pa.int64()
        schema = pa.schema([(column, pa.list_(vtype))])
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(path) as tmp, pa.OSFile(tmp, "wb") as sink, \
                pa.ipc.new_stream(sink, schema) as writer:
            for a in range(0, n, ROWS_PER_BATCH):
                block = files.block(a, min(n, a + ROWS_PER_BATCH)).astype(
                    np.int32 if vtype == pa.int32() else np.int64)
                flat = pa.array(block.ravel(), type=vtype)
                offsets = pa.array(np.arange(0, block.size + 1, cfg.seq_len, dtype=np.int32))
                arr = pa.ListArray.from_arrays(offsets, flat)
                writer.write_batch(pa.record_batch([arr], schema=schema))
        files.close()
    return datasets.Dataset.from_file(str(path))


def get_candidate_dataset(path_or_name: PathLike, *, split: str = "train",
                          column: str = "input_ids", cache_dir: PathLike | None = None,
                          revision: str | None = None):
    """A ``datasets.Dataset`` of token rows (column ``input_ids``), memory-mapped Arrow.

    ``path_or_name``: a miniworld folder or an OLMo config YAML (its token files, row i =
    stored instance i, cached as one Arrow file under ``cache_dir``, default
    ``data/selections/candidates``); a ``save_to_disk`` folder; a folder or glob of parquet
    shards (sorted by name, so row i is the i-th row of the shards in order, as DsDm's score
    files index them); or a hub dataset name (e.g. ``loganengstrom/dsdm-candidate-c4``). So
    ``get_candidate_dataset(...).select(indices)`` works as in DsDm's README.
    """
    import datasets

    p = Path(path_or_name).expanduser()
    cache = Path(cache_dir) if cache_dir is not None else Path("data/selections/candidates")
    cfg = _olmo_config_path(p)
    if cfg is not None:
        ds = _token_files_dataset(cfg, cache, column)
    elif p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise InputError(p, f"no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
    elif p.is_dir() or any(c in str(path_or_name) for c in "*?["):
        pattern = str(p / "**" / "*.parquet") if p.is_dir() else str(path_or_name)
        files = sorted(glob.glob(pattern, recursive=True))
        if not files:
            raise InputError(p, "no parquet shards, save_to_disk dataset or OLMo config here")
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split,
                                   cache_dir=str(cache / "hf"))
    elif p.exists():
        if p.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files={split: [str(p)]}, split=split,
                                       cache_dir=str(cache / "hf"))
        else:
            raise InputError(p, "not a candidate dataset (an OLMo config, a miniworld, a "
                                "save_to_disk folder, parquet shards or a hub name)")
    else:
        from anatomy.lm import _offline

        if _offline() or "/" not in str(path_or_name):
            raise InputError(p, "no such file or folder (and hub datasets are not reachable "
                                "offline)")
        try:
            ds = datasets.load_dataset(str(path_or_name), split=split, revision=revision)
        except Exception as e:  # hub errors come in many types; one line for the user
            raise InputError(None, f"cannot load the dataset {path_or_name}: "
                                   f"{type(e).__name__}: {e}") from None
    if column not in ds.column_names:
        raise InputError(p, f"the dataset has no column {column!r} (columns: "
                            f"{', '.join(ds.column_names)})")
    return ds


# ---------------------------------------------------------------------------------------
# pools as the selectors see them


def is_text_file(path: PathLike) -> bool:
    return str(path).endswith(TEXT_SUFFIXES) or str(path).endswith(".parquet") and \
        "text" in _parquet_columns(path)


def _parquet_columns(path: PathLike) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(str(path)).names)
    except Exception:
        return []


def read_text_file(path: PathLike, text_key: str = "text", keep_empty: bool = False
                   ) -> list[str]:
    """Texts of a JSONL (``.gz``/``.zst``) or parquet file, field ``text_key``, one per record.

    An empty text (``""``, only whitespace, or null) is data, not a broken file: with
    ``keep_empty`` (a pool: a selection index must mean one record) it stays in place as
    ``""``, to be counted and never selected; without it (a target) it is left out. The
    caller counts them (:func:`count_empty`). A value that is not text is an error naming
    the line."""
    p = io.require_file(path, "text file")
    if str(p).endswith(".parquet"):
        import pyarrow.parquet as pq

        if text_key not in _parquet_columns(p):
            raise InputError(p, f"no column {text_key!r}")
        raw = pq.read_table(p, columns=[text_key])[text_key].to_pylist()
        bad = next((i for i, t in enumerate(raw) if t is not None and not isinstance(t, str)),
                   None)
        if bad is not None:
            raise InputError(p, f"row {bad}: field {text_key!r} is not text")
        texts = [t or "" for t in raw]
    else:
        texts = []
        for line, r in io.iter_jsonl_numbered(p, required=(text_key,)):
            t = r[text_key]
            if t is not None and not isinstance(t, str):
                raise InputError(p, f"field {text_key!r} is not text", line)
            texts.append(t or "")
    if not texts:
        raise InputError(p, "no records")
    texts = [t if t.strip() else "" for t in texts]
    if not keep_empty:
        texts = [t for t in texts if t]
        if not texts:
            raise InputError(p, f"every {text_key!r} is empty")
    return texts


def count_empty(texts: Sequence[str]) -> int:
    """Records of a text pool read with ``keep_empty`` that hold no text."""
    return sum(1 for t in texts if not t)


PACKED_SEQ_LEN = 128  # a text pool's training rows when no seq_len is given


class CandidatePool:
    """A candidate pool: ``len(pool)`` rows, texts in ranges, token rows by index.

    Built by :func:`open_pool`. ``rows`` limits the pool to its first rows (as the MATES fork
    of DsDm takes the first 100 of the 891 C4 shards and slices the score files to match).
    """

    def __init__(self, source: str, *, dataset=None, texts: list[str] | None = None,
                 tokenizer=None, tokenizer_source: str | None = None, seq_len: int | None = None,
                 column: str = "input_ids", rows: int | None = None, world: Path | None = None,
                 identity: Any = None):
        if (dataset is None) == (texts is None):
            raise ValueError("a pool is a token dataset or a list of texts")
        self.source, self.dataset, self._texts = source, dataset, texts
        self.tokenizer, self.tokenizer_source = tokenizer, tokenizer_source
        self.column, self.world, self._identity = column, world, identity
        total = len(dataset) if dataset is not None else len(texts)
        if rows is not None and not 0 < rows <= total:
            raise InputError(source, f"--pool_rows {rows}: the pool has {total} rows")
        self.n = total if rows is None else rows
        self.total_rows = total
        if seq_len is None and dataset is not None and self.n:
            seq_len = len(dataset[0][column])
        self.seq_len = seq_len

    def __len__(self) -> int:
        return self.n

    @property
    def is_text(self) -> bool:
        return self._texts is not None

    @cached_property
    def empty_rows(self) -> np.ndarray:
        """Rows (of the first ``len(self)``) that hold no text: a text pool's empty records,
        counted and never selected; a token pool has none."""
        if self._texts is None:
            return np.zeros(0, np.int64)
        return np.array([i for i in range(self.n) if not self._texts[i]], dtype=np.int64)

    def selectable(self) -> np.ndarray:
        """Every row a selection may take (all but :attr:`empty_rows`), ascending."""
        keep = np.ones(self.n, bool)
        keep[self.empty_rows] = False
        return np.flatnonzero(keep)

    def identity(self) -> dict[str, Any]:
        """What a selection depends on: the source's identity, the rows used, the tokenizer."""
        return {"source": self._identity, "rows": self.n, "total_rows": self.total_rows,
                "tokenizer": self.tokenizer_source, "seq_len": self.seq_len}

    def lm_ids(self) -> tuple[int, int, int]:
        """``(vocab size, eos id, pad id)`` of the pool's tokenizer, for the models trained on
        it (DsDm's proxies, the evaluation models); pad falls back to eos, eos to 0."""
        tok = self.tokenizer
        if tok is None:
            raise InputError(self.source, "training on the pool needs its tokenizer")
        eos = tok.eos_token_id if tok.eos_token_id is not None else 0
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        return len(tok), eos, pad

    def texts(self, start: int, stop: int) -> list[str]:
        start, stop = max(0, start), min(self.n, stop)
        if self._texts is not None:
            return self._texts[start:stop]
        if self.tokenizer is None:
            raise InputError(self.source, "decoding token rows needs a tokenizer (--tokenizer)")
        rows = self.dataset[start:stop][self.column]
        return self.tokenizer.batch_decode(rows)

    def token_rows(self, indices: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Token ids of the given rows (int64 arrays; a text pool's texts tokenised, cut to
        ``seq_len``)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise InputError(self.source, f"row index out of range [0, {self.n})")
        if self._texts is not None:
            if self.tokenizer is None:
                raise InputError(self.source, "tokenising a text pool needs a tokenizer")
            enc = self.tokenizer([self._texts[i] for i in idx], add_special_tokens=False,
                                 truncation=self.seq_len is not None,
                                 max_length=self.seq_len)["input_ids"]
            return [np.asarray(e, dtype=np.int64) for e in enc]
        rows = self.dataset.select(idx)[self.column] if len(idx) else []
        return [np.asarray(r, dtype=np.int64) for r in rows]

    def token_matrix(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Fixed-length ``seq_len`` int64 rows to train on: a token pool's rows
        ``(len(indices), seq_len)``; a text pool's records tokenised whole, each followed by
        EOS, concatenated in the order given and cut into ``seq_len`` rows, the last padded
        (DsDm's candidate pool is packed the same way; a record's text may span rows)."""
        if self._texts is None:
            rows = self.token_rows(indices)
            if not rows:
                return np.zeros((0, self.seq_len or 0), np.int64)
            return np.stack(rows)
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            raise InputError(self.source, f"row index out of range [0, {self.n})")
        _, eos, pad = self.lm_ids()
        L = self.seq_len or PACKED_SEQ_LEN
        texts = [self._texts[i] for i in idx]
        enc = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        stream = [t for e in enc if e for t in (*e, eos)]
        if not stream:
            return np.zeros((0, L), np.int64)
        k = -(-len(stream) // L)
        out = np.full(k * L, pad, np.int64)
        out[: len(stream)] = stream
        return out.reshape(k, L)

    @cached_property
    def categories(self) -> np.ndarray | None:
        """On a miniworld pool: each row's category index (the most common category of its
        tokens, from the world's truth), else None."""
        if self.world is None:
            return None
        t = io.read_json(self.world / "truth.json")
        L = t["seq_len"]
        parts = []
        for p in t["category_files"]:
            a = np.fromfile(self.world / p, dtype=np.uint8)
            parts.append(a[: len(a) // L * L].reshape(-1, L))
        cats = np.concatenate(parts)[: self.n]
        k = len(t["categories"])
        counts = np.stack([(cats == c).sum(1) for c in range(k)], 1)
        return counts.argmax(1).astype(np.int64)

    @cached_property
    def category_names(self) -> list[str] | None:
        if self.world is None:
            return None
        return list(io.read_json(self.world / "truth.json")["categories"])

    def category_shares(self, indices: np.ndarray | None = None) -> dict[str, float] | None:
        """The share of each category among ``indices`` (all rows when None), on a world."""
        cats = self.categories
        if cats is None:
            return None
        c = cats if indices is None else cats[np.asarray(indices, dtype=np.int64)]
        names = self.category_names or []
        counts = np.bincount(c, minlength=len(names))
        return {n: round(float(counts[i]) / max(1, len(c)), 4) for i, n in enumerate(names)}


def open_pool(spec: PathLike, *, tokenizer: str | None = None, text_key: str = "text",
              rows: int | None = None, cache_dir: PathLike | None = None,
              column: str = "input_ids", seq_len: int | None = None) -> CandidatePool:
    """The pool a user names: a text file (JSONL/parquet with ``text_key``) or a candidate
    dataset (see :func:`get_candidate_dataset`). The tokenizer defaults to the world's or
    the OLMo config's."""
    from anatomy.execution import identity
    from anatomy.lm import load_tokenizer

    p = Path(spec).expanduser()
    world = p if (p.is_dir() and (p / "truth.json").is_file()) else None
    tok_src = tokenizer
    if tok_src is None:
        cfg = _olmo_config_path(p)
        if world is not None:
            tok_src = str(world / "tokenizer")
        elif cfg is not None:
            from anatomy.olmo_config import load_olmo_config

            tok_src = load_olmo_config(cfg).tokenizer
    tok = load_tokenizer(tok_src) if tok_src is not None else None
    if p.is_file() and is_text_file(p):
        texts = read_text_file(p, text_key, keep_empty=True)
        return CandidatePool(str(p), texts=texts, tokenizer=tok, tokenizer_source=tok_src,
                             seq_len=seq_len, rows=rows, identity=identity(p))
    ds = get_candidate_dataset(spec, column=column, cache_dir=cache_dir)
    ident: Any
    if _olmo_config_path(p) is not None:
        from anatomy.olmo_config import load_olmo_config

        ident = identity(load_olmo_config(_olmo_config_path(p)).paths)
    elif p.exists():
        ident = identity(p)
    else:
        ident = {"hub": str(spec), "fingerprint": getattr(ds, "_fingerprint", None)}
    return CandidatePool(str(spec), dataset=ds, tokenizer=tok, tokenizer_source=tok_src,
                         column=column, rows=rows, world=world, identity=ident)


def world_of(spec: PathLike) -> Path | None:
    p = Path(os.fspath(spec)).expanduser()
    return p if (p / "truth.json").is_file() else None
