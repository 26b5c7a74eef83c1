"""DSIR (anatomy.selection.dsir): fast mode (sha256 and fast64 buckets) against an
independent dense computation, compat mode and fast sha256 against the ``data-selection``
package, the sha256 bucket cache, a targeted selection, and W ranks."""

from __future__ import annotations

import hashlib
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


def _sha_bucket(gram: str, nb: int) -> int:
    return int(hashlib.sha256(gram.encode("utf-8")).hexdigest(), 16) % nb


def _dense_fast(texts, nb=dsir.NUM_BUCKETS, hash="fast64"):
    WordPunctTokenizer = pytest.importorskip("nltk.tokenize").WordPunctTokenizer

    wpt = WordPunctTokenizer()
    X = np.zeros((len(texts), nb), dtype=np.int64)
    for i, t in enumerate(texts):
        words = wpt.tokenize(t.lower())
        if hash == "sha256":  # the package's: sha256 of the unigram, of "a b"
            c = Counter(_sha_bucket(w, nb) for w in words)
            c.update(_sha_bucket(a + " " + b, nb) for a, b in zip(words, words[1:],
                                                                   strict=False))
        else:
            hs = [_tok_hash(w) for w in words]
            c = Counter(h % nb for h in hs)
            c.update(_fmix(a * 0xBF58476D1CE4E5B9 + b + 0x94D049BB133111EB & M64) % nb
                     for a, b in zip(hs, hs[1:], strict=False))
        for k, v in c.items():
            X[i, k] = v
    return X


@pytest.mark.parametrize("hash", dsir.HASHES)
def test_fast_mode_equals_independent_dense_computation(hash):
    Xp, Xt = _dense_fast(TOY_POOL, hash=hash), _dense_fast(TOY_TARGET, hash=hash)
    assert np.array_equal(dsir.dsir_features(TOY_POOL, "fast", hash=hash).toarray(), Xp)
    p_raw = Xp.sum(0) / Xp.sum()
    p_tgt = Xt.sum(0) / Xt.sum()
    log_diff = np.log(p_tgt + 1e-8) - np.log(p_raw + 1e-8)
    want = (Xp @ log_diff).astype(np.float32)
    words = Xp.sum(1)  # unigrams + bigrams = 2w - 1: the estimate (total + 1) // 2 is w
    want[(words + 1) // 2 < 5] = np.nan

    got, info = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), "fast",
                                 min_example_length=5, block_rows=4, hash=hash)
    assert got.dtype == np.float32 and got.shape == (len(TOY_POOL),)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert info["n_short"] == int(np.isnan(want).sum()) == 6  # "", "short" x 3
    assert info["mode"] == "fast" and info["buckets"] == 10_000 and info["n"] == 30
    assert info["hash"] == hash and ("sha256_cache" in info) == (hash == "sha256")
    model = dsir.fit_dsir(ListTexts(TOY_TARGET), ListTexts(TOY_POOL), "fast", hash=hash)
    assert model.features["hash"] == hash
    np.testing.assert_array_equal(model.log_diff, log_diff)
    again, _ = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), model=model,
                                min_example_length=5)
    assert again.tobytes() == got.tobytes()


@pytest.mark.parametrize("seed", [0, 3])
def test_fast_buckets_follow_the_plain_python_spec(seed):
    texts = TOY_POOL[:10]
    X = dsir.dsir_features(texts, "fast", num_buckets=1009, hash_seed=seed,
                           hash="fast64").toarray()
    want = np.zeros_like(X)
    for i, t in enumerate(texts):
        toks = dsir.fast_tokens(t)
        for k in (1, 2):
            for j in range(len(toks) - k + 1):
                want[i, dsir.fast_ngram_hash(toks[j: j + k], seed) % 1009] += 1
    assert np.array_equal(X, want)
    if seed:  # another hash function: other buckets
        other = dsir.dsir_features(texts, "fast", 1009, hash="fast64").toarray()
        assert not np.array_equal(X, other)


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
    for mode, hash in (("fast", "sha256"), ("fast", "fast64"), ("compat", "sha256")):
        X = dsir.dsir_features(texts, mode, num_buckets=997, ngrams=3, hash=hash)
        # w + (w - 1) + (w - 2) n-grams; the length estimate (total + 3) // 3 gives w back
        assert X.sum(1).A1.tolist() == [9, 3, 6]
        assert dsir.example_lengths(X.sum(1).A1, 3).tolist() == [4, 2, 3]
    # 3- and 4-grams over punctuation (tokens not one space apart) and non-ASCII text
    texts = TOY_POOL[:10] + ["a,b;c  d\te", "ß ẞ (x) [y]"]
    for n in (3, 4):
        assert (dsir.dsir_features(texts, "fast", 1009, ngrams=n)
                != dsir.dsir_features(texts, "compat", 1009, ngrams=n)).nnz == 0


def _random_texts(rng, n, pieces_only=False):
    pieces = [" ", "  ", "\n", "\t", "\x1c", "\x85", "\u00a0", "\u3000", "İ", "ẞ", "Σ",
              "²", "½", "\u0301", "_", "'", "-", ".", "a", "Z", "9", "é", "中", "\U0001f600",
              "‿", "ab", "the", "x1"]
    out = []
    for _ in range(n):
        chars = list(rng.choice(pieces, 40))
        if not pieces_only:
            cps = rng.integers(0, 0x110000, 20)
            chars += [chr(c) for c in cps if not 0xD800 <= c < 0xE000]
        out.append("".join(rng.permutation(chars)))
    return out


def test_fast_sha256_buckets_are_compats_on_random_unicode():
    rng = np.random.default_rng(1)
    texts = _random_texts(rng, 300)
    for nb in (10_000, 3, 2**32 - 5):
        Xf = dsir.dsir_features(texts, "fast", nb)
        Xc = dsir.dsir_features(texts, "compat", nb)
        assert Xf.sum() == Xc.sum() > 0 and (Xf != Xc).nnz == 0


def test_fast_sha256_hashes_lone_surrogates_where_the_package_fails():
    texts = ["ab\ud800cd, x\udfff (y z)", "plain words here"]
    with pytest.raises(UnicodeEncodeError):  # the package's .encode("utf-8") too
        dsir.dsir_features(texts, "compat", 1009)
    want = np.zeros((2, 1009), np.int64)
    for i, t in enumerate(texts):
        toks = dsir.fast_tokens(t)
        for g in toks + [a + " " + b for a, b in zip(toks, toks[1:], strict=False)]:
            d = hashlib.sha256(g.encode("utf-8", "surrogatepass")).digest()
            want[i, int.from_bytes(d, "big") % 1009] += 1
    assert np.array_equal(dsir.dsir_features(texts, "fast", 1009).toarray(), want)


def test_sha256_cache_under_pressure_keeps_every_bucket_exact(monkeypatch):
    # batches of ~2,000 characters through a cache of 64 entries: evictions all the way
    monkeypatch.setattr(dsir, "_BATCH_CHARS", 2000)
    rng = np.random.default_rng(2)
    texts = _random_texts(rng, 400, pieces_only=True) + _stdlib_docs(200)
    feat = dsir.Featurizer("fast", num_buckets=997, cache_entries=64)
    rows, buckets = feat.occurrences(texts)
    X = dsir.dsir_features(texts, "compat", 997).tocoo()
    got = np.zeros((len(texts), 997), np.int64)
    np.add.at(got, (rows, buckets), 1)
    assert np.array_equal(got, X.toarray())
    st = feat.cache.stats()
    assert st["evictions"] > 10 and st["entries"] <= 64 and st["hashed"] > 1000
    # twice through the same cache: the same buckets
    assert np.array_equal(feat.occurrences(texts)[1], buckets)


def _cache_run(cache, keys, batches=3):
    """Each batch: ``keys`` twice, shuffled, through ``cache``; checks every bucket against
    a dict; returns how many keys each batch hashed."""
    want = {int(k): (int(k) * 7 + 1) % cache.num_buckets for k in keys}
    hashed = []
    for b in range(batches):
        batch = np.random.default_rng(b).permutation(np.concatenate([keys, keys]))
        got = cache.buckets(batch, lambda i, batch=batch: np.array(
            [want[int(k)] for k in batch[i]], dtype=np.int64))
        assert got.tolist() == [want[int(k)] for k in batch]
        hashed.append(cache.hashed - sum(hashed))
    return hashed


def test_bucket_cache_clusters_and_the_end_of_the_table():
    cache = dsir.BucketCache(1000, max_entries=256)  # 512 slots and a spare tail of 64
    shift = 64 - 9
    # 100 keys whose home is one of the last two slots: 66 fit up to the end (the last
    # probe windows run past it), 34 are never stored; a cluster of 20 at slot 3, and 10
    # keys spread out
    keys = np.array([((510 + i % 2) << shift) + i + 1 for i in range(100)]
                    + [(3 << shift) + i + 1 for i in range(20)]
                    + [((7 * i + 11) << shift) + 999 for i in range(10)], dtype=np.uint64)
    assert _cache_run(cache, keys) == [130, 34, 34]
    assert len(cache) == 96 and cache.stats()["unstored"] == 3 * 34
    assert cache.stats()["evictions"] == 0


def test_bucket_cache_evicts_the_least_used():
    cache = dsir.BucketCache(1000, max_entries=32)
    rng = np.random.default_rng(0)
    keys = rng.integers(1, 2**63, 70, dtype=np.uint64)
    hashed = _cache_run(cache, keys, batches=4)
    assert hashed[0] == 70 and all(h >= 70 - 32 for h in hashed[1:])
    assert len(cache) <= 32 and cache.stats()["evictions"] >= 3
    # a key used in every batch outlives ones seen once
    cache = dsir.BucketCache(1000, max_entries=16)
    hot = keys[:4]
    for b in range(6):
        batch = np.concatenate([np.repeat(hot, 16), keys[4 + 11 * b: 15 + 11 * b]])
        cache.buckets(batch, lambda i, batch=batch: np.asarray(batch[i] % np.uint64(1000),
                                                               dtype=np.int64))
    assert cache.stats()["evictions"] >= 2 and np.isin(hot, cache.table[0::2]).all()


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


def test_fast_sha256_equals_the_package(tmp_path):
    from scipy.stats import spearmanr

    pool = [*_stdlib_docs(40), *TOY_POOL[:10]]
    target = TOY_TARGET + _stdlib_docs(60)[-5:]
    pkg, w, meta = _package_weights(tmp_path, pool, target, min_len=20, budget="auto")
    model = dsir.fit_dsir(ListTexts(target), ListTexts(pool), "fast")
    assert np.array_equal(model.log_diff, pkg.log_diff)  # the same counts, bit for bit
    got, info = dsir.dsir_scores(ListTexts(pool), ListTexts(target), "fast",
                                 min_example_length=20)
    keep = meta >= 20
    assert np.array_equal(~np.isnan(got), keep)
    # the same buckets; the weights' sums run in another order than the package's np.dot
    np.testing.assert_allclose(got[keep], w[keep], rtol=1e-6, atol=1e-5)
    assert spearmanr(got[keep], w[keep]).statistic > 0.999
    assert info["sha256_cache"]["hashed"] == info["sha256_cache"]["entries"] > 1000


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
    ({"hash_seed": 1}, "hash_seed is for hash 'fast64'"),
    ({"hash": "md5"}, "unknown DSIR hash"),
    ({"mode": "compat", "hash": "fast64"}, "compat hashes as the package"),
    ({"num_buckets": 2**32 + 1}, "at most 2"),
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


def test_models_saved_before_the_hash_option_read_as_fast64():
    model = dsir.fit_dsir(ListTexts(TOY_TARGET), ListTexts(TOY_POOL), "fast", hash="fast64")
    payload = model.to_payload()
    payload["meta"] = {**payload["meta"], "features": {
        k: v for k, v in model.features.items() if k != "hash"}}
    old = dsir.DsirModel.from_payload(payload)
    assert old.features["hash"] == "fast64" and old.featurizer().cache is None
    a, _ = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), model=old)
    b, _ = dsir.dsir_scores(ListTexts(TOY_POOL), ListTexts(TOY_TARGET), model=model)
    assert a.tobytes() == b.tobytes()
