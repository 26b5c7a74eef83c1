"""anatomy.mia.sampling: the published seeded draw, EOS splitting, records and failures."""

from __future__ import annotations

import random

import numpy as np
import pytest

from anatomy.io import InputError
from anatomy.mia.sampling import (
    _sample_uses_set_branch,
    draw_positions,
    max_consistent_sample_end,
    sample_records,
    samples_from_instance,
    split_on_eos,
)

E = 99  # EOS id in the synthetic instances


def test_golden_positions_from_reference_note():
    # Golden values from shared/reference/olmomia.md section 2 (CPython 3.11, seed 42).
    assert draw_positions(0, 100000, 2048, 0, 3) == [171644825, 29885207, 6713773]
    assert draw_positions(0, 100000, 2160, 0, 3) == [171644825, 29885207, 6713773]
    assert draw_positions(400000, 450000, 2160, 0, 3) == [949822412, 878942603, 867356886]
    assert draw_positions(400000, 450000, 2048, 0, 3) == [905022412, 834142603, 822556886]


def test_equals_published_global_random_calls():
    # Independent computation: the published tool's random.seed(42); random.sample(...).
    state = random.getstate()
    try:
        random.seed(42)
        published = random.sample(range(400000 * 2160, 450000 * 2160), 500)[200:]
    finally:
        random.setstate(state)
    assert draw_positions(400000, 450000, 2160, 200, 500) == published


def test_disjoint_jobs_concatenate_to_one_job():
    big = draw_positions(0, 1000, 2160, 0, 3000)
    parts = [draw_positions(0, 1000, 2160, a, b) for a, b in ((0, 1000), (1000, 2500),
                                                             (2500, 3000))]
    assert sum(parts, []) == big
    assert len(set(big)) == 3000 and all(0 <= p < 1000 * 2160 for p in big)


def test_pool_branch_jobs_agree_with_each_other():
    # every job ends past the limit (21 for n=200): all on the pool branch, so a loop
    # [0, 60), [60, 120), [120, 200) concatenates to one job, checked against CPython
    parts = [draw_positions(0, 2, 100, a, b) for a, b in ((0, 60), (60, 120), (120, 200))]
    assert sum(parts, []) == random.Random(42).sample(range(200), 200)


def test_branch_switch_breaks_prefixes_in_cpython():
    # Independent check against CPython itself: for n=200 the set branch ends at k=21, and
    # sample(k=22) (pool branch) is not an extension of sample(k=21), while k=20 -> 21 is.
    n = 200
    assert max_consistent_sample_end(n) == 21
    assert _sample_uses_set_branch(n, 21) and not _sample_uses_set_branch(n, 22)
    for s in range(5):
        k21 = random.Random(s).sample(range(n), 21)
        assert random.Random(s).sample(range(n), 20) == k21[:20]
        assert random.Random(s).sample(range(n), 22)[:21] != k21
    # The limit quoted in the reference note: about 22.4M draws over 100k steps of 2160.
    assert max_consistent_sample_end(216_000_000) == 22_369_621
    # Tiny populations always take the pool branch: every k is consistent.
    assert max_consistent_sample_end(21) == 21
    assert draw_positions(0, 3, 7, 0, 21)[:4] == draw_positions(0, 3, 7, 0, 4)


def test_bad_requests_are_refused():
    # [0, 21) used the set branch; [21, 40) would be drawn on the pool branch
    with pytest.raises(InputError, match="pool branch.*sample_end <= 21"):
        draw_positions(0, 2, 100, 21, 40)
    assert len(draw_positions(0, 2, 100, 0, 21)) == 21
    with pytest.raises(InputError, match="sample_start <= sample_end"):
        draw_positions(0, 10, 100, 5, 3)
    with pytest.raises(InputError, match="step_start < step_end"):
        draw_positions(10, 10, 100, 0, 3)


def _naive_spans(tokens, eos):
    # Independent loop: remember the last EOS, emit the span since it at each new EOS.
    spans, last = [], None
    for i, t in enumerate(tokens):
        if t == eos:
            if last is not None:
                spans.append((last + 1, i))
            last = i
    return spans


def test_split_on_eos_matches_loop():
    assert split_on_eos(np.array([7, E, 3, 4, E, E, 9]), E) == [(2, 4), (5, 5)]
    assert split_on_eos(np.array([1, 2, 3]), E) == []
    assert split_on_eos(np.array([E, 1, 2]), E) == []
    rng = np.random.default_rng(0)
    for _ in range(50):
        toks = rng.integers(95, 100, size=int(rng.integers(0, 60)))
        assert split_on_eos(toks, E) == _naive_spans(toks.tolist(), E)


def decode(ids: list[int]) -> str:
    assert isinstance(ids, list)
    return " ".join(map(str, ids))


def test_samples_from_instance_schema():
    recs = samples_from_instance(123, np.array([5, E, 1, 2, E, E, 3, E, 8], dtype=np.int64), E,
                                 decode, vocab="v1")
    assert recs == [{"input": "1 2", "idx": [123, 1], "length": 2, "input_ids": [1, 2],
                     "tokenizer": "v1"},
                    {"input": "", "idx": [123, 2], "length": 0, "input_ids": [],
                     "tokenizer": "v1"},
                    {"input": "3", "idx": [123, 3], "length": 1, "input_ids": [3],
                     "tokenizer": "v1"}]
    # the published fields first, in their order; then the trained ids
    assert list(recs[0]) == ["input", "idx", "length", "input_ids", "tokenizer"]


def test_sample_records_keeps_order_and_failures():
    instances = {p: np.array([0, E, p, p + 1, E, p, E], dtype=np.int64) for p in range(20)}
    calls = []

    def fetch_many(chunk):
        calls.append(list(chunk))
        return [IndexError(f"{p} is out of bounds") if p % 7 == 3 else instances[p]
                for p in chunk]

    positions = [9, 3, 14, 0, 10, 17, 5]
    recs, fails = sample_records(positions, fetch_many, E, decode, chunk_size=3)
    assert calls == [[9, 3, 14], [0, 10, 17], [5]]
    assert fails == [{"position": 3, "error": "IndexError: 3 is out of bounds"},
                     {"position": 10, "error": "IndexError: 10 is out of bounds"},
                     {"position": 17, "error": "IndexError: 17 is out of bounds"}]
    # Independent expectation: per surviving position in draw order, its two documents.
    expect = []
    for p in positions:
        if p % 7 != 3:
            expect += [{"input": f"{p} {p + 1}", "idx": [p, 1], "length": 2,
                        "input_ids": [p, p + 1]},
                       {"input": f"{p}", "idx": [p, 2], "length": 1, "input_ids": [p]}]
    assert recs == expect


def test_sample_records_rejects_short_fetch():
    with pytest.raises(ValueError, match="2 results for 3"):
        sample_records([1, 2, 3], lambda c: [np.array([E, E])] * 2, E, decode)
