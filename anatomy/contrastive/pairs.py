"""(query, document) pair datasets: reading every layout contrastors and its users write,
and writing kept rows back in the input's own format (pipeline E).

Layouts (contrastors v1 ``index_filtering.py`` / ``get_negatives.py``, see the contrastive
reference §1.2-1.3):

- one ``.jsonl`` or ``.jsonl.gz`` file, or a folder of shards ``shard-*.jsonl[.gz]`` (name
  order; a folder without shard files: its ``*.jsonl[.gz]`` files). A line is a JSON object
  (``query_key`` and ``document_key`` fields) or a ``[query, document, ...]`` list;
- a ``datasets`` dataset saved to disk (a folder with ``dataset_info.json``), or an HF hub
  name (train split).

A document value may be a string, or a list of positives (strings, or objects with a
``text`` field, e.g. DPR's ``positive_ctxs``; ``add_title`` prepends their ``title``): the
first is the row's document, all of them are the query's positives. Row ids are global line
positions over the files in order (blank lines are not rows and are counted apart). An empty
or whitespace-only query or document is data, not an error: the row is read, and the miner
counts it and skips it (never indexed, never a negative). A line that is not UTF-8 or not
JSON is one error naming its file, line and position.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.io import InputError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


def normalize_text(text: str) -> str:
    """The key two texts are compared by: NFKC, case-folded, whitespace runs collapsed.

    Two documents with the same key are one corpus entry, and a negative whose key equals
    one of the query's positives (or the query) is a duplicate of it, never a negative.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class PairFile:
    """One input file (or dataset) and where its rows sit among all rows."""

    path: str
    kind: str  # "jsonl" or "hf"
    first_row: int
    rows: int
    blank_lines: int = 0


@dataclass
class Pairs:
    """Every row of a pair dataset, in input order."""

    queries: list[str]
    positives: list[list[str]]  # per row; [0] is the row's own document
    files: list[PairFile]
    line_numbers: np.ndarray  # per row: 1-based line in its file (hf: row index + 1)
    records: list[Any]  # the parsed lines (dicts or lists); hf rows as dicts
    raw_lines: list[str] | None  # jsonl inputs: the line text, for byte-exact rewrites
    dataset: Any = None  # hf input: the datasets.Dataset
    layout: str = "jsonl"  # "jsonl" (a file), "shards" (a folder) or "hf"
    source: str = ""
    query_key: str = "query"
    document_key: str = "document"
    identity: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def documents(self) -> list[str]:
        return [p[0] for p in self.positives]

    def empty_rows(self) -> np.ndarray:
        """Rows whose query or own document is empty or whitespace-only (after
        :func:`normalize_text`): data to count and skip, in the filter and the miner."""
        return np.array([not normalize_text(q) or not normalize_text(p[0])
                         for q, p in zip(self.queries, self.positives, strict=True)], bool)

    def file_of_row(self) -> np.ndarray:
        out = np.empty(len(self), np.int64)
        for i, f in enumerate(self.files):
            out[f.first_row: f.first_row + f.rows] = i
        return out

    def where(self, row: int) -> str:
        """``FILE:LINE`` of a row, for messages and reports."""
        f = self.files[int(self.file_of_row()[row])]
        return f"{f.path}:{int(self.line_numbers[row])}"


def _texts_of(value: Any, add_title: bool) -> list[str] | None:
    """A document value as its list of positive texts (None when it is not one)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        return None
    out = []
    for v in value:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict) and isinstance(v.get("text"), str):
            title = v.get("title")
            out.append(f"{title} {v['text']}" if add_title and isinstance(title, str) and title
                       else v["text"])
        else:
            return None
    return out


def parse_record(rec: Any, query_key: str, document_key: str, add_title: bool = False
                 ) -> tuple[str, list[str]]:
    """``(query, positives)`` of one parsed line, or ValueError saying what is wrong."""
    if isinstance(rec, list):
        if len(rec) < 2:
            raise ValueError(f"a list line needs [query, document], got {len(rec)} element(s)")
        q, d = rec[0], rec[1]
        qname, dname = "element 0 (query)", "element 1 (document)"
    elif isinstance(rec, dict):
        for key in (query_key, document_key):
            if key not in rec:
                has = ", ".join(map(str, rec)) or "none"
                raise ValueError(f'missing field "{key}" (has {has})')
        q, d = rec[query_key], rec[document_key]
        qname, dname = f'field "{query_key}"', f'field "{document_key}"'
    else:
        raise ValueError(f"expected a JSON object or a [query, document] list, got "
                         f"{type(rec).__name__}")
    if not isinstance(q, str):
        raise ValueError(f"{qname} is {type(q).__name__}, not a string")
    docs = _texts_of(d, add_title)
    if docs is None:
        raise ValueError(f"{dname} must be a string or a non-empty list of strings or "
                         f"{{\"text\": ...}} objects, got {json.dumps(d)[:60]}")
    return q, docs


def _is_hf_folder(p: Path) -> bool:
    return p.is_dir() and (p / "dataset_info.json").is_file() and (p / "state.json").is_file()


def jsonl_files(path: str | os.PathLike) -> tuple[list[Path], str]:
    """The JSONL files of an input and its layout ("jsonl" for one file, "shards")."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p], "jsonl"
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.startswith("shard-")
                       and f.name.endswith(JSONL_SUFFIXES))
        if not files:
            files = sorted(f for f in p.iterdir() if f.is_file()
                           and f.name.endswith(JSONL_SUFFIXES) and not f.name.startswith("."))
        if not files:
            raise InputError(p, "no shard-*.jsonl[.gz] (or *.jsonl[.gz]) files in this folder")
        return files, "shards"
    raise InputError(p, "not found")


def _decode_line(path: Path, line: bytes, lineno: int) -> str:
    """One line as UTF-8 text, or an InputError naming its line and byte."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text (byte {e.start + 1} of the line: {e.reason})",
                         lineno) from None


def read_pairs(source: str | os.PathLike, query_key: str = "query",
               document_key: str = "document", add_title: bool = False) -> Pairs:
    """Every row of a pair dataset (see the module docstring for the layouts).

    A bad line (invalid JSON, a missing key, a value of the wrong type) is one
    :class:`InputError` naming its file and line; nothing is read past it.
    """
    src = str(source)
    p = Path(src).expanduser()
    if _is_hf_folder(p) or not (p.exists() or src.endswith(JSONL_SUFFIXES)
                                or src.startswith((".", "/", "~"))):
        return _read_hf(src, query_key, document_key, add_title)
    if p.is_dir() and (p / "dataset_dict.json").is_file():
        raise InputError(p, "a DatasetDict: pass one split's folder (e.g. "
                            f"{p / 'train'})")
    files, layout = jsonl_files(p)
    queries: list[str] = []
    positives: list[list[str]] = []
    lines: list[int] = []
    records: list[Any] = []
    raw: list[str] = []
    infos: list[PairFile] = []
    for f in files:
        first, blanks = len(queries), 0
        lineno = 0
        try:
            with io.open_text(f) as fh:
                # bytes, decoded line by line: a text wrapper decodes 8 KiB chunks ahead, so
                # its UnicodeDecodeError would name the line being read, not the bad one
                for lineno, bline in enumerate(fh.buffer, 1):  # noqa: B007 - in the except
                    line = _decode_line(f, bline, lineno)
                    if not line.strip():
                        blanks += 1
                        continue
                    try:  # without the newline: a cut line is "Unterminated string"
                        rec = json.loads(line.rstrip("\r\n"))
                    except json.JSONDecodeError as e:
                        # the position: "Invalid control character at" alone says nothing
                        raise InputError(f, f"invalid JSON ({e.msg} at column {e.colno})",
                                         lineno) from None
                    try:
                        q, docs = parse_record(rec, query_key, document_key, add_title)
                    except ValueError as e:
                        raise InputError(f, str(e), lineno) from None
                    queries.append(q)
                    positives.append(docs)
                    lines.append(lineno)
                    records.append(rec)
                    raw.append(line[:-1] if line.endswith("\n") else line)  # a "\r" stays
        except (OSError, EOFError) as e:
            raise InputError(f, f"cannot read ({type(e).__name__}: {e})", lineno + 1) from None
        infos.append(PairFile(str(f), "jsonl", first, len(queries) - first, blanks))
    from anatomy.execution import identity

    return Pairs(queries, positives, infos, np.asarray(lines, np.int64), records, raw,
                 layout=layout, source=src, query_key=query_key, document_key=document_key,
                 identity={"pairs": identity(files)})


def _read_hf(src: str, query_key: str, document_key: str, add_title: bool) -> Pairs:
    import datasets

    p = Path(src).expanduser()
    if _is_hf_folder(p):
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - any unreadable folder is the user's input
            raise InputError(p, f"cannot load the saved dataset ({type(e).__name__}: {e})"
                             ) from None
        from anatomy.execution import identity

        ident: Any = {"pairs": identity(sorted(f for f in p.iterdir() if f.is_file()))}
    else:
        try:
            ds = datasets.load_dataset(src, split="train")
        except Exception as e:  # noqa: BLE001 - offline, missing dataset ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(None, f"cannot load {src}: not a local file or folder, and not "
                                   f"loadable as an HF dataset ({type(e).__name__}: {first})"
                             ) from None
        ident = {"pairs": src}
    for key in (query_key, document_key):
        if key not in ds.column_names:
            raise InputError(src, f'no column "{key}" (has {", ".join(ds.column_names)})')
    qs = ds[query_key]
    ds_docs = ds[document_key]
    queries, positives = [], []
    for i, (q, d) in enumerate(zip(qs, ds_docs, strict=True)):
        try:
            q, docs = parse_record({query_key: q, document_key: d}, query_key, document_key,
                                   add_title)
        except ValueError as e:
            raise InputError(src, f"row {i}: {e}") from None
        queries.append(q)
        positives.append(docs)
    n = len(queries)
    return Pairs(queries, positives, [PairFile(src, "hf", 0, n)], np.arange(1, n + 1),
                 [None] * n, None, dataset=ds, layout="hf", source=src, query_key=query_key,
                 document_key=document_key, identity=ident)


def write_kept(pairs: Pairs, keep: np.ndarray, out_dir: Path) -> list[dict[str, Any]]:
    """The kept rows in the input's format: each JSONL file rewritten under ``out_dir``
    with its kept lines byte for byte (same name, same compression), or an HF input's kept
    rows saved to ``out_dir/dataset``. Returns per-file counts."""
    keep = np.asarray(keep, bool)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = []
    if pairs.layout == "hf":
        from anatomy.contrastive.pretokenize import save_hf

        kept_ds = pairs.dataset.select(np.flatnonzero(keep).tolist())
        save_hf(kept_ds, out_dir / "dataset")
        return [{"file": pairs.source, "output": str(out_dir / "dataset"),
                 "rows": len(pairs), "kept": int(keep.sum())}]
    assert pairs.raw_lines is not None
    for f in pairs.files:
        a, b = f.first_row, f.first_row + f.rows
        name = Path(f.path).name
        lines = [pairs.raw_lines[i] for i in range(a, b) if keep[i]]
        io.write_lines(out_dir / name, lines)
        counts.append({"file": f.path, "output": str(out_dir / name), "rows": f.rows,
                       "kept": len(lines), "blank_lines": f.blank_lines})
    return counts


def output_names(pairs: Pairs) -> list[str]:
    """The file names :func:`write_kept` writes for this input."""
    if pairs.layout == "hf":
        return ["dataset/dataset_info.json", "dataset/state.json"]
    return [Path(f.path).name for f in pairs.files]


def unique(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """``(unique texts in first-seen order, inverse index per input)``."""
    pos: dict[str, int] = {}
    inv = np.empty(len(texts), np.int64)
    for i, t in enumerate(texts):
        inv[i] = pos.setdefault(t, len(pos))
    return list(pos), inv
