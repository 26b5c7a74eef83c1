"""Pipeline E's parts without a model: pair layouts and their errors, block planning, exact
ranks, and the miner's rules checked against a plain-Python re-implementation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from anatomy.contrastive import filtering, negatives
from anatomy.contrastive.pairs import normalize_text, read_pairs, write_kept
from anatomy.io import InputError
from anatomy.neighbours import rank_search

ROWS = [{"query": f"q{i}", "document": f"doc {i}", "id": i} for i in range(5)]


def _write(path: Path, lines: list, gz: bool = False) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------
# layouts


def test_every_layout_reads_the_same_rows(tmp_path):
    import datasets

    one = _write(tmp_path / "pairs.jsonl", ROWS)
    gz = _write(tmp_path / "pairs.jsonl.gz", ROWS, gz=True)
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "shard-00000.jsonl.gz", ROWS[:2], gz=True)
    _write(shards / "shard-00001.jsonl", [ROWS[2], "", ROWS[3]])  # a blank line is no row
    _write(shards / "shard-00002.jsonl", [[r["query"], r["document"]] for r in ROWS[4:]])
    (shards / "notes.txt").write_text("not a shard")
    hf = tmp_path / "hf"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(hf))
    want_q = [r["query"] for r in ROWS]
    want_d = [r["document"] for r in ROWS]
    for src in (one, gz, shards, hf):
        p = read_pairs(str(src))
        assert p.queries == want_q and p.documents == want_d, src
    p = read_pairs(str(shards))
    assert p.layout == "shards" and [f.rows for f in p.files] == [2, 2, 1]
    assert p.files[1].blank_lines == 1 and p.line_numbers.tolist() == [1, 2, 1, 3, 1]
    assert p.where(3) == f"{shards / 'shard-00001.jsonl'}:3"


def test_kept_rows_keep_the_input_format_byte_for_byte(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "shard-00000.jsonl.gz", ROWS[:3], gz=True)
    raw = '{"query":"q3",   "document":"doc 3", "extra": [1, 2]}'  # odd spacing survives
    _write(shards / "shard-00001.jsonl", [raw, ROWS[4]])
    p = read_pairs(str(shards))
    counts = write_kept(p, np.array([True, False, True, True, False]), tmp_path / "out")
    assert [c["kept"] for c in counts] == [2, 1]
    with gzip.open(tmp_path / "out" / "shard-00000.jsonl.gz", "rt") as f:
        assert [json.loads(x)["id"] for x in f] == [0, 2]
    assert (tmp_path / "out" / "shard-00001.jsonl").read_text() == raw + "\n"


def test_document_lists_are_positives(tmp_path):
    rows = [{"question": "who", "positive_ctxs": [{"title": "T", "text": "a"}, {"text": "b"}]},
            {"question": "what", "positive_ctxs": ["c"]}]
    p = read_pairs(str(_write(tmp_path / "nq.jsonl", rows)), "question", "positive_ctxs",
                   add_title=True)
    assert p.positives == [["T a", "b"], ["c"]] and p.documents == ["T a", "c"]


@pytest.mark.parametrize("line, problem", [
    ('{"query": "q", "document": ', "invalid JSON"),
    ('{"query": "q"}', 'missing field "document"'),
    ('{"query": 3, "document": "d"}', 'field "query" is int'),
    ('{"query": "q", "document": []}', "must be a string or a non-empty list"),
    ('["only the query"]', "needs [query, document]"),
    ('"a string"', "expected a JSON object or a [query, document] list"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
    f = _write(tmp_path / "bad.jsonl", [ROWS[0], "", line])
    with pytest.raises(InputError) as e:
        read_pairs(str(f))
    assert e.value.message.startswith(f"{f}:3: ") and problem in e.value.message


def test_normalised_text():
    assert normalize_text("  Hello\tWORLD\n") == normalize_text("hello world") == "hello world"
    assert normalize_text("ﬁle") == "file"  # NFKC folds the ligature
    assert normalize_text("a b") != normalize_text("ab")


# ---------------------------------------------------------------------------------------
# blocks and ranks


def test_blocks_cover_every_row_and_dedupe_documents():
    docs = ["a", "b", "A", "c", "b ", "d", "e"]  # "A" and "b " duplicate "a" and "b"
    q = np.arange(7)
    d = np.arange(7) + 100
    plans = filtering.plan_blocks(docs, q, d, index_size=3)
    assert [(p.start, p.stop) for p in plans] == [(0, 3), (3, 6), (6, 7)]
    assert [p.entries for p in plans] == [2, 3, 1]
    assert plans[0].block.targets.tolist() == [0, 1, 0]
    assert plans[0].block.index_rows.tolist() == [100, 101]
    pos = filtering.plan_blocks(docs, q, d, index_size=3, by_position=True)
    assert [p.entries for p in pos] == [3, 3, 1]


def test_ranks_equal_a_sort_and_answer_every_k():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x[10] = x[20]  # exact tie: the lower index ranks first
    q = rng.standard_normal((40, 8)).astype(np.float32)
    t = rng.integers(0, 60, 40)
    t[0], t[1] = 10, 20
    q[1] = q[0]
    out = rank_search(q, x, t, k=5)
    for i in range(40):
        s = x @ q[i]
        order = sorted(range(60), key=lambda j: (-s[j], j))
        assert out["ranks"][i] == order.index(t[i]) + 1
        assert out["ids"][i].tolist() == order[:5]
    assert out["ranks"][1] == out["ranks"][0] + 1
    for k in (1, 2, 5):
        assert filtering.keep_mask(out["ranks"], k).sum() == (out["ranks"] <= k).sum()
    assert filtering.keep_mask(out["ranks"], 1).sum() < filtering.keep_mask(out["ranks"], 60).sum()


# ---------------------------------------------------------------------------------------
# the miner's rules against a plain re-implementation


def _reference(qv, pos_keys, qkey, keys, vecs, depth, opts, min_pos, max_positives):
    """The documented rules, spelled out one candidate at a time."""
    scores = [float(np.dot(v, qv)) for v in vecs]
    ranked = sorted(range(len(keys)), key=lambda e: (-scores[e], e))[:depth]
    out = []
    for e in ranked:
        if keys[e] in pos_keys or keys[e] == qkey:
            continue
        s = scores[e]
        if opts.absolute_margin is not None and s + opts.absolute_margin > min_pos:
            continue
        if opts.relative_margin is not None and s > min_pos - abs(min_pos) * opts.relative_margin:
            continue
        if opts.max_score is not None and s > opts.max_score:
            continue
        if opts.min_score is not None and s < opts.min_score:
            continue
        out.append(e)
    return out[:opts.window(max_positives)][opts.range_min:][:opts.num_negatives]


def _toy(seed=0, n_docs=40):
    """Rows: query i -> document i; row 5 repeats query 0 with another positive; the corpus
    holds a case/whitespace variant of document 0 and a document equal to query 1."""
    rng = np.random.default_rng(seed)
    docs = [f"doc {i}" for i in range(n_docs)]
    queries = [f"query {i}" for i in range(n_docs)]
    from anatomy.contrastive.pairs import Pairs

    qs = queries[:8] + [queries[0]]
    pos = [[docs[i]] for i in range(8)] + [[docs[30]]]
    p = Pairs(qs, pos, [], np.arange(9), [None] * 9, None)
    texts = qs + [d for ps in pos for d in ps] + ["DOC  0", "query 1"] + docs
    uniq: dict[str, int] = {}
    for t in texts:
        uniq.setdefault(t, len(uniq))
    vec = rng.standard_normal((len(uniq), 6)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    # positives near their queries (the top hits, as in real data); "DOC  0" is the same
    # corpus entry as "doc 0", and "query 1" embeds as the query itself (one table row)
    for i, ps in enumerate(pos):
        for d in ps:
            v = vec[uniq[qs[i]]] + 0.3 * rng.standard_normal(6)
            vec[uniq[d]] = v / np.linalg.norm(v)
    q_rows = np.array([uniq[t] for t in qs])
    pos_rows = [np.array([uniq[d] for d in ps]) for ps in pos]
    extra = ["DOC  0", "query 1"] + docs
    extra_rows = np.array([uniq[t] for t in extra])
    return p, vec, q_rows, pos_rows, extra, extra_rows


@pytest.mark.parametrize("opts", [
    negatives.MineOptions(num_negatives=4),
    negatives.MineOptions(num_negatives=3, range_min=2, range_max=9),
    negatives.MineOptions(num_negatives=5, relative_margin=0.05),
    negatives.MineOptions(num_negatives=5, absolute_margin=0.1, min_score=-0.5),
    negatives.MineOptions(num_negatives=3, max_score=0.2, range_max=30),
], ids=["top", "range", "relative", "absolute+min", "max_score"])
def test_mined_negatives_follow_the_rules(opts):
    p, emb, q_rows, pos_rows, extra, extra_rows = _toy()
    opts.fill = "keep"
    corpus = negatives.build_corpus(p, pos_rows, extra, extra_rows)
    assert corpus.keys.count("doc 0") == 1  # "DOC  0" is the same entry
    groups = negatives.group_queries(p, corpus)
    assert len(groups) == 8 and groups.group_of_row[8] == 0
    depth = negatives.search_depth(opts, groups, len(corpus))
    hits = rank_search(emb[q_rows[groups.first_row]], emb[corpus.rows], None, k=depth)
    mined = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits["ids"], hits["scores"],
                           opts)
    for g in range(len(groups)):
        rows = np.flatnonzero(groups.group_of_row == g)
        pos_keys = {normalize_text(d) for r in rows for d in p.positives[r]}
        qv = emb[q_rows[groups.first_row[g]]]
        min_pos = min(float(np.dot(emb[pr], qv)) for r in rows for pr in pos_rows[r])
        want = _reference(qv, pos_keys, normalize_text(p.queries[rows[0]]), corpus.keys,
                          emb[corpus.rows], depth, opts, min_pos, groups.max_positives)
        got = mined.entries[g].tolist()
        assert got == want, (g, got, want)
        s = mined.scores[g]
        assert (np.diff(s) <= 0).all()
        assert not {corpus.keys[e] for e in got} & (pos_keys | {normalize_text(p.queries[rows[0]])})
    assert mined.counts["excluded_query"] >= 1  # "query 1" is in the corpus, its own top hit
    assert mined.counts["excluded_positive"] >= 9  # each positive, and the variant "DOC  0"
    leaks = negatives.leak_check(p, range(len(p)), corpus, groups, mined)
    assert leaks == {"negatives_equal_to_a_positive": 0,
                     "negatives_duplicating_a_positive_or_query": 0}


def test_relative_margin_with_negative_positive_scores():
    """pos = -0.4: m = 0.05 keeps negatives up to -0.42 (pos - |pos| m), not -0.38."""
    opts = negatives.MineOptions(num_negatives=3, relative_margin=0.05)
    s = np.array([-0.30, -0.39, -0.41, -0.43, -0.5], np.float32)
    keep, removed = negatives._threshold_mask(s, -0.4, opts)
    assert keep.tolist() == [False, False, False, True, True]
    assert removed == {"relative_margin": 3}
    keep, _ = negatives._threshold_mask(s, 0.4, negatives.MineOptions(relative_margin=0.05))
    assert keep.all()  # every one is below 0.38


def test_fill_up_and_drop_are_counted():
    p, emb, q_rows, pos_rows, extra, extra_rows = _toy()
    corpus = negatives.build_corpus(p, pos_rows, extra, extra_rows)
    groups = negatives.group_queries(p, corpus)
    opts = negatives.MineOptions(num_negatives=6, max_score=-0.2, range_max=8, fill="random")
    depth = negatives.search_depth(opts, groups, len(corpus))
    hits = rank_search(emb[q_rows[groups.first_row]], emb[corpus.rows], None, k=depth)
    mined = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits["ids"], hits["scores"],
                           opts)
    c = mined.counts
    assert c["short_groups"] > 0 and c["filled_negatives"] == int(mined.filled.sum()) > 0
    for g, ents in enumerate(mined.entries):
        assert len(set(ents.tolist())) == len(ents)
        assert (mined.scores[g] <= -0.2).all()  # fill-ups obey the threshold too
        assert not set(ents.tolist()) & set(groups.excluded[g].tolist())
    again = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits["ids"], hits["scores"],
                           opts)
    assert all((a == b).all() for a, b in zip(again.entries, mined.entries, strict=True))
    opts.fill = "drop"
    dropped = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits["ids"], hits["scores"],
                             opts)
    recs, n_drop = negatives.contrastors_records(p, range(len(p)), corpus, groups, dropped,
                                                 np.zeros(len(p)), "negatives", True, 6)
    assert n_drop == sum(len(dropped.entries[g]) < 6 for g in groups.group_of_row)
    assert len(recs) + n_drop == len(p)


def test_option_errors():
    with pytest.raises(InputError, match="range_min"):
        negatives.MineOptions(num_negatives=3, range_min=5, range_max=5).check()
    with pytest.raises(InputError, match="raise --range_max"):
        negatives.MineOptions(num_negatives=8, range_max=5).check()
    with pytest.raises(InputError, match="min_negatives"):
        negatives.MineOptions(num_negatives=3, min_negatives=4).check()
