"""combine_tables: the joined feature table, its checks and its summary.

Independent checks: the joined rows against ``pandas.merge`` (``validate`` one-to-one or
many-to-one) of the frames the test built in memory, never read back through the module;
the error cases against ids the test removed, added or repeated itself; the summary's
numbers against numpy over the same in-memory frame; reruns against the first run's bytes.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anatomy import io
from anatomy.io import InputError
from anatomy.memorization.combine import combine_tables

N = 40


def plain(v):
    """A JSON value for a numpy scalar, array or list of them."""
    if isinstance(v, np.ndarray | list):
        return [plain(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


def write(path, df: pd.DataFrame) -> str:
    """Write a frame without the module under test: pyarrow for parquet, io.write_jsonl
    for JSON lines."""
    if str(path).endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        io.write_jsonl(path, ({k: plain(v) for k, v in rec.items()}
                              for rec in df.to_dict("records")))
    return str(path)


@pytest.fixture()
def frames():
    """Three feature frames over the same 40 ids, each in its own row order."""
    rng = np.random.default_rng(7)
    ids = np.sort(rng.choice(1000, N, replace=False)).astype(np.int64)
    scores = pd.DataFrame({"sequence_id": rng.permutation(ids),
                           "memorization_score": rng.integers(0, 33, N) / 32})
    dup_ids = rng.permutation(ids)
    x = rng.normal(size=N)
    x[3] = np.nan  # a NaN: counted as non-finite
    dups = pd.DataFrame({"sequence_id": dup_ids,
                         "sequence_duplicates": rng.integers(1, 9, N),
                         "is_incrementing": rng.random(N) < 0.3,
                         "huffman_coding_length": x})
    freq = pd.DataFrame({"sequence_id": rng.permutation(ids),
                         "max_frequency": rng.integers(10, 10**6, N),
                         "text": [f"sample {i}" for i in range(N)]})
    freq["frequencies"] = [list(rng.integers(0, 50, 3)) for _ in range(N)]
    return ids, scores, dups, freq


@pytest.fixture()
def files(tmp_path, frames):
    ids, scores, dups, freq = frames
    return [write(tmp_path / "scores.parquet", scores), write(tmp_path / "dups.jsonl", dups),
            write(tmp_path / "freq.parquet", freq)]


def expected(scores, dups, freq) -> pd.DataFrame:
    m = scores.merge(dups, on="sequence_id", validate="one_to_one")
    m = m.merge(freq, on="sequence_id", validate="one_to_one")
    return m.sort_values("sequence_id").reset_index(drop=True)


def same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        g, w = got[c].tolist(), want[c].tolist()
        if c == "frequencies":
            assert [list(v) for v in g] == [list(v) for v in w]
        elif want[c].dtype.kind == "f":
            np.testing.assert_array_equal(np.asarray(g, float), np.asarray(w, float))
        else:
            assert g == w, c


def listing(d) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_join_matches_a_pandas_merge(tmp_path, frames, files):
    """Parquet and JSONL outputs equal pandas.merge of the in-memory frames, sorted by id;
    the scratch database and spill folder are gone afterwards."""
    _, scores, dups, freq = frames
    want = expected(scores, dups, freq)
    before = listing(tmp_path)
    s = combine_tables(files, tmp_path / "out" / "combined.parquet")
    same_frame(pd.read_parquet(tmp_path / "out" / "combined.parquet"), want)
    assert s["rows"] == N and list(s["columns"]) == list(want.columns)
    combine_tables(files, tmp_path / "out" / "combined.jsonl.gz")
    same_frame(pd.DataFrame(io.read_jsonl(tmp_path / "out" / "combined.jsonl.gz")), want)
    assert listing(tmp_path) == before | {"out", "out/combined.parquet",
                                          "out/combined.jsonl.gz"}


def test_summary_numbers(tmp_path, frames, files):
    """Rows, types, inputs and per-column count / nulls / mean / min / max against numpy
    over the in-memory merged frame."""
    _, scores, dups, freq = frames
    want = expected(scores, dups, freq)
    combine_tables(files, tmp_path / "c.parquet", tmp_path / "c.json")
    s = io.read_json(tmp_path / "c.json")
    assert s["rows"] == N and s["key"] == ["sequence_id"]
    assert s["columns"]["sequence_id"] == "BIGINT"
    assert s["columns"]["is_incrementing"] == "BOOLEAN"
    assert s["columns"]["huffman_coding_length"] == "DOUBLE"
    assert s["column_sources"]["max_frequency"] == files[2]
    assert [i["path"] for i in s["inputs"]] == files
    assert [i["rows"] for i in s["inputs"]] == [N, N, N]
    assert list(s["inputs"][1]["columns"]) == list(dups.columns)
    assert set(s["numeric"]) == {"memorization_score", "sequence_duplicates",
                                 "is_incrementing", "huffman_coding_length", "max_frequency"}
    for c, st in s["numeric"].items():
        v = want[c].to_numpy(float)
        ok = np.isfinite(v)
        assert st["count"] == ok.sum() and st["nulls"] == 0, c
        assert st["mean"] == pytest.approx(v[ok].mean(), rel=1e-12), c
        assert st["min"] == v[ok].min() and st["max"] == v[ok].max(), c
    assert s["numeric"]["huffman_coding_length"]["non_finite"] == 1
    assert s["numeric"]["huffman_coding_length"]["count"] == N - 1


def test_rerun_is_byte_identical(tmp_path, files):
    """A rerun, and a run on more threads, give the first run's bytes (output and summary)."""
    seen: dict[str, set[bytes]] = {}
    for threads in (1, 1, 3):
        for suffix in ("parquet", "jsonl"):
            out, summary = tmp_path / f"c.{suffix}", tmp_path / f"{suffix}.json"
            combine_tables(files, out, summary, threads=threads)
            for f in (out, summary):
                seen.setdefault(f.name, set()).add(f.read_bytes())
    assert len(seen) == 4
    assert all(len(v) == 1 for v in seen.values()), {k: len(v) for k, v in seen.items()}


def fails(tmp_path, inputs, *parts: str) -> str:
    """combine_tables raises InputError with every part in its one-line message and
    leaves the folder as it was."""
    before = listing(tmp_path)
    with pytest.raises(InputError) as e:
        combine_tables(inputs, tmp_path / "new" / "c.parquet", tmp_path / "new" / "s.json")
    msg = str(e.value)
    for p in parts:
        assert p in msg, (p, msg)
    assert "\n" not in msg
    assert listing(tmp_path) == before
    return msg


def test_missing_ids(tmp_path, frames, files):
    """Three ids the test dropped from the second table, named smallest first."""
    ids, _, dups, _ = frames
    gone = ids[[30, 5, 12]]
    bad = write(tmp_path / "bad.jsonl", dups[~dups.sequence_id.isin(gone)])
    first = ", ".join(map(str, np.sort(gone)))
    msg = fails(tmp_path, [files[0], bad, files[2]])
    assert msg == f"{bad}: 3 sequence_ids missing (first: {first}) that {files[0]} has"


def test_extra_ids(tmp_path, frames, files):
    """Two ids the test added to the third table; allow_extra leaves them out instead."""
    ids, scores, dups, freq = frames
    more = pd.concat([freq, freq.iloc[:2].assign(sequence_id=[5000, 4000])])
    bad = write(tmp_path / "more.parquet", more)
    fails(tmp_path, [files[0], files[1], bad], bad, "2 sequence_ids", "4000, 5000", files[0])
    s = combine_tables([files[0], files[1], bad], tmp_path / "x.parquet", allow_extra=True)
    same_frame(pd.read_parquet(tmp_path / "x.parquet"), expected(scores, dups, freq))
    assert [i["extra_rows_left_out"] for i in s["inputs"]] == [0, 0, 2]


def test_duplicate_ids(tmp_path, frames, files):
    """Ids the test repeated, in the first table and in a later one."""
    ids, scores, _, freq = frames
    twice = pd.concat([freq, freq[freq.sequence_id.isin(ids[[2, 9]])]])
    bad = write(tmp_path / "twice.parquet", twice)
    fails(tmp_path, [files[0], files[1], bad], bad, "2 sequence_ids appear more than once",
          f"(first: {ids[2]}, {ids[9]})")
    bad0 = write(tmp_path / "s2.jsonl", pd.concat([scores, scores.iloc[:1]]))
    fails(tmp_path, [bad0, files[1]], bad0, "1 sequence_ids appear more than once",
          str(scores.sequence_id.iloc[0]))


def test_duplicate_column_names(tmp_path, frames, files):
    """A column in two inputs is an error naming both files."""
    _, _, _, freq = frames
    other = write(tmp_path / "other.jsonl", freq[["sequence_id", "max_frequency"]])
    fails(tmp_path, [*files, other], other, files[2], "'max_frequency'")


def test_checkpoints_broadcast(tmp_path, frames, files):
    """Scores at two checkpoints: one row per (id, checkpoint), the checkpoint-free tables
    repeated (pandas.merge validate='many_to_one'); a second checkpointed table must hold
    the same pairs."""
    ids, scores, dups, freq = frames
    rng = np.random.default_rng(1)
    ck = pd.concat([scores.assign(checkpoint=c, memorization_score=rng.random(N))
                    for c in (2000, 143000)]).sample(frac=1, random_state=3)
    ck = ck[["sequence_id", "checkpoint", "memorization_score"]]
    ckf = write(tmp_path / "ck.parquet", ck)
    want = (dups.merge(ck, on="sequence_id", validate="one_to_many")
            .merge(freq, on="sequence_id", validate="many_to_one")
            .sort_values(["sequence_id", "checkpoint"]).reset_index(drop=True))
    want = want[["sequence_id", "checkpoint", *dups.columns[1:], "memorization_score",
                 *freq.columns[1:]]]
    s = combine_tables([files[1], ckf, files[2]], tmp_path / "c.parquet")
    same_frame(pd.read_parquet(tmp_path / "c.parquet"), want)
    assert s["rows"] == 2 * N and s["samples"] == N and s["checkpoints"] == [2000, 143000]
    assert s["key"] == ["sequence_id", "checkpoint"]

    ppl = ck.rename(columns={"memorization_score": "generation_perplexity"})
    short = write(tmp_path / "ppl.jsonl", ppl[~((ppl.sequence_id == ids[4])
                                                 & (ppl.checkpoint == 2000))])
    fails(tmp_path, [files[1], ckf, short], short, "1 (sequence_id, checkpoint) pairs missing",
          f"({ids[4]}, 2000)", ckf)
    again = write(tmp_path / "ck2.parquet", pd.concat([ck, ck.iloc[:1]]))
    fails(tmp_path, [files[1], again], again, "(sequence_id, checkpoint) pairs appear more")


def test_bad_inputs(tmp_path, files):
    """A missing file, a table without sequence_id, an unknown suffix."""
    fails(tmp_path, [files[0], str(tmp_path / "nope.parquet")], "nope.parquet", "not found")
    noid = write(tmp_path / "noid.parquet", pd.DataFrame({"x": [1, 2]}))
    fails(tmp_path, [files[0], noid], noid, "no 'sequence_id' column")
    with pytest.raises(InputError, match="cannot tell the format"):
        combine_tables(files, tmp_path / "c.csv")
    assert not os.path.exists(tmp_path / "c.csv")


def test_killed_runs_scratch_is_removed(tmp_path, files):
    """A scratch folder named for a process that has exited (a subprocess the test waited
    for) is removed by the next run; one named for a live process (the test's parent) is
    kept."""
    import subprocess
    import sys

    from anatomy.io import _HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".c.parquet.duckdb.{_HOST}.{dead}.x1"
    live = tmp_path / f".c.parquet.duckdb.{_HOST}.{os.getppid()}.x2"
    for d in (stale, live):
        d.mkdir()
        (d / "scratch.duckdb").write_bytes(b"left over")
    combine_tables(files, tmp_path / "c.parquet")
    assert not stale.exists() and live.exists()
