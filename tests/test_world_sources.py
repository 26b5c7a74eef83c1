"""The miniworld corpus reads pinned archives only (anatomy/world/sources.py): a source of
another version or with other bytes refuses with one line naming it, nothing outside the
allowlisted archives is read (not the standard library, not an installed package), and one
seed gives one corpus. Fast: small archives made here; the real sources only where fetched."""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from anatomy.io import InputError
from anatomy.world import corpus
from anatomy.world import sources as S
from anatomy.world.corpus import CATEGORIES, iter_category

MODULE = '''"""A module whose docstring is long enough to be documentation: it says what the module
does, why, and how to call it, in more than one hundred and twenty characters of prose."""


def f(x):
    """Return x twice. This docstring too runs past the minimum length of a documentation
    docstring, so the docs category takes it."""
    return 2 * x
'''


def _wheel(root: Path, name: str, version: str, extra: str = "") -> Path:
    path = root / f"{name}-{version}-py3-none-any.whl"
    di = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", MODULE + extra)
        z.writestr(f"{name}/tests/test_it.py", '"""' + "not read " * 30 + '"""\n')
        z.writestr(f"{name}/data/table.csv", "a,b\n" + "".join(f"{i},{i * i}\n" for i in range(60)))
        z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
                   f"# {name}\n\n" + f"The {name} package does useful things.\n" * 8)
        z.writestr(f"{di}/licenses/LICENSE", "Permission is hereby granted, free of charge, "
                   f"to any person obtaining a copy of {name} {extra}.\n" * 4)
    return path


def _sdist(root: Path, name: str, version: str) -> Path:
    path = root / f"{name}-{version}.tar.gz"
    files = {"README.rst": "Other\n=====\n\n" + "A readme paragraph about the project.\n" * 6,
             "docs/guide.rst": "Guide\n=====\n\n" + "Reference prose on how it works.\n" * 12,
             "tests/test_x.py": "def test(): pass\n",
             "LICENSE": "Redistribution and use in source and binary forms are permitted.\n" * 3}
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            blob = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size = len(blob)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(blob))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path):
    """Two pinned sources (a wheel and an sdist) covering every category, in a folder."""
    root = tmp_path / "sources"
    root.mkdir()
    whl, sd = _wheel(root, "mydist", "1.1.0"), _sdist(root, "other", "2.0")
    pins = (
        S.Source("mydist", "1.1.0", whl.name, _sha(whl),
                 {"docs": ("mydist/*.py",), "data": ("mydist/*.csv",),
                  "readme": S.METADATA, "license": S.WHEEL_LICENSES}),
        S.Source("other", "2.0", sd.name, _sha(sd),
                 {"code": ("docs/*.rst",), "reference": ("docs/*.rst",),
                  "readme": ("README.rst",), "license": ("LICENSE",)}),
    )
    corpus._ARCHIVES.clear()
    S._SHA_CACHE.clear()
    return root, pins


def _all(root, pins, seed=0, **kw):
    return {c: list(iter_category(c, seed, sources=pins, root=root, **kw)) for c in CATEGORIES}


def test_reads_pinned_archives_with_versioned_keys(fake):
    root, pins = fake
    got = _all(root, pins)
    assert all(got[c] for c in CATEGORIES)
    keys = {src for c in CATEGORIES for _d, src, _sha in got[c]}
    assert keys == {"mydist==1.1.0:mydist/__init__.py", "mydist==1.1.0:mydist/data/table.csv",
                    "mydist==1.1.0:mydist-1.1.0.dist-info/METADATA",
                    "mydist==1.1.0:mydist-1.1.0.dist-info/licenses/LICENSE",
                    "other==2.0:docs/guide.rst", "other==2.0:README.rst", "other==2.0:LICENSE"}
    # docs are docstrings, not code; a METADATA's headers are left out; tests never read
    assert all("def f" not in d.text for d, _, _ in got["docs"])
    assert all("Metadata-Version" not in d.text for d, _, _ in got["readme"])
    # the manifest's sha256 is the file's
    with zipfile.ZipFile(root / pins[0].archive) as z:
        want = hashlib.sha256(z.read("mydist/__init__.py")).hexdigest()
    assert {sha for _d, src, sha in got["docs"]} == {want}
    again = _all(root, pins)
    assert [(d.text, d.source, d.part) for c in CATEGORIES for d, _, _ in got[c]] == \
        [(d.text, d.source, d.part) for c in CATEGORIES for d, _, _ in again[c]]


def test_another_version_refuses_with_one_line(fake):
    root, pins = fake
    (root / pins[0].archive).unlink()
    _wheel(root, "mydist", "1.0.0")
    with pytest.raises(InputError) as e:
        list(iter_category("docs", 0, sources=pins, root=root))
    msg = e.value.message
    assert "\n" not in msg
    assert "mydist" in msg and "1.0.0" in msg and "mydist==1.1.0" in msg
    assert S.ENV_ALLOW in msg


def test_other_bytes_refuse_and_the_override_warns(fake, caplog, monkeypatch):
    root, pins = fake
    _wheel(root, "mydist", "1.1.0", extra="# a changed byte")  # same name, other bytes
    S._SHA_CACHE.clear()
    with pytest.raises(InputError) as e:
        list(iter_category("docs", 0, sources=pins, root=root))
    msg = e.value.message
    assert "\n" not in msg and "mydist==1.1.0" in msg and "sha256" in msg
    with caplog.at_level(logging.WARNING):
        docs = list(iter_category("docs", 0, sources=pins, root=root, allow_other_sources=True))
    assert docs and any("NOT the pinned world" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv(S.ENV_ALLOW, "1")  # the environment variable does the same
    assert list(iter_category("docs", 0, sources=pins, root=root))


def test_missing_source_refuses(fake):
    root, pins = fake
    (root / pins[1].archive).unlink()
    with pytest.raises(InputError, match=r"other==2\.0 is missing"):
        list(iter_category("reference", 0, sources=pins, root=root))
    with pytest.raises(InputError, match="other==2.0"):
        S.check(root, pins)


def test_nothing_outside_the_pinned_archives_is_read(fake, tmp_path, monkeypatch):
    """An extra archive beside the pinned ones, an extra distribution installed on
    sys.path, the standard library and site-packages: none of them is opened."""
    root, pins = fake
    _wheel(root, "intruder", "9.9")
    site = tmp_path / "site"
    (site / "intruder").mkdir(parents=True)
    (site / "intruder" / "__init__.py").write_text(MODULE)
    (site / "intruder-9.9.dist-info").mkdir()
    (site / "intruder-9.9.dist-info" / "METADATA").write_text("Name: intruder\nVersion: 9.9\n\nx")
    monkeypatch.syspath_prepend(str(site))
    _all(root, pins)  # warm: lazy imports happen here, not under the audit
    corpus._ARCHIVES.clear()
    S._SHA_CACHE.clear()
    opened: list[str] = []
    recording = [True]

    def hook(event, args):
        if recording[0] and event == "open" and isinstance(args[0], str | bytes | Path):
            opened.append(str(Path(args[0] if not isinstance(args[0], bytes)
                                   else args[0].decode()).resolve()))

    sys.addaudithook(hook)  # hooks cannot be removed: this one stops recording below
    try:
        got = _all(root, pins)
    finally:
        recording[0] = False
    pinned = {str((root / p.archive).resolve()) for p in pins}
    assert opened and set(opened) <= pinned, sorted(set(opened) - pinned)
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert not any(Path(p).is_relative_to(stdlib) or Path(p).is_relative_to(purelib)
                   for p in opened)
    srcs = {src for c in CATEGORIES for _d, src, _sha in got[c]}
    assert all(s.startswith(("mydist==1.1.0:", "other==2.0:")) for s in srcs)


def test_long_files_are_segments_ordered_on_their_own(fake, monkeypatch):
    root, pins = fake
    monkeypatch.setattr(corpus, "SEGMENT_CHARS", 200)
    docs = list(iter_category("reference", 3, sources=pins, root=root))
    names = {d.source for d, _, _ in docs}
    assert len(names) > 1 and all(n.startswith("other==2.0:docs/guide.rst#") for n in names)
    # the manifest names the file, without the segment
    assert {src for _d, src, _ in docs} == {"other==2.0:docs/guide.rst"}


def test_source_files_gives_the_manifest_files_back(fake, tmp_path, monkeypatch):
    root, pins = fake
    monkeypatch.setattr(S, "SOURCES", pins)
    manifest = {src: sha for c in CATEGORIES for _d, src, sha in
                iter_category(c, 0, sources=pins, root=root)}
    manifest["stdlib:json/__init__.py"] = "0" * 64  # a world built from the installed files
    manifest["other==2.0:README.rst"] = "f" * 64  # bytes that are not the manifest's
    found, changed = corpus.source_files(manifest, root=root, cache=tmp_path / "members")
    assert sorted(changed) == ["other==2.0:README.rst", "stdlib:json/__init__.py"]
    assert len(found) == len(manifest) - 2
    for src, path in found:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest[src]


def test_pins_keep_code_docs_and_reference_apart():
    """No distribution feeds two of code, docs and reference (no passage copied across)."""
    feeds: dict[str, set[str]] = {}
    for s in S.SOURCES:
        for cat in ("code", "docs", "reference"):
            if cat in s.take:
                feeds.setdefault(S.canonical(s.name), set()).add(cat)
    assert all(len(c) == 1 for c in feeds.values()), feeds
    assert {c for s in S.SOURCES for c in s.take} == set(CATEGORIES)
    assert len({S.canonical(s.name) for s in S.SOURCES}) == len(S.SOURCES)
    for s in S.SOURCES:  # the file name pip saves says the pinned name and version
        assert S.archive_version(s.archive) == (S.canonical(s.name), s.version), s
        assert len(s.sha256) == 64
    req = S.requirements()
    assert all(f"{s.pin} --hash=sha256:{s.sha256}" in req for s in S.SOURCES)


def test_skip_patterns():
    src = S.Source("x", "1", "x-1.tar.gz", "0" * 64, {"code": ("*.py",)})
    assert src.categories_of("x/core.py") == ["code"]
    for member in ("x/tests/test_core.py", "tests/helper.py", "x/test_core.py",
                   "x.egg-info/foo.py", "testing/conftest.py"):
        assert src.categories_of(member) == [], member


@pytest.mark.skipif(not S.sources_dir().is_dir(), reason="corpus sources not fetched")
def test_the_pinned_sources_are_here_and_yield_every_category():
    S.check()
    for cat in CATEGORIES:
        d, src, sha = next(iter(iter_category(cat, 0)))
        assert d.text and ":" in src and len(sha) == 64
        pin = src.partition(":")[0]
        assert cat in next(s for s in S.SOURCES if s.pin == pin).take
