"""DSIR: importance weights of a candidate pool towards a target, on hashed n-gram features.

Xie, Santurkar, Ma & Liang (2023), "Data Selection for Language Models via Importance
Resampling", NeurIPS 2023, Sec. 3: map each text to hashed n-gram counts, fit a bag-of-ngrams
distribution on the target (``p_tgt``) and on the raw pool (``p_raw``), weight a candidate by
``log w(x) = sum_j counts_j(x) * (log p_tgt,j - log p_raw,j)`` and resample with Gumbel top-k
(done by the caller: :func:`anatomy.selection.indices.gumbel_top_n`, which never picks NaN).

The details follow the released package, ``data-selection`` 1.0.3 (p-lambda/dsir,
``HashedNgramDSIR``), read in its source:

- features: ``text.lower()``, nltk's ``WordPunctTokenizer`` (the regex ``\\w+|[^\\w\\s]+``),
  every unigram and every space-joined k-gram up to ``ngrams``, each hashed into one of
  ``num_buckets`` buckets by ``int(sha256(utf8).hexdigest(), 16) % num_buckets``. Which
  characters ``\\w`` and ``\\s`` take depends on the installed nltk: recent releases (3.10
  here) compile the pattern with the third-party ``regex`` engine, older ones with ``re``,
  and the two differ on ~30,000 code points (:func:`wordpunct_engine`);
- ``p_tgt`` from every target row, ``p_raw`` from the pool's rows in order until the summed
  counts pass ``num_tokens_to_fit`` ('auto' = ``100,000 * num_buckets``: 1e9 n-gram counts at
  10,000 buckets; the row that crosses it is included; with ``num_proc = P`` the package
  gives each of its P round-robin shards ``budget // P``, here the rows are taken in order,
  as with ``num_proc = 1``); ``log_diff = log(p_tgt + 1e-8) - log(p_raw + 1e-8)``; the
  upstream repo's ``target_laplace_smoothing`` (a pseudo-count added to every target bucket,
  absent from 1.0.3) is ``laplace``;
- the length filter: ``(sum(counts) + n(n-1)/2) // n`` (the word count for n = 2) must be at
  least ``min_example_length`` (100): shorter rows are silently never resampled there; here
  they score NaN and the returned info counts them;
- the weight is not length-normalised (long documents get extreme weights).

Two featurisations: ``mode="compat"`` reproduces the package bit for bit (same buckets, same
float64 weights, which equal the package's cached ``log_importance_weights`` as float32);
``mode="fast"`` finds the same tokens vectorised (numpy on the UTF-32 code points and a
character-class table built from the same regex engine), then buckets them with ``hash``:

- ``"sha256"`` (default): the package's bucket function, each distinct n-gram hashed once.
  Every occurrence is keyed by its vectorised 64-bit fast64 hash and looked up in a bounded
  numpy hash table (:class:`BucketCache`: 2^22 entries, at most 128 MiB, least used half
  evicted when full); the n-grams not there are built (space-joined utf-8, vectorised) and
  hashed with sha256 in one Python loop. The buckets, counts and log ratios are the
  package's bit for bit (barring a 64-bit key collision in the cache, ~5e-7 for a full
  one) and the weights equal to float32 rounding: Spearman 1.0000 against the package,
  float32-identical weights on the benchmark. Speed: 11-13x the package end to end on one
  core (``benchmarks/bench_dsir.py``: 4 MB of stdlib source on a shared 2-CPU machine, two
  runs: 12.7x and 11.2x), 3.7x compat. Its floor is the ~0.7 us a sha256 call costs from
  Python, for 222k distinct n-grams there (about a third of the time), plus the lookups; on
  a pool with far more distinct n-grams than the cache they are hashed again in each pass
  (the benchmark's row with a 65,536-entry cache: 2.4x the hashing, 4-5x the package).
- ``"fast64"``: a 64-bit polynomial hash (:func:`fast_token_hash`, seeded by ``hash_seed``),
  35-38x the package, but other buckets, and at 10,000 buckets the collisions alone make
  two hash functions disagree: Spearman 0.8777 with the package on the benchmark (0.82-0.88
  on other pools), as between two seeds of fast64 (0.8770), with 72% of the top 10% shared;
  at 100,000 buckets 0.975.

The project's goal, >= 15x the package with Spearman >= 0.9 against it, is met by neither:
no hash but sha256 can pass 0.9 at 10,000 buckets, and sha256 from Python stops short of
15x. The default is ``"sha256"`` (the package's selection, still several times compat's
speed); take ``"fast64"`` where throughput matters more than agreeing with the package.

Large pools: both pool passes are map steps over fixed blocks of ``block_rows`` rows
(:mod:`anatomy.execution`): pass 1 sums bucket counts (exact int64; its merge applies the
budget rule and fits the target), pass 2 computes the weights. W ranks give the bytes of one.
With ranks, a rank that finishes pass 1 before the others returns (status ``"part"``) unless
``wait_s`` lets it wait for the merged counts; running the same command again continues.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from anatomy import execution
from anatomy.io import InputError, PathLike, atomic_npy, load_npy
from anatomy.selection.pool import TextSource

MODES = ("fast", "compat")
HASHES = ("sha256", "fast64")  # fast mode's bucket functions: the package's, or a 64-bit one
NUM_BUCKETS = 10_000
BLOCK_ROWS = 4096  # pool rows per unit (a unit's result is one part file)
BATCH_SIZE = 1024  # target rows featurised at a time
EPS = 1e-8  # the package's additive constant inside both logs
MIN_EXAMPLE_LENGTH = 100

WORDPUNCT = r"\w+|[^\w\s]+"  # nltk.tokenize.WordPunctTokenizer's pattern

# fast mode works on sub-batches of this many characters: its arrays (~40 bytes a character)
# then stay in the heap (larger ones are mmap-ed afresh each time: 1.5x slower here)
_BATCH_CHARS = 1 << 18
# compat mode memoises bucket ids of n-gram strings (sha256 dominates); cleared when full
_MEMO_MAX = 2_000_000
# fast mode's sha256 buckets: the most distinct n-grams its cache holds (BucketCache)
CACHE_ENTRIES = 1 << 22
_TAIL = 64  # BucketCache: spare slots after the last home slot (probes do not wrap)


# ---------------------------------------------------------------------------------------
# fast hashing

_P = 0x100000001B3  # the polynomial's base (FNV-64's prime; odd, so invertible mod 2^64)
_LEN_MULT = 0x9E3779B97F4A7C15  # golden-ratio constant: the token length enters the hash
_SEED_MULT = 0xD6E8FEB86659FD93  # hash_seed enters the token hash times this (odd) constant
_NGRAM_MULT = 0xBF58476D1CE4E5B9  # splitmix64's constants combine (k-1)-gram and next token
_NGRAM_ADD = 0x94D049BB133111EB
_M64 = (1 << 64) - 1
_U = np.uint64
_pow_cache: dict[str, np.ndarray] = {}
_classes: dict[str, np.ndarray] = {}
_patterns: dict[str, Any] = {}
_engine: str | None = None


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (wrapping arithmetic)."""
    h ^= h >> _U(33)
    h *= _U(0xFF51AFD7ED558CCD)
    h ^= h >> _U(33)
    h *= _U(0xC4CEB9FE1A85EC53)
    h ^= h >> _U(33)
    return h


def fast_token_hash(token: str, hash_seed: int = 0) -> int:
    """The fast mode's 64-bit hash of one token, in plain Python (the specification).

    ``fmix64((sum_j cp_j * P^j + len * LEN_MULT + hash_seed * SEED_MULT) mod 2^64)`` over
    the token's code points ``cp_j`` (MurmurHash3's finaliser); a k-gram's hash is
    ``fmix64(h(k-1-gram) * NGRAM_MULT + h(last token) + NGRAM_ADD)``
    (:func:`fast_ngram_hash`); the bucket is ``hash % num_buckets``.
    """
    h = 0
    for j, c in enumerate(token):
        h = (h + ord(c) * pow(_P, j, 1 << 64)) & _M64
    return _fmix64_int((h + len(token) * _LEN_MULT + hash_seed * _SEED_MULT) & _M64)


def fast_ngram_hash(tokens: list[str], hash_seed: int = 0) -> int:
    """The fast mode's hash of an n-gram (``len(tokens) >= 1``), in plain Python."""
    h = fast_token_hash(tokens[0], hash_seed)
    for t in tokens[1:]:
        h = _fmix64_int((h * _NGRAM_MULT + fast_token_hash(t, hash_seed) + _NGRAM_ADD)
                        & _M64)
    return h


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``P^j`` and ``P^-j`` mod 2^64 for ``j < n`` (cached, grown by doubling)."""
    have = _pow_cache.get("pow")
    if have is None or len(have) < n:
        m = max(n, 2 * len(have) if have is not None else 1 << 16)
        pw = np.full(m, _P, dtype=np.uint64)
        pw[0] = 1
        np.cumprod(pw, out=pw)  # wraps mod 2^64
        ipw = np.full(m, pow(_P, -1, 1 << 64), dtype=np.uint64)
        ipw[0] = 1
        np.cumprod(ipw, out=ipw)
        _pow_cache["pow"], _pow_cache["ipow"] = pw, ipw
    return _pow_cache["pow"], _pow_cache["ipow"]


def wordpunct_engine() -> str:
    """Which regex engine nltk's ``WordPunctTokenizer`` uses here: ``"regex"`` (the
    third-party module, which recent nltk releases compile every pattern with, through
    ``nltk.redos``) or ``"re"`` (older nltk, as when the package was released). The two
    disagree on ~30,000 code points: ``regex``'s ``\\w`` takes combining marks (the dot of
    ``"İ".lower()``) and not ``²`` or ``½``, its ``\\s`` not U+001C..U+001F. Without nltk:
    ``"regex"`` where it is installed."""
    global _engine
    if _engine is None:
        import importlib.util

        def spec(name: str):
            try:
                return importlib.util.find_spec(name)
            except (ImportError, ValueError):
                return None

        # look for nltk/redos.py without importing nltk (its import takes seconds)
        nltk = spec("nltk")
        if nltk is not None and nltk.origin:
            _engine = "regex" if (Path(nltk.origin).parent / "redos.py").is_file() else "re"
        else:
            _engine = "regex" if spec("regex") is not None else "re"
    return _engine


def _regex_module(engine: str):
    if engine == "re":
        return re
    if engine == "regex":
        import regex

        return regex
    raise InputError(None, f"unknown regex engine {engine!r}: choose re or regex")


def wordpunct(engine: str | None = None):
    """``\\w+|[^\\w\\s]+`` compiled as nltk compiles it (flags UNICODE, MULTILINE,
    DOTALL) with ``engine`` (default :func:`wordpunct_engine`)."""
    engine = engine or wordpunct_engine()
    if engine not in _patterns:
        _patterns[engine] = _regex_module(engine).compile(
            WORDPUNCT, re.UNICODE | re.MULTILINE | re.DOTALL)
    return _patterns[engine]


def char_classes(engine: str | None = None) -> np.ndarray:
    """For every code point: 0 whitespace (``\\s``), 1 word (``\\w``), 2 other, as
    ``engine`` (default :func:`wordpunct_engine`) defines them (built once, ~0.5 s)."""
    engine = engine or wordpunct_engine()
    if engine not in _classes:
        mod = _regex_module(engine)
        every = "".join(map(chr, range(0x110000)))

        def mask(pattern: str) -> np.ndarray:
            # replacing by NUL keeps positions; NUL itself is neither word nor space
            kept = mod.sub(pattern, "\x00", every).encode("utf-32-le", "surrogatepass")
            return np.frombuffer(kept, dtype="<u4") != 0

        cls = np.full(0x110000, 2, dtype=np.uint8)
        cls[mask(r"\S")] = 0
        cls[mask(r"\W")] = 1
        _classes[engine] = cls
    return _classes[engine]


def _token_spans(cp: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of every token of the code points ``cp``: maximal runs of word
    characters or of other non-space characters (what ``\\w+|[^\\w\\s]+`` finds)."""
    n = len(cp)
    cls = np.take(classes, cp)
    change = np.empty(n, dtype=bool)
    change[0] = True
    np.not_equal(cls[1:], cls[:-1], out=change[1:])
    tok = cls != 0
    last = np.empty(n, dtype=bool)
    last[-1] = True
    last[:-1] = change[1:]
    return np.flatnonzero(tok & change), np.flatnonzero(tok & last) + 1


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def fast_tokens(text: str, engine: str | None = None) -> list[str]:
    """The fast mode's tokens of one text (lowercased), for checks: nltk's wordpunct's."""
    low = text.lower()
    if not low:
        return []
    s, e = _token_spans(_code_points(low), char_classes(engine))
    return [low[a:b] for a, b in zip(s.tolist(), e.tolist(), strict=True)]


def _fast_ngrams(texts: list[str], num_buckets: int, ngrams: int, classes: np.ndarray,
                 hash_seed: int = 0, cache: BucketCache | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, buckets) of every n-gram occurrence of ``texts`` (one batch), vectorised:
    fast64 buckets (``hash % num_buckets``) without ``cache``, else sha256 buckets through
    it (the fast64 hashes, seed 0, are then the cache's keys)."""
    low = [t.lower() for t in texts]
    lens = np.fromiter(map(len, low), dtype=np.int64, count=len(low))
    # "\n" between texts: whitespace in both engines, so no token spans two texts
    joined = "\n".join(low)
    cp = _code_points(joined)
    n = len(cp)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty
    s, e = _token_spans(cp, classes)
    if len(s) == 0:
        return empty, empty
    pw, ipw = _powers(n)
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(np.multiply(cp, pw[:n], dtype=np.uint64), out=prefix[1:])  # wraps mod 2^64
    h = (prefix[e] - prefix[s]) * ipw[s]  # sum_j cp_j P^(j - start)
    h += (e - s).astype(np.uint64) * _U(_LEN_MULT)
    if hash_seed:
        h += _U(hash_seed * _SEED_MULT & _M64)
    h = _fmix64(h)
    starts = np.zeros(len(low), dtype=np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    # each token's text: texts' token counts from where their starts fall among the tokens
    per_doc = np.diff(np.searchsorted(s, starts), append=len(s))
    doc = np.repeat(np.arange(len(low), dtype=np.int64), per_doc)
    rows, keys, firsts = [doc], [h], [None]
    g = h
    for k in range(2, ngrams + 1):
        if len(h) < k:
            break
        g = _fmix64(g[:-1] * _U(_NGRAM_MULT) + h[k - 1:] + _U(_NGRAM_ADD))
        same = doc[: len(g)] == doc[k - 1:]  # the k-gram lies inside one text
        rows.append(doc[: len(g)][same])
        keys.append(g[same])
        firsts.append(same)
    if cache is None:
        nb = _U(num_buckets)
        return np.concatenate(rows), np.concatenate([(x % nb).astype(np.int64) for x in keys])
    key = np.concatenate(keys)
    key[key == 0] = 1  # 0 marks the cache's empty slots
    offsets = np.cumsum([0] + [len(x) for x in keys])

    def hash_new(occ: np.ndarray) -> np.ndarray:
        # these occurrences' n-grams: their order and first token, then sha256
        block = np.searchsorted(offsets, occ, side="right") - 1
        tok0 = occ - offsets[block]
        for j in range(1, len(keys)):
            at = np.flatnonzero(block == j)
            if len(at):
                tok0[at] = np.flatnonzero(firsts[j])[tok0[at]]
        return _digest_buckets(_ngram_digests(joined, cp, s, e, tok0, block + 1), num_buckets)

    return np.concatenate(rows), cache.buckets(key, hash_new)


def _ngram_digests(joined: str, cp: np.ndarray, s: np.ndarray, e: np.ndarray,
                   tok0: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The sha256 digests, ``(len(tok0), 32)`` uint8, of the n-grams of ``order`` tokens from
    token ``tok0`` (the tokens [s, e) of ``joined``, space-joined as the package joins
    them). An n-gram whose tokens stand one space apart in the text is a slice of its utf-8
    bytes; the others are built vectorised in one buffer; then one sha256 a slice. A lone
    surrogate passes (as its 3 WTF-8 bytes; the package's sha256 of it would raise)."""
    raw = joined.encode("utf-8", "surrogatepass")
    if len(raw) == len(cp):  # ASCII: byte offsets are character offsets
        bs, be = s, e
    else:  # add the extra bytes of the (few) non-ASCII characters before each offset
        big = np.flatnonzero(cp >= 0x80)
        extra = np.zeros(len(big) + 1, dtype=np.int64)
        np.cumsum(1 + (cp[big] >= 0x800).astype(np.int64) + (cp[big] >= 0x10000),
                  out=extra[1:])
        bs = s + extra[np.searchsorted(big, s)]
        be = e + extra[np.searchsorted(big, e)]
    ub = np.frombuffer(raw + b"\x00", dtype=np.uint8)
    order = order.astype(np.int64)
    last = tok0 + order - 1
    # a gap of one space between consecutive tokens; an n-gram is contiguous without others
    other = np.zeros(len(s) + 1, dtype=np.int64)
    np.cumsum((bs[1:] != be[:-1] + 1) | (ub[be[:-1]] != 32), out=other[2:])
    inline = other[last + 1] - other[tok0 + 1] == 0
    out = np.empty((len(tok0), 32), dtype=np.uint8)
    sha = _sha256
    one = np.flatnonzero(inline)
    if len(one):
        a, b = bs[tok0[one]].tolist(), be[last[one]].tolist()
        out[one] = np.frombuffer(b"".join([sha(raw[i:j]).digest()
                                           for i, j in zip(a, b, strict=True)]),
                                 dtype=np.uint8).reshape(-1, 32)
    rest = np.flatnonzero(~inline)
    if len(rest):
        # their tokens in turn, each followed by a space (the last one dropped)
        k = order[rest]
        ends = np.cumsum(k)
        tok = np.repeat(tok0[rest] - (ends - k), k) + np.arange(int(ends[-1]))
        tb, tl = bs[tok], be[tok] - bs[tok]
        pos = np.zeros(len(tok) + 1, dtype=np.int64)
        np.cumsum(tl + 1, out=pos[1:])
        buf = ub[np.repeat(tb - pos[:-1], tl + 1) + np.arange(int(pos[-1]))]
        buf[pos[1:] - 1] = 32  # " "
        data = buf.tobytes()
        a, b = pos[ends - k].tolist(), (pos[ends] - 1).tolist()
        out[rest] = np.frombuffer(b"".join([sha(data[i:j]).digest()
                                            for i, j in zip(a, b, strict=True)]),
                                  dtype=np.uint8).reshape(-1, 32)
    return out


# ---------------------------------------------------------------------------------------
# sha256 buckets in fast mode: hashed once per distinct n-gram, then looked up


def _sha256_new():
    """The fastest sha256 constructor here for short messages: CPython's own (``_sha256`` in
    3.11, ``_sha2`` later; no OpenSSL context per call, ~1.5x faster), else hashlib's."""
    import importlib

    for name in ("_sha2", "_sha256"):
        with contextlib.suppress(ImportError, AttributeError):
            f = importlib.import_module(name).sha256
            if f(b"dsir").digest() == hashlib.sha256(b"dsir").digest():
                return f
    return hashlib.sha256


_sha256 = _sha256_new()


def sha256_buckets(grams: list[bytes], num_buckets: int) -> np.ndarray:
    """``int(sha256(g).hexdigest(), 16) % num_buckets`` of each (utf-8) n-gram, int64."""
    sha = _sha256
    return _digest_buckets(b"".join([sha(g).digest() for g in grams]), num_buckets)


def _digest_buckets(digests: bytes | np.ndarray, num_buckets: int) -> np.ndarray:
    """32-byte digests (concatenated, or rows of a uint8 array) as big-endian integers mod
    ``num_buckets``, vectorised on their eight 32-bit words."""
    d = np.ascontiguousarray(np.frombuffer(digests, dtype=np.uint8) if isinstance(digests, bytes)
                             else digests).reshape(-1, 32)
    nb = int(num_buckets)
    if nb > 1 << 32:  # r * 2^32 + word would pass 2^64: Python integers
        return np.array([int.from_bytes(row.tobytes(), "big") % nb for row in d],
                        dtype=np.int64)
    words = d.view(">u4").astype(np.uint64)
    m = _U(nb)
    if nb < 1 << 29:  # sum_j word_j * (2^(32 (7 - j)) mod nb) < 8 * 2^32 * nb < 2^64
        r = np.zeros(len(words), dtype=np.uint64)
        for j in range(8):
            r += words[:, j] * _U(pow(2, 32 * (7 - j), nb))
        return (r % m).astype(np.int64)
    r = np.zeros(len(words), dtype=np.uint64)
    for j in range(8):  # Horner: r < nb <= 2^32, so r * 2^32 + word < 2^64
        r = ((r << _U(32)) | words[:, j]) % m
    return r.astype(np.int64)


class BucketCache:
    """n-gram -> sha256 bucket for fast mode: an open-addressing hash table in numpy (linear
    probing, read and filled vectorised a batch at a time) keyed by the n-gram's 64-bit
    fast64 hash (:func:`fast_ngram_hash`, seed 0; 0 marks an empty slot, so a key of 0 is
    stored as 1). A slot is 16 bytes, one uint64 the key and one the bucket (low 32 bits)
    and a use count (high 32), so that a lookup reads one cache line.

    Bounded memory: it starts at 2^20 slots (16 MiB) and doubles to stay at most a quarter
    full (short probes), up to ``2 * max_entries`` slots (rounded up to a power of two,
    then up to half full): 128 MiB at the default :data:`CACHE_ENTRIES` (2^22 entries,
    ~4.2M distinct n-grams). A full table keeps the ``max_entries // 2`` most used
    entries (uses counted on every 8th occurrence, once a batch; the counts are halved at
    each eviction: an aging least-frequently-used rule) and drops the rest,
    hashed again when they come back. Probe sequences do not wrap round: a key with no
    empty slot up to the :data:`_TAIL` spare slots at the end is hashed but not stored.

    Two different n-grams with the same 64-bit key would share a bucket (the first one's):
    among n distinct n-grams in the table that has probability ~n^2 / 2^65 under a random
    hash, 5e-7 for a full table of 2^22.
    """

    _LOW = _U(0xFFFFFFFF)
    _USE = _U(1 << 32)

    def __init__(self, num_buckets: int, max_entries: int | None = None):
        max_entries = CACHE_ENTRIES if max_entries is None else max_entries
        if not _whole(max_entries, 2):
            raise InputError(None, f"cache_entries must be an integer >= 2, got "
                                   f"{max_entries!r}")
        if num_buckets > 1 << 32:
            raise InputError(None, "fast mode's sha256 buckets must be at most 2^32 "
                                   f"(num_buckets {num_buckets}); use hash 'fast64'")
        self.num_buckets, self.max_entries = int(num_buckets), int(max_entries)
        self.max_slots = 1 << (2 * self.max_entries - 1).bit_length()
        self.n = 0  # entries stored
        self.hashed = self.evictions = self.unstored = 0  # statistics
        self._alloc(min(1 << 20, self.max_slots))

    def _alloc(self, slots: int) -> None:
        self.slots = slots
        self.table = np.zeros(2 * (slots + _TAIL), dtype=np.uint64)  # key, value, key, ...
        self._shift = _U(64 - (slots.bit_length() - 1))  # home slot: the key's top bits

    def __len__(self) -> int:
        return self.n

    def stats(self) -> dict[str, Any]:
        """Entries now, distinct n-grams hashed so far (again after an eviction), evictions,
        hashed ones not stored (no slot), the table's MiB."""
        return {"entries": self.n, "hashed": self.hashed, "evictions": self.evictions,
                "unstored": self.unstored, "mib": self.table.nbytes / 2**20}

    def buckets(self, keys: np.ndarray, hash_new: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
        """The bucket (int64) of each key (uint64, none 0). For the keys not in the table,
        ``hash_new(i)`` gives the buckets of ``keys[i]`` (one index ``i`` a distinct key),
        which are stored."""
        # a slot (key, value) read as one 16-byte item: one gather, one cache line
        slot = (keys >> self._shift).view(np.int64)
        got = self.table.view(np.complex128)[slot].view(np.uint64).reshape(-1, 2)
        home = got[:, 0] == keys
        out = (got[:, 1] & self._LOW).view(np.int64)
        self.table[2 * slot[::8][home[::8]] + 1] += self._USE  # uses: every 8th occurrence
        miss = self._probe(keys, np.flatnonzero(~home), slot, got[:, 0], out)
        if len(miss):
            # the distinct missing keys, one occurrence of each, and which one each miss is
            k = keys[miss]
            order = np.argsort(k)
            sk = k[order]
            head = np.empty(len(k), dtype=bool)
            head[0] = True
            np.not_equal(sk[1:], sk[:-1], out=head[1:])
            which = np.empty(len(k), dtype=np.intp)
            which[order] = np.cumsum(head) - 1
            new = np.asarray(hash_new(miss[order[head]]), dtype=np.int64)
            self.hashed += len(new)
            self._insert(sk[head], new)
            out[miss] = new[which]
        return out

    def _probe(self, keys: np.ndarray, todo: np.ndarray, slot: np.ndarray,
               at_home: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Look for ``keys[todo]`` past their home slots (``slot``, holding ``at_home``), 8
        slots at a time, their buckets into ``out``; returns the indices of those not in the
        table (ascending)."""
        tc = self.table.view(np.complex128)
        last = len(tc) - 1
        occupied = at_home[todo] != 0
        absent = [todo[~occupied]]  # an empty home slot: not in the table
        todo = todo[occupied]
        k, s = keys[todo], slot[todo]
        step = np.arange(1, 9)
        while len(todo):
            win = np.minimum(s[:, None] + step, last)
            found = tc[win].view(np.uint64).reshape(len(win), 8, 2)
            # one bool a slot, 8 of them one uint64: which one matched, any empty
            eq = (found[:, :, 0] == k[:, None]).view(np.uint64).ravel()
            hit = np.flatnonzero(eq)
            if len(hit):
                m = eq[hit]  # (at the end of the table the window repeats the last slot)
                m &= ~m + _U(1)  # its lowest set byte: the first match
                way = ((m * _U(0x0001020304050607)) >> _U(56)).astype(np.intp)
                out[todo[hit]] = (found[hit, way, 1] & self._LOW).view(np.int64)
                sample = todo[hit] % 8 == 0  # the same sample of uses
                self.table[2 * win[hit, way][sample] + 1] += self._USE
            empty = (found[:, :, 0] == 0).view(np.uint64).ravel() != 0
            gone = (eq == 0) & (empty | (s >= last - 8))
            absent.append(todo[gone])
            live = (eq == 0) & ~gone
            todo, k, s = todo[live], k[live], s[live] + 8
        return np.sort(np.concatenate(absent))

    def _insert(self, keys: np.ndarray, buckets: np.ndarray) -> None:
        """Store distinct keys not in the table (as many as there is room for), each in the
        first empty slot from its home."""
        if self.n + len(keys) > self.max_entries or \
                (4 * (self.n + len(keys)) > self.slots and self.slots < self.max_slots):
            self._rebuild(len(keys))
        keys = keys[: self.max_entries - self.n]
        vals = buckets[: len(keys)].astype(np.uint64) | self._USE
        t, last = self.table, len(self.table) - 2
        at = (keys >> self._shift).astype(np.intp) * 2
        todo = np.arange(len(keys))
        while len(todo):
            a = at[todo]
            free = np.flatnonzero(t[a] == 0)
            cand, ca = todo[free], a[free]
            t[ca] = keys[cand]  # several keys may claim one slot: one of them gets it
            won = t[ca] == keys[cand]
            t[ca[won] + 1] = vals[cand[won]]
            self.n += int(won.sum())
            lost = np.ones(len(todo), dtype=bool)
            lost[free[won]] = False
            todo = todo[lost]
            at[todo] += 2  # the slots they saw are all taken now
            past = at[todo] > last
            if past.any():  # no empty slot before the end: not stored
                self.unstored += int(past.sum())
                todo = todo[~past]

    def _rebuild(self, extra: int) -> None:
        """Grow the table for ``extra`` more entries; past ``max_entries``, first evict all
        but the most used half."""
        t = self.table
        occupied = np.flatnonzero(t[0::2])
        keys, vals = t[2 * occupied], t[2 * occupied + 1]
        if len(keys) + extra > self.max_entries:
            keep = self.max_entries // 2
            if len(keys) > keep:
                top = np.argpartition(vals >> _U(32), len(keys) - keep)[len(keys) - keep:]
                keys, vals = keys[top], vals[top]
            vals = (vals & self._LOW) | ((vals >> _U(33)) << _U(32))  # counts halved
            self.evictions += 1
        want = len(keys) + min(extra, self.max_entries - len(keys))
        slots = self.slots
        while 4 * want > slots and slots < self.max_slots:
            slots *= 2
        self._alloc(slots)
        # into the empty table in order of home slot: each to max(home, previous one + 1)
        home = (keys >> self._shift).astype(np.intp)
        order = np.argsort(home, kind="stable")
        i = np.arange(len(keys))
        pos = i + np.maximum.accumulate(home[order] - i) if len(keys) else i
        fits = pos < slots + _TAIL
        self.table[2 * pos[fits]] = keys[order[fits]]
        self.table[2 * pos[fits] + 1] = vals[order[fits]]
        self.n = int(fits.sum())
        self.unstored += len(keys) - self.n


# ---------------------------------------------------------------------------------------
# compat hashing (the package's, written again)


class _Sha256Buckets:
    """``int(sha256(s.encode('utf-8')).hexdigest(), 16) % num_buckets``, memoised."""

    def __init__(self, num_buckets: int):
        self.num_buckets = num_buckets
        self.memo: dict[str, int] = {}

    def many(self, grams: list[str]) -> list[int]:
        memo, nb = self.memo, self.num_buckets
        out = []
        for g in grams:
            b = memo.get(g)
            if b is None:
                b = int.from_bytes(_sha256(g.encode("utf-8")).digest(), "big") % nb
                if len(memo) >= _MEMO_MAX:
                    memo.clear()
                memo[g] = b
            out.append(b)
        return out


def compat_ngrams(text: str, ngrams: int = 2, engine: str | None = None) -> list[str]:
    """The package's n-gram strings of one text: lowercase, wordpunct (:func:`wordpunct`),
    every unigram, then every space-joined k-gram for k = 2..ngrams (``get_ngram_counts``)."""
    words = wordpunct(engine).findall(text.lower())
    grams = list(words)
    if ngrams >= 2:
        grams += [a + " " + b for a, b in zip(words, words[1:], strict=False)]
    for k in range(3, ngrams + 1):
        grams += [" ".join(words[i: i + k]) for i in range(len(words) - k + 1)]
    return grams


def _compat_ngrams(texts: list[str], hasher: _Sha256Buckets, ngrams: int, engine: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, buckets), rows contiguous and ascending (the per-row dense dot needs them)."""
    per_row = [hasher.many(compat_ngrams(t, ngrams, engine)) for t in texts]
    sizes = np.fromiter(map(len, per_row), dtype=np.int64, count=len(per_row))
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), sizes)
    buckets = np.fromiter((b for r in per_row for b in r), dtype=np.int64, count=int(sizes.sum()))
    return rows, buckets


# ---------------------------------------------------------------------------------------
# featuriser


class Featurizer:
    """Hashed n-gram occurrences of texts in one of the two modes (see the module doc);
    ``engine`` is the tokeniser's regex engine (default :func:`wordpunct_engine`), ``hash``
    fast mode's bucket function (``"sha256"``, the package's, through a :class:`BucketCache`
    of ``cache_entries`` entries, or ``"fast64"``, seeded by ``hash_seed``)."""

    def __init__(self, mode: str = "fast", num_buckets: int = NUM_BUCKETS, ngrams: int = 2,
                 engine: str | None = None, hash_seed: int = 0, hash: str = "sha256", *,
                 cache_entries: int | None = None):
        check_params(mode, num_buckets, ngrams, hash_seed, hash)
        self.mode, self.num_buckets, self.ngrams = mode, int(num_buckets), int(ngrams)
        self.hash_seed, self.hash = int(hash_seed), hash
        self.engine = engine or wordpunct_engine()
        _regex_module(self.engine)  # a clear error for an unknown engine
        self._sha = _Sha256Buckets(self.num_buckets) if mode == "compat" else None
        self.cache = (BucketCache(self.num_buckets, cache_entries)
                      if mode == "fast" and hash == "sha256" else None)

    def spec(self) -> dict[str, Any]:
        """What decides the features (recorded in fingerprints and fitted models)."""
        return {"mode": self.mode, "num_buckets": self.num_buckets, "ngrams": self.ngrams,
                "engine": self.engine, "hash_seed": self.hash_seed, "hash": self.hash}

    def occurrences(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, buckets): one entry per n-gram occurrence (int64, rows in [0, len))."""
        if self._sha is not None:
            return _compat_ngrams(texts, self._sha, self.ngrams, self.engine)
        classes = char_classes(self.engine)
        rows, buckets = [], []
        for a, b in _char_batches(texts, _BATCH_CHARS):
            r, k = _fast_ngrams(texts[a:b], self.num_buckets, self.ngrams, classes,
                                self.hash_seed, self.cache)
            rows.append(r + a)
            buckets.append(k)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(buckets)

    def bucket_counts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(summed bucket counts (num_buckets,), per-row n-gram totals (len,)), int64."""
        rows, buckets = self.occurrences(texts)
        return (np.bincount(buckets, minlength=self.num_buckets).astype(np.int64),
                np.bincount(rows, minlength=len(texts)).astype(np.int64))

    def weights(self, texts: list[str], log_diff: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """(float64 ``counts . log_diff`` per row, per-row n-gram totals)."""
        rows, buckets = self.occurrences(texts)
        totals = np.bincount(rows, minlength=len(texts)).astype(np.int64)
        if self.mode == "fast":
            w = np.bincount(rows, weights=log_diff[buckets], minlength=len(texts))
            return w.astype(np.float64), totals
        # the package's arithmetic: np.dot(log_diff, dense int counts), row by row
        w = np.empty(len(texts), dtype=np.float64)
        ends = np.cumsum(totals)
        for i in range(len(texts)):
            dense = np.bincount(buckets[ends[i] - totals[i]: ends[i]],
                                minlength=self.num_buckets).astype(int)
            w[i] = np.dot(log_diff, dense)
        return w, totals


def _char_batches(texts: list[str], max_chars: int):
    """Consecutive [a, b) row ranges of about ``max_chars`` characters (at least one row)."""
    a = chars = 0
    for i, t in enumerate(texts):
        chars += len(t) + 1
        if chars >= max_chars:
            yield a, i + 1
            a, chars = i + 1, 0
    if a < len(texts):
        yield a, len(texts)


def _whole(v: Any, minimum: int) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= minimum


def check_params(mode: str, num_buckets: int, ngrams: int, hash_seed: int = 0,
                 hash: str = "sha256") -> None:
    if mode not in MODES:
        raise InputError(None, f"unknown DSIR mode {mode!r}: choose one of {', '.join(MODES)}")
    if hash not in HASHES:
        raise InputError(None, f"unknown DSIR hash {hash!r}: choose one of {', '.join(HASHES)}")
    if hash != "sha256" and mode == "compat":
        raise InputError(None, f"hash {hash!r} is for mode 'fast': compat hashes as the "
                               "package (sha256)")
    if not _whole(hash_seed, 0):
        raise InputError(None, f"hash_seed must be a non-negative integer, got {hash_seed!r}")
    if hash_seed and mode == "compat":
        raise InputError(None, "hash_seed is for mode 'fast': compat hashes as the package")
    if hash_seed and hash != "fast64":
        raise InputError(None, "hash_seed is for hash 'fast64': sha256 has no seed")
    if not _whole(num_buckets, 1):
        raise InputError(None, f"num_buckets must be a positive integer, got {num_buckets!r}")
    if not _whole(ngrams, 1):
        raise InputError(None, f"ngrams must be a positive integer, got {ngrams!r}")


def dsir_features(texts: list[str], mode: str = "fast", num_buckets: int = NUM_BUCKETS,
                  ngrams: int = 2, *, engine: str | None = None, hash_seed: int = 0,
                  hash: str = "sha256") -> sp.csr_matrix:
    """Hashed n-gram counts, CSR int64 of shape ``(len(texts), num_buckets)``.

    ``mode="compat"``: the package's ``get_ngram_counts`` row for row. ``mode="fast"``: the
    same tokens, and with ``hash="sha256"`` the same buckets; with ``hash="fast64"`` the
    buckets of :func:`fast_ngram_hash`. The package's length estimate of row i is
    :func:`example_lengths` of ``X.sum(1)``.
    """
    texts = list(texts)
    feat = Featurizer(mode, num_buckets, ngrams, engine, hash_seed, hash)
    rows, buckets = feat.occurrences(texts)
    X = sp.coo_matrix((np.ones(len(rows), dtype=np.int64), (rows, buckets)),
                      shape=(len(texts), feat.num_buckets))
    return X.tocsr()  # sums the duplicates


def example_lengths(totals: np.ndarray, ngrams: int = 2) -> np.ndarray:
    """The package's length estimate from per-row n-gram totals: ``(total + n(n-1)/2) // n``
    (``get_perexample_metadata``; n(n-1)/2 is a whole number, so this is exact in int64)."""
    n = int(ngrams)
    return (np.asarray(totals, dtype=np.int64) + n * (n - 1) // 2) // n


def num_tokens_budget(num_tokens_to_fit: str | int | None, num_buckets: int) -> int | None:
    """The package's ``num_tokens_to_fit``: ``"auto"`` -> ``100,000 * num_buckets`` n-gram
    counts, ``"all"`` or None -> no limit, an int -> that many."""
    if num_tokens_to_fit is None or num_tokens_to_fit == "all":
        return None
    if num_tokens_to_fit == "auto":
        return 100_000 * int(num_buckets)
    if not _whole(num_tokens_to_fit, 1):
        raise InputError(None, "num_tokens_to_fit must be 'auto', 'all' or a positive "
                               f"integer, got {num_tokens_to_fit!r}")
    return int(num_tokens_to_fit)


# ---------------------------------------------------------------------------------------
# the fitted model


@dataclass
class DsirModel:
    """What ``fit_importance_estimator`` leaves: the two bag-of-ngrams fits and their log
    ratio, the features they were fitted with (``features``: :meth:`Featurizer.spec`) and
    how much each fit used (``info``)."""

    log_diff: np.ndarray  # (num_buckets,) float64
    raw_counts: np.ndarray  # (num_buckets,) int64, the pool prefix p_raw was fitted on
    target_counts: np.ndarray  # (num_buckets,) int64
    features: dict[str, Any]
    laplace: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def featurizer(self) -> Featurizer:
        return Featurizer(**self.features)

    @staticmethod
    def _features(f: Mapping[str, Any]) -> dict[str, Any]:
        """Models saved before ``hash`` existed hashed fast mode with fast64."""
        f = dict(f)
        f.setdefault("hash", "fast64" if f.get("mode") == "fast" else "sha256")
        return f

    def to_payload(self) -> dict[str, Any]:
        return {"log_diff": self.log_diff, "raw_counts": self.raw_counts,
                "target_counts": self.target_counts,
                "meta": {"features": self.features, "laplace": self.laplace,
                         "info": self.info}}

    @classmethod
    def from_payload(cls, d: Mapping[str, Any]) -> DsirModel:
        m = d["meta"]
        return cls(np.asarray(d["log_diff"], np.float64), np.asarray(d["raw_counts"], np.int64),
                   np.asarray(d["target_counts"], np.int64), cls._features(m["features"]),
                   float(m["laplace"]), dict(m.get("info") or {}))


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray, laplace: float = 0.0
              ) -> np.ndarray:
    """``log(p_tgt + 1e-8) - log(p_raw + 1e-8)`` with the package's arithmetic (int counts
    divided by their int sum; the Laplace pseudo-count added to the target's counts)."""
    t = np.asarray(target_counts)
    if laplace:
        t = t + float(laplace)
    p_tgt = t / t.sum()
    p_raw = raw_counts / raw_counts.sum()
    return np.log(p_tgt + EPS) - np.log(p_raw + EPS)


def _texts(src: TextSource, a: int, b: int, what: str) -> list[str]:
    out = src.texts(a, b)
    if len(out) != b - a:
        raise InputError(None, f"the {what}'s texts({a}, {b}) returned {len(out)} texts")
    if out and not isinstance(out[0], str):
        raise InputError(None, f"the {what}'s texts are {type(out[0]).__name__}, not str")
    return list(out)


def _fit_target(target: TextSource, feat: Featurizer, batch_size: int
                ) -> tuple[np.ndarray, int]:
    """Summed bucket counts of every target row (the package fits the target on all rows)."""
    total = np.zeros(feat.num_buckets, dtype=np.int64)
    for a in range(0, len(target), batch_size):
        c, _ = feat.bucket_counts(_texts(target, a, min(a + batch_size, len(target)), "target"))
        total += c
    return total, len(target)


# ---------------------------------------------------------------------------------------
# the two map steps over the pool


def _n_units(n_rows: int, block_rows: int) -> int:
    return max(1, -(-n_rows // block_rows))


class DsirCountStep:
    """Pass 1: bucket counts of the pool's first ``fit_rows`` rows, one unit per block.

    The merge adds the blocks in row order until the budget is passed (the crossing block's
    leading rows are featurised again), fits the target on all of its rows, and writes the
    :class:`DsirModel` (``output``, an ``.npz``) when there is one.
    """

    name = "dsir raw counts"

    def __init__(self, pool: TextSource, target: TextSource, feat: Featurizer, *,
                 fit_rows: int, block_rows: int, budget: int | None, laplace: float,
                 batch_size: int, output: execution.Output | None = None,
                 fp: execution.Fingerprint | None = None):
        self.pool, self.target, self.feat = pool, target, feat
        self.fit_rows, self.block_rows, self.budget = fit_rows, block_rows, budget
        self.laplace, self.batch_size = laplace, batch_size
        self.output, self.fingerprint = output, fp
        self.n_units = _n_units(fit_rows, block_rows)
        self.model: DsirModel | None = None

    def _range(self, unit: int) -> tuple[int, int]:
        a = unit * self.block_rows
        return a, min(a + self.block_rows, self.fit_rows)

    def compute_unit(self, unit: int) -> Mapping[str, Any]:
        a, b = self._range(unit)
        counts, totals = self.feat.bucket_counts(_texts(self.pool, a, b, "pool"))
        return {"counts": counts, "row_totals": totals}

    def merge(self, load: Callable[[int], Mapping[str, Any]]) -> Mapping[str, Any]:
        raw = np.zeros(self.feat.num_buckets, dtype=np.int64)
        rows = seen = 0
        for u in range(self.n_units):
            part = load(u)
            totals = np.asarray(part["row_totals"], dtype=np.int64)
            cum = seen + np.cumsum(totals)
            if self.budget is not None and len(cum) and cum[-1] > self.budget:
                # the package stops after the row whose counts pass the budget
                cut = int(np.searchsorted(cum, self.budget, side="right")) + 1
                if cut < len(totals):
                    a, _ = self._range(u)
                    counts, _ = self.feat.bucket_counts(_texts(self.pool, a, a + cut, "pool"))
                else:
                    counts = np.asarray(part["counts"], dtype=np.int64)
                raw += counts
                rows += cut
                seen = int(cum[cut - 1])
                break
            raw += np.asarray(part["counts"], dtype=np.int64)
            rows += len(totals)
            seen = int(cum[-1]) if len(cum) else seen
        if seen == 0:
            raise InputError(None, "the pool has no tokens to fit p_raw on (empty texts?)")
        tgt, n_tgt = _fit_target(self.target, self.feat, self.batch_size)
        if tgt.sum() == 0:
            raise InputError(None, "the target has no tokens (empty texts?)")
        info = {"raw_rows_fitted": rows, "raw_ngrams_fitted": seen,
                "budget": self.budget, "target_rows": n_tgt,
                "target_ngrams": int(tgt.sum())}
        self.model = DsirModel(log_ratio(tgt, raw, self.laplace), raw, tgt, self.feat.spec(),
                               self.laplace, info)
        if self.output is not None:
            execution.save_payload(self.output.files[0], self.model.to_payload())
        return info


class DsirWeightStep:
    """Pass 2: ``counts . log_diff`` of every pool row, one unit per block; the merge writes
    float32 scores (NaN for rows under the length filter) to ``output`` when there is one."""

    name = "dsir weights"

    def __init__(self, pool: TextSource, feat: Featurizer, log_diff: np.ndarray, *,
                 block_rows: int, min_example_length: int,
                 output: execution.Output | None = None,
                 fp: execution.Fingerprint | None = None):
        self.pool, self.feat, self.log_diff = pool, feat, np.asarray(log_diff, np.float64)
        self.n_rows, self.block_rows = len(pool), block_rows
        self.min_example_length = min_example_length
        self.output, self.fingerprint = output, fp
        self.n_units = _n_units(self.n_rows, block_rows)
        self.scores: np.ndarray | None = None

    def compute_unit(self, unit: int) -> Mapping[str, Any]:
        a = unit * self.block_rows
        b = min(a + self.block_rows, self.n_rows)
        texts = _texts(self.pool, a, b, "pool")
        w, totals = self.feat.weights(texts, self.log_diff)
        nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        return {"weights": w, "row_totals": totals, "bytes": nbytes}

    def merge(self, load: Callable[[int], Mapping[str, Any]]) -> Mapping[str, Any]:
        with contextlib.ExitStack() as stack:
            if self.output is None:
                scores = self.scores = np.empty(self.n_rows, dtype=np.float32)
            else:  # filled block by block on disk: a 200M-row pool is 800 MB of scores
                scores = stack.enter_context(atomic_npy(self.output.files[0], (self.n_rows,)))
            n_short = nbytes = 0
            for u in range(self.n_units):
                part = load(u)
                a = u * self.block_rows
                w = np.asarray(part["weights"], dtype=np.float64).astype(np.float32)
                short = example_lengths(part["row_totals"], self.feat.ngrams) \
                    < self.min_example_length
                w[short] = np.nan
                scores[a: a + len(w)] = w
                n_short += int(short.sum())
                nbytes += int(part["bytes"])
        return {"n": self.n_rows, "n_short": n_short, "n_scored": self.n_rows - n_short,
                "min_example_length": self.min_example_length, "mode": self.feat.mode,
                "buckets": self.feat.num_buckets, "ngrams": self.feat.ngrams,
                "engine": self.feat.engine, "hash": self.feat.hash,
                "hash_seed": self.feat.hash_seed, "mb": round(nbytes / 1e6, 6)}


# ---------------------------------------------------------------------------------------
# public entry points


def _check_sizes(pool: TextSource, target: TextSource, block_rows: int, batch_size: int,
                 laplace: float) -> None:
    if not isinstance(pool, TextSource) or not isinstance(target, TextSource):
        raise InputError(None, "pool and target must be TextSources (len() and "
                               "texts(start, stop)), e.g. anatomy.selection.pool.ListTexts")
    if len(target) == 0:
        raise InputError(None, "the DSIR target is empty")
    if len(pool) == 0:
        raise InputError(None, "the DSIR pool is empty")
    for name, v in (("block_rows", block_rows), ("batch_size", batch_size)):
        if not _whole(v, 1):
            raise InputError(None, f"{name} must be a positive integer, got {v!r}")
    if not isinstance(laplace, int | float | np.number) or not laplace >= 0:
        raise InputError(None, f"laplace must be >= 0, got {laplace!r}")


def fit_dsir(target: TextSource, pool: TextSource, mode: str = "fast",
             num_buckets: int = NUM_BUCKETS, ngrams: int = 2, laplace: float = 0.0,
             batch_size: int = BATCH_SIZE, *, num_tokens_to_fit: str | int | None = "auto",
             fit_rows: int | None = None, block_rows: int = BLOCK_ROWS,
             engine: str | None = None, hash_seed: int = 0, hash: str = "sha256"
             ) -> DsirModel:
    """Fit p_tgt on every target row and p_raw on the pool, in one process.

    ``num_tokens_to_fit`` (the package's flag): p_raw uses the pool's rows in order until
    their summed n-gram counts pass it ('auto' = ``100,000 * num_buckets``, 1e9 at 10,000
    buckets, ~500M words; the crossing row is included); ``fit_rows`` bounds the rows read
    for it (default: all; on a large pool pass e.g. 1,000,000 so pass 1 does not read rows
    the budget never reaches). ``laplace``: a pseudo-count added to every target bucket.
    ``engine``: the tokeniser's regex engine (:func:`wordpunct_engine`); ``hash`` (fast
    mode): ``"sha256"``, the package's buckets, or ``"fast64"``, whose ``hash_seed`` gives
    another hash function (to measure what the bucket collisions alone change).
    ``model.info`` records how many rows and n-grams each fit used.
    """
    feat = Featurizer(mode, num_buckets, ngrams, engine, hash_seed, hash)
    step = _count_step(target, pool, feat, laplace, batch_size, num_tokens_to_fit, fit_rows,
                       block_rows)
    execution.run_units(step)
    assert step.model is not None
    return step.model


def _count_step(target, pool, feat: Featurizer, laplace, batch_size, num_tokens_to_fit,
                fit_rows, block_rows, output=None, fp=None) -> DsirCountStep:
    _check_sizes(pool, target, block_rows, batch_size, laplace)
    budget = num_tokens_budget(num_tokens_to_fit, feat.num_buckets)
    if fit_rows is not None and not _whole(fit_rows, 1):
        raise InputError(None, f"fit_rows must be a positive integer, got {fit_rows!r}")
    n_fit = len(pool) if fit_rows is None else min(int(fit_rows), len(pool))
    return DsirCountStep(pool, target, feat, fit_rows=n_fit, block_rows=int(block_rows),
                         budget=budget, laplace=float(laplace), batch_size=int(batch_size),
                         output=output, fp=fp)


def _source_identity(src: TextSource, given: PathLike | None) -> Any:
    """A path or name identifies a source by its content (execution.identity); without one,
    the sha256 of its texts (reads it once: pass a path for a large pool)."""
    if given is not None:
        return execution.identity(given)
    h = hashlib.sha256()
    for a in range(0, len(src), BATCH_SIZE):
        for t in src.texts(a, min(a + BATCH_SIZE, len(src))):
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
    return {"rows": len(src), "sha256": h.hexdigest()}


def dsir_scores(pool: TextSource, target: TextSource, mode: str = "fast",
                min_example_length: int = MIN_EXAMPLE_LENGTH, *,
                num_buckets: int = NUM_BUCKETS, ngrams: int = 2, laplace: float = 0.0,
                num_tokens_to_fit: str | int | None = "auto", fit_rows: int | None = None,
                block_rows: int = BLOCK_ROWS, batch_size: int = BATCH_SIZE,
                engine: str | None = None, hash_seed: int = 0, hash: str = "sha256",
                model: DsirModel | None = None,
                ranks: execution.Ranks | None = None, output: PathLike | None = None,
                pool_id: PathLike | None = None, target_id: PathLike | None = None,
                overwrite: bool = False, merge: bool = False, wait_s: float = 0.0,
                progress: bool = False) -> tuple[np.ndarray | None, dict[str, Any]]:
    """DSIR log importance weights of every pool row towards ``target``.

    Returns ``(scores, info)``: float32 ``(len(pool),)``, NaN where the package's length
    filter (estimated words < ``min_example_length``) excludes a row, and a summary (``n``,
    ``n_short``, ``mode``, ``buckets``, ``mb`` of pool text weighted, the fits' sizes).
    Select with ``gumbel_top_n(scores, n, seed)`` (the package's resampling, seeded) or
    ``top_n`` (its ``top_k=True``). The flags are :func:`fit_dsir`'s.

    Without ``output``: both passes in this process (``execution.run_units``); ``model``
    (from :func:`fit_dsir`) skips pass 1 and brings its own features (``mode``,
    ``num_buckets``, ``ngrams``, ``engine``, ``hash``, ``hash_seed`` are then ignored). With
    ``output`` (a ``.npy``): the passes run as ``ranks`` through
    :func:`anatomy.execution.run_step`, pass 1 writing
    ``OUTPUT.model.npz`` (the :class:`DsirModel`), both guarded by fingerprints of the
    inputs (``pool_id`` / ``target_id``: a path or name identifying each; default: the
    sha256 of its texts) and the flags. A rank that is not the one to finish a pass gets
    ``(None, info)`` with ``info["status"] == "part"``; with ``wait_s > 0`` it waits that
    long for pass 1's merge first. Running the same command again resumes.
    """
    if not _whole(min_example_length, 0):
        raise InputError(None, "min_example_length must be a non-negative integer, got "
                               f"{min_example_length!r}")
    min_len = int(min_example_length)
    if model is not None:
        if output is not None:
            raise InputError(None, "pass either a fitted model or an output path, not both")
        feat = model.featurizer()
    else:
        feat = Featurizer(mode, num_buckets, ngrams, engine, hash_seed, hash)
    _check_sizes(pool, target, block_rows, batch_size, laplace)
    if output is None:
        if ranks is not None and ranks.world_size > 1:
            raise InputError(None, "DSIR on several ranks needs an output path")
        if model is None:
            step1 = _count_step(target, pool, feat, laplace, batch_size, num_tokens_to_fit,
                                fit_rows, block_rows)
            execution.run_units(step1)
            model = step1.model
        assert model is not None
        step = DsirWeightStep(pool, feat, model.log_diff, block_rows=int(block_rows),
                              min_example_length=min_len)
        info = dict(execution.run_units(step) or {})
        info.update(model.info, status="computed")
        if feat.cache is not None:
            info["sha256_cache"] = feat.cache.stats()
        return step.scores, info

    ranks = ranks or execution.Ranks()
    out = Path(output)
    params = {**feat.spec(), "laplace": float(laplace),
              "num_tokens_to_fit": num_tokens_budget(num_tokens_to_fit, feat.num_buckets),
              "fit_rows": None if fit_rows is None else int(fit_rows),
              "block_rows": int(block_rows)}
    inputs = {"pool": _source_identity(pool, pool_id),
              "target": _source_identity(target, target_id)}
    fp1 = execution.Fingerprint("dsir_fit", inputs, params)
    out1 = execution.Output.file(out.with_name(out.name + ".model.npz"))
    step1 = _count_step(target, pool, feat, laplace, batch_size, num_tokens_to_fit, fit_rows,
                        block_rows, out1, fp1)
    res1 = execution.run_step(step1, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)
    deadline = time.time() + wait_s
    while not res1.final and time.time() < deadline:
        time.sleep(min(5.0, max(0.1, wait_s / 100)))
        if execution.output_state(out1, fp1)[0] == "done":
            res1 = execution.StepResult("skipped", out1)
    if not res1.final:
        return None, {"status": "part", "pass": "fit", "missing_ranks": res1.missing}
    fitted = DsirModel.from_payload(execution.load_payload(out1.files[0]))
    fp2 = execution.Fingerprint("dsir_weights", inputs,
                                {**params, "fit": fp1.digest(), "min_example_length": min_len})
    step2 = DsirWeightStep(pool, feat, fitted.log_diff, block_rows=int(block_rows),
                           min_example_length=min_len, output=execution.Output.file(out),
                           fp=fp2)
    res2 = execution.run_step(step2, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)
    info = {**res2.summary, **fitted.info, "status": res2.status}
    if not res2.final:
        info.update({"pass": "weights", "missing_ranks": res2.missing})
        return None, info
    return load_npy(out), info
