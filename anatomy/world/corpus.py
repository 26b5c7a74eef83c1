"""The miniworld's corpus: real text that ships with Python and the project's dependencies.

Six categories, each from a disjoint set of files so that no passage of one category is
copied inside another (docstrings come from site-packages modules, code from the standard
library):

============  =====================================================================
category      source
============  =====================================================================
code          standard-library Python source (``Lib/**/*.py``)
docs          docstrings of the installed site-packages modules (``ast``)
reference     the Python language reference prose shipped as ``pydoc_data.topics``
data          data files shipped by packages (CSV, DAT, JSON, AFM font metrics)
readme        package READMEs (``*.dist-info/METADATA`` bodies, ``*.md``, ``*.rst``),
              IDLE's NEWS files
license       license texts (``*.dist-info`` licenses, Python's ``LICENSE.txt``)
============  =====================================================================

Files are visited in a seeded order and cut into documents of log-uniform length
(``min_chars``..``max_chars``) at line boundaries, preferring blank lines, so most documents
fit one 128-token instance of the miniworld, as most OLMo documents fit 2048. Exact
duplicate documents are dropped (a planted duplicate must be the only repetition of its
text). Every file read is recorded with its sha256 in the manifest.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORIES = ("code", "docs", "data", "readme", "license", "reference")


@dataclass
class Doc:
    text: str
    category: str
    source: str  # file path relative to its root, with a ``root:`` prefix
    part: int  # index of the document within its source


def _roots() -> dict[str, Path]:
    paths = sysconfig.get_paths()
    return {"stdlib": Path(paths["stdlib"]), "site": Path(paths["purelib"])}


def _rel(path: Path, roots: dict[str, Path]) -> str:
    for name, root in roots.items():
        try:
            return f"{name}:{path.relative_to(root).as_posix()}"
        except ValueError:
            continue
    return path.as_posix()


def _seeded_order(paths: list[Path], seed: int, roots: dict[str, Path]) -> list[Path]:
    """Shuffle by a hash of (seed, relative path): independent of the listing order."""
    def key(p: Path) -> str:
        return hashlib.sha1(f"{seed}:{_rel(p, roots)}".encode()).hexdigest()
    return sorted(paths, key=key)


# Distributions installed only as peers of the toolkit's own checks (pipeline D's DSIR package
# and its nltk, TRAK's library) or added after the worlds were defined (pipeline B's LP solver
# highspy) are not read: adding a package must not change the world (its corpus digest and
# every figure measured on it).
PEER_DISTRIBUTIONS = ("data-selection", "nltk", "defusedxml", "traker", "highspy")


def _peer_files(site: Path) -> set[Path]:
    from importlib import metadata

    out: set[Path] = set()
    for name in PEER_DISTRIBUTIONS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_relative_to(site):
                out.add(p)
    return out


def _files(category: str, roots: dict[str, Path]) -> list[Path]:
    peers = _peer_files(roots["site"])
    return [p for p in _category_files(category, roots) if p not in peers]


def _category_files(category: str, roots: dict[str, Path]) -> list[Path]:
    std, site = roots["stdlib"], roots["site"]
    if category == "code":
        return sorted(p for p in std.rglob("*.py")
                      if "site-packages" not in p.parts and "test" not in p.parts
                      and "tests" not in p.parts and "idle_test" not in p.parts)
    if category == "docs":
        return sorted(p for p in site.rglob("*.py")
                      if "tests" not in p.parts and "test" not in p.parts
                      and not p.name.startswith("test_"))
    if category == "data":
        exts = {".csv", ".dat", ".json", ".afm"}
        return sorted(p for p in site.rglob("*") if p.suffix in exts and p.is_file()
                      and p.stat().st_size < 2_000_000 and ".dist-info" not in str(p))
    if category == "readme":
        out = sorted(site.glob("*.dist-info/METADATA"))
        out += sorted(p for p in site.rglob("*") if p.suffix in {".md", ".rst"} and p.is_file()
                      and "LICENSE" not in p.name.upper())
        out += sorted((std / "idlelib").glob("NEWS*.txt"))
        return out
    if category == "license":
        out = [p for p in site.glob("*.dist-info/**/*") if p.is_file()
               and ("LICEN" in p.name.upper() or "COPYING" in p.name.upper()
                    or "licenses" in p.parts)]
        if (std / "LICENSE.txt").is_file():
            out.append(std / "LICENSE.txt")
        return sorted(set(out))
    if category == "reference":
        return []  # in-memory (pydoc_data.topics)
    raise ValueError(f"unknown category {category!r}")


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    return text.replace("\r\n", "\n")


def _texts(category: str, path: Path) -> list[str]:
    """The raw texts a file contributes to a category (before cutting into documents)."""
    text = _read(path)
    if text is None:
        return []
    if category == "docs":
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return []
        out = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=True)
                if doc and len(doc) >= 120:
                    out.append(doc)
        return out
    if category == "readme" and path.name == "METADATA":
        head, _, body = text.partition("\n\n")  # RFC 822 headers, then the long description
        return [body] if body.strip() else []
    return [text]


def cut_documents(text: str, rng: np.random.Generator, min_chars: int, max_chars: int) -> list[str]:
    """Cut a text into documents of log-uniform target length at line boundaries.

    A document closes at the first blank line after reaching its target length, or at any
    line once it has grown past 1.5 times its target.
    """
    lines = text.split("\n")
    docs: list[str] = []
    cur: list[str] = []
    size = 0
    target = np.exp(rng.uniform(np.log(min_chars), np.log(max_chars)))
    for line in lines:
        cur.append(line)
        size += len(line) + 1
        if (size >= target and not line.strip()) or size >= 1.5 * target:
            doc = "\n".join(cur).strip("\n")
            if len(doc.strip()) >= min_chars // 2:
                docs.append(doc)
            cur, size = [], 0
            target = np.exp(rng.uniform(np.log(min_chars), np.log(max_chars)))
    doc = "\n".join(cur).strip("\n")
    if len(doc.strip()) >= min_chars // 2:
        docs.append(doc)
    return docs


def iter_category(category: str, seed: int, min_chars: int = 40,
                  max_chars: int = 400) -> Iterator[tuple[Doc, str, str]]:
    """Yield (doc, source, source_sha256) for a category, files in a seeded order.

    The caller stops consuming once it has enough; only files actually read are yielded
    into the manifest.
    """
    roots = _roots()
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    if category == "reference":
        import pydoc_data.topics as topics

        src = "stdlib:pydoc_data/topics.py"
        sha = hashlib.sha256(Path(topics.__file__).read_bytes()).hexdigest()
        for name in sorted(topics.topics, key=lambda n: hashlib.sha1(f"{seed}:{n}".encode())
                           .hexdigest()):
            for i, d in enumerate(cut_documents(topics.topics[name], rng, min_chars, max_chars)):
                yield Doc(d, category, f"{src}#{name}", i), src, sha
        return
    for path in _seeded_order(_files(category, roots), seed, roots):
        texts = _texts(category, path)
        if not texts:
            continue
        src = _rel(path, roots)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        part = 0
        for text in texts:
            for d in cut_documents(text, rng, min_chars, max_chars):
                yield Doc(d, category, src, part), src, sha
                part += 1
