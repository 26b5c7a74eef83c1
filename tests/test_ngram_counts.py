"""Exact n-gram counts (anatomy.memorization.ngram_counts) against independent recounts.

The reference in most tests is ``brute_counts``: a plain ``collections.Counter`` over every
in-row window as a tuple, row by row in Python, sharing no code with the module (no hashing,
no numpy windows). Hash values are checked against Python big-integer arithmetic.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from anatomy.memorization import ngram_counts as nc

MOD = 1 << 64


def brute_counts(rows, n: int) -> Counter:
    """Every window of length n lying inside one row, as a tuple of Python ints."""
    c: Counter = Counter()
    for row in rows:
        row = [int(t) for t in row]
        for i in range(len(row) - n + 1):
            c[tuple(row[i: i + n])] += 1
    return c


def expected(rows, queries) -> np.ndarray:
    """Brute-force count of each query (any lengths) in ``rows``."""
    by_n: dict[int, Counter] = {}
    out = []
    for q in queries:
        q = tuple(int(t) for t in q)
        if len(q) not in by_n:
            by_n[len(q)] = brute_counts(rows, len(q))
        out.append(by_n[len(q)][q])
    return np.array(out, dtype=np.int64)


def python_hash(tokens, base: int) -> int:
    """sum_k t_k base^k mod 2^64 with Python integers."""
    return sum(int(t) * pow(base, k, MOD) for k, t in enumerate(tokens)) % MOD


def plant(rng, rows, passage, k):
    """Write ``passage`` at ``k`` distinct non-overlapping (row, offset) places."""
    big_r, big_l = rows.shape
    n = len(passage)
    slots = rng.choice(big_r * (big_l // n), size=k, replace=False)
    for s in slots:
        r, j = divmod(int(s), big_l // n)
        rows[r, j * n: (j + 1) * n] = passage


def test_inverse_and_window_hashes_match_python_integers():
    """Checked by: Python big-int arithmetic (the inverse by multiplication, each window's
    hash as an explicit sum of t_k B^k mod 2^64), at every offset including L-n."""
    for base in (1, 3, nc.DEFAULT_BASE, MOD - 1, 0x1234567890ABCDEF):
        assert base * nc.inverse_mod_2_64(base) % MOD == 1
    with pytest.raises(ValueError):
        nc.inverse_mod_2_64(2)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 60000, size=(3, 40), dtype=np.uint16)
    for n in (1, 5, 40):
        w = nc.window_hashes(rows, n)
        assert w.shape == (3, 40 - n + 1) and w.dtype == np.uint64
        for r in range(3):
            for i in range(40 - n + 1):
                assert int(w[r, i]) == python_hash(rows[r, i: i + n], nc.DEFAULT_BASE)
        assert np.array_equal(nc.ngram_hashes(rows[:, :n]), w[:, 0])
    assert nc.window_hashes(rows, 41).shape == (3, 0)
    ragged = [rows[0, :7], rows[1, :2], rows[2]]
    got = nc.window_hashes(ragged, 3)
    assert [len(g) for g in got] == [5, 0, 38]
    assert int(got[2][-1]) == python_hash(rows[2, -3:], nc.DEFAULT_BASE)
    flat = nc.window_hashes(np.concatenate(ragged), 3, boundaries=[7, 9])
    assert all(np.array_equal(a, b) for a, b in zip(got, flat, strict=True))


@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("chunk", [16, 101, nc.CHUNK_TOKENS])
def test_small_vocab_rows_match_counter(n, chunk):
    """Checked by: brute_counts. Vocabulary 3, so most n-grams recur many times; small
    chunks put windows across every chunk seam (each must be counted exactly once)."""
    rng = np.random.default_rng(2 + n)
    rows = rng.integers(0, 3, size=(12, 50), dtype=np.uint16)
    queries = np.concatenate([rows[rng.integers(0, 12, 30), :n],
                              rng.integers(0, 4, size=(10, n))])  # token 3 never occurs
    got, stats = nc.count_shard(rows, queries, chunk_tokens=chunk, return_stats=True)
    assert np.array_equal(got, expected(rows, queries))
    assert stats.windows == 12 * (50 - n + 1) and stats.rejected == 0


@pytest.mark.parametrize("k", [1, 3, 8])
def test_planted_passage_counted_k_times(k):
    """Checked by: the number of plants (random 50k-vocabulary rows have no natural repeat
    of a 32-gram) and brute_counts; each row's own continuation counts itself once."""
    rng = np.random.default_rng(10 + k)
    rows = rng.integers(0, 50000, size=(20, 200), dtype=np.uint16)
    passage = rng.integers(0, 50000, size=32, dtype=np.uint16)
    plant(rng, rows, passage, k)
    queries = np.concatenate([passage[None], rows[:, 32:64]])
    got = nc.count_shard(rows, queries)
    assert got[0] == k
    assert np.array_equal(got, expected(rows, queries))


def test_passage_straddling_two_rows_is_not_counted():
    """Checked by: construction (the passage only occurs across the row seam) and
    brute_counts; the same tokens as one flat row do count it, so the row boundary is what
    excludes it, and the scan saw and dropped it (stats.crossing)."""
    rng = np.random.default_rng(20)
    rows = rng.integers(0, 50000, size=(4, 100), dtype=np.uint16)
    passage = rng.integers(0, 50000, size=32, dtype=np.uint16)
    rows[1, -10:], rows[2, :22] = passage[:10], passage[10:]
    got, stats = nc.count_shard(rows, passage[None], return_stats=True)
    assert got[0] == 0 == expected(rows, [passage])[0]
    assert stats.crossing == 1
    assert nc.count_shard(rows.reshape(1, -1), passage[None])[0] == 1
    ragged = [rows[0], rows[1], rows[2, :50], rows[2, 50:], rows[3]]
    assert nc.count_shard(ragged, passage[None])[0] == 0


def test_last_valid_offset_is_counted():
    """Checked by: construction and brute_counts. The published pipeline hashed offsets
    0..2016 of each 2049-token row and so missed a continuation at offset 2017 = L-n."""
    rng = np.random.default_rng(30)
    rows = rng.integers(0, 50000, size=(3, 2049), dtype=np.uint16)
    passage = rng.integers(0, 50000, size=32, dtype=np.uint16)
    rows[0, 2017:] = passage
    rows[2, :32] = passage
    queries = np.stack([passage, rows[1, 2017:]])
    got = nc.count_shard(rows, queries, chunk_tokens=2049)  # seam at each row end
    assert got.tolist() == [2, 1]
    assert np.array_equal(got, expected(rows, queries))


def test_ragged_rows_all_forms_match_counter(tmp_path):
    """Checked by: brute_counts over the list of rows. A list of 1-D arrays, a Rows, a flat
    stream with boundaries and a np.memmap stream (read chunk by chunk) must all agree;
    rows shorter than n (and empty ones) contribute nothing."""
    rng = np.random.default_rng(40)
    lengths = [0, 3, 17, 1, 40, 9, 25, 4]
    ragged = [rng.integers(0, 3, size=m, dtype=np.uint32) for m in lengths]
    n = 4
    queries = rng.integers(0, 3, size=(25, n))
    want = expected(ragged, queries)
    flat = np.concatenate(ragged)
    cuts = np.cumsum(lengths)[:-1]
    path = tmp_path / "stream.u32"
    flat.tofile(path)
    mm = np.memmap(path, dtype=np.uint32, mode="r")
    for got in (nc.count_shard(ragged, queries, chunk_tokens=8),
                nc.count_shard(nc.Rows(flat, cuts), queries),
                nc.count_shard(flat, queries, boundaries=np.concatenate([[0], cuts, [len(flat)]])),
                nc.count_shard(mm, queries, boundaries=cuts, chunk_tokens=16)):
        assert np.array_equal(got, want)
    assert nc.count_shard(ragged, queries, return_stats=True)[1].windows == sum(
        max(0, m - n + 1) for m in lengths)


def test_three_shards_sum_to_one_shard():
    """Checked by: brute_counts over all rows, and the one-shard count; shards cut at row
    boundaries (uneven sizes), merged by merge_counts and by count_ngrams."""
    rng = np.random.default_rng(50)
    rows = rng.integers(0, 4, size=(30, 60), dtype=np.uint16)
    queries = rows[rng.integers(0, 30, 40), 10:15]
    q = nc.NgramQuery(queries)
    whole = nc.count_shard(rows, q)
    shards = [rows[:7], rows[7:19], rows[19:]]
    parts = [nc.count_shard(s, q) for s in shards]
    assert np.array_equal(nc.merge_counts(parts), whole)
    assert np.array_equal(nc.count_ngrams(iter(shards), q), whole)
    assert np.array_equal(whole, expected(rows, queries))
    with pytest.raises(ValueError):
        nc.merge_counts([parts[0], parts[1][:3]])


def test_identical_queries_share_a_count():
    """Checked by: brute_counts and np.unique; repeated query rows are de-duplicated once
    (n_unique), also when distinct queries share a (weak) hash, and every copy gets the
    same, full count (no splitting between copies)."""
    rng = np.random.default_rng(60)
    rows = rng.integers(0, 2, size=(10, 30), dtype=np.uint16)
    base = rows[:3, 5:10]
    queries = np.concatenate([base, base, base[:1], base[:1]]).astype(np.int64)
    q = nc.NgramQuery(queries)
    assert q.k == 8 and q.n_unique == len(np.unique(base, axis=0))
    got = nc.count_shard(rows, q)
    want = expected(rows, queries)
    assert np.array_equal(got, want)
    assert got[0] == got[3] == got[6] == got[7]
    weak = nc.NgramQuery(queries, hash_bits=2)  # distinct queries share hashes too
    assert weak.n_unique == q.n_unique and np.array_equal(nc.count_shard(rows, weak), want)
    many = rng.integers(0, 3, size=(300, 3))  # up to 27 distinct, 4 hash values
    for hq in (nc.NgramQuery(many), nc.NgramQuery(many, hash_bits=2)):
        assert hq.n_unique == len(np.unique(many, axis=0))
        assert np.array_equal(hq.unique_tokens[hq.inverse], many)


def test_forced_collisions_are_rejected_by_verification():
    """Checked by: brute_counts for the counts, and for the number rejected an independent
    recount of colliding pairs. With base 1 the hash is the token sum, so every window with a
    query's token sum but other tokens (e.g. a permutation) collides; with hash_bits=3 the
    collisions are recounted with Python-int hashes mod 8."""
    rng = np.random.default_rng(70)
    rows = rng.integers(0, 4, size=(6, 40), dtype=np.uint16)
    n = 4
    queries = np.unique(rows[rng.integers(0, 6, 12), 3:3 + n], axis=0)
    windows = brute_counts(rows, n)

    got, stats = nc.count_shard(rows, queries, base=1, return_stats=True)
    assert np.array_equal(got, expected(rows, queries))
    qset = [tuple(int(t) for t in q) for q in queries]
    same_sum = sum(c for w, c in windows.items() for q in qset if sum(w) == sum(q) and w != q)
    assert stats.rejected == same_sum > 0

    got, stats = nc.count_shard(rows, queries, hash_bits=3, chunk_tokens=50,
                                return_stats=True)
    assert np.array_equal(got, expected(rows, queries))
    hq = [python_hash(q, nc.DEFAULT_BASE) % 8 for q in qset]
    weak = sum(c for w, c in windows.items() for q, h in zip(qset, hq, strict=True)
               if python_hash(w, nc.DEFAULT_BASE) % 8 == h and w != q)
    assert stats.rejected == weak > 0
    assert stats.hash_matches == weak + int(got.sum())


def test_any_length_ngrams_and_token_dtypes():
    """Checked by: brute_counts per length (infini-gram-style ``count``: lengths 1..L and
    L+1 mixed in one call), and equality across uint16 / uint32 / int64 token storage."""
    rng = np.random.default_rng(80)
    rows = rng.integers(0, 3, size=(5, 20), dtype=np.uint16)
    queries = [rows[0, :1], rows[1, 2:4], rows[2, 5:12], [0, 0, 0], rows[3], rows[4, :20],
               np.zeros(21, dtype=np.int64), rows[0, 3:5], [2]]
    want = expected(rows, queries)
    for dt in (np.uint16, np.uint32, np.int64):
        got = nc.count_ngrams([rows.astype(dt)], queries, chunk_tokens=8)
        assert np.array_equal(got, want)
    assert nc.count(rows, rows[1, 2:4]) == want[1]
    assert nc.count([rows[0], rows[1]], [70000]) == 0  # beyond uint16: never matches
    with pytest.raises(ValueError):
        nc.NgramQuery(np.array([[1, -2]]))
    assert nc.count_shard(rows, np.zeros((0, 3), dtype=np.int64)).shape == (0,)
