"""(query, document) pairs from the miniworld's own text, with planted errors of known count.

The world's corpus was cut from source files that ship with Python and the toolkit's
dependencies (the manifest names each with its sha256; :meth:`anatomy.truth.World.source_files`
returns those whose bytes are unchanged). Two kinds of natural pairs come out of them:

- ``docstring``: a function's or method's docstring (its first paragraph) -> its source with
  the docstring removed (the prototype's stdlib docstring -> source pairs);
- ``heading``: a Markdown or reStructuredText heading -> the section under it (README /
  METADATA / documentation files).

Planted, seeded: a share of rows get another row's document (``planted="mismatch"``: the
consistency filter should remove them) and a share of true pairs are repeated as exact copies
(``planted="duplicate"``: the same document twice, which a by-position index ties). Every
row carries ``kind``, ``source`` and ``planted`` (``null`` for a true pair).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from anatomy.truth import World

MAX_DOC_CHARS = 2000
MD_HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*#*\s*$")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def _first_paragraph(doc: str) -> str:
    para = inspect.cleandoc(doc).split("\n\n")[0]
    return " ".join(para.split())


def docstring_pairs(text: str, keep_docstring: bool = False) -> Iterator[tuple[str, str]]:
    """(docstring's first paragraph, the definition's source without its docstring; with
    ``keep_docstring``, with it: an easier task) for every function and method with a
    docstring of >= 4 words."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    lines = text.splitlines(keepends=True)
    for node in ast.walk(tree):
        # functions and methods only: a class's source holds its methods (and their
        # docstrings), which would make it a false negative of every method's query
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False)
        if not doc or not node.body:
            continue
        query = _first_paragraph(doc)
        if len(query.split()) < 4 or len(query) > 400:
            continue
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        ds = node.body[0]
        end = node.end_lineno or node.lineno
        body = lines[first - 1:end] if keep_docstring else \
            lines[first - 1:ds.lineno - 1] + lines[(ds.end_lineno or ds.lineno):end]
        source = textwrap.dedent("".join(body)).strip("\n") if body else ""
        n_lines = sum(1 for ln in source.splitlines() if ln.strip())
        if n_lines < 3 or len(source) > MAX_DOC_CHARS:
            continue
        yield query, source


def heading_pairs(text: str) -> Iterator[tuple[str, str]]:
    """(heading, the section's text up to the next heading) for Markdown ``#`` headings and
    reStructuredText underlined titles; sections of 100 to 2,000 characters."""
    lines = text.replace("\r\n", "\n").split("\n")
    heads: list[tuple[int, int, str]] = []  # (heading line, first body line, title)
    for i, line in enumerate(lines):
        m = MD_HEADING.match(line)
        if m:
            heads.append((i, i + 1, m.group(2)))
        elif i > 0 and RST_UNDERLINE.match(line) and lines[i - 1].strip() and \
                len(line.strip()) >= len(lines[i - 1].strip()) and \
                not RST_UNDERLINE.match(lines[i - 1]):
            heads.append((i - 1, i + 1, lines[i - 1].strip()))
    for j, (_, body, title) in enumerate(heads):
        stop = heads[j + 1][0] if j + 1 < len(heads) else len(lines)
        section = "\n".join(lines[body:stop]).strip()
        title = " ".join(title.strip("*` ").split())
        if len(title.split()) < 2 or not 100 <= len(section) <= MAX_DOC_CHARS:
            continue
        yield title, section


def world_pairs(world: str | Path, n_pairs: int = 2000, mismatch: float = 0.1,
                duplicate: float = 0.05, heading_share: float = 0.2, seed: int = 0,
                keep_docstring: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`pairs_from_files` over the world's unchanged source files."""
    files, changed = World.open(world).source_files()
    rows, stats = pairs_from_files(files, n_pairs, mismatch, duplicate, heading_share, seed,
                                   keep_docstring)
    return rows, {**stats, "changed_sources": len(changed)}


def stdlib_files() -> list[tuple[str, Path]]:
    """Every ``.py`` file of this Python's standard library (tests and site-packages
    excluded), as ``("stdlib:REL", path)`` in name order: the prototype's data."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "lib2to3"}
    return [(f"stdlib:{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*.py"))
            if not skip & set(p.relative_to(root).parts)]


def pairs_from_files(files: list[tuple[str, Path]], n_pairs: int = 2000,
                     mismatch: float = 0.1, duplicate: float = 0.05,
                     heading_share: float = 0.2, seed: int = 0, keep_docstring: bool = False
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(rows, stats)``: ``n_pairs`` seeded pairs (``heading_share`` of them heading pairs
    where the files have enough), ``mismatch`` of them given another row's document, plus
    ``duplicate * n_pairs`` exact copies of true pairs, in a seeded order."""
    code: list[tuple[str, str, str]] = []
    heads: list[tuple[str, str, str]] = []
    for src, path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if path.suffix == ".py" and "#" not in src:
            code.extend((q, d, src) for q, d in docstring_pairs(text, keep_docstring))
        elif path.suffix in ("", ".md", ".rst", ".txt") or path.name == "METADATA":
            heads.extend((q, d, src) for q, d in heading_pairs(text))

    def distinct(items: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        seen: set[str] = set()
        out = []
        for q, d, s in items:  # one pair per document and per query text
            if d in seen or q in seen:
                continue
            seen.update((q, d))
            out.append((q, d, s))
        return out

    code, heads = distinct(code), distinct(heads)
    rng = np.random.default_rng(seed)
    n_head = min(len(heads), round(n_pairs * heading_share))
    n_code = min(len(code), n_pairs - n_head)
    pick_c = np.sort(rng.choice(len(code), n_code, replace=False)) if n_code else []
    pick_h = np.sort(rng.choice(len(heads), n_head, replace=False)) if n_head else []
    rows = [{"query": code[i][0], "document": code[i][1], "kind": "docstring",
             "source": code[i][2], "planted": None} for i in pick_c]
    rows += [{"query": heads[i][0], "document": heads[i][1], "kind": "heading",
              "source": heads[i][2], "planted": None} for i in pick_h]
    n = len(rows)
    n_bad = round(n * mismatch)
    bad = rng.choice(n, n_bad, replace=False) if n_bad > 1 else np.zeros(0, np.int64)
    docs = [rows[i]["document"] for i in bad]
    for j, i in enumerate(bad):  # a cyclic shift: every planted row gets another's document
        rows[i] = {**rows[i], "document": docs[(j + 1) % len(bad)], "planted": "mismatch"}
    true_rows = [i for i in range(n) if rows[i]["planted"] is None]
    n_dup = min(len(true_rows), round(n_pairs * duplicate))
    dups = rng.choice(true_rows, n_dup, replace=False) if n_dup else []
    rows += [{**rows[i], "planted": "duplicate"} for i in dups]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    stats = {"candidates": {"docstring": len(code), "heading": len(heads)},
             "rows": len(rows), "docstring": n_code, "heading": n_head,
             "mismatch": len(bad), "duplicate": n_dup, "seed": seed}
    return rows, stats
