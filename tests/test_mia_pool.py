"""anatomy.mia.pool: the filter.py semantics (olmomia.md section 3) on synthetic sample files."""

from __future__ import annotations

import random

import pytest

from anatomy.io import InputError, write_jsonl
from anatomy.mia.pool import (
    build_pool,
    list_sample_files,
    select_non_overlapping,
    take_class,
)

B = 10  # batch size of the synthetic run


def _rec(pos: int, par: int, length: int) -> dict:
    return {"input": f"doc {pos}.{par}", "idx": [pos, par], "length": length}


def _write_interval(d, s0: int, s1: int, step_range: tuple[int, int], seed: int) -> list[dict]:
    """A fake sample.py output: per drawn position 0-3 documents of random length."""
    rng = random.Random(seed * 100003 + s0)
    recs = []
    for _ in range(s0, s1):
        pos = rng.randrange(step_range[0] * B, step_range[1] * B)
        recs += [_rec(pos, k, rng.randrange(0, 40)) for k in range(1, rng.randrange(0, 4) + 1)]
    write_jsonl(d / f"{s0}:{s1}.jsonl", recs)
    return recs


def test_list_and_select(tmp_path):
    for name in ("0:2000", "0:1000", "1000:2000", "2500:4000", "2000:3000", "5000:6000"):
        write_jsonl(tmp_path / f"{name}.jsonl", [])
    write_jsonl(tmp_path / "0:1000.failures.jsonl", [])
    (tmp_path / "notes.txt").write_text("x")
    files = list_sample_files(tmp_path)
    names = [f"{a}:{b}" for a, b, _ in files]
    assert names == ["0:2000", "0:1000", "1000:2000", "2000:3000", "2500:4000", "5000:6000"]
    assert files[0][2] == tmp_path / "0:2000.jsonl"
    used = [f"{a}:{b}" for a, b, _ in select_non_overlapping(files)]
    assert used == ["0:2000", "2000:3000", "5000:6000"]


def test_list_errors(tmp_path):
    with pytest.raises(InputError, match="sample folder not found"):
        list_sample_files(tmp_path / "missing")
    write_jsonl(tmp_path / "5:5.jsonl", [])
    with pytest.raises(InputError, match="5:5.jsonl: sample interval 5:5 is empty"):
        list_sample_files(tmp_path)


def test_take_class_rules(tmp_path):
    L = 9  # accept 4 < length <= 9
    write_jsonl(tmp_path / "0:3.jsonl", [
        _rec(25, 1, 4),   # too short (L//2 is excluded)
        _rec(25, 2, 5),   # taken
        _rec(25, 3, 9),   # same instance as the last taken: skipped
        _rec(31, 1, 10),  # too long
        _rec(31, 2, 9),   # taken (L is included)
        _rec(25, 4, 7),   # position differs from the LAST taken (31): taken again
    ])
    write_jsonl(tmp_path / "3:4.jsonl", [_rec(25, 5, 6), _rec(48, 1, 6)])
    files = select_non_overlapping(list_sample_files(tmp_path))
    got = take_class(files, 10, L, 1, B)
    assert [r["idx"] for r in got] == [[25, 2], [31, 2], [25, 4], [48, 1]]
    assert got[0] == {"input": "doc 25.2", "label": 1, "idx": [25, 2], "length": 5, "step": 2}
    assert list(got[0]) == ["input", "label", "idx", "length", "step"]
    assert [r["idx"] for r in take_class(files, 2, L, 0, B)] == [[25, 2], [31, 2]]
    # Steps outside the class's range mean another batch size was used: refused.
    with pytest.raises(InputError, match=r"0:3.jsonl:2: position 25 is step 2 .* \[3, 5\)"):
        take_class(files, 10, L, 1, B, step_range=(3, 5))


def test_take_class_bad_record(tmp_path):
    write_jsonl(tmp_path / "0:1.jsonl", [_rec(1, 1, 5), {"input": "x", "idx": 3, "length": 5}])
    with pytest.raises(InputError, match=r'0:1.jsonl:2: "idx" must be'):
        take_class(list_sample_files(tmp_path), 5, 8, 1, B)


def _reference_filter(files_recs: list[list[dict]], quota: int, L: int) -> list[list[int]]:
    # Independent re-statement of filter.py over records already in file order.
    out, last = [], None
    for recs in files_recs:
        for r in recs:
            if len(out) == quota:
                return out
            if L // 2 < r["length"] <= L and r["idx"][0] != last:
                out.append(r["idx"])
                last = r["idx"][0]
    return out


def test_build_pool_matches_reference(tmp_path):
    mdir, ndir = tmp_path / "m", tmp_path / "n"
    mem = {iv: _write_interval(mdir, *iv, (0, 100), 1) for iv in ((0, 30), (30, 60), (0, 10))}
    non = {iv: _write_interval(ndir, *iv, (400, 450), 2) for iv in ((0, 40), (40, 80))}
    N, L = 21, 30
    pool = build_pool(mdir, ndir, N, L, B, member_steps=(0, 100), nonmember_steps=(400, 450))
    assert [r["label"] for r in pool] == [1] * 11 + [0] * 10
    # (0,10) overlaps (0,30) and is skipped by the (S0 asc, S1 desc) walk.
    want_m = _reference_filter([mem[(0, 30)], mem[(30, 60)]], 11, L)
    want_n = _reference_filter([non[(0, 40)], non[(40, 80)]], 10, L)
    assert [r["idx"] for r in pool] == want_m + want_n
    assert all(r["step"] == r["idx"][0] // B for r in pool)
    assert all(L // 2 < r["length"] <= L for r in pool)


def test_build_pool_short_message(tmp_path):
    mdir, ndir = tmp_path / "m", tmp_path / "n"
    for iv in ((0, 20), (20, 40), (60, 80)):
        _write_interval(mdir, *iv, (0, 100), 3)
    _write_interval(ndir, 0, 3000, (400, 450), 4)
    with pytest.raises(InputError) as e:
        build_pool(mdir, ndir, 2000, 30, B, member_steps=(0, 100), nonmember_steps=(400, 450))
    msg = str(e.value)
    assert "insufficient samples for the pool of 2000" in msg
    assert "members: found" in msg and "of 1000 needed" in msg
    assert "intervals 0:40 (2 files), 60:80" in msg
    assert "sample.py --step_start 0 --step_end 100 --sample_start 80 --sample_end 100" in msg
    assert "non-members:" not in msg  # 3000 draws give enough non-members
