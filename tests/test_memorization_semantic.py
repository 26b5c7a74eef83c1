"""Semantic and textual matches (anatomy.memorization.semantic) and code vs natural language
(anatomy.memorization.code_vs_nl), checked against independent re-computations: a float64
full similarity matrix counted with ``>=``, a pure-Python Levenshtein dynamic programme, and
hand-built prompts at known edit distances."""

from __future__ import annotations

import codecs
import inspect
import re

import numpy as np
import pytest

from anatomy.memorization import semantic
from anatomy.memorization.code_vs_nl import (
    NL_THRESHOLDS,
    load_hf_code_vs_nl,
    nl_label,
    nl_scores,
    train_code_vs_nl,
)
from anatomy.memorization.semantic import (
    column_name,
    match_columns,
    self_rows,
    semantic_columns,
    semantic_matches,
    textual_matches,
)

# --- independent references -------------------------------------------------------------------


def full_cosine(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The whole cosine matrix in float64 (no tiles, no float32)."""
    q = np.asarray(q, np.float64)
    c = np.asarray(c, np.float64)
    qn = np.linalg.norm(q, axis=1, keepdims=True)
    cn = np.linalg.norm(c, axis=1, keepdims=True)
    return (q / np.where(qn > 0, qn, 1)) @ (c / np.where(cn > 0, cn, 1)).T


def levenshtein_dp(a: str, b: str) -> int:
    """Wagner-Fischer edit distance, one row at a time, in plain Python."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def assert_clear_of(sims: np.ndarray, thresholds, margin: float = 1e-5) -> None:
    """No similarity so close to a threshold that float32 rounding could flip it."""
    for t in thresholds:
        assert np.abs(sims - t).min() > margin


def planted(seed: int = 0, n_groups: int = 12, per_group: int = 6, n_noise: int = 40,
            d: int = 24) -> np.ndarray:
    """Groups of near-duplicates (noise scales spread the cosines over 0.6-1) + random rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_groups):
        base = rng.normal(size=d)
        base /= np.linalg.norm(base)
        for _ in range(per_group):
            rows.append(base + rng.uniform(0.0, 0.25) * rng.normal(size=d) / np.sqrt(d) * 3)
    rows.extend(rng.normal(size=(n_noise, d)))
    x = np.asarray(rows, np.float32)
    return x[rng.permutation(len(x))]


# --- semantic matches -------------------------------------------------------------------------


def test_column_names_as_published():
    assert column_name(0.8, "snowclones") == "0_8_snowclones"
    assert column_name(0.9, "templates") == "0_9_templates"


def test_snowclones_match_brute_force(monkeypatch):
    """Counts against the float64 full matrix ``(cos >= t).sum(1)``; tiles of 7 x 11 and the
    default single tile give the same; queries are part corpus rows (self-match) and part
    fresh near-duplicates."""
    corpus = planted(0)
    rng = np.random.default_rng(1)
    fresh = corpus[:10] + 0.05 * rng.normal(size=(10, corpus.shape[1])).astype(np.float32)
    queries = np.concatenate([corpus[20:50], fresh])
    cos = full_cosine(queries, corpus)
    assert_clear_of(cos[:30][cos[:30] < 0.999], (0.8, 0.9))
    assert_clear_of(cos[30:], (0.8, 0.9))
    expect = {f"{t}": (cos >= t).sum(1) for t in (0.8, 0.9)}
    assert expect["0.8"].max() > 3 and (expect["0.8"] > expect["0.9"]).any()  # non-trivial

    got = semantic_matches(queries, corpus)
    assert set(got) == {"0_8_snowclones", "0_9_snowclones"}
    np.testing.assert_array_equal(got["0_8_snowclones"], expect["0.8"])
    np.testing.assert_array_equal(got["0_9_snowclones"], expect["0.9"])
    assert got["0_8_snowclones"].dtype == np.int64
    assert (got["0_9_snowclones"][:30] >= 1).all()  # each corpus query matches itself

    monkeypatch.setattr(semantic, "_QUERY_BLOCK", 7)
    tiled = semantic_matches(queries, corpus, block_bytes=4 * 7 * 11)
    for k in got:
        np.testing.assert_array_equal(tiled[k], got[k])


def test_snowclones_exclude_self_and_zero_rows(monkeypatch):
    """Leaving out each query's own row (found by id) removes exactly one match from the
    corpus queries and none from the others, in one tile or in tiles of 4 x 5; an all-zero
    row matches nothing."""
    corpus = planted(2)
    ids = np.arange(1000, 1000 + len(corpus))
    queries = np.concatenate([corpus[:15], np.zeros((1, corpus.shape[1]), np.float32)])
    q_ids = np.concatenate([ids[:15], [7]])
    rows = self_rows(q_ids, ids)
    np.testing.assert_array_equal(rows, list(range(15)) + [-1])
    cos = full_cosine(queries, corpus)
    assert_clear_of(cos[cos < 0.999], (0.8, 0.9))  # float32 vs float64 counts: no near-tie
    with_self = semantic_matches(queries, corpus)
    without = semantic_matches(queries, corpus, exclude_self_ids=rows)
    for t in (0.8, 0.9):
        k = column_name(t, "snowclones")
        np.testing.assert_array_equal(with_self[k], (cos >= t).sum(1))
        np.testing.assert_array_equal(without[k][:15], with_self[k][:15] - 1)
        assert with_self[k][15] == without[k][15] == 0
    monkeypatch.setattr(semantic, "_QUERY_BLOCK", 4)
    tiled = semantic_matches(queries, corpus, exclude_self_ids=rows, block_bytes=4 * 4 * 5)
    for k in without:
        np.testing.assert_array_equal(tiled[k], without[k])


def test_self_rows_by_id():
    np.testing.assert_array_equal(self_rows([5, 9, 1], [1, 2, 5]), [2, -1, 0])
    np.testing.assert_array_equal(self_rows([3], []), [-1])
    with pytest.raises(Exception, match="unique"):
        self_rows([1], [1, 1])


def test_torch_backend_matches_numpy():
    """The torch path (run here on the CPU) gives the numpy counts, templates included."""
    pytest.importorskip("torch")
    corpus = planted(3)
    cos = full_cosine(corpus, corpus)  # two float32 kernels count alike only clear of ties
    assert_clear_of(cos[cos < 0.999], (0.8, 0.9))
    prompts = [f"prompt {i % 9} " + "x" * (i % 13) for i in range(len(corpus))]
    a = match_columns(corpus, corpus, prompts, prompts, exclude_self_ids=np.arange(len(corpus)))
    b = match_columns(corpus, corpus, prompts, prompts, exclude_self_ids=np.arange(len(corpus)),
                      device="cpu", block_bytes=4 * 4096 * 9)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- textual matches --------------------------------------------------------------------------


def edited(rng: np.random.Generator, s: str, n_edits: int, alphabet: str) -> str:
    """``s`` after ``n_edits`` random substitutions, insertions or deletions."""
    chars = list(s)
    for _ in range(n_edits):
        op = rng.integers(3)
        pos = int(rng.integers(len(chars) + (op == 1)))
        if op == 0 and chars:
            chars[min(pos, len(chars) - 1)] = alphabet[rng.integers(len(alphabet))]
        elif op == 1:
            chars.insert(pos, alphabet[rng.integers(len(alphabet))])
        elif chars:
            del chars[min(pos, len(chars) - 1)]
    return "".join(chars)


def test_templates_match_levenshtein_dp(monkeypatch):
    """Template counts against a brute force: the float64 cosine matrix picks the neighbours,
    a pure-Python Levenshtein DP measures their prompts, ``0 < d < 20`` counts, a non-ASCII
    query prompt gets 0. Prompts of a group are 0-26 random edits of one base string, so the
    distances straddle 20; some prompts are identical (d = 0)."""
    rng = np.random.default_rng(5)
    n_groups, per = 8, 6
    alphabet = "abcdef ghij"
    emb = planted(5, n_groups=n_groups, per_group=per, n_noise=0)
    # group membership from the embeddings: rows of one group share a base direction
    cos_all = full_cosine(emb, emb)
    prompts: list[str | None] = [None] * len(emb)
    for i in range(len(emb)):
        if prompts[i] is not None:
            continue
        base = "".join(alphabet[k] for k in rng.integers(len(alphabet), size=40))
        for j in np.flatnonzero(cos_all[i] > 0.5):
            if prompts[j] is None:
                prompts[j] = edited(rng, base, int(rng.integers(0, 27)), alphabet)
    prompts[3] = prompts[3][:10] + "é" + prompts[3][10:]  # non-ASCII query prompt
    prompts[4] = prompts[5]  # identical prompts: distance 0
    queries, q_prompts = emb[:30], prompts[:30]
    cos = full_cosine(queries, emb)
    assert_clear_of(cos[cos < 0.999], (0.8, 0.9))

    expect = {}
    for t in (0.8, 0.9):
        counts = []
        for i in range(len(queries)):
            if any(ord(ch) > 127 for ch in q_prompts[i]):
                counts.append(0)
                continue
            d = [levenshtein_dp(q_prompts[i], prompts[j]) for j in np.flatnonzero(cos[i] >= t)]
            counts.append(sum(0 < x < 20 for x in d))
        expect[t] = np.array(counts)
    assert expect[0.8].sum() > 10 and expect[0.8][3] == 0

    monkeypatch.setattr(semantic, "_QUERY_BLOCK", 4)
    for t in (0.8, 0.9):
        got = textual_matches(queries, emb, q_prompts, prompts, threshold=t,
                              block_bytes=4 * 4 * 5)
        np.testing.assert_array_equal(got, expect[t])
    cols = match_columns(queries, emb, q_prompts, prompts)
    np.testing.assert_array_equal(cols["0_8_templates"], expect[0.8])
    np.testing.assert_array_equal(cols["0_9_templates"], expect[0.9])
    np.testing.assert_array_equal(cols["0_8_snowclones"], (cos >= 0.8).sum(1))


def test_template_distance_is_an_open_interval():
    """All neighbours at cosine 1 with prompts at hand-made distances 0, 1, 19, 20, 21 (k
    substitutions of "a" * 40 by "b"): only 1 and 19 count; ``max_distance=21`` adds 20."""
    base = "a" * 40
    corpus_prompts = [base[:40 - k] + "b" * k for k in (0, 1, 19, 20, 21)]
    assert [levenshtein_dp(base, p) for p in corpus_prompts] == [0, 1, 19, 20, 21]
    q = np.ones((1, 4), np.float32)
    c = np.ones((5, 4), np.float32)
    assert textual_matches(q, c, [base], corpus_prompts).tolist() == [2]
    assert textual_matches(q, c, [base], corpus_prompts, max_distance=21).tolist() == [3]
    assert textual_matches(q, c, [base], corpus_prompts, max_distance=1).tolist() == [0]
    # lengths 20 apart: pruned without a distance, and correctly not counted
    assert textual_matches(q, c[:1], [base], [base + "a" * 20]).tolist() == [0]
    assert textual_matches(q, c[:1], [base], [base + "a" * 19]).tolist() == [1]


def test_ascii_rule():
    """A query prompt with a non-ASCII character gets 0 (published); ``ascii_only=False``
    counts it; a non-ASCII neighbour prompt of an ASCII query still counts (the published
    test reads the query's prompt only). Semantic matches ignore the rule."""
    q = np.ones((2, 3), np.float32)
    c = np.ones((2, 3), np.float32)
    q_prompts = ["the café opens at nine", "the cafe opens at nine"]
    c_prompts = ["the cafe opens at ten", "the café opens at ten"]
    assert textual_matches(q, c, q_prompts, c_prompts).tolist() == [0, 2]
    assert textual_matches(q, c, q_prompts, c_prompts, ascii_only=False).tolist() == [2, 2]
    cols = match_columns(q, c, q_prompts, c_prompts)
    assert cols["0_8_snowclones"].tolist() == [2, 2]


def test_semantic_columns_with_a_stand_in_embedder(monkeypatch):
    """The convenience path with ``embed_texts`` replaced by fixed vectors: the corpus
    defaults to the samples (each matches itself), an explicit corpus is embedded, and the
    columns equal :func:`match_columns` on the same vectors."""
    import anatomy.lm

    table = {f"text {i}": v for i, v in enumerate(planted(7, n_groups=4, per_group=4,
                                                          n_noise=4))}
    monkeypatch.setattr(anatomy.lm, "embed_texts",
                        lambda emb, texts, **kw: np.stack([table[t] for t in texts]))
    texts = list(table)
    prompts = [f"prompt {i % 5}" for i in range(len(texts))]
    cols = semantic_columns(object(), texts, prompts)
    assert list(cols) == ["0_8_snowclones", "0_9_snowclones", "0_8_templates", "0_9_templates"]
    assert all(v.dtype == np.int64 for v in cols.values())
    assert (cols["0_9_snowclones"] >= 1).all()
    x = np.stack([table[t] for t in texts])
    ref = match_columns(x, x, prompts, prompts)
    for k in cols:
        np.testing.assert_array_equal(cols[k], ref[k])
    other = semantic_columns(object(), texts[:3], prompts[:3], texts[3:], prompts[3:])
    ref = match_columns(x[:3], x[3:], prompts[:3], prompts[3:])
    for k in other:
        np.testing.assert_array_equal(other[k], ref[k])


# --- code vs natural language -----------------------------------------------------------------

CODE_MODULES = ["json.decoder", "json.encoder", "textwrap", "csv", "string", "heapq", "bisect",
                "fractions", "statistics", "shlex", "calendar", "difflib", "glob", "fnmatch",
                "colorsys", "ipaddress"]
_DOCSTRING = re.compile(r'("""|\'\'\')[\s\S]*?\1')


def code_chunks(module_name: str, size: int = 300) -> list[str]:
    """Source of a stdlib module without docstrings and comment lines, in ~size-char chunks."""
    import importlib

    src = _DOCSTRING.sub('""', inspect.getsource(importlib.import_module(module_name)))
    lines = [ln for ln in src.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    out, cur = [], ""
    for ln in lines:
        cur += ln + "\n"
        if len(cur) >= size:
            out.append(cur)
            cur = ""
    return out[:25]


def prose_chunks() -> list[str]:
    """English prose: the Zen of Python (``this``, rot13-decoded) and docstring paragraphs of
    stdlib modules and functions without doctest or code lines."""
    import importlib
    import this  # prints the Zen on first import (captured by pytest); rot13 text in this.s

    paras = codecs.decode(this.s, "rot13").split("\n\n")
    for name in CODE_MODULES + ["os", "shutil", "subprocess", "threading", "argparse"]:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod)] + [inspect.getdoc(f) for _, f in inspect.getmembers(mod)
                                        if inspect.isfunction(f) or inspect.isclass(f)]
        for doc in docs:
            for p in (doc or "").split("\n\n"):
                words = re.findall(r"[A-Za-z]+", p)
                if (len(p) > 120 and ">>>" not in p and "(" not in p[:20] and "=" not in p
                        and len(" ".join(words)) > 0.8 * len(p)):
                    paras.append(" ".join(p.split()))
    return list(dict.fromkeys(paras))


def test_code_vs_nl_separates_code_from_prose(capsys):
    """A TF-IDF classifier trained on code of some stdlib modules and half the prose scores
    held-out modules' code and the other prose: AUROC against the known labels (sklearn's
    ``roc_auc_score``) is high, and the thresholds label held-out texts nl and code."""
    from sklearn.metrics import roc_auc_score

    prose = prose_chunks()
    capsys.readouterr()
    rng = np.random.default_rng(0)
    prose = [prose[i] for i in rng.permutation(len(prose))]
    half = len(prose) // 2
    train_mods, test_mods = CODE_MODULES[::2], CODE_MODULES[1::2]
    code_tr = [c for m in train_mods for c in code_chunks(m)]
    code_te = [c for m in test_mods for c in code_chunks(m)]
    assert len(code_tr) > 50 and len(code_te) > 50 and half > 30

    clf = train_code_vs_nl(code_tr, prose[:half], seed=0)
    s_code, s_nl = nl_scores(clf, code_te), nl_scores(clf, prose[half:])
    y = np.r_[np.zeros(len(s_code)), np.ones(len(s_nl))]
    assert roc_auc_score(y, np.r_[s_code, s_nl]) > 0.97
    assert np.mean(nl_label(s_code) == "code") > 0.8
    assert np.mean(nl_label(s_nl) == "nl") > 0.8
    assert ((s_code >= 0) & (s_code <= 1)).all()
    # batching does not change the scores
    np.testing.assert_allclose(nl_scores(clf, code_te, batch_size=7), s_code)


def test_nl_label_thresholds():
    """The published rule by hand: nl at >= 0.525, code at <= 0.4, uncertain between (and
    for NaN)."""
    assert NL_THRESHOLDS == (0.525, 0.4)
    s = np.array([0.9, 0.525, 0.5249, 0.45, 0.4001, 0.4, 0.1, np.nan])
    assert nl_label(s).tolist() == ["nl", "nl", "uncertain", "uncertain", "uncertain", "code",
                                    "code", "uncertain"]
    assert nl_label(s, (0.5, 0.5)).tolist()[:4] == ["nl", "nl", "nl", "code"]
    with pytest.raises(Exception, match="code <= nl"):
        nl_label(s, (0.3, 0.6))


def test_hf_loader_on_a_tiny_local_model(tmp_path):
    """A tiny random BertForSequenceClassification and a word-piece tokenizer saved to a
    folder load through :func:`load_hf_code_vs_nl`; its logits equal the model's own forward
    pass on each text alone (no padding, no reordering), and ``nl_label_index`` picks the
    softmax column."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    words = ["def", "return", "the", "cat", "sat", "on", "mat", "import", "x", "=", "(", ")",
             ":", "a", "is", "and"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"),
                                         model_max_length=32)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=32, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    texts = ["the cat sat on the mat", "def x ( ) : return x", "import x", "the cat",
             "a cat is a cat and the mat is a mat"]
    clf = load_hf_code_vs_nl(tmp_path, nl_label_index=1, device="cpu", batch_size=2)
    z = clf.logits(texts)
    with torch.inference_mode():
        ref = np.stack([model(**{k: v for k, v in tok(t, return_tensors="pt").items()
                                 if k != "token_type_ids"}).logits[0].numpy() for t in texts])
    np.testing.assert_allclose(z, ref, atol=1e-5)
    p = np.exp(ref) / np.exp(ref).sum(1, keepdims=True)
    np.testing.assert_allclose(nl_scores(clf, texts), p[:, 1], atol=1e-6)
    clf0 = load_hf_code_vs_nl(tmp_path, device="cpu")
    np.testing.assert_allclose(nl_scores(clf0, texts), p[:, 0], atol=1e-6)
    with pytest.raises(Exception, match="nl_label_index"):
        load_hf_code_vs_nl(tmp_path, nl_label_index=2, device="cpu")
