"""Tracing text to the training steps that taught it (issue 26), on the tiny miniworld.

Every check is against an independent computation: a brute-force scan of the trained stream
(``World.stream``, the token files read in data order by the truth module, not by the
index) for the longest match from every start, hence the maximal spans, and for every
occurrence of every span; the truth's planted copies (``truth.json``: slot and offset of
every copy, from the world builder's layout); ``filter_duplicates.py --ngrams`` (a hash scan)
for the within-row counts; and a direct forward pass of the checkpoint for the span losses.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import build_trace_index as build_script
import convert_to_pythia as convert_script
import filter_duplicates as dup_script
from anatomy import io
from anatomy.io import InputError
from anatomy.truth import World

ROOT = Path(__file__).resolve().parent.parent
BLOCK_STEPS = 170  # blocks that do not divide the run: the last one is short
MAX_OCC = 5000


def _script(name: str):
    """A top-level script by path (``trace.py`` shares its name with the stdlib module)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


trace_script = _script("trace")


def _tokenizer(world: Path):
    from anatomy.lm import load_tokenizer

    return load_tokenizer(str(world / "tokenizer"))


def _texts(world: World, tok) -> list[dict]:
    """Every plant kind's passages (as text when the tokenizer gives back their tokens, else
    as input_ids), unseen documents cut to 120 tokens, and a text stitched from two
    stretches of the stream around an unseen word."""
    recs = []
    for kind, rows in world.truth["planted"].items():
        for r in rows[:3]:
            ids = world.doc_tokens(r["doc"]).astype(int).tolist()
            text = tok.decode(ids)
            same = tok(text, add_special_tokens=False)["input_ids"] == ids
            recs.append({"id": f"{kind}:{r['doc']}", "kind": kind, "doc": r["doc"],
                         **({"text": text} if same else {"input_ids": ids})})
    for i, rec in enumerate(io.iter_jsonl(world.root / "truth" / "unseen.jsonl.gz")):
        if i == 4:
            break
        ids = tok(rec["text"], add_special_tokens=False)["input_ids"][:120]
        recs.append({"id": f"unseen:{i}", "kind": "unseen", "text": tok.decode(ids)})
    s = world.stream
    t = world.truth
    edge = BLOCK_STEPS * t["batch_size"] * t["seq_len"]  # the first block boundary
    for a, b in ((edge - 20, edge + 30), (edge + 5, edge + 60), (2 * edge - 70, 2 * edge)):
        recs.append({"id": f"boundary:{a}", "kind": "boundary",
                     "input_ids": s[a:b].astype(int).tolist()})
    recs.append({"id": "stitched", "kind": "stitched",
                 "text": tok.decode(s[5000:5030].tolist()) + " qqzx vvkw "
                 + tok.decode(s[400_000:400_025].tolist())})
    return recs


@pytest.fixture(scope="module")
def env(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("trace")
    w = ["--world", str(tiny_world), "--quiet"]
    for r in ("0", "1"):  # two ranks in turn: the second merges
        assert build_script.main([*w, "--index", str(d / "olmo"), "--block_steps",
                                  str(BLOCK_STEPS), "--rank", r, "--world_size", "2"]) == 0
    assert build_script.main([*w, "--index", str(d / "olmo1"),
                              "--block_steps", str(BLOCK_STEPS)]) == 0
    t = io.read_json(tiny_world / "truth.json")
    convert_script.main([*w, "--out", str(d / "pythia" / "document")])
    py = ["--pythia_data", str(d / "pythia" / "document"), "--pythia_batch_size",
          str(t["batch_size"]), "--pythia_seq_len", str(t["seq_len"])]
    assert build_script.main([*w, *py, "--index", str(d / "pythia_idx"),
                              "--block_steps", str(BLOCK_STEPS)]) == 0
    world = World.open(tiny_world)
    tok = _tokenizer(tiny_world)
    recs = _texts(world, tok)
    io.write_jsonl(d / "texts.jsonl", recs)
    assert trace_script.main([*w, "--index", str(d / "olmo"), "--texts",
                              str(d / "texts.jsonl"), "--output", str(d / "olmo.jsonl"),
                              "--html", str(d / "olmo.html"),
                              "--max_occurrences", str(MAX_OCC)]) == 0
    assert trace_script.main([*w, *py, "--index", str(d / "pythia_idx"), "--texts",
                              str(d / "texts.jsonl"), "--output", str(d / "pythia.jsonl"),
                              "--max_occurrences", str(MAX_OCC)]) == 0
    return {"dir": d, "w": w, "py": py, "world": world, "truth": t, "tok": tok,
            "olmo": io.read_jsonl(d / "olmo.jsonl"), "pythia": io.read_jsonl(d / "pythia.jsonl")}


def _trained(world: World) -> np.ndarray:
    t = world.truth
    return world.stream[: t["preset"]["steps"] * t["batch_size"] * t["seq_len"]]


def _positions(stream: np.ndarray, q: list[int]) -> np.ndarray:
    cand = np.flatnonzero(stream[: len(stream) - len(q) + 1] == q[0])
    for k in range(1, len(q)):
        cand = cand[stream[cand + k] == q[k]]
    return cand


def _longest_from(stream: np.ndarray, q: list[int], left: int) -> int:
    """End of the longest match of q starting at ``left``, by narrowing candidates."""
    cand = np.flatnonzero(stream == q[left])
    if not len(cand):
        return left
    k = 1
    while left + k < len(q):
        nxt = cand[cand + k < len(stream)]
        nxt = nxt[stream[nxt + k] == q[left + k]]
        if not len(nxt):
            break
        cand, k = nxt, k + 1
    return left + k


def _brute_spans(stream, q, min_len=8) -> list[tuple[int, int]]:
    out, prev = [], 0
    for left in range(len(q)):
        r = _longest_from(stream, q, left)
        if r > prev and r - left >= min_len:
            out.append((left, r))
        prev = max(prev, r)
    return out


def _tokens_of(rec: dict, tok) -> list[int]:
    if "input_ids" in rec:
        return rec["input_ids"]
    return tok(rec["text"], add_special_tokens=False)["input_ids"]


def test_spans_and_occurrences_equal_a_brute_force_scan(env):
    """Spans are exactly the maximal matches; every occurrence, step, slot, instance and
    exposure count equals a scan of the stream and the data order."""
    world, t, tok = env["world"], env["truth"], env["tok"]
    stream = _trained(world)
    L, B = t["seq_len"], t["batch_size"]
    order = np.fromfile(world.root / "global_indices.npy", dtype="<u4").astype(np.int64)
    ckpts = {c["revision"]: c["step"] for c in t["checkpoints"]}
    n_spans = n_multi = 0
    for rec in env["olmo"]:
        q = _tokens_of(rec, tok)
        assert rec["n_tokens"] == len(q)
        want = _brute_spans(stream, q)
        assert [(s["start"], s["end"]) for s in rec["spans"]] == want, rec["id"]
        for s in rec["spans"]:
            n_spans += 1
            pos = _positions(stream, q[s["start"]:s["end"]])
            assert s["count"] == len(pos) <= MAX_OCC
            n_multi += len(pos) > 1
            got = [(o["slot"], o["offset"]) for o in s["occurrences"]]
            assert got == [(int(p) // L, int(p) % L) for p in pos]
            for o in s["occurrences"]:
                assert o["step"] == o["slot"] // B and o["instance"] == order[o["slot"]]
                assert o["within_row"] == (o["offset"] + s["end"] - s["start"] <= L)
            steps = pos // L // B
            assert s["exposures"] == {r: int((steps < st).sum()) for r, st in ckpts.items()}
            assert s["first_step"] == int(steps.min())
            assert s["count_within_row"] == sum(o["within_row"] for o in s["occurrences"])
            if "input_ids" not in rec:
                assert rec["text"][s["char_start"]:s["char_end"]] == s["text"]
    assert n_spans >= 25 and n_multi >= 5
    stitched = next(r for r in env["olmo"] if r["id"] == "stitched")
    assert len(stitched["spans"]) >= 2


def test_every_planted_copy_at_the_truths_step_and_slot(env):
    """Each planted passage, traced from its text, is one span over the whole passage whose
    occurrences hold every trained copy the truth records (slot, offset, step); where the
    passage occurs only as its plant, count and exposures are the truth's."""
    world, t = env["world"], env["truth"]
    L = t["seq_len"]
    trained_slots = t["preset"]["steps"] * t["batch_size"]
    bounds = {c["revision"]: c["slots"][1] for c in t["checkpoints"]}
    checked = exact = 0
    for rec in env["olmo"]:
        if rec["kind"] in ("unseen", "stitched", "boundary"):
            continue
        plant = next(r for r in t["planted"][rec["kind"]] if r["doc"] == rec["doc"])
        copies = [(c[0] // L, c[0] % L) for c in plant["copies"] if c[0] // L < trained_slots]
        assert len(copies) == plant["trained_count"]
        if not copies:
            assert not any(s["end"] - s["start"] == rec["n_tokens"] for s in rec["spans"])
            continue
        whole = [s for s in rec["spans"] if (s["start"], s["end"]) == (0, rec["n_tokens"])]
        assert len(whole) == 1, rec["id"]
        s = whole[0]
        got = {(o["slot"], o["offset"]): o["step"] for o in s["occurrences"]}
        for slot, off in copies:
            assert got.get((slot, off)) == slot // t["batch_size"], (rec["id"], slot, off)
        assert sorted(slot // t["batch_size"] for slot, _ in copies) == sorted(plant["steps"][
            :len(copies)])
        checked += 1
        if len(world.docs[rec["doc"]]["occurrences"]) == plant["count"]:
            assert s["count"] == plant["trained_count"]
            assert s["exposures"] == {r: sum(1 for slot, _ in copies if slot < b)
                                      for r, b in bounds.items()}
            exact += 1
    assert checked >= 15 and exact >= 10


def test_unseen_documents_report_no_longer_span_than_they_share(env):
    world, tok = env["world"], env["tok"]
    stream = _trained(world)
    for rec in (r for r in env["olmo"] if r["kind"] == "unseen"):
        q = _tokens_of(rec, tok)
        longest = max(_longest_from(stream, q, i) - i for i in range(len(q)))
        got = max((s["end"] - s["start"] for s in rec["spans"]), default=0)
        assert got == (longest if longest >= 8 else 0)


def test_pythia_conversion_gives_the_same_answers(env):
    """The index of the Pythia-format copy: same spans, counts, steps, slots, offsets and
    exposures; the instance is the row, i.e. the slot."""
    for a, b in zip(env["olmo"], env["pythia"], strict=True):
        assert [(s["start"], s["end"], s["count"], s["exposures"]) for s in a["spans"]] == \
            [(s["start"], s["end"], s["count"], s["exposures"]) for s in b["spans"]]
        for sa, sb in zip(a["spans"], b["spans"], strict=True):
            key = lambda o: (o["step"], o["slot"], o["offset"], o["within_row"])  # noqa: E731
            assert [key(o) for o in sa["occurrences"]] == [key(o) for o in sb["occurrences"]]
            assert all(o["instance"] == o["slot"] for o in sb["occurrences"])


def test_one_or_two_ranks_give_the_same_bytes(env):
    d = env["dir"]
    files = sorted(p.relative_to(d / "olmo1") for p in (d / "olmo1").rglob("*")
                   if p.is_file() and "parts" not in p.parts and not p.name.startswith("."))
    assert any(str(f).endswith(".table") for f in files)
    assert len([f for f in files if str(f).endswith(".table")]) == -(-1000 // BLOCK_STEPS)
    for f in files:
        if f.name.endswith(".done.json"):
            continue
        assert (d / "olmo1" / f).read_bytes() == (d / "olmo" / f).read_bytes(), f


def test_counts_equal_filter_duplicates_ngrams(env):
    """Within-row counts of the spans of the most common length equal
    ``filter_duplicates.py --ngrams`` (hashed windows inside one training sequence)."""
    d, tok = env["dir"], env["tok"]
    spans = []
    for rec in env["olmo"]:
        q = _tokens_of(rec, tok)
        spans += [(q[s["start"]:s["end"]], s["count_within_row"]) for s in rec["spans"]]
    n = Counter(len(q) for q, _ in spans).most_common(1)[0][0]
    group = [(q, c) for q, c in spans if len(q) == n]
    io.write_jsonl(d / "ngrams.jsonl", ({"tokens": q} for q, _ in group))
    assert dup_script.main([*env["w"], "--ngrams", str(d / "ngrams.jsonl"), "--output",
                            str(d / "ngram_counts.jsonl")]) == 0
    counts = [r["count"] for r in io.read_jsonl(d / "ngram_counts.jsonl")]
    assert counts == [c for _, c in group] and len(group) >= 2


def test_the_page_shows_every_span(env):
    """Every span of every record is highlighted (its id in some segment's data-span), and no
    other; the browser behaviour of the page is tests/test_trace_page.py's."""
    import re

    html = (env["dir"] / "olmo.html").read_text()
    want = {f"{i}-{j}" for i, r in enumerate(env["olmo"]) for j in range(len(r["spans"]))}
    shown = {sid for attr in re.findall(r'<span[^>]* data-span="([^"]+)"', html)
             for sid in attr.split()}
    assert shown == want and len(want) >= 25
    assert "python trace.py --world" in html


def test_losses_equal_a_direct_forward_pass(env, tmp_path):
    """--score: each span's loss under a checkpoint is the mean next-token loss of its
    tokens from a plain forward pass of that checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    t, world = env["truth"], env["world"]
    recs = [r for r in env["olmo"] if r["kind"] in ("mem_dense", "mia")
            and r["n_tokens"] <= t["seq_len"]][:2]
    assert len(recs) == 2
    io.write_jsonl(tmp_path / "t.jsonl", ({"id": r["id"], "text": r["text"]} for r in recs
                                          if "text" in r))
    rev = t["checkpoints"][0]["revision"]
    assert trace_script.main([*env["w"], "--index", str(env["dir"] / "olmo"), "--texts",
                              str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                              "--score", "--checkpoints",
                              f"{rev},{t['checkpoints'][-1]['revision']}"]) == 0
    out = io.read_jsonl(tmp_path / "o.jsonl")
    model = AutoModelForCausalLM.from_pretrained(world.root / "model" / rev).eval()
    for r in out:
        ids = torch.tensor([_tokens_of(r, env["tok"])])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].float(), -1)
        tok_lp = lp[:-1].gather(1, ids[0, 1:, None])[:, 0].numpy()
        for s in r["spans"]:
            a, b = max(s["start"], 1), s["end"]
            assert s["loss"][rev] == pytest.approx(-tok_lp[a - 1:b - 1].mean(), abs=2e-4)
            np.testing.assert_allclose(s["token_loss"][rev], -tok_lp[a - 1:b - 1], atol=2e-4)
            assert set(s["loss"]) == {rev, t["checkpoints"][-1]["revision"]}


def test_bad_inputs_are_one_clear_error_and_write_nothing(env, tmp_path):
    from anatomy.trace.run import encode_records

    d, w, tok = env["dir"], env["w"], env["tok"]
    # a text longer than the context cannot be scored; one longer than the index's window
    # (four sequences) cannot be traced
    long_text = tok.decode(_trained(env["world"])[:300].tolist())
    io.write_jsonl(tmp_path / "long.jsonl", [{"text": "short"}, {"text": long_text}])
    out = tmp_path / "o.jsonl"
    with pytest.raises(InputError, match=r"long.jsonl:2: the text is \d+ tokens long, longer "
                                         r"than the model's context, which --score needs"):
        trace_script.main([*w, "--index", str(d / "olmo"), "--texts",
                           str(tmp_path / "long.jsonl"), "--output", str(out), "--score"])
    assert not out.exists()
    io.write_jsonl(tmp_path / "longer.jsonl", [{"input_ids": [5] * 513}])
    with pytest.raises(InputError, match="longest text the index holds whole"):
        trace_script.main([*w, "--index", str(d / "olmo"), "--texts",
                           str(tmp_path / "longer.jsonl"), "--output", str(out)])
    assert not out.exists()
    # an index built from the Pythia copy, traced with the OLMo config
    io.write_jsonl(tmp_path / "ok.jsonl", [{"text": "def main():"}])
    with pytest.raises(InputError, match="other training data"):
        trace_script.main([*w, "--index", str(d / "pythia_idx"), "--texts",
                           str(tmp_path / "ok.jsonl"), "--output", str(out)])
    assert not out.exists()
    with pytest.raises(InputError, match="outside the training vocabulary"):
        encode_records([{"input_ids": [1, 2, 99999]}], tok, 128, 4096)
    with pytest.raises(InputError, match="no trace index here"):
        trace_script.main([*w, "--index", str(tmp_path), "--texts",
                           str(tmp_path / "ok.jsonl"), "--output", str(out)])
    # a tokenizer with an unknown token cannot encode every character
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "def": 1, "main": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="[UNK]")
    with pytest.raises(InputError, match=r"cannot encode 'λ'"):
        encode_records([{"text": "def λ main"}], fast, 128, 4096)


def test_unigram_filter_keeps_the_rarest_spans():
    """OLMoTrace's filter: ceil(0.05 n) spans of lowest summed log unigram probability,
    recomputed here from the counts."""
    from anatomy.trace.spans import maximal_spans, unigram_filter

    stream = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 1, 1, 1, 1, 2, 2]
    uni = np.bincount(stream, minlength=10).astype(np.int64)

    def contains(q):
        return any(stream[i:i + len(q)] == q for i in range(len(stream)))

    q = [1, 2, 3, 4, 0, 9, 9, 9, 0, 1, 1, 1, 0, 5, 6, 7] + [0] * 24
    spans = maximal_spans(contains, q, min_len=3)
    assert spans == [(0, 4), (5, 8), (9, 12), (13, 16)]
    keep = unigram_filter(spans, q, uni, 0.05)  # ceil(0.05 * 40) = 2
    p = uni / uni.sum()
    score = {sp: float(np.log(p[q[sp[0]:sp[1]]]).sum()) for sp in spans}
    assert keep == sorted(sorted(spans, key=score.get)[:2])


def test_index_json_records_the_data(env):
    meta = json.loads((env["dir"] / "olmo" / "index.json").read_text())
    assert meta["tokens"] == env["truth"]["preset"]["steps"] * env["truth"]["batch_size"] * \
        env["truth"]["seq_len"]
    assert meta["blocks"][-1]["steps"][1] == env["truth"]["preset"]["steps"]


def test_rows_and_windows_read_the_stream(env):
    """``row_tokens`` / ``window`` against the stream as the truth module reads it, at the
    first and last slots of blocks."""
    from anatomy.trace.index import TraceIndex

    t = env["truth"]
    L, B = t["seq_len"], t["batch_size"]
    stream = _trained(env["world"])
    index = TraceIndex(env["dir"] / "olmo")
    for slot in (0, BLOCK_STEPS * B - 1, BLOCK_STEPS * B, t["preset"]["steps"] * B - 1):
        assert (index.row_tokens(slot) == stream[slot * L:(slot + 1) * L]).all()
        before, match, after = index.window(slot, 5, 20, 3, L)
        p = slot * L + 5
        assert (before == stream[p - 3:p]).all() and (match == stream[p:p + 20]).all()
        assert (after == stream[p + 20:p + 20 + L][:len(after)]).all() and len(after) > 0
