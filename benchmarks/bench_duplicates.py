"""Benchmark exact ``sequence_duplicates`` counting (not a test: prints a markdown table).

The stream is synthetic (fixed seed): rows of 2049 tokens drawn Zipf-like from a 50,277-id
vocabulary (GPT-NeoX's size), with planted duplicates: a pool of passages of 32..256 tokens,
each written a heavy-tailed number of times (1..1000), half of the copies at offset 32 (so
the rows' continuations recur), the rest anywhere in a row, the last offset included. The
queries are every row's continuation, tokens 32..63, as in EleutherAI's study.

(a) ``count_shard`` (anatomy.memorization.ngram_counts: hash, search, verify) against a plain
    Python dict of every in-row 32-gram (tuple keys), on --dict_tokens tokens.
(b) ``count_shard`` against EleutherAI's ``tokengrams`` (a suffix-array index) on --tokens
    tokens: the rows joined with a sentinel id (65535, not in the vocabulary, never in a
    query) between them, so its counts stay inside rows; ``InMemoryIndex.from_token_file``
    builds the index (the token file's write is timed apart) and ``count`` answers each
    query (it has no batch count; ``batch_count_next`` returns a 2^16-vector per query).

Counts are asserted identical. Each method runs in a forked child so its peak memory is
its own: "RSS MB" is the child's getrusage ru_maxrss minus its value at the fork (the
stream already exists in the parent; a lower bound where small buffers reuse heap pages the
parent had freed), "traced MB" ours' tracemalloc peak (numpy buffers included) in a second,
untimed run, "cpu/wall" user+sys CPU time over wall time (below 1: the core was shared).
Ours is single-threaded numpy; tokengrams gets RAYON_NUM_THREADS=--peer_threads (1 by
default, for a like-for-like run).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import cli  # noqa: E402
from anatomy.memorization import ngram_counts as nc  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_duplicates.py --dict_tokens 3000000 --tokens 50000000
  python benchmarks/bench_duplicates.py --parts a --dict_tokens 1000000
  python benchmarks/bench_duplicates.py --parts b --tokens 10000000 --peer_threads 2
"""

ROW = 2049
VOCAB = 50277
SENTINEL = 65535
CONT = slice(32, 64)


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"],
                   help="which comparisons to run")
    p.add_argument("--dict_tokens", type=int, default=3_000_000,
                   help="(a) stream size in tokens (rounded up to whole 2049-token rows)")
    p.add_argument("--many_queries", type=int, default=1_000_000,
                   help="(c) queries of the many-queries scan")
    p.add_argument("--tokens", type=int, default=50_000_000,
                   help="(b) stream size in tokens (rounded up to whole 2049-token rows)")
    p.add_argument("--peer_threads", type=int, default=1,
                   help="RAYON_NUM_THREADS for tokengrams (0: its default, all cores)")
    p.add_argument("--chunk_tokens", type=int, default=nc.CHUNK_TOKENS,
                   help="tokens ours hashes at a time")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def make_stream(tokens: int, seed: int) -> tuple[np.ndarray, dict]:
    """(R, 2049) uint16 rows with planted duplicates; also what was planted."""
    rng = np.random.default_rng(seed)
    n_rows = -(-tokens // ROW)
    p = 1.0 / (np.arange(VOCAB) + 20.0)  # Zipf-like unigram frequencies
    rows = rng.choice(VOCAB, size=(n_rows, ROW), p=p / p.sum()).astype(np.uint16)
    n_pass = max(1, n_rows // 8)
    lengths = rng.integers(32, 257, size=n_pass)
    copies = np.minimum(rng.zipf(1.7, size=n_pass), 1000)
    plants = 0
    for length, c in zip(lengths, copies, strict=True):
        passage = rng.choice(VOCAB, size=length, p=p / p.sum()).astype(np.uint16)
        where = rng.integers(0, n_rows, size=c)
        at32 = rng.random(c) < 0.5
        offs = np.where(at32, 32, rng.integers(0, ROW - length + 1, size=c))
        for r, o in zip(where, offs, strict=True):
            rows[r, o: o + length] = passage
        plants += int(c)
    return rows, {"rows": n_rows, "passages": n_pass, "plants": plants}


def in_child(fn):
    """Run ``fn()`` in a forked child: (result, wall seconds, peak RSS delta MB, cpu/wall)."""
    import pickle

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            u0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - t0
            u1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
            payload = (out, wall, (u1.ru_maxrss - u0.ru_maxrss) / 1024, cpu / max(wall, 1e-9))
        except BaseException as e:  # report it to the parent
            payload, code = e, 1
        with os.fdopen(w, "wb") as f:
            pickle.dump(payload, f)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        payload = pickle.load(f)
    os.waitpid(pid, 0)
    if isinstance(payload, BaseException):
        raise payload
    return payload


def ours(rows: np.ndarray, chunk_tokens: int):
    """count_shard timed; then run again (untimed) under tracemalloc for its heap peak."""
    def run():
        counts, stats = nc.count_shard(rows, rows[:, CONT], chunk_tokens=chunk_tokens,
                                       return_stats=True)
        return counts, stats

    (counts, stats), wall, rss, busy = in_child(run)

    def traced():
        import tracemalloc

        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20
    return (counts, stats), wall, rss, busy, in_child(traced)[0]


def python_dict(rows: np.ndarray):
    def run():
        n = CONT.stop - CONT.start
        seen: dict[tuple, int] = {}
        for row in rows:
            t = row.tolist()
            for i in range(len(t) - n + 1):
                key = tuple(t[i: i + n])
                seen[key] = seen.get(key, 0) + 1
        return np.array([seen.get(tuple(q), 0) for q in rows[:, CONT].tolist()], np.int64)
    return in_child(run)


def peer_tokengrams(rows: np.ndarray, threads: int, tmp: Path):
    """tokengrams: sentinel-joined token file (timed apart), index build, one count each."""
    t0 = time.perf_counter()
    path = tmp / "stream.u16"
    joined = np.empty((rows.shape[0], ROW + 1), dtype=np.uint16)
    joined[:, :ROW], joined[:, ROW] = rows, SENTINEL
    joined.tofile(path)
    del joined
    write_s = time.perf_counter() - t0
    queries = rows[:, CONT].tolist()

    if threads:
        os.environ["RAYON_NUM_THREADS"] = str(threads)  # read when its pool first starts
    from tokengrams import InMemoryIndex  # imported here: its import (datasets, ...) untimed

    def run():
        t = time.perf_counter()
        index = InMemoryIndex.from_token_file(str(path), None, 2**16, False)
        build = time.perf_counter() - t
        t = time.perf_counter()
        counts = np.array([index.count(q) for q in queries], dtype=np.int64)
        return counts, build, time.perf_counter() - t
    return in_child(run), write_s


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def part_a(args, lines):
    rows, planted = make_stream(args.dict_tokens, args.seed)
    n_tok = rows.size
    (c_ours, st), s_ours, m_ours, u_ours, tr_ours = ours(rows, args.chunk_tokens)
    c_dict, s_dict, m_dict, u_dict = python_dict(rows)
    assert np.array_equal(c_ours, c_dict), "ours and the dict disagree"
    lines.append(f"\n(a) {n_tok:,} tokens, {planted['rows']:,} rows, {len(c_ours):,} queries, "
                 f"{planted['plants']:,} planted copies of {planted['passages']:,} passages; "
                 f"continuations with count > 1: {int((c_ours > 1).sum()):,}, max "
                 f"{int(c_ours.max()):,}; hash matches {st.hash_matches:,}, rejected "
                 f"{st.rejected}\n")
    lines.append(row("method", "seconds", "tokens/s", "RSS MB", "traced MB", "cpu/wall",
                     "counts"))
    lines.append(row(*["---"] * 7))
    lines.append(row("ngram_counts.count_shard", f"{s_ours:.3f}", f"{n_tok / s_ours:,.0f}",
                     f"{m_ours:.0f}", f"{tr_ours:.1f}", f"{u_ours:.2f}", "identical"))
    lines.append(row("python dict of tuples", f"{s_dict:.3f}", f"{n_tok / s_dict:,.0f}",
                     f"{m_dict:.0f}", "-", f"{u_dict:.2f}", "identical"))
    lines.append(f"\nspeed-up over the dict: {s_dict / s_ours:.1f}x; memory (dict RSS over "
                 f"ours traced): {m_dict / max(tr_ours, 1e-3):.0f}x less")


def part_b(args, lines):
    rows, planted = make_stream(args.tokens, args.seed + 1)
    n_tok = rows.size
    (c_ours, st), s_ours, m_ours, u_ours, tr_ours = ours(rows, args.chunk_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        ((c_peer, build, query), s_peer, m_peer, u_peer), write_s = peer_tokengrams(
            rows, args.peer_threads, Path(tmp))
    assert np.array_equal(c_ours, c_peer), (
        f"ours and tokengrams disagree on {int((c_ours != c_peer).sum())} queries")
    threads = args.peer_threads or "default (all cores)"
    lines.append(f"\n(b) {n_tok:,} tokens, {planted['rows']:,} rows, {len(c_ours):,} queries, "
                 f"{planted['plants']:,} planted copies of {planted['passages']:,} passages; "
                 f"continuations with count > 1: {int((c_ours > 1).sum()):,}, max "
                 f"{int(c_ours.max()):,}; ours: {st.windows:,} windows, hash matches "
                 f"{st.hash_matches:,}, rejected {st.rejected}; tokengrams "
                 f"RAYON_NUM_THREADS={threads}\n")
    lines.append(row("method", "end-to-end s", "build s", "queries s", "tokens/s", "RSS MB",
                     "traced MB", "cpu/wall", "counts"))
    lines.append(row(*["---"] * 9))
    lines.append(row("ngram_counts.count_shard", f"{s_ours:.2f}", "-", "-",
                     f"{n_tok / s_ours:,.0f}", f"{m_ours:.0f}", f"{tr_ours:.1f}",
                     f"{u_ours:.2f}", "identical"))
    lines.append(row("tokengrams InMemoryIndex", f"{s_peer:.2f}", f"{build:.2f}",
                     f"{query:.2f}", f"{n_tok / s_peer:,.0f}", f"{m_peer:.0f}", "-",
                     f"{u_peer:.2f}", "identical"))
    lines.append(f"\ntokengrams / ours, end to end: {s_peer / s_ours:.1f}x (its token file "
                 f"write, {write_s:.2f} s, not included)")
    per_core = n_tok / s_ours  # wall clock, one core
    hours = 300e9 / per_core / 3600
    lines.append(f"cost sheet: ours at {per_core / 1e6:.0f}M tokens/s per core -> 300B tokens "
                 f"~ {hours:.1f} core-hours of hash+search+verify for {len(c_ours):,} "
                 f"queries (reading the tokens not included; more queries mean a larger "
                 f"filter table, so re-measure at the real K)")


def part_c(args, lines):
    """(c) the cost sheet's other figures on the (b) stream: token counts (np.bincount per
    block, the token_frequencies map) and count_shard with --many_queries queries (32-grams
    at random in-row offsets), since the published sample has 5M continuations."""
    rows, _ = make_stream(args.tokens, args.seed + 1)
    n_tok = rows.size
    t = time.perf_counter()
    for a in range(0, len(rows), 4096):
        np.bincount(rows[a:a + 4096].ravel(), minlength=VOCAB)
    s_bin = time.perf_counter() - t
    rng = np.random.default_rng(args.seed)
    r = rng.integers(0, len(rows), args.many_queries)
    o = rng.integers(0, ROW - 32 + 1, args.many_queries)
    q = rows[r[:, None], o[:, None] + np.arange(32)]
    t = time.perf_counter()
    query = nc.NgramQuery(q)
    build = time.perf_counter() - t
    t = time.perf_counter()
    c = nc.count_shard(rows, query)
    scan = time.perf_counter() - t
    assert (c >= 1).all()
    lines.append(f"\n(c) the (b) stream, {n_tok:,} tokens, one core\n")
    lines.append(row("pass", "seconds", "tokens/s", "300B tokens, core-hours"))
    lines.append(row(*["---"] * 4))
    lines.append(row("token counts (np.bincount per 4,096 rows)", f"{s_bin:.2f}",
                     f"{n_tok / s_bin:,.0f}", f"{300e9 / (n_tok / s_bin) / 3600:.2f}"))
    lines.append(row(f"count_shard, {args.many_queries:,} queries (+ {build:.1f} s to "
                     "build the query)", f"{scan:.2f}", f"{n_tok / scan:,.0f}",
                     f"{300e9 / (n_tok / scan) / 3600:.1f}"))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    lines = [f"seed {args.seed}; numpy {np.__version__}; chunk {args.chunk_tokens:,} tokens; "
             f"{os.cpu_count()} CPUs"]
    if "a" in args.parts:
        part_a(args, lines)
    if "b" in args.parts:
        part_b(args, lines)
    if "c" in args.parts:
        part_c(args, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
