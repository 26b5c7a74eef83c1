"""Join every per-sample feature table into one, out of core with DuckDB (pipeline C).

EleutherAI's semantic-memorization builds its combined table (``usvsnsp/semantic-filters``)
by running every filter over one PySpark DataFrame; here each filter script writes its own
table keyed by ``sequence_id`` (:mod:`anatomy.memorization.table`) and this module joins
them. DuckDB does the work in a scratch database beside the output, with a memory limit
and a spill folder, so tables larger than memory join.

Rules:

* The first input defines the sample set. Every other input holds exactly those ids:
  missing ids, extra ids and an id listed twice in one file are each an
  :class:`~anatomy.io.InputError` naming the file, the count and the first ids (smallest
  first). Nothing is dropped silently and no join fans out. ``allow_extra=True`` lets the
  other inputs hold more ids (a corpus-wide score table joined to a sample); those rows are
  left out and counted in the summary.
* A non-key column may come from one input only: the same name in two files (compared
  without case, as DuckDB does) is an error naming both, even when the values agree.
* Checkpoints: a table with a ``checkpoint`` column (memorization scores at several
  revisions) is keyed by ``(sequence_id, checkpoint)``. When any input has one, the output
  has one row per ``(sequence_id, checkpoint)`` pair of the first such input, and the
  checkpoint-free tables are repeated over the checkpoints. Every checkpointed input must
  hold the same pairs (checked both ways, like the ids) and must not list a pair twice.
* Output rows are sorted by ``sequence_id`` (then ``checkpoint``); columns are the keys,
  then each input's columns in input order. ``sequence_id`` is written as BIGINT, an
  integer ``checkpoint`` too. Parquet comes from DuckDB's ``COPY`` (zstd, fixed row group
  size); JSONL (``.jsonl[.gz|.zst]``) is first sorted into a scratch parquet, then streamed
  from it in Arrow batches through :func:`anatomy.io.write_jsonl`. Both are atomic,
  byte-identical on a rerun whatever the thread count or memory limit (checked on 6M rows
  spilling at 400MB vs 2GB, 1 vs 2 threads), and nothing is written when a check fails.
  Scratch folders (``.OUTPUT.duckdb.HOST.PID.*``) are removed at the end, and a killed
  run's by the next run on the same host.
* The summary (JSON, atomic) gives the rows, every column's type and source, each input's
  rows and columns, and per numeric or boolean column the count of finite values, nulls,
  non-finite floats (NaN, +-inf) and the mean, min and max of the finite values (booleans
  as 0/1, so the mean is the share true). It is computed from the written, sorted file on
  one thread, so its float sums, and so its bytes, depend on neither threads nor spilling.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatomy import io
from anatomy.io import InputError, PathLike
from anatomy.memorization.table import ID, table_format

CHECKPOINT = "checkpoint"
ROW_GROUP_SIZE = 1 << 16
JSONL_BATCH = 1 << 14
SHOW = 5  # ids named in an error message

_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT"}
_FLOAT = {"FLOAT", "DOUBLE"}
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
# types JSON has no value for: written as their text in a JSONL output
_AS_TEXT = re.compile(r"^(DATE|TIME|INTERVAL|UUID|BLOB|BIT)")  # TIME covers TIMESTAMP...


@dataclass
class _Input:
    path: Path
    shown: str  # the path as the caller gave it, for messages and the summary
    fmt: str
    rel: str  # the relation's name in the scratch database
    types: dict[str, str] = field(default_factory=dict)  # every column, in file order
    rows: int = 0
    extra: int = 0  # rows left out with allow_extra

    @property
    def checkpointed(self) -> bool:
        return CHECKPOINT in self.types

    @property
    def keys(self) -> list[str]:
        return [ID, CHECKPOINT] if self.checkpointed else [ID]

    @property
    def features(self) -> list[str]:
        return [c for c in self.types if c not in (ID, CHECKPOINT)]


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _cols(names: Sequence[str]) -> str:
    return ", ".join(_q(n) for n in names)


def _first(values: list[tuple]) -> str:
    shown = [str(v[0]) if len(v) == 1 else "(" + ", ".join(map(str, v)) + ")" for v in values]
    return ", ".join(shown)


class _Db:
    """A DuckDB connection on a scratch database file, reading errors tied to a file."""

    def __init__(self, folder: Path, memory_limit: str, threads: int):
        import duckdb

        self.duckdb = duckdb
        self.threads = threads
        self.folder = folder
        try:
            self.con = duckdb.connect(str(folder / "scratch.duckdb"), config={
                "memory_limit": memory_limit,
                "threads": threads,
                "temp_directory": str(folder / "spill"),
                "preserve_insertion_order": True,
            })
            self.con.execute("SET enable_progress_bar = false")
        except duckdb.Error as e:
            raise InputError(None, f"cannot start DuckDB with memory_limit={memory_limit!r}, "
                                   f"threads={threads}: {e}") from None

    def sql(self, query: str, about: _Input | None = None) -> list[tuple]:
        try:
            return self.con.execute(query).fetchall()
        except self.duckdb.Error as e:
            if about is None:
                raise
            said = str(e).split("\nLINE ")[0]  # not the SQL DuckDB quotes after it
            said = " ".join(said.split())
            raise InputError(about.shown, f"cannot read as {about.fmt} ({said})") from None

    def one(self, query: str, about: _Input | None = None) -> Any:
        return self.sql(query, about)[0][0]

    def count_and_first(self, relation: str, keys: Sequence[str]) -> tuple[int, list[tuple]]:
        """How many rows a key relation has, and its smallest few."""
        n = self.one(f"SELECT count(*) FROM ({relation})")
        if n == 0:
            return 0, []
        return n, self.sql(f"SELECT {_cols(keys)} FROM ({relation}) "
                           f"ORDER BY {_cols(keys)} LIMIT {SHOW}")

    def close(self) -> None:
        self.con.close()


def _open(db: _Db, t: _Input) -> None:
    """Make ``t`` a relation: a view on a parquet file, a table from a JSONL file (parsed once,
    its types inferred from every line)."""
    path = _lit(str(t.path))
    if t.fmt == "parquet":
        db.sql(f"CREATE VIEW {t.rel} AS SELECT * FROM read_parquet({path})", t)
    else:
        db.sql(f"CREATE TABLE {t.rel} AS SELECT * FROM read_json({path}, "
               "format = 'newline_delimited', records = true, sample_size = -1)", t)
    desc = db.sql(f"DESCRIBE {t.rel}", t)
    t.types = {name: typ for name, typ, *_ in desc if not _PANDAS_INDEX.fullmatch(name)}
    if ID not in t.types:
        raise InputError(t.shown, f"no {ID!r} column (columns: {', '.join(t.types)})")
    if t.types[ID] not in _INTEGER:
        raise InputError(t.shown, f"{ID!r} is {t.types[ID]}, not an integer column")
    t.rows = db.one(f"SELECT count(*) FROM {t.rel}", t)
    nulls = db.sql(f"SELECT {', '.join(f'count(*) - count({_q(k)})' for k in t.keys)} "
                   f"FROM {t.rel}", t)[0]
    for k, n in zip(t.keys, nulls, strict=True):
        if n:
            raise InputError(t.shown, f"{n} rows with a null {k}")


def _check_unique(db: _Db, t: _Input) -> None:
    keys = _cols(t.keys)
    n, first = db.count_and_first(
        f"SELECT {keys} FROM {t.rel} GROUP BY {keys} HAVING count(*) > 1", t.keys)
    if n:
        what = f"{ID}s" if not t.checkpointed else f"({ID}, {CHECKPOINT}) pairs"
        raise InputError(t.shown, f"{n} {what} appear more than once (first: {_first(first)}): "
                                  "a join would repeat their rows")


def _check_same_set(db: _Db, t: _Input, ref: _Input, ref_rel: str, keys: list[str],
                    allow_extra: bool, own_rel: str | None = None) -> None:
    """``t`` holds every key of ``ref_rel`` and (unless allowed) no other."""
    own = own_rel or (f"SELECT DISTINCT {_cols(keys)} FROM {t.rel}" if t.checkpointed
                      else f"SELECT {_q(ID)} FROM {t.rel}")  # ids checked unique
    what = f"{ID}s" if len(keys) == 1 else f"({ID}, {CHECKPOINT}) pairs"
    using = f"USING ({_cols(keys)})"
    n, first = db.count_and_first(f"SELECT {_cols(keys)} FROM {ref_rel} ANTI JOIN ({own}) o "
                                  f"{using}", keys)
    if n:
        raise InputError(t.shown, f"{n} {what} missing (first: {_first(first)}) that "
                                  f"{ref.shown} has")
    if allow_extra:
        return
    n, first = db.count_and_first(f"SELECT {_cols(keys)} FROM ({own}) o ANTI JOIN {ref_rel} "
                                  f"{using}", keys)
    if n:
        raise InputError(t.shown, f"{n} {what} that {ref.shown} does not have (first: "
                                  f"{_first(first)}): the first input defines the samples")


def _check_names(tables: list[_Input]) -> dict[str, _Input]:
    """Every feature column's source; a name in two inputs is an error naming both."""
    seen: dict[str, tuple[str, _Input]] = {}
    for t in tables:
        for c in t.features:
            other = seen.get(c.lower())
            if other is not None:
                same = "" if other[0] == c else f" (as {other[0]!r})"
                raise InputError(t.shown, f"column {c!r} is also in {other[1].shown}{same}: "
                                          "every column but the keys must come from one "
                                          "input, rename or drop one of them")
            seen[c.lower()] = (c, t)
    return {name: t for name, t in seen.values()}


def _checkpoint_type(tables: list[_Input]) -> str | None:
    marked = [t for t in tables if t.checkpointed]
    if not marked:
        return None
    ref = marked[0]
    for t in marked[1:]:
        a, b = ref.types[CHECKPOINT], t.types[CHECKPOINT]
        if a != b and not (a in _INTEGER and b in _INTEGER):
            raise InputError(t.shown, f"{CHECKPOINT!r} is {b} here but {a} in {ref.shown}")
    return "BIGINT" if ref.types[CHECKPOINT] in _INTEGER else ref.types[CHECKPOINT]


def _join_sql(tables: list[_Input], base: str, ckpt_type: str | None) -> str:
    """The combined table's query, sorted by the keys, over ``base`` (the key set)."""
    select = [f"CAST(b.{_q(ID)} AS BIGINT) AS {_q(ID)}"]
    order = _q(ID)
    if ckpt_type is not None:
        select.append(f"CAST(b.{_q(CHECKPOINT)} AS {ckpt_type}) AS {_q(CHECKPOINT)}")
        order += f", {_q(CHECKPOINT)}"
    joins = []
    for t in tables:
        on = " AND ".join(f"{t.rel}.{_q(k)} = b.{_q(k)}" for k in t.keys)
        joins.append(f"JOIN {t.rel} ON {on}")
        select += [f"{t.rel}.{_q(c)} AS {_q(c)}" for c in t.features]
    return f"SELECT {', '.join(select)} FROM {base} b {' '.join(joins)} ORDER BY {order}"


def _jsonl_sql(relation: str, types: dict[str, str]) -> str:
    """``relation`` in file order, with the types JSON has no value for cast to text."""
    select = []
    for c, typ in types.items():
        if typ.startswith("DECIMAL"):
            select.append(f"CAST({_q(c)} AS DOUBLE) AS {_q(c)}")
        elif _AS_TEXT.match(typ):
            select.append(f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}")
        else:
            select.append(_q(c))
    return f"SELECT {', '.join(select)} FROM {relation}"


def _numeric_summary(db: _Db, relation: str, types: dict[str, str]) -> dict[str, dict]:
    """count (finite, non-null) / nulls / non_finite / mean / min / max per numeric column.

    ``relation`` is the written (sorted) table, read on one thread: its float sums run in
    the file's order, so the summary's bytes depend on neither threads nor spilling (a join's
    own output order does)."""
    parts, plan = [], []
    for c, typ in types.items():
        if c == ID or not (typ in _INTEGER or typ in _FLOAT or typ == "BOOLEAN"
                           or typ.startswith("DECIMAL")):
            continue
        x = _q(c)
        if typ == "BOOLEAN":
            x = f"CAST({x} AS INTEGER)"
        elif typ.startswith("DECIMAL"):
            x = f"CAST({x} AS DOUBLE)"
        floating = typ in _FLOAT or typ.startswith("DECIMAL")
        ok = f" FILTER (WHERE isfinite({x}))" if floating else ""
        parts += [f"count({x}){ok}", f"count(*) - count({x})",
                  f"count({x}) FILTER (WHERE NOT isfinite({x}))" if floating else "0",
                  f"avg({x}){ok}", f"min({x}){ok}", f"max({x}){ok}"]
        plan.append((c, floating))
    if not plan:
        return {}
    db.sql("SET threads = 1")  # float sums in one fixed order: the same bytes every run
    try:
        row = db.sql(f"SELECT {', '.join(parts)} FROM {relation}")[0]
    finally:
        db.sql(f"SET threads = {db.threads}")
    out = {}
    for i, (c, floating) in enumerate(plan):
        count, nulls, nonfinite, mean, lo, hi = row[6 * i: 6 * i + 6]
        stats = {"count": int(count), "nulls": int(nulls)}
        if floating:
            stats["non_finite"] = int(nonfinite)
        conv = float if floating else int
        stats.update(mean=None if mean is None else float(mean),
                     min=None if lo is None else conv(lo), max=None if hi is None else conv(hi))
        out[c] = stats
    return out


def _jsonl_records(db: _Db, query: str):
    reader = db.con.sql(query).to_arrow_reader(JSONL_BATCH)
    for batch in reader:
        yield from batch.to_pylist()


def combine_tables(inputs: Sequence[PathLike], output: PathLike, summary: PathLike | None = None,
                   memory_limit: str = "2GB", threads: int = 1, allow_extra: bool = False
                   ) -> dict:
    """Join the feature tables ``inputs`` by ``sequence_id`` (and ``checkpoint``) into
    ``output`` (.parquet or .jsonl by suffix); returns the summary, also written to
    ``summary`` when given. See the module docstring for the rules."""
    if not inputs:
        raise InputError(None, "no input tables to combine")
    if threads < 1:
        raise InputError(None, f"threads must be at least 1, not {threads}")
    out = Path(output)
    out_fmt = table_format(out)
    tables = []
    for i, p in enumerate(inputs):
        path = io.require_file(p, "feature table")
        t = _Input(path=path, shown=str(p), fmt=table_format(path), rel=f"t{i}")
        if re.search(r"[*?\[\]{}]", str(path)):
            raise InputError(p, "DuckDB would read this name as a glob pattern: rename the file")
        if out.exists() and os.path.samefile(out, path):
            raise InputError(p, "is also the output: combining would overwrite an input")
        tables.append(t)
    shown = [t.shown for t in tables]
    for t in tables:
        if shown.count(t.shown) > 1 or any(
                u is not t and os.path.samefile(u.path, t.path) for u in tables):
            raise InputError(t.shown, "is given twice")

    made = [d for d in (out.parent, *out.parent.parents) if not d.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(out)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.duckdb.{io._HOST}.{os.getpid()}.",
                                   dir=out.parent))
    try:
        db = _Db(folder, memory_limit, threads)
        try:
            result = _combine(db, tables, out, out_fmt, allow_extra)
        finally:
            db.close()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for d in made:  # the folders made for the output, deepest first, if still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    shutil.rmtree(folder, ignore_errors=True)
    if summary is not None:
        io.write_json(summary, result)
    return result


def _remove_stale_scratch(out: Path) -> None:
    """Remove the scratch folders (database and spill files) that killed runs on this host
    left beside ``out``; live runs' and other hosts' are kept."""
    prefix = f".{out.name}.duckdb.{io._HOST}."
    for e in os.scandir(out.parent):
        pid = e.name[len(prefix):].split(".")[0] if e.name.startswith(prefix) else ""
        if pid.isdigit() and e.is_dir() and int(pid) != os.getpid() and not io._alive(int(pid)):
            shutil.rmtree(e.path, ignore_errors=True)


def _combine(db: _Db, tables: list[_Input], out: Path, out_fmt: str, allow_extra: bool
             ) -> dict:
    for t in tables:
        _open(db, t)
    sources = _check_names(tables)
    ckpt_type = _checkpoint_type(tables)
    first = tables[0]
    if first.rows == 0:
        raise InputError(first.shown, "no rows: the first input defines the samples")
    for t in tables:
        _check_unique(db, t)

    # the sample set, then (with checkpoints) the (id, checkpoint) pairs of the first
    # checkpointed input among those samples
    db.sql(f"CREATE TABLE ids AS SELECT DISTINCT {_q(ID)} FROM {first.rel}")
    for t in tables[1:]:
        _check_same_set(db, t, first, "ids", [ID], allow_extra)
    base = "ids"
    marked = [t for t in tables if t.checkpointed]
    if marked:
        ref, pair = marked[0], [ID, CHECKPOINT]
        db.sql(f"CREATE TABLE pairs AS SELECT {_cols(pair)} FROM {ref.rel} "
               f"SEMI JOIN ids USING ({_q(ID)})")
        for t in marked[1:]:
            own = f"SELECT {_cols(pair)} FROM {t.rel} SEMI JOIN ids USING ({_q(ID)})"
            _check_same_set(db, t, ref, "pairs", pair, False, own)
        base = "pairs"
    n_samples = db.one("SELECT count(*) FROM ids")
    for t in tables:
        if allow_extra:
            t.extra = t.rows - db.one(f"SELECT count(*) FROM {t.rel} "
                                      f"SEMI JOIN ids USING ({_q(ID)})")
    rows = db.one(f"SELECT count(*) FROM {base}")

    query = _join_sql(tables, base, ckpt_type)
    checkpoints = ([v for (v,) in db.sql(f"SELECT DISTINCT {_q(CHECKPOINT)} FROM pairs "
                                         "ORDER BY 1")] if marked else None)
    copy = f"(FORMAT PARQUET, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_SIZE})"

    def write_parquet(path: str) -> tuple[dict[str, str], dict[str, dict]]:
        db.sql(f"COPY ({query}) TO {_lit(path)} {copy}")
        written = f"read_parquet({_lit(path)})"
        types = {name: typ for name, typ, *_ in db.sql(f"DESCRIBE SELECT * FROM {written}")}
        n = db.one(f"SELECT count(*) FROM {written}")
        assert n == rows, (n, rows)
        return types, _numeric_summary(db, written, types)

    if out_fmt == "parquet":
        with io.atomic_path(out) as tmp:
            types, numeric = write_parquet(tmp)
    else:  # sorted once into a scratch parquet, streamed from it in file order
        scratch = str(db.folder / "combined.parquet")
        types, numeric = write_parquet(scratch)
        records = _jsonl_records(db, _jsonl_sql(f"read_parquet({_lit(scratch)})", types))
        written = io.write_jsonl(out, records)
        assert written == rows, (written, rows)

    result: dict[str, Any] = {
        "output": str(out),
        "rows": int(rows),
        "samples": int(n_samples),
        "key": [ID, CHECKPOINT] if marked else [ID],
    }
    if marked:
        result["checkpoints"] = [_plain(v) for v in checkpoints]
    result["columns"] = types
    result["column_sources"] = {c: sources[c].shown for c in types if c in sources}
    result["inputs"] = []
    for t in tables:
        rec = {"path": t.shown, "format": t.fmt, "rows": int(t.rows), "columns": t.types}
        if allow_extra:
            rec["extra_rows_left_out"] = int(t.extra)
        result["inputs"].append(rec)
    result["numeric"] = numeric
    return result


def _plain(v: Any) -> Any:
    """A JSON value for a checkpoint label (DuckDB gives ints, strings, sometimes others)."""
    return v if isinstance(v, int | float | str) or v is None else str(v)
