"""The miniworld is what its truth file says it is.

Independent checks: the trainer's per-step batch hashes (recorded while training) against
the OLMo reader; the mixture against a recount of the per-token category files through
the data order; planted copy counts against a brute-force search of the trained token
stream; a second build with the same seed against the first, byte for byte.
"""

from __future__ import annotations

import filecmp
import hashlib
import http.server
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from anatomy.io import InputError, read_jsonl
from anatomy.olmo_config import load_olmo_config
from anatomy.olmo_data import OlmoData
from anatomy.token_files import TokenFiles

ROOT = Path(__file__).resolve().parent.parent


def _trained_rows(world: Path, truth: dict, files: list[str], dtype: str) -> np.ndarray:
    """Rows of raw per-instance files in training order, rebuilt with plain numpy."""
    L = truth["seq_len"]
    parts = []
    for p in files:
        a = np.fromfile(world / p, dtype=dtype)
        parts.append(a[: len(a) // L * L].reshape(-1, L))
    order = np.fromfile(world / "global_indices.npy", dtype="<u4")
    return np.concatenate(parts)[order[: truth["n_trained_instances"]]]


def _stream(world: Path, truth: dict) -> np.ndarray:
    """The trained token stream."""
    return _trained_rows(world, truth, truth["token_files"], "<u2").ravel()


# --- the layout: aligned plants start instances, and no document is cut to get there -------


def _random_layout(seed: int, seq_len: int = 32, lookahead: int = 16):
    """A stream of random documents (1 to 3 * seq_len tokens) with plants, some aligned, some
    queued back to back (targets in one narrow window), as the dense memorization plants."""
    from anatomy.world import layout

    rng = np.random.default_rng(seed)
    eos = 999
    lengths = rng.integers(1, 3 * seq_len, 700)
    doc_tokens = [rng.integers(0, eos, n).astype(np.uint16) for n in lengths]  # no eos inside
    doc_cat = [int(c) for c in rng.integers(0, 5, len(lengths))]
    n_tokens = int((lengths[60:] + 1).sum() * 0.6)
    plants = []
    for d in range(60):
        lo, hi = (0, n_tokens // 2) if d < 40 else (n_tokens // 2, n_tokens // 2 + 4 * seq_len)
        plants += [(d, "mem", int(t), j % 2 == 0) for j, t in enumerate(rng.integers(lo, hi, 4))]
    regular = list(range(60, len(lengths)))
    stream = layout.build_stream(regular, plants, doc_tokens, doc_cat, eos, n_tokens,
                                 seq_len=seq_len, lookahead=lookahead)
    return stream, regular, plants, doc_tokens, doc_cat, eos, n_tokens


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layout_places_whole_documents_and_aligns_plants(seed):
    from collections import Counter

    L = 32
    stream, regular, plants, doc_tokens, doc_cat, eos, n = _random_layout(seed, L)
    toks, cats = stream.tokens, stream.categories
    assert len(toks) == len(cats) == n
    # every occurrence is its document, whole, closed by the separator; none overlaps another
    covered = np.zeros(n, bool)
    occ = stream.occurrences
    for i, o in enumerate(occ):
        assert o.kind in ("regular", "mem") and o.length == len(doc_tokens[o.doc])
        end = o.offset + o.length + 1
        if end > n:  # only the stream's last document runs past its end
            assert i == len(occ) - 1
        assert np.array_equal(toks[o.offset:min(end - 1, n)], doc_tokens[o.doc][:n - o.offset])
        assert end > n or toks[end - 1] == eos
        assert (cats[o.offset:end] == doc_cat[o.doc]).all()
        assert not covered[o.offset:end].any()
        covered[o.offset:end] = True
    # what no occurrence covers is the padding: separators only, in the runs recorded, with
    # the category of the token before
    free = np.flatnonzero(~covered)
    runs = [(int(r[0]), len(r)) for r in np.split(free, np.flatnonzero(np.diff(free) > 1) + 1)
            if len(r)]
    assert runs == stream.padding
    assert (toks[free] == eos).all() and (cats[free] == cats[free - 1]).all()
    # independently of the occurrence table: every span between separators is a whole document
    whole = {t.tobytes() for t in doc_tokens}
    bounds = np.flatnonzero(np.concatenate([[eos], toks]) == eos)
    spans = [toks[a:b - 1] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert all(s.tobytes() in whole for s in spans if len(s))
    assert sum(1 for s in spans if not len(s)) == sum(k for _, k in stream.padding)
    # each plant once, at or after its target, aligned ones at an instance's first token,
    # each padding run right before an aligned plant and shorter than an instance
    placed = [o for o in occ if o.kind == "mem"]
    assert Counter((o.doc, o.aligned) for o in placed) == Counter((d, a) for d, _, _, a in plants)
    for o, p in zip(placed, sorted(plants, key=lambda p: (p[2], p[0])), strict=True):
        assert (o.doc, o.aligned) == (p[0], p[3]) and o.offset >= p[2]
    assert all(o.offset % L == 0 for o in placed if o.aligned)
    starts = {o.offset for o in placed if o.aligned}
    assert all(a + k in starts and k < L for a, k in stream.padding)
    # regular documents: each at most once, from the queue
    reg = [o.doc for o in occ if o.kind == "regular"]
    assert len(set(reg)) == len(reg) and set(reg) <= set(regular)
    # deterministic
    again = _random_layout(seed, L)[0]
    assert np.array_equal(again.tokens, toks) and again.occurrences == occ


def test_layout_fills_an_exact_gap_with_whole_documents():
    """Documents of 5, 3, 9 and 2 tokens (sizes 6, 4, 10, 3 with their separators) and an
    aligned plant due after the first: the gap of 10 is filled by the 9-token document, the
    others follow the plant in their order; a gap no document fits is padded."""
    from anatomy.world import layout

    E, L = 99, 16
    toks = [np.full(n, i, dtype=np.uint16) for i, n in enumerate([5, 3, 9, 2, 7])]
    s = layout.build_stream([0, 1, 2, 3], [(4, "mem", 1, True)], toks, [0, 1, 2, 3, 4], E, 31,
                            seq_len=L)
    assert [(o.doc, o.offset) for o in s.occurrences] == [(0, 0), (2, 6), (4, 16), (1, 24),
                                                          (3, 28)]
    assert s.padding == []
    # a gap of 2 (after 13 tokens of documents) that sizes 4, 8 cannot fill: two separators
    toks = [np.full(n, i, dtype=np.uint16) for i, n in enumerate([13, 3, 7, 7])]
    s = layout.build_stream([0, 1, 2], [(3, "mem", 1, True)], toks, [0, 1, 2, 3], E, 28,
                            seq_len=L)
    assert [(o.doc, o.offset) for o in s.occurrences] == [(0, 0), (3, 16), (1, 24)]
    assert s.padding == [(14, 2)]
    assert s.tokens[13:16].tolist() == [E, E, E] and s.categories[14:16].tolist() == [0, 0]


@pytest.mark.parametrize("seed", range(20))
def test_fill_gap_against_brute_force(seed):
    """The fullest fit, and among the fullest the lexicographically first (earliest taken)."""
    from itertools import product

    from anatomy.world.layout import fill_gap

    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(2, 40, int(rng.integers(0, 10)))]
    gap = int(rng.integers(1, 128))
    best = max(product((1, 0), repeat=len(sizes)),  # the first maximum: earliest taken
               key=lambda pick: sum(s for s, p in zip(sizes, pick, strict=True) if p) if
               sum(s for s, p in zip(sizes, pick, strict=True) if p) <= gap else -1)
    chosen, padding = fill_gap(sizes, gap)
    assert chosen == [i for i, p in enumerate(best) if p]
    assert padding == gap - sum(sizes[i] for i in chosen) >= 0


def test_padding_is_skipped_as_empty_documents(tmp_path):
    """sample.py splits padding into empty documents; filter.py's length bucket drops them."""
    from anatomy.io import write_jsonl
    from anatomy.mia.pool import take_class
    from anatomy.mia.sampling import samples_from_instance

    E = 99
    recs = samples_from_instance(7, np.array([1, 2, E, E, E, 4, 5, 6, E]), E, str)
    assert [r["length"] for r in recs] == [0, 0, 3]
    write_jsonl(tmp_path / "0:1.jsonl", recs)
    taken = take_class([(0, 1, tmp_path / "0:1.jsonl")], 10, 4, 1, 1)
    assert [r["input_ids"] for r in taken] == [[4, 5, 6]]


def test_trained_stream_holds_only_whole_documents(tiny_world, tiny_truth):
    """Every span between separators in the trained stream is a whole document of the docs
    table (no filler: no head of a document cut short); the rest is padding, runs of extra
    separators right before aligned plant copies (counted: a few tokens per aligned copy)."""
    eos, L = tiny_truth["eos_token_id"], tiny_truth["seq_len"]
    stream = np.concatenate([[eos], _stream(tiny_world, tiny_truth)]).astype(np.uint16)
    docs = read_jsonl(tiny_world / "truth" / "docs.jsonl.gz")
    assert not [r for r in docs if "filler" in r["kinds"]]
    whole = {r["sha1"]: r["length"] for r in docs}
    bounds = np.flatnonzero(stream == eos)
    n_pad = 0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b == a + 1:
            n_pad += 1
            continue
        key = hashlib.sha1(stream[a + 1:b].astype("<u2").tobytes()).hexdigest()
        assert whole.get(key) == b - a - 1, a
    # padding runs end where an aligned copy starts its instance
    aligned = {o for kind, rows in tiny_truth["planted"].items() for r in rows
               for o, al in r["copies"] if al and o < len(stream) - 1}
    # near-duplicate copies (no planted rows of their own): those that start an instance
    aligned |= {occ[0] for r in docs if r["kinds"] == ["fuzzy"] for occ in r["occurrences"]
                if occ[0] % L == 0 and occ[0] < len(stream) - 1}
    assert aligned and all(o % L == 0 for o in aligned)
    gaps = np.flatnonzero((stream[1:] == eos) & (stream[:-1] == eos))  # second eos of a pair
    run_ends = [int(g) + 1 for g in gaps if g + 1 >= len(stream) - 1 or stream[g + 2] != eos]
    assert all(e in aligned for e in run_ends)  # stream offset = index - 1 (virtual eos)
    assert len(gaps) == n_pad
    assert n_pad < 8 * len(aligned)  # 3.2 tokens per aligned copy on the tiny preset, seed 0


def test_layout_and_config(tiny_world, tiny_truth):
    cfg = load_olmo_config(tiny_world / "config.yaml")
    assert cfg.seq_len == tiny_truth["seq_len"] == 128
    assert cfg.eos_token_id == tiny_truth["vocab_size"] - 1 == tiny_truth["eos_token_id"]
    assert cfg.pad_token_id == 1
    files = TokenFiles(cfg.paths, cfg.seq_len, cfg.dtype)
    assert len(files) == tiny_truth["n_instances"]  # tails shorter than an instance dropped
    order = np.fromfile(tiny_world / "global_indices.npy", dtype="<u4")
    assert np.array_equal(np.sort(order), np.arange(len(files)))  # a permutation
    assert all(0 < t < cfg.seq_len for t in tiny_truth["tails"])


def test_reader_returns_what_the_trainer_consumed(tiny_world, tiny_truth):
    data = OlmoData(load_olmo_config(tiny_world / "config.yaml"))
    B = tiny_truth["batch_size"]
    rng = np.random.default_rng(1)
    for step in sorted(rng.choice(tiny_truth["steps"]["total"], 12, replace=False)):
        batch = np.stack([data.tokens_at(int(step), b) for b in range(B)])
        digest = hashlib.sha1(batch.astype("<u2").tobytes()).hexdigest()
        assert digest == tiny_truth["train"]["batch_sha1"][step], step


def test_mixture_matches_recount(tiny_world, tiny_truth):
    trained = _trained_rows(tiny_world, tiny_truth, tiny_truth["category_files"], "u1")
    counts = np.bincount(trained.ravel(), minlength=len(tiny_truth["categories"]))
    mix = tiny_truth["mixture"]
    assert sum(mix.values()) == pytest.approx(1.0, abs=1e-9)
    for i, c in enumerate(tiny_truth["categories"]):
        assert tiny_truth["mixture_tokens"][c] == counts[i]
        assert mix[c] == pytest.approx(counts[i] / counts.sum(), abs=1e-12)
    assert min(mix.values()) > 0.03  # every category is really there


def test_planted_counts_by_brute_force(tiny_world, tiny_truth):
    eos = tiny_truth["eos_token_id"]
    # a virtual separator in front: the stream may open with a planted copy
    stream = np.concatenate([[eos], _stream(tiny_world, tiny_truth)]).astype(np.uint16)
    docs = {r["doc"]: r for r in read_jsonl(tiny_world / "truth" / "docs.jsonl.gz")}
    # count whole-document matches (EOS on both sides) of each planted passage in the stream
    bounds = np.flatnonzero(stream == eos)
    spans = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        key = hashlib.sha1(stream[a + 1:b].astype("<u2").tobytes()).hexdigest()
        spans[key] = spans.get(key, 0) + 1
    planted = tiny_truth["planted"]
    for kind in ("mia", "mia_control", "mem_dense", "mem_spread", "mem_late"):
        for row in planted[kind]:
            assert row["count"] == row["trained_count"]
            # copies split across an instance boundary are trained but not EOS-delimited
            # inside one instance; the stream is contiguous, so each copy is found
            assert spans.get(row["sha1"], 0) == row["count"], (kind, row["doc"])
            assert docs[row["doc"]]["sha1"] == row["sha1"]
    counts = sorted({r["planted"] for r in planted["mia"]})
    assert counts == list(tiny_truth["preset"]["mia_counts"])
    T1 = tiny_truth["steps"]["member"][1]
    assert all(max(r["steps"]) < T1 for r in planted["mia"])


def test_checkpoints_and_tokenizer_load(tiny_world, tiny_truth):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_world / "tokenizer")
    assert len(tok) == tiny_truth["vocab_size"]
    # the OLMo trap reproduced: the tokenizer's eos_token is not the file separator
    assert tok.eos_token_id == 0 != tiny_truth["eos_token_id"]
    steps = [c["step"] for c in tiny_truth["checkpoints"]]
    T1 = tiny_truth["steps"]["member"][1]
    assert steps == [T1, 2 * T1, 3 * T1, 4 * T1, tiny_truth["steps"]["total"]]
    for c in tiny_truth["checkpoints"]:
        seen = np.load(tiny_world / c["seen_instances"])
        assert len(seen) == c["step"] * tiny_truth["batch_size"]
    m = AutoModelForCausalLM.from_pretrained(tiny_world / tiny_truth["checkpoints"][0]["path"])
    assert m.config.model_type == "olmo" and m.config.vocab_size == tiny_truth["vocab_size"]


def test_pools_layout_and_rates(tiny_world, tiny_truth):
    pools = tiny_truth["pools"]
    rows = read_jsonl(tiny_world / pools["membership"])
    for shard in pools["shards"]:
        assert shard.startswith("train/chunk") and shard.endswith(".jsonl.zst")
        recs = read_jsonl(tiny_world / "pools" / shard)
        assert all(set(r) == {"text", "meta"} for r in recs)
        assert all(r["meta"]["redpajama_set_name"] in pools["set_names"] for r in recs)
    for c, info in pools["categories"].items():
        mine = [r for r in rows if r["category"] == c]
        assert len(mine) == info["n"]
        assert sum(r["trained"] for r in mine) == info["n_trained"]


def test_the_matched_pools_members_follow_the_training_mixture(tiny_world, tiny_truth):
    """The Min-K%++ arm estimates the member mixture of its pool: the matched pool's members
    are in the training proportions (recounted from its membership file), the rates pool's
    are not; each has a spec the evaluator scores against."""
    import yaml

    size = tiny_truth["preset"]["pool_size"]
    mix = tiny_truth["mixture"]
    for key in ("pools", "pools_rates"):
        pool = tiny_truth[key]
        rows = read_jsonl(tiny_world / pool["membership"])
        members = {c: sum(r["trained"] for r in rows if r["category"] == c) for c in mix}
        total = sum(members.values())
        assert all(pool["categories"][c]["n"] == size for c in mix)  # balanced, as published
        share = {c: members[c] / total for c in mix}
        assert share == pytest.approx(pool["member_mixture"])
        spec = yaml.safe_load((tiny_world / "truth" / f"{key}_members_spec.yaml").read_text())
        assert spec["category_weights"] == pytest.approx(share, abs=1e-6)
        gap = max(abs(share[c] - mix[c]) for c in mix)
        if key == "pools":  # 2 * pool_size members split by largest remainders
            assert gap <= 1 / total
        else:
            assert gap > 0.05


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=a-b`` support (http.server lacks it)."""

    def log_message(self, *a):
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        if not rng:
            return super().send_head()
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        a, b = (int(x) for x in rng.split("=")[1].split("-"))
        body = data[a:b + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{a + len(body) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io as _io

        return _io.BytesIO(body)


def test_http_range_reads_agree_with_local(tiny_world, tiny_truth):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          partial(_QuietHandler, directory=str(tiny_world)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        cfg = load_olmo_config(tiny_world / "config.yaml")
        local = TokenFiles(cfg.paths, cfg.seq_len, cfg.dtype)
        remote = TokenFiles([f"{base}/{p}" for p in tiny_truth["token_files"]], cfg.seq_len,
                            cfg.dtype)
        assert len(remote) == len(local)
        ids = [0, 1, len(local) // 2, len(local) - 1]
        for i, r in zip(ids, remote.instances(ids, num_workers=2), strict=True):
            assert np.array_equal(r, local.instance(i))
        data = OlmoData(cfg, global_indices=f"{base}/global_indices.npy")
        assert np.array_equal(data.tokens_at(3, 5), OlmoData(cfg).tokens_at(3, 5))
    finally:
        srv.shutdown()


def test_missing_token_file_is_one_clear_error(tiny_world, tmp_path):
    cfg = load_olmo_config(tiny_world / "config.yaml")
    with pytest.raises(InputError, match="part-00"):
        _ = TokenFiles([*cfg.paths[:-1], str(tmp_path / "part-009-00000.npy")],
                       cfg.seq_len).counts


def test_build_world_cli_bad_preset_exits_2(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "build_world.py"), "--preset", "huge",
                        "--out", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown preset 'huge' (choose from tiny, "
                                             "micro, small)"]


@pytest.mark.slow
def test_two_builds_are_identical(tmp_path):
    """Every file of two builds (checkpoints included) is byte-identical. On the micro preset
    (the same code path as tiny, seconds instead of a minute of training)."""
    import build_world as script
    from anatomy.world.build import build_world
    from anatomy.world.presets import get_preset

    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--preset", "micro", "--seed", "3", "--out", str(a), "--no_evidence", "--quiet"]
    assert script.main(args) == 0  # the script: the world plus its done.json marker
    build_world(get_preset("micro"), b, seed=3)
    a_files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    b_files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert sorted(map(str, a_files)) == sorted(["done.json", *map(str, b_files)])
    assert len(b_files) > 40
    different = [str(p) for p in b_files if not filecmp.cmp(a / p, b / p, shallow=False)]
    assert different == []
    # the output policy: the same preset and seed keep the world, another seed is refused
    mtime = (a / "truth.json").stat().st_mtime_ns
    assert script.main(args) == 0 and (a / "truth.json").stat().st_mtime_ns == mtime
    with pytest.raises(InputError, match=r"seed 3 -> 4 \(pass --overwrite"):
        script.main(args[:3] + ["4"] + args[4:])


def test_a_failed_rebuild_leaves_the_old_world(tmp_path, monkeypatch):
    import build_world as script
    from anatomy import lm_training as train

    a = tmp_path / "a"
    args = ["--preset", "micro", "--seed", "3", "--out", str(a), "--no_evidence", "--quiet"]
    assert script.main(args) == 0
    before = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}

    def broken(*_a, **_k):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(train, "train", broken)
    with pytest.raises(RuntimeError, match="killed"):
        script.main(args + ["--overwrite"])
    assert {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no .a.building left


# --- the memorization plants: each built for one category of the taxonomy -----------------


def test_memorization_plants_are_built_for_their_category(tiny_world, tiny_truth):
    """Independent check of truth.json's ``intended`` categories: every memorization plant's
    continuation (tokens 32-63 of the sample its aligned copies start) recounted over every
    trained sequence with a plain dict of 32-grams, its decoded sample's templating, and the
    published rule (Prashanth et al. 2024, §3): > 5 duplicates recitation, else templated
    reconstruction, else recollection. Each near-duplicated plant's fuzzy copies differ from it
    in exactly one continuation token (and so never contain its continuation)."""
    from collections import Counter

    from transformers import AutoTokenizer

    from anatomy.memorization.templating import is_templating
    from anatomy.truth import World

    w = World.open(tiny_world)
    L = tiny_truth["seq_len"]
    rows = _stream(tiny_world, tiny_truth).reshape(-1, L)
    grams = Counter(tuple(r[i:i + 32]) for r in rows.tolist() for i in range(L - 31))
    tok = AutoTokenizer.from_pretrained(str(tiny_world / "tokenizer"))
    built_for = {"mem_dense": "recitation", "mem_spread": "recitation",
                 "mem_late": "recitation", "reconstruct": "reconstruction",
                 "recollect": "recollection"}
    seen: dict[str, Counter] = {}
    for kind in w.memorization_plants:
        for r in w.planted(kind):
            if r["length"] < 64:
                assert "intended" not in r
                continue
            x = w.doc_tokens(r["doc"])
            n = grams[tuple(x[32:64].tolist())]
            templated = is_templating(tok.decode(x[:64].tolist()))
            rule = "recitation" if n > 5 else "reconstruction" if templated else "recollection"
            assert (r["continuation_count"], r["templated"], r["intended"]) == \
                (n, templated, rule), (kind, r["doc"])
            assert r["intended"] == built_for.get(kind, rule)
            seen.setdefault(kind, Counter())[rule] += 1
            for f in r.get("fuzzy_docs", []):
                y = w.doc_tokens(f)
                diff = np.flatnonzero(y != x)
                assert len(y) == len(x) and len(diff) == 1 and 32 <= diff[0] < 64
    assert {k: dict(v) for k, v in seen.items()} == tiny_truth["intended_categories"]
    # the tiny world holds plants of all three categories
    assert {c for v in seen.values() for c in v} == {"recitation", "reconstruction",
                                                     "recollection"}



def test_the_trained_weights_digest_and_cpu_are_recorded(tiny_world, tiny_truth):
    """truth.json's weights digest equals one recomputed from the saved final model (what two
    machines' builds are compared by), beside the precision, threads and CPU it trained on."""
    from anatomy.lm import load_causal_lm
    from anatomy.lm_training import weights_digest

    m = tiny_truth["model"]
    assert weights_digest(load_causal_lm(tiny_world / "model")) == m["weights_sha256"]
    assert m["precision"] in ("fp32", "bf16", "auto") and m["threads"] >= 1
    if m["precision"] == "fp32":  # the default: no bf16 kernel touched the weights
        assert not m["bf16"]
    assert {"model", "torch_capability", "avx512_bf16", "amx", "torch"} <= set(m["cpu"])
