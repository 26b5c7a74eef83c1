"""Exact n-gram occurrence counts over the training stream: ``sequence_duplicates`` and more.

EleutherAI's memorization study (Prashanth et al. 2024; reference notes §2(b)) defines a
sample's ``sequence_duplicates`` as the number of times its 32-token continuation (tokens
32..63 of a 2049-token training sequence) occurs at any offset of the training stream,
counting only windows that lie entirely inside one training sequence (row), every
occurrence, the sample's own included. Their pipeline wrote a hash for each of ~295B
32-grams to S3, skipped the last offset of every row (2017, a bug not reproduced here), and
verified hash hits in C++.

Here the counting is query-driven. The queries (e.g. one continuation per sample) are hashed
and sorted once (:class:`NgramQuery`); each shard of the stream is then scanned in chunks:

1. hash every window of length n with a polynomial hash mod 2^64 (odd base B), vectorised by
   prefix sums: with ``C[i] = sum_{k<=i} t_k B^k``, window i is ``(C[i+n-1] - C[i-1]) B^-i``
   (B odd, so B is invertible mod 2^64; the inverse comes from Newton's iteration);
2. drop windows whose hash cannot be a query's with a flag table on the hash's top bits,
   then ``np.searchsorted`` the rest against the sorted query hashes;
3. keep hash-equal windows lying inside one row, compare their tokens with the query's
   (gather + compare: hashes only nominate candidates, counts are exact), and count.

Counts are additive over shards (:func:`merge_counts` is a sum), so shards can run as
separate processes or ranks; memory is O(chunk + K) beyond the shard's own array, whatever
its size (a ``np.memmap`` stream is read chunk by chunk; only a list of ragged rows is
concatenated first). Chunks are small (:data:`CHUNK_TOKENS`) so that the passes over a
chunk run in cache: measured about 2x faster than 4M-token chunks. Hash collisions (mod 2^64
polynomial hashes collide on adversarial inputs such as Thue-Morse strings, whatever the
base) only cost time: :class:`CountStats` reports how many verification rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

DEFAULT_BASE = 0x9E3779B97F4A7C15  # odd; 2^64 / golden ratio
CHUNK_TOKENS = 1 << 17  # tokens hashed at a time: buffers of 5 x 8 bytes per token stay in cache
_MASK64 = (1 << 64) - 1
_U64 = np.uint64


def inverse_mod_2_64(base: int) -> int:
    """The inverse of an odd ``base`` modulo 2^64 (Newton: x <- x (2 - b x), bits double)."""
    b = int(base) & _MASK64
    if b % 2 == 0:
        raise ValueError(f"base must be odd to be invertible mod 2^64, got {base}")
    x = b  # b * b = 1 mod 8: 3 correct bits
    for _ in range(5):  # 3 -> 6 -> 12 -> 24 -> 48 -> 96 bits
        x = (x * (2 - b * x)) & _MASK64
    assert (x * b) & _MASK64 == 1
    return x


def _powers(base: int, length: int) -> np.ndarray:
    """``base^k mod 2^64`` for k < ``length`` (uint64 wrap-around)."""
    out = np.full(max(length, 0), base & _MASK64, dtype=_U64)
    if length:
        out[0] = 1
        np.multiply.accumulate(out, out=out)
    return out


def _check_hash_args(base: int, hash_bits: int) -> tuple[int, int]:
    if not 1 <= int(hash_bits) <= 64:
        raise ValueError(f"hash_bits must be in 1..64, got {hash_bits}")
    inverse_mod_2_64(base)  # raises on an even base
    return int(base) & _MASK64, int(hash_bits)


def _reduce(h: np.ndarray, hash_bits: int) -> np.ndarray:
    """The hash mod 2^hash_bits (in place); mod 2^64 needs nothing."""
    if hash_bits < 64:
        np.bitwise_and(h, _U64((1 << hash_bits) - 1), out=h)
    return h


def ngram_hashes(ngrams: np.ndarray, *, base: int = DEFAULT_BASE,
                 hash_bits: int = 64) -> np.ndarray:
    """Hash of each row of a (K, n) array: ``sum_k t_k base^k mod 2^hash_bits`` (uint64)."""
    base, hash_bits = _check_hash_args(base, hash_bits)
    q = np.asarray(ngrams)
    if q.ndim != 2:
        raise ValueError(f"n-grams must be a (K, n) array, got shape {q.shape}")
    h = np.zeros(q.shape[0], dtype=_U64)
    col = np.empty(q.shape[0], dtype=_U64)
    for k, bk in enumerate(_powers(base, q.shape[1])):  # column by column: O(K) memory
        col[...] = q[:, k]
        np.multiply(col, bk, out=col)
        np.add(h, col, out=h)
    return _reduce(h, hash_bits)


def _span_hashes(x: np.ndarray, n: int, m: int, ipw: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Window hashes for starts 0..m-1 from ``x``, the cumulative sums of ``t_k B^k``."""
    w = np.empty(m, dtype=_U64) if out is None else out[:m]
    w[0] = x[n - 1]
    np.subtract(x[n: n - 1 + m], x[: m - 1], out=w[1:])
    np.multiply(w, ipw[:m], out=w)
    return w


def _hash_1d(tokens: np.ndarray, n: int, base: int, hash_bits: int) -> np.ndarray:
    m = len(tokens) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=_U64)
    x = tokens.astype(_U64) * _powers(base, len(tokens))
    np.cumsum(x, out=x)
    return _reduce(_span_hashes(x, n, m, _powers(inverse_mod_2_64(base), m)), hash_bits)


# ---------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Rows:
    """A flat token stream cut into rows: ``boundaries`` are the offsets where rows begin
    (and/or end); 0 and ``len(tokens)`` are implied, repeats are ignored, so CSR offsets
    ``[0, l0, l0+l1, ..., N]`` and interior cut points ``[l0, l0+l1, ...]`` both work."""

    tokens: np.ndarray
    boundaries: np.ndarray


class _Layout:
    """A shard as one flat stream plus either a fixed row length or row offsets."""

    def __init__(self, stream: np.ndarray, row_len: int | None = None,
                 offsets: np.ndarray | None = None):
        if stream.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {stream.dtype}")
        self.stream, self.row_len, self.offsets = stream, row_len, offsets

    def n_windows(self, n: int) -> int:
        if self.row_len is not None:
            rows = len(self.stream) // self.row_len if self.row_len else 0
            return rows * max(0, self.row_len - n + 1)
        return int(np.maximum(np.diff(self.offsets) - n + 1, 0).sum())

    def inside(self, p: np.ndarray, n: int) -> np.ndarray:
        """Whether the windows of length n starting at flat positions ``p`` stay in a row."""
        if self.row_len is not None:
            return p % self.row_len + n <= self.row_len
        r = np.searchsorted(self.offsets, p, side="right")
        return p + n <= self.offsets[r]


def _layout(rows, boundaries=None) -> _Layout:
    if isinstance(rows, Rows):
        if boundaries is not None:
            raise ValueError("pass boundaries either in Rows or as an argument, not both")
        rows, boundaries = rows.tokens, rows.boundaries
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        if boundaries is not None:
            raise ValueError("boundaries are for a flat (1-D) stream, not a 2-D array of rows")
        return _Layout(rows.reshape(-1), row_len=rows.shape[1])
    if isinstance(rows, np.ndarray) and rows.ndim == 1:
        b = [] if boundaries is None else np.asarray(boundaries, dtype=np.int64).ravel()
        n = len(rows)
        if len(b) and (b.min() < 0 or b.max() > n):
            raise ValueError(f"row boundaries must lie in 0..{n}")
        offsets = np.unique(np.concatenate([[0, n], b]).astype(np.int64))
        return _Layout(rows, offsets=offsets)
    if boundaries is not None:
        raise ValueError("boundaries are for a flat (1-D) stream")
    parts = [np.asarray(r).ravel() for r in rows]
    if not parts:
        return _Layout(np.zeros(0, dtype=np.int64), offsets=np.zeros(1, dtype=np.int64))
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in parts])]).astype(np.int64)
    return _Layout(np.concatenate(parts), offsets=offsets)


def window_hashes(rows, n: int, *, boundaries=None, base: int = DEFAULT_BASE,
                  hash_bits: int = 64):
    """Hash of every in-row window of length ``n``, the same function as :func:`ngram_hashes`.

    A (R, L) array gives a (R, L-n+1) uint64 array (R x 0 when L < n). Ragged rows (a list of
    1-D arrays, a :class:`Rows`, or a flat stream with ``boundaries``) give one array per row,
    of ``max(0, len - n + 1)`` hashes: windows never cross a row boundary.
    """
    base, hash_bits = _check_hash_args(base, hash_bits)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and boundaries is None:
        big_r, big_l = rows.shape
        m = big_l - n + 1
        if m <= 0:
            return np.zeros((big_r, 0), dtype=_U64)
        x = rows.astype(_U64) * _powers(base, big_l)
        np.cumsum(x, axis=1, out=x)
        w = x[:, n - 1:].copy()
        np.subtract(w[:, 1:], x[:, : m - 1], out=w[:, 1:])
        np.multiply(w, _powers(inverse_mod_2_64(base), m), out=w)
        return _reduce(w, hash_bits)
    lay = _layout(rows, boundaries)
    if lay.row_len is not None:  # a Rows wrapping a 2-D array
        return window_hashes(lay.stream.reshape(-1, lay.row_len), n, base=base,
                             hash_bits=hash_bits)
    s, off = lay.stream, lay.offsets
    return [_hash_1d(s[off[i]: off[i + 1]], n, base, hash_bits) for i in range(len(off) - 1)]


# ---------------------------------------------------------------------------- queries


class NgramQuery:
    """K query n-grams of one length n, hashed, de-duplicated and sorted for counting.

    Identical queries share one count. ``hash_bits < 64`` reduces the hash mod
    2^hash_bits: a deliberately weak hash (many collisions, all rejected by verification),
    for tests. ``unique_tokens`` (U, n) is sorted by hash (distinct queries of equal hash by
    tokens); ``inverse`` (K,) maps each query to its row there. ``filter_bits`` sizes the
    flag table (one byte per slot, indexed by the hash's top bits) that screens windows
    before the binary search (default: about 64 slots per query, 2^12..2^28 slots).
    """

    def __init__(self, ngrams, *, base: int = DEFAULT_BASE, hash_bits: int = 64,
                 filter_bits: int | None = None):
        self.base, self.hash_bits = _check_hash_args(base, hash_bits)
        q = np.asarray(ngrams)
        if q.ndim != 2 or q.shape[1] < 1:
            raise ValueError(f"queries must be a (K, n) array with n >= 1, got shape {q.shape}")
        if q.size and q.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {q.dtype}")
        if q.size and (q.min() < 0 or int(q.max()) > np.iinfo(np.int64).max):
            raise ValueError("token ids must be non-negative int64 values")
        self.k, self.n = q.shape
        if q.dtype == np.uint64:
            q = q.astype(np.int64)  # values checked above; keeps comparisons integer
        self._dedup(q, ngram_hashes(q, base=self.base, hash_bits=self.hash_bits))
        # Groups of equal hash (distinct queries can collide): group g holds unique queries
        # group_start[g] .. group_stop[g]-1.
        self.group_hashes, start = np.unique(self.hashes, return_index=True)
        self.group_start = start.astype(np.int64)
        self.group_stop = np.append(self.group_start[1:], len(self.hashes)).astype(np.int64)
        self._single = bool(np.all(self.group_stop - self.group_start == 1))
        self._table, self._shift = self._prefilter(filter_bits)

    def _dedup(self, q: np.ndarray, h: np.ndarray) -> None:
        """Sort by hash, identical queries merged: equal queries have equal hashes, so only
        runs of one hash need a token comparison (a lexicographic sort where they differ)."""
        order = np.argsort(h, kind="stable")
        hs, qs = h[order], q[order]
        same_h = hs[1:] == hs[:-1]
        diff_t = (qs[1:] != qs[:-1]).any(axis=1)
        clash = np.flatnonzero(same_h & diff_t) + 1  # equal hash, other tokens
        if len(clash):
            run_start = np.flatnonzero(np.r_[True, ~same_h])
            for r in np.unique(np.searchsorted(run_start, clash, side="right") - 1):
                lo = run_start[r]
                hi = run_start[r + 1] if r + 1 < len(run_start) else len(hs)
                perm = np.lexsort(qs[lo:hi].T[::-1])
                order[lo:hi], qs[lo:hi] = order[lo:hi][perm], qs[lo:hi][perm]
            diff_t = (qs[1:] != qs[:-1]).any(axis=1)
        new = np.r_[True, ~same_h | diff_t] if len(q) else np.zeros(0, dtype=bool)
        self.unique_tokens = np.ascontiguousarray(qs[new])
        self.hashes = hs[new]
        self.inverse = np.empty(len(q), dtype=np.int64)
        self.inverse[order] = np.cumsum(new) - 1

    @property
    def n_unique(self) -> int:
        return len(self.hashes)

    def _prefilter(self, bits: int | None):
        """A table of flags on the hash's top bits: with about 64 slots per query, about
        1.5% of non-query windows pass on to the binary search. None for a reduced hash."""
        if self.hash_bits < 64 or not len(self.group_hashes):
            return None, 0
        if bits is None:
            bits = int(np.clip(np.ceil(np.log2(len(self.group_hashes))) + 6, 12, 28))
        bits = int(np.clip(bits, 1, 32))
        table = np.zeros(1 << bits, dtype=bool)
        table[self.group_hashes >> _U64(64 - bits)] = True
        return table, 64 - bits

    def candidates(self, w: np.ndarray, buf: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Indices into ``w`` (window hashes) equal to some query hash, and their groups
        (``buf``: optional scratch of ``len(w)`` uint64)."""
        if not len(self.group_hashes):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self._table is not None:
            top = np.right_shift(w, _U64(self._shift), out=None if buf is None else buf[:len(w)])
            top = top.view(np.int64)  # < 2^32: a valid index, no conversion copy
            hit = np.take(self._table.view(np.uint8), top, mode="clip").view(bool)
            idx = np.flatnonzero(hit)
        else:
            idx = np.arange(len(w))
        wc = w[idx]
        g = np.searchsorted(self.group_hashes, wc)
        np.minimum(g, len(self.group_hashes) - 1, out=g)
        hit = self.group_hashes[g] == wc
        return idx[hit], g[hit]

    def expand(self, idx: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window index, unique query) pairs for windows ``idx`` in hash groups ``g``."""
        if self._single:
            return idx, self.group_start[g]
        size = self.group_stop[g] - self.group_start[g]
        rep_idx = np.repeat(idx, size)
        first = np.repeat(self.group_start[g], size)
        within = np.arange(len(rep_idx)) - np.repeat(np.cumsum(size) - size, size)
        return rep_idx, first + within

    def spread(self, unique_counts: np.ndarray) -> np.ndarray:
        """Counts per unique query -> counts per query, in the order given."""
        return np.asarray(unique_counts, dtype=np.int64)[self.inverse]


@dataclass
class CountStats:
    """What a count scanned; additive over shards (``a + b``)."""

    windows: int = 0  # in-row windows hashed and looked up
    hash_matches: int = 0  # (in-row window, query) pairs with equal hashes
    rejected: int = 0  # of those, token-unequal: hash collisions caught by verification
    crossing: int = 0  # hash-equal windows dropped for crossing a row boundary

    def __add__(self, other: CountStats) -> CountStats:
        return CountStats(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(self)))


# ---------------------------------------------------------------------------- counting


def _count_layout(lay: _Layout, queries: Sequence[NgramQuery], chunk_tokens: int,
                  stats: CountStats) -> list[np.ndarray]:
    """Counts per unique query of each of ``queries`` (same base) over one shard."""
    base = queries[0].base
    if any(q.base != base for q in queries):
        raise ValueError("queries counted together must share one hash base")
    out = [np.zeros(q.n_unique, dtype=np.int64) for q in queries]
    s, big_n = lay.stream, len(lay.stream)
    for q in queries:
        stats.windows += lay.n_windows(q.n)
    max_n, min_n = max(q.n for q in queries), min(q.n for q in queries)
    if big_n < min_n:
        return out
    chunk = int(min(max(chunk_tokens, 2 * max_n), big_n))
    step = chunk - max_n + 1  # window starts owned by one chunk; the rest overlap the next
    pw = _powers(base, chunk)
    ipw = _powers(inverse_mod_2_64(base), chunk)
    x, wbuf, sbuf = (np.empty(chunk, dtype=_U64) for _ in range(3))
    a = 0
    while a <= big_n - min_n:
        t = s[a: a + chunk]
        x_c = x[: len(t)]
        x_c[...] = t  # -> uint64
        np.multiply(x_c, pw[: len(t)], out=x_c)
        np.cumsum(x_c, out=x_c)
        for q, counts in zip(queries, out, strict=True):
            m = min(a + step, big_n - q.n + 1) - a  # window starts a .. a+m-1 are ours
            if m <= 0 or not q.n_unique:
                continue
            w = _reduce(_span_hashes(x_c, q.n, m, ipw, out=wbuf), q.hash_bits)
            idx, g = q.candidates(w, sbuf)
            if not len(idx):
                continue
            keep = lay.inside(a + idx, q.n)
            stats.crossing += int(len(keep) - keep.sum())
            idx, qi = q.expand(idx[keep], g[keep])
            if not len(idx):
                continue
            got = t[idx[:, None] + np.arange(q.n)]
            ok = (got == q.unique_tokens[qi]).all(axis=1)
            stats.hash_matches += len(ok)
            stats.rejected += int(len(ok) - ok.sum())
            np.add.at(counts, qi[ok], 1)  # few per chunk: no (U,) temporary per chunk
        a += step
    return out


def _as_query(query, base: int, hash_bits: int) -> NgramQuery:
    return query if isinstance(query, NgramQuery) else NgramQuery(query, base=base,
                                                                  hash_bits=hash_bits)


def count_shard(rows, query, *, boundaries=None, chunk_tokens: int = CHUNK_TOKENS,
                return_stats: bool = False, base: int = DEFAULT_BASE, hash_bits: int = 64):
    """Occurrences of each query n-gram inside the rows of one shard: int64 (K,).

    ``rows``: a (R, L) integer array, a list of 1-D arrays (ragged), a :class:`Rows`, or a
    flat 1-D stream (one row, or rows cut at ``boundaries``). ``query``: a
    :class:`NgramQuery` or a (K, n) array (then hashed with ``base`` / ``hash_bits``).
    Every occurrence of a window that lies entirely in one row counts, at every offset
    0..len-n. With ``return_stats`` returns ``(counts, CountStats)``.
    """
    q = _as_query(query, base, hash_bits)
    stats = CountStats()
    (unique_counts,) = _count_layout(_layout(rows, boundaries), [q], chunk_tokens, stats)
    counts = q.spread(unique_counts)
    return (counts, stats) if return_stats else counts


def merge_counts(parts: Iterable[np.ndarray]) -> np.ndarray:
    """The reduce of sharded counts: their sum (all parts must be counts of one query set)."""
    total = None
    for p in parts:
        p = np.asarray(p, dtype=np.int64)
        if total is None:
            total = p.copy()
        elif p.shape != total.shape:
            raise ValueError(f"count parts differ in shape: {p.shape} vs {total.shape}")
        else:
            total += p
    if total is None:
        raise ValueError("no count parts to merge")
    return total


def count_ngrams(stream_shards: Iterable, queries, *, chunk_tokens: int = CHUNK_TOKENS,
                 return_stats: bool = False, base: int = DEFAULT_BASE,
                 hash_bits: int = 64):
    """Occurrences of each query over all shards (each shard as for :func:`count_shard`).

    ``queries``: a :class:`NgramQuery`, a (K, n) array, or a sequence of 1-D token-id
    sequences of any lengths (infini-gram-style ``count``; all lengths share one pass over
    each chunk's prefix sums). Returns int64 (K,) in the order given (and ``CountStats``
    with ``return_stats``); a query longer than every row counts 0.
    """
    if isinstance(queries, NgramQuery) or (isinstance(queries, np.ndarray)
                                            and queries.ndim == 2):
        groups = [(_as_query(queries, base, hash_bits), None)]
        k = groups[0][0].k
    else:
        if isinstance(queries, np.ndarray):
            raise ValueError("queries: a (K, n) array or a sequence of n-grams; for one "
                             "n-gram use count() or reshape it to (1, n)")
        seqs = [np.asarray(s).ravel() for s in queries]
        if any(len(s) < 1 for s in seqs):
            raise ValueError("every query n-gram needs at least one token")
        k = len(seqs)
        by_len: dict[int, list[int]] = {}
        for i, s in enumerate(seqs):
            by_len.setdefault(len(s), []).append(i)
        groups = [(NgramQuery(np.stack([seqs[i] for i in ids]), base=base, hash_bits=hash_bits),
                   np.asarray(ids, dtype=np.int64)) for ids in by_len.values()]
    stats = CountStats()
    totals = [np.zeros(g.n_unique, dtype=np.int64) for g, _ in groups]
    if groups:
        for shard in stream_shards:
            parts = _count_layout(_layout(shard), [g for g, _ in groups], chunk_tokens, stats)
            for tot, part in zip(totals, parts, strict=True):
                tot += part
    counts = np.zeros(k, dtype=np.int64)
    for (g, ids), tot in zip(groups, totals, strict=True):
        if ids is None:
            counts = g.spread(tot)
        else:
            counts[ids] = g.spread(tot)
    return (counts, stats) if return_stats else counts


def count(rows, ngram, **kwargs) -> int:
    """Occurrences of one n-gram (token ids, any length) inside the rows of ``rows``."""
    return int(count_ngrams([rows], [ngram], **kwargs)[0])
