"""DSIR (anatomy.selection.dsir): fast mode against an independent dense computation,
compat mode against the ``data-selection`` package, a targeted selection, and W ranks."""

from __future__ import annotations

import json
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from anatomy.execution import Ranks
from anatomy.io import InputError
from anatomy.selection import dsir
from anatomy.selection.indices import gumbel_top_n
from anatomy.selection.pool import ListTexts

STDLIB = Path(sysconfig.get_paths()["stdlib"])

TOY_POOL = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!",
    "def f(x):\n    return x ** 2  # square it, then return the result to the caller",
    "Ünïcödé façade — “quoted” naïve café, İstanbul and ΣΟΦΟΣ; ½ of ٣ is x² (n° 5)",
    "for i in range(10): print(i, i * i)  # loops, prints and multiplies in one line",
    "",
    "short",
    "Licensed under the Apache License, Version 2.0; you may not use this file except...",
    "tabs\tand\nnewlines\r\nand  double  spaces... ?!? ---- ==== snake_case CamelCase 42",
    "the the the the the the the the the the the the the the the the the the the the",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of it",
] * 3
TOY_TARGET = [
    "Permission is granted to copy, distribute and modify this license text freely.",
    "The licensee may not use the file except in compliance with the License terms.",
    "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.",
]


# ---------------------------------------------------------------------------------------
# an independent implementation: nltk's tokenizer, Python ints, Counters, dense numpy

M64 = (1 << 64) - 1


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = h * 0xFF51AFD7ED558CCD & M64
    h ^= h >> 33
    h = h * 0xC4CEB9FE1A85EC53 & M64
    return h ^ (h >> 33)


def _tok_hash(tok: str) -> int:
    # the module's documented spec: sum cp_j P^j + len * golden, then fmix64
    h, p = 0, 1
    for c in tok:
        h = (h + ord(c) * p) & M64
        p = p * 0x100000001B3 & M64
    return _fmix(h + len(tok) * 0x9E3779B97F4A7C15 & M64)


def _dense_fast(texts, nb=dsir.NUM_BUCKETS):
    WordPunctTokenizer = pytest.importorskip("nltk.tokenize").WordPunctTokenizer

    wpt = WordPunctTokenizer()
    X = np.zeros((len(texts), nb), dtype=np.int64)
    for i, t in enumerate(texts):
        words = wpt.tokenize(t.lower())
        hs = [_tok_hash(w) for w in words]
        c = Counter(h % nb for h in hs)
        c.update(_fmix(a * 0xBF58476D1CE4E5B9 + b + 0x94D049BB133111EB & M64) % nb
                 for a, b in zip(hs, hs[1:], strict=False))
        for k, v in c.items():
            X[i, k] = v
    return X


def test_fast_mode_equals_independent_dense_computation():
    Xp, Xt = _dense_fast(TOY_POOL), _dense_fast(TOY_TARGET)
    assert np.array_equal(dsir.dsir_features(TOY_POOL, "fast").toarray(), Xp)
    p_raw = Xp.sum(0) / Xp.sum()
    p_tgt = Xt.sum(0) / Xt.sum()
    log_diff = np.log(p_tgt + 1e-8) - np.log(p_raw + 1e-8)
    want = (Xp @ log_diff).astype(np.float32)
    words = Xp.sum(1)  # unigrams + bigrams = 2w - 1: the estimate (total + 1) // 2 is w
    want[(words + 1) // 2 < 5] = np.nan

    got, info = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), "fast",
                                 min_example_length=5, block_rows=4)
    assert got.dtype == np.float32 and got.shape == (len(TOY_POOL),)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert info["n_short"] == int(np.isnan(want).sum()) == 6  # "", "short" x 3
    assert info["mode"] == "fast" and info["buckets"] == 10_000 and info["n"] == 30
    model = dsir.fit_dsir(ListTexts(TOY_TARGET), ListTexts(TOY_POOL), "fast")
    np.testing.assert_array_equal(model.log_diff, log_diff)
    again, _ = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), model=model,
                                min_example_length=5)
    assert again.tobytes() == got.tobytes()


@pytest.mark.parametrize("seed", [0, 3])
def test_fast_buckets_follow_the_plain_python_spec(seed):
    texts = TOY_POOL[:10]
    X = dsir.dsir_features(texts, "fast", num_buckets=1009, hash_seed=seed).toarray()
    want = np.zeros_like(X)
    for i, t in enumerate(texts):
        toks = dsir.fast_tokens(t)
        for k in (1, 2):
            for j in range(len(toks) - k + 1):
                want[i, dsir.fast_ngram_hash(toks[j: j + k], seed) % 1009] += 1
    assert np.array_equal(X, want)
    if seed:  # another hash function: other buckets
        assert not np.array_equal(X, dsir.dsir_features(texts, "fast", 1009).toarray())


def test_char_classes_of_re_are_str_predicates():
    # re's \w is str.isalnum() or "_", its \s str.isspace(): another code path
    every = [chr(c) for c in range(0x110000)]
    word = np.array([c.isalnum() or c == "_" for c in every])
    space = np.array([c.isspace() for c in every])
    cls = dsir.char_classes("re")
    assert np.array_equal(cls == 1, word) and np.array_equal(cls == 0, space & ~word)


def test_fast_tokens_are_nltks_wordpunct_on_random_unicode():
    WordPunctTokenizer = pytest.importorskip("nltk.tokenize").WordPunctTokenizer

    wpt = WordPunctTokenizer()
    rng = np.random.default_rng(0)
    pieces = [" ", "\n", "\t", "\x1c", "\x85", "\u00a0", "\u3000", "İ", "ẞ", "Σ", "²", "½",
              "\u0301", "_", "'", "-", "a", "Z", "9", "é", "中", "\U0001f600", "‿"]
    for _ in range(200):
        cps = rng.integers(0, 0x110000, 30)
        chars = [chr(c) for c in cps if not 0xD800 <= c < 0xE000]
        chars += list(rng.choice(pieces, 30))
        text = "".join(rng.permutation(chars))
        assert dsir.fast_tokens(text) == wpt.tokenize(text.lower())


def test_trigrams_fast_and_compat():
    texts = ["a b c d", "x y", "one two three"]
    for mode in dsir.MODES:
        X = dsir.dsir_features(texts, mode, num_buckets=997, ngrams=3)
        # w + (w - 1) + (w - 2) n-grams; the length estimate (total + 3) // 3 gives w back
        assert X.sum(1).A1.tolist() == [9, 3, 6]
        assert dsir.example_lengths(X.sum(1).A1, 3).tolist() == [4, 2, 3]


# ---------------------------------------------------------------------------------------
# compat mode against the package


def _write_jsonl(path: Path, texts) -> Path:
    with open(path, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    return path


def _package_weights(tmp: Path, pool, target, min_len, budget, num_proc=1):
    """The package's cached weights and length metadata, back in file order.

    With num_proc = P the package shards a file round-robin (row i -> shard i % P) and its
    cache concatenates shard 0, shard 1, ...: not file order (reference notes, sec. 3.2)."""
    HashedNgramDSIR = pytest.importorskip("data_selection").HashedNgramDSIR
    from joblib import parallel_config

    raw = _write_jsonl(tmp / "raw.jsonl", pool)
    tgt = _write_jsonl(tmp / "target.jsonl", target)
    d = HashedNgramDSIR([str(raw)], [str(tgt)], str(tmp / "cache"), num_proc=num_proc,
                        min_example_length=min_len)
    # threads, not loky's processes: seconds faster, and nltk 3.10's compiled pattern does not
    # survive pickling (its timeout sentinel is compared by identity: "timeout not float")
    with parallel_config(backend="threading"):
        d.fit_importance_estimator(num_tokens_to_fit=budget)
        d.compute_importance_weights()
    w = np.concatenate([np.load(tmp / "cache" / "log_importance_weights" / f"{i}.npy")
                        for i in range(num_proc)])
    meta = np.concatenate([np.load(tmp / "cache" / "perexample_metadata" / f"{i}.npy")
                           for i in range(num_proc)])
    order = np.concatenate([np.arange(i, len(pool), num_proc) for i in range(num_proc)])
    out_w, out_m = np.empty_like(w), np.empty_like(meta)
    out_w[order], out_m[order] = w, meta
    return d, out_w, out_m


def _stdlib_docs(n: int, words: int = 60) -> list[str]:
    """Chunks of stdlib source of varying length (some under the length filter)."""
    docs = []
    for f in sorted(STDLIB.glob("*.py"))[:20]:
        toks = f.read_text(encoding="utf-8", errors="replace").split(" ")
        for i in range(0, len(toks) - words, words):
            docs.append(" ".join(toks[i: i + words // (1 + len(docs) % 4)]))
            if len(docs) == n:
                return docs
    return docs


@pytest.mark.parametrize("budget", ["auto", 1500])
def test_compat_mode_equals_the_package(tmp_path, budget):
    pool = [*_stdlib_docs(40), *TOY_POOL[:10]]
    target = TOY_TARGET + _stdlib_docs(60)[-5:]
    pkg, w, meta = _package_weights(tmp_path, pool, target, min_len=20, budget=budget)
    model = dsir.fit_dsir(ListTexts(target), ListTexts(pool), "compat",
                          num_tokens_to_fit=budget, block_rows=8)
    assert np.array_equal(model.log_diff, pkg.log_diff)  # bit for bit
    if budget != "auto":  # the budget rule cut the pool's fit inside a block
        assert 0 < model.info["raw_rows_fitted"] < len(pool)
        assert model.info["raw_rows_fitted"] % 8 != 0
    got, info = dsir.dsir_scores(ListTexts(pool), ListTexts(target), "compat",
                                 min_example_length=20, num_tokens_to_fit=budget,
                                 block_rows=8)
    keep = meta >= 20  # the package's perexample_metadata_filter
    assert 0 < (~keep).sum() < len(pool)
    assert np.array_equal(~np.isnan(got), keep)
    assert np.array_equal(got[keep], w[keep].astype(np.float32))
    assert info["n_short"] == int((~keep).sum())


def test_compat_mode_equals_the_package_sharded(tmp_path):
    # num_proc = 2: the cache is in shard order; 'all' so both shards fit p_raw on everything
    pool = _stdlib_docs(30)
    _, w, meta = _package_weights(tmp_path, pool, TOY_TARGET, 10, "all", num_proc=2)
    got, _ = dsir.dsir_scores(ListTexts(pool), ListTexts(TOY_TARGET), "compat",
                              min_example_length=10, num_tokens_to_fit="all")
    keep = meta >= 10
    assert np.array_equal(~np.isnan(got), keep)
    assert np.array_equal(got[keep], w[keep].astype(np.float32))


# ---------------------------------------------------------------------------------------
# a target of one kind selects that kind


def _prose_docs() -> list[str]:
    lic = Path("/usr/share/common-licenses")
    if lic.is_dir():
        text = " ".join(p.read_text(errors="replace") for p in sorted(lic.iterdir())
                        if p.is_file())
    else:  # the Python docs' prose, shipped with every CPython
        from pydoc_data.topics import topics

        text = " ".join(topics.values())
    words = text.split()
    return [" ".join(words[i: i + 150]) for i in range(0, len(words) - 150, 150)]


def _code_docs() -> list[str]:
    lines = []
    for f in sorted(STDLIB.glob("*.py"))[:40]:
        lines += [ln for ln in f.read_text(encoding="utf-8", errors="replace").splitlines()
                  if ln.strip() and not ln.strip().startswith("#")]
    return ["\n".join(lines[i: i + 40]) for i in range(0, len(lines) - 40, 40)]


@pytest.mark.parametrize("mode", dsir.MODES)
def test_a_prose_target_selects_prose(mode):
    prose, code = _prose_docs(), _code_docs()
    assert len(prose) >= 240 and len(code) >= 200
    target = prose[:40]
    pool = code[:200] + prose[40:240]
    kind = np.array([0] * 200 + [1] * 200)
    scores, info = dsir.dsir_scores(ListTexts(pool), ListTexts(target), mode)
    assert info["n_short"] < 50
    picked = gumbel_top_n(scores, 100, seed=0)
    assert not np.isnan(scores[picked]).any()
    assert kind[picked].mean() > 0.8


# ---------------------------------------------------------------------------------------
# ranks


def test_ranks_give_identical_bytes(tmp_path):
    pool, target = ListTexts(TOY_POOL + _stdlib_docs(25)), ListTexts(TOY_TARGET)
    kw = {"mode": "fast", "min_example_length": 5, "block_rows": 7, "num_tokens_to_fit": 900}
    mem, _ = dsir.dsir_scores(pool, target, **kw)
    one, info1 = dsir.dsir_scores(pool, target, output=tmp_path / "w1" / "s.npy", **kw)
    assert info1["status"] == "merged" and 0 < info1["raw_rows_fitted"] < len(pool)
    out3 = tmp_path / "w3" / "s.npy"
    results = [dsir.dsir_scores(pool, target, output=out3, ranks=Ranks(r, 3), **kw)
               for r in range(3)]  # ranks 0 and 1 stop after their pass-1 share
    assert [r[0] is None for r in results] == [True, True, True]
    assert results[0][1]["status"] == "part" and results[0][1]["pass"] == "fit"
    again = [dsir.dsir_scores(pool, target, output=out3, ranks=Ranks(r, 3), **kw)
             for r in range(2)]  # pass 1 is done now: they compute their pass-2 share
    three = again[1][0]
    assert three is not None and again[1][1]["status"] == "merged"
    assert (tmp_path / "w1" / "s.npy").read_bytes() == out3.read_bytes()
    assert one.tobytes() == three.tobytes() == mem.tobytes()
    assert not list(tmp_path.rglob("*.parts"))
    skipped, info = dsir.dsir_scores(pool, target, output=out3, **kw)
    assert info["status"] == "skipped" and skipped.tobytes() == one.tobytes()
    with pytest.raises(InputError, match="min_example_length"):  # a changed flag is refused
        dsir.dsir_scores(pool, target, output=out3, **{**kw, "min_example_length": 6})


# ---------------------------------------------------------------------------------------
# input errors


@pytest.mark.parametrize("kw, problem", [
    ({"mode": "exact"}, "unknown DSIR mode"),
    ({"num_buckets": 0}, "num_buckets"),
    ({"ngrams": 0}, "ngrams"),
    ({"num_tokens_to_fit": "some"}, "num_tokens_to_fit"),
    ({"laplace": -1.0}, "laplace"),
    ({"block_rows": 0}, "block_rows"),
    ({"fit_rows": 0}, "fit_rows"),
    ({"min_example_length": -1}, "min_example_length"),
    ({"mode": "compat", "hash_seed": 1}, "hash_seed"),
    ({"engine": "pcre"}, "engine"),
])
def test_bad_flags_are_refused(kw, problem):
    with pytest.raises(InputError, match=problem):
        dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), **kw)


def test_empty_inputs_are_refused():
    with pytest.raises(InputError, match="target is empty"):
        dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts([]))
    with pytest.raises(InputError, match="pool is empty"):
        dsir.dsir_scores(ListTexts([]), ListTexts(TOY_TARGET))
    with pytest.raises(InputError, match="target has no tokens"):
        dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(["", "  "]))


def test_laplace_is_a_target_pseudo_count():
    m0 = dsir.fit_dsir(ListTexts(TOY_TARGET), ListTexts(TOY_POOL), "fast")
    m1 = dsir.fit_dsir(ListTexts(TOY_TARGET), ListTexts(TOY_POOL), "fast", laplace=1.0)
    t = m1.target_counts + 1.0
    want = np.log(t / t.sum() + 1e-8) - np.log(m1.raw_counts / m1.raw_counts.sum() + 1e-8)
    assert np.array_equal(m1.log_diff, want) and not np.array_equal(m0.log_diff, m1.log_diff)


def test_wordpunct_is_nltks():
    WordPunctTokenizer = pytest.importorskip("nltk.tokenize").WordPunctTokenizer

    text = TOY_POOL[2] + " " + TOY_POOL[7] + " a-b_c'd e.g. 3.14 <tag/> $$ \u00a0 x\x1cy"
    want = WordPunctTokenizer().tokenize(text.lower())
    assert dsir.wordpunct().findall(text.lower()) == want
    assert dsir.compat_ngrams(text)[: len(want)] == want
