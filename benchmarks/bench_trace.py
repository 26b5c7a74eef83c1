"""Benchmark the trace index (issue 26) on the miniworld (not a test: prints tables, asserts
nothing).

(1) Build: the index of --world's trained stream (``anatomy.trace.index.build_trace_index``,
    blocks of --block_steps steps, default the whole run in one) with ONE thread:
    RAYON_NUM_THREADS (tokengrams sorts with rayon) and the OMP/BLAS threads are set to 1
    before anything is imported. Tokens, seconds, tokens/s per core and bytes per token on
    disk; then ``tokengrams.MemmapIndex.build`` alone on the same stream written as one raw
    token file, so that the cost of our block writing (rows read through the data order, the
    token file, instance ids, unigram counts, atomic renames, the merge) is the difference.
(2) Query latency: --queries texts of --query_len tokens, seeded: half are windows of the
    trained stream that cross a row boundary with --substitutions tokens replaced by draws
    from the stream's unigram distribution (several maximal spans each), half are i.i.d.
    draws from that distribution (mostly short matches). Per text, p50 / p95 / max ms of
    ``maximal_spans`` alone and of the whole ``trace_tokens`` (the spans, ``locate`` of each,
    exposures before each of the world's checkpoints, --max_occurrences listed); the mean
    number of spans, of ``contains`` calls (hits + misses) and of occurrences. The world's
    context is 128 tokens: the texts are longer on purpose and go to ``trace_tokens``
    directly (the length check lives in ``encode_records``).
(3) The peer: infini-gram (Liu et al. 2024; PyPI ``infini-gram``, the engine behind
    OLMoTrace), skipped with one line when it is not installed. Its index of the same stream,
    each training sequence one document (``tokenized.0``: the u16 separator 0xFFFF, then the
    row; ``offset.0``: u64 byte offsets of the documents), built by ``python -m
    infini_gram.indexing`` with one CPU (its tokenize step is skipped because the files
    exist); ``InfiniGramEngine.attribute`` (min_len 8, no count cap, no delimiters, no
    word-boundary rule: OLMoTrace's maximal spans with every occurrence, which is what
    ``trace_tokens`` returns) timed on the same texts. Its documents are the rows, so its
    spans never cross a row boundary while ours can: each text's spans are compared with ours
    as they are and with ours under a row-restricted ``contains`` (some occurrence lies
    within one row, ``Occurrences.within_row``), which is infini-gram's definition; for the
    spans that agree, its counts are compared with our ``count_within_row``.
(4) A cost sheet on paper for Dolma as OLMo-7B trained on it and the Pile as Pythia saw it:
    index size, build core-hours and per-text query latency from the rates measured in (1)
    and (2) and the assumptions printed under the table.

Measured here (``python benchmarks/bench_trace.py --world data/world``, the small world's
1.84M-token stream, 2-core AMD EPYC, alone): build 1.93M tokens/s per core (tokengrams' sort
alone 5.45M), 10.08 bytes/token; trace_tokens 0.84 / 1.30 ms per 200-token text (p50 /
p95); infini-gram 2.6 3.77M tokens/s per core, 5.10 bytes/token, attribute 54 / 69 ms;
spans equal within rows on 200/200 texts, counts 533/533.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy or tokengrams (rayon) start a pool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import cli  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_trace.py
  python benchmarks/bench_trace.py --world data/tiny --queries 20 --skip_peer
  python benchmarks/bench_trace.py --block_steps 100     # the stream in several blocks
"""

MIN_LEN = 8  # OLMoTrace's (and TraceOptions') shortest span

# the cost sheet's corpora: name, tokens, tokens per block of build_trace_index.py's examples
# (OLMo-7B: --block_steps 1000 of 2160 x 2048 tokens; Pythia: --block_steps 500 of 1024 x
# 2049), where the token count comes from
OLMO_STEP = 2160 * 2048
PYTHIA_STEP = 1024 * 2049
CORPORA = [
    ("Dolma (OLMo-7B)", 2.46e12, 1000 * OLMO_STEP,
     "Dolma as OLMo-7B trained on it: 2.46T tokens (OLMo paper, Groeneveld et al. 2024, and "
     "the OLMo-7B model card); 2160 x 2048 tokens per step (configs/OLMo-7B.yaml)"),
    ("Pile (Pythia)", 143_000 * PYTHIA_STEP, 500 * PYTHIA_STEP,
     "the Pile as Pythia saw it: 143,000 steps of 1024 x 2049 tokens = 300.0B (Biderman et "
     "al. 2023)"),
]


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--queries", type=int, default=200,
                   help="texts to trace (half windows of the stream, half unigram draws)")
    p.add_argument("--query_len", type=int, default=200, help="tokens per text")
    p.add_argument("--substitutions", type=int, default=3,
                   help="tokens replaced at random in each window of the stream")
    p.add_argument("--block_steps", type=int, default=None,
                   help="steps per block of the index (default: the whole run in one block)")
    p.add_argument("--max_occurrences", type=int, default=100,
                   help="occurrences listed per span by trace_tokens")
    p.add_argument("--skip_peer", action="store_true", help="do not run infini-gram")
    p.add_argument("--read_us", type=float, default=100.0,
                   help="cost sheet: assumed microseconds per random 4 KB read from NVMe")
    cli.add_run_args(p, seed=0)
    return p


def pct(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def ms3(xs_s) -> str:
    """p50 / p95 / max of seconds, in ms."""
    return " / ".join(f"{1e3 * v:.2f}" for v in (pct(xs_s, 50), pct(xs_s, 95), max(xs_s)))


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# -- (1) build ----------------------------------------------------------------------------
def part_build(data, rows: np.ndarray, tmp: Path, block_steps: int | None) -> dict:
    import json

    from tokengrams import MemmapIndex

    from anatomy.trace.index import _quiet_stdout, build_trace_index

    out = tmp / "index"
    t0 = time.perf_counter()
    build_trace_index(data, out, block_steps, progress=False)
    ours = time.perf_counter() - t0
    meta = json.loads((out / "index.json").read_text())
    n = int(meta["tokens"])
    size = folder_bytes(out)
    by_kind = {k: sum(p.stat().st_size for p in out.rglob(f"*{k}")) for k in
               (".tokens", ".table", ".ids.npy")}

    raw, table = tmp / "stream.tokens", tmp / "stream.table"
    rows.tofile(raw)
    t0 = time.perf_counter()
    with _quiet_stdout():  # tokengrams prints to stdout
        MemmapIndex.build(str(raw), str(table), int(meta["vocab"]), False)
    alone = time.perf_counter() - t0
    alone_size = raw.stat().st_size + table.stat().st_size
    raw.unlink()
    table.unlink()

    print(f"\n(1) index build, one thread: {n:,} tokens in {len(meta['blocks'])} block(s) "
          f"({data.n_steps} steps of {data.batch_size} x {data.seq_len})")
    print("\n| build | tokens | seconds | tokens/s per core | bytes/token on disk |")
    print("|---|---|---|---|---|")
    print(f"| build_trace_index | {n:,} | {ours:.2f} | {n / ours:,.0f} | {size / n:.3f} |")
    print(f"| tokengrams MemmapIndex.build alone | {rows.size:,} | {alone:.2f} | "
          f"{rows.size / alone:,.0f} | {alone_size / rows.size:.3f} |")
    print(f"\nour overhead (block writing, ids, unigram, merge): {ours - alone:.2f} s "
          f"({100 * (ours - alone) / ours:.0f}% of the build); on disk per token: tokens "
          f"{by_kind['.tokens'] / n:.3f}, table {by_kind['.table'] / n:.3f}, ids "
          f"{by_kind['.ids.npy'] / n:.3f}, rest {(size - sum(by_kind.values())) / n:.3f} bytes")
    return {"tokens": n, "seconds": ours, "rate": n / ours, "alone_rate": rows.size / alone,
            "bytes_per_token": size / n, "seq_len": data.seq_len, "blocks": len(meta["blocks"])}


# -- (2) queries --------------------------------------------------------------------------
def make_queries(rows: np.ndarray, n: int, qlen: int, subs: int, seed: int
                 ) -> list[tuple[str, list[int]]]:
    """``n - n // 2`` windows of the stream crossing a row boundary, each with ``subs``
    tokens replaced, then ``n // 2`` i.i.d. unigram draws (seeded)."""
    rng = np.random.default_rng([seed, 26])
    stream = rows.ravel()
    n_rows, L = rows.shape
    N = stream.size
    if qlen < 2 or n_rows < 2 or qlen + L > N:
        raise SystemExit(f"--query_len {qlen} needs a stream of at least two rows and "
                         f"{qlen + L} tokens ({N} here)")
    counts = np.bincount(stream.astype(np.int64))
    p = counts / counts.sum()
    out = []
    for _ in range(n - n // 2):
        b = L * int(rng.integers(1, n_rows))  # a row boundary strictly inside the window
        start = int(rng.integers(max(0, b - qlen + 1), min(b - 1, N - qlen) + 1))
        q = stream[start:start + qlen].astype(np.int64)
        for j in rng.choice(qlen, min(subs, qlen), replace=False):
            cand = rng.choice(len(p), size=8, p=p)
            other = cand[cand != q[j]]
            q[j] = other[0] if len(other) else (q[j] + 1) % len(p)
        out.append(("window", q.tolist()))
    draws = rng.choice(len(p), size=(n // 2, qlen), p=p)
    out += [("unigram", d.tolist()) for d in draws]
    return out


class CountingContains:
    """``index.contains`` that counts its hits and misses."""

    def __init__(self, index):
        self.index, self.hits, self.misses = index, 0, 0

    def __call__(self, q) -> bool:
        hit = self.index.contains(q)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return hit


def part_queries(index, queries, checkpoints, max_occurrences: int) -> dict:
    from anatomy.trace.run import TraceOptions, trace_tokens
    from anatomy.trace.spans import maximal_spans

    opts = TraceOptions(min_len=MIN_LEN, max_occurrences=max_occurrences)
    for _, q in queries[:5]:  # warm the page cache and the call paths
        trace_tokens(index, q, checkpoints, opts)
    # one pass per measurement, so that neither is timed right after the other warmed the
    # same text's part of the table
    r = {"kind": [k for k, _ in queries], "spans_s": [], "trace_s": [], "spans": [],
         "n_spans": [], "hits": [], "misses": [], "occ": []}
    for _, q in queries:
        t0 = time.perf_counter()
        spans = maximal_spans(index.contains, q, MIN_LEN)
        r["spans_s"].append(time.perf_counter() - t0)
        r["spans"].append(spans)
        r["n_spans"].append(len(spans))
    for _, q in queries:
        t0 = time.perf_counter()
        traced = trace_tokens(index, q, checkpoints, opts)
        r["trace_s"].append(time.perf_counter() - t0)
        r["occ"].append(sum(s["count"] for s in traced))
    for _, q in queries:  # untimed
        counter = CountingContains(index)
        maximal_spans(counter, q, MIN_LEN)
        r["hits"].append(counter.hits)
        r["misses"].append(counter.misses)
    kinds = np.asarray(r["kind"])
    calls = np.asarray(r["hits"]) + np.asarray(r["misses"])
    per_call_us = 1e6 * sum(r["spans_s"]) / max(int(calls.sum()), 1)
    print(f"\n(2) query latency: {len(queries)} texts of {len(queries[0][1])} tokens, min_len "
          f"{MIN_LEN}, {len(checkpoints)} checkpoints, max_occurrences {max_occurrences}")
    print("\n| texts | n | maximal_spans ms p50 / p95 / max | trace_tokens ms p50 / p95 / max "
          "| spans per text | contains calls per text (hits + misses) | occurrences per text |")
    print("|---|---|---|---|---|---|---|")
    for name in ("window", "unigram", "all"):
        m = np.ones(len(kinds), bool) if name == "all" else kinds == name
        if not m.any():
            continue
        sel = np.flatnonzero(m)
        hits = np.asarray(r["hits"])[m].mean()
        misses = np.asarray(r["misses"])[m].mean()
        print(f"| {name} | {m.sum()} | {ms3([r['spans_s'][i] for i in sel])} | "
              f"{ms3([r['trace_s'][i] for i in sel])} | "
              f"{np.asarray(r['n_spans'])[m].mean():.2f} | {hits + misses:.1f} ({hits:.1f} + "
              f"{misses:.1f}) | {np.asarray(r['occ'])[m].mean():,.1f} |")
    print(f"\none contains call: {per_call_us:.2f} µs on average (maximal_spans time / calls)")
    return {**r, "hits_mean": float(np.mean(r["hits"])),
            "misses_mean": float(np.mean(r["misses"])), "per_call_us": per_call_us}


# -- (3) the peer: infini-gram -----------------------------------------------------------
def ig_write(rows: np.ndarray, folder: Path) -> float:
    """infini-gram's files for the stream, one document per row: ``tokenized.0`` (each row
    after the u16 separator 0xFFFF) and ``offset.0`` (u64 byte offset of each document)."""
    t0 = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    n, L = rows.shape
    docs = np.empty((n, L + 1), np.uint16)
    docs[:, 0] = 0xFFFF
    docs[:, 1:] = rows
    docs.tofile(folder / "tokenized.0")
    (np.arange(n, dtype=np.uint64) * np.uint64(2 * (L + 1))).tofile(folder / "offset.0")
    return time.perf_counter() - t0


def ig_build(folder: Path) -> tuple[float | None, float | None, str]:
    """``python -m infini_gram.indexing`` on the files of :func:`ig_write`, one CPU: (seconds
    of the command, its own build_sa seconds, its log); None on failure."""
    import resource

    empty = folder.parent / (folder.name + "_empty")  # --data_dir must exist; unused
    empty.mkdir(exist_ok=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    ulimit = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard)
    cmd = [sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(empty.resolve()),
           "--save_dir", str(folder.resolve()), "--version", "4", "--token_dtype", "u16",
           "--cpus", "1", "--mem", "1", "--ulimit", str(ulimit)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    log = res.stdout + res.stderr
    if res.returncode != 0 or not (folder / "table.0").is_file():
        return None, None, log
    m = re.search(r"Step 2 \(build_sa\): Done\. Took ([0-9.]+) seconds", log)
    return seconds, float(m.group(1)) if m else None, log


def ig_attribute(folder: Path, token_lists, eos: int
                 ) -> tuple[list[float], list[list[tuple[int, int]]], list[list[int]]]:
    """Seconds, spans ``(l, r)`` and counts of ``attribute`` on each token list."""
    from infini_gram.engine import InfiniGramEngine

    eng = InfiniGramEngine(index_dir=str(folder), eos_token_id=int(eos), vocab_size=65535,
                           version=4, token_dtype="u16")

    def attribute(q):
        a = eng.attribute(input_ids=q, delim_ids=[], min_len=MIN_LEN, max_cnt=10**9,
                          enforce_bow=False)
        if "error" in a:
            raise RuntimeError(f"infini-gram: {a['error']}")
        return a

    for q in token_lists[:5]:
        attribute(q)
    times, spans, counts = [], [], []
    for q in token_lists:
        t0 = time.perf_counter()
        a = attribute(q)
        times.append(time.perf_counter() - t0)
        spans.append([(int(s["l"]), int(s["r"])) for s in a["spans"]])
        counts.append([int(s["count"]) for s in a["spans"]])
    return times, spans, counts


def _within_row(index, q) -> bool:
    return bool(index.locate(q).within_row.any())


def part_peer(index, rows: np.ndarray, queries, ours: dict, build: dict, folder: Path,
              eos: int) -> dict | None:
    print("\n(3) the peer: infini-gram")
    try:
        import infini_gram  # noqa: F401
    except ImportError:
        print("infini-gram is not installed here: `pip install infini-gram` (PyPI) to compare "
              "with it; skipped")
        return None
    if rows.size and int(rows.max()) >= 0xFFFF:
        print("skipped: the stream holds token 65535, infini-gram's u16 document separator")
        return None
    from anatomy.trace.spans import maximal_spans

    prep = ig_write(rows, folder)
    seconds, build_sa, log = ig_build(folder)
    if seconds is None:
        print("skipped: infini_gram.indexing failed; the end of its log:\n" + log[-2000:])
        return None
    size = sum(p.stat().st_size for p in folder.glob("*.0"))
    n = rows.size
    token_lists = [q for _, q in queries]
    times, ig_spans, ig_counts = ig_attribute(folder, token_lists, eos)

    row_contains = functools.partial(_within_row, index)
    kinds = [k for k, _ in queries]
    same_as_is = {k: 0 for k in kinds}
    same_row = {k: 0 for k in kinds}
    span_pairs = same_counts = 0
    first_diff = None
    for i, q in enumerate(token_lists):
        ours_row = maximal_spans(row_contains, q, MIN_LEN)
        same_as_is[kinds[i]] += ig_spans[i] == ours["spans"][i]
        same_row[kinds[i]] += ig_spans[i] == ours_row
        if ig_spans[i] != ours_row and first_diff is None:
            first_diff = (i, ig_spans[i], ours_row)
        for (a, b), c in zip(ig_spans[i], ig_counts[i], strict=True):
            if (a, b) in ours_row:
                span_pairs += 1
                same_counts += int(index.locate(q[a:b]).within_row.sum()) == c
    print("\n| engine | build s (1 CPU) | tokens/s per core | bytes/token on disk | per text ms "
          "p50 / p95 / max |")
    print("|---|---|---|---|---|")
    print(f"| ours: build_trace_index, trace_tokens | {build['seconds']:.2f} | "
          f"{build['rate']:,.0f} | {build['bytes_per_token']:.3f} | {ms3(ours['trace_s'])} |")
    sa = f", its build_sa {build_sa:.2f}" if build_sa is not None else ""
    print(f"| infini-gram: indexing, attribute | {prep + seconds:.2f} (files {prep:.2f}, "
          f"command {seconds:.2f}{sa}) | {n / (prep + seconds):,.0f} | {size / n:.3f} | "
          f"{ms3(times)} |")
    def per_kind(same: dict) -> str:
        return ", ".join(f"{k} {same[k]}/{kinds.count(k)}" for k in same)

    with_spans = sum(1 for s in ig_spans if s)
    print(f"\nspans (infini-gram finds some on {with_spans}/{len(kinds)} texts): equal to ours "
          f"as they are on {per_kind(same_as_is)} texts; equal to ours restricted to matches "
          f"within one row on {per_kind(same_row)} (its documents are the rows, so a match "
          f"across a row boundary, which our stream has, is cut there); counts agree on "
          f"{same_counts}/{span_pairs} common spans (ours: count_within_row)")
    if first_diff is not None:
        i, a, b = first_diff
        print(f"first text that differs under the row restriction: #{i} ({queries[i][0]}): "
              f"infini-gram {a}, ours {b}")
    print("(attribute starts one thread per start position of the text and one per span, "
          "then returns every occurrence's pointer: the same work as trace_tokens' spans and "
          "locate, on 2 cores here)")
    return {"bytes_per_token": size / n, "rate": n / (prep + seconds)}


# -- (4) the cost sheet -------------------------------------------------------------------
def ig_ptr_bytes(n_tokens: float, seq_len: int) -> int:
    """infini-gram's pointer width: ceil(log2(bytes of tokenized.0) / 8)."""
    return math.ceil(math.log2(2 * n_tokens * (1 + 1 / seq_len)) / 8)


def ig_bytes_per_token(n_tokens: float, seq_len: int) -> float:
    """infini-gram's format, documents = rows: 2 bytes per token and per separator, one
    pointer per token and per separator, 8 bytes of offset per row."""
    return (2 + ig_ptr_bytes(n_tokens, seq_len)) * (1 + 1 / seq_len) + 8 / seq_len


def cost_sheet(build: dict, q: dict, read_us: float, peer: dict | None) -> None:
    n, L = build["tokens"], build["seq_len"]
    hits, misses = q["hits_mean"], q["misses_mean"]
    Kw = build["blocks"]  # the same probe model as the sheet's, on the measured index
    per_probe_us = (q["per_call_us"] * (hits + misses)
                    / ((hits + misses * Kw) * math.log2(n / Kw)))
    print("\n(4) cost sheet on paper, from the rates measured above (assumptions below)")
    print("\n| corpus | layout | index on disk | build core-hours: linear / x log2 factor | "
          "suffix-table probes per text | per text, table on disk | per text, table in RAM |")
    print("|---|---|---|---|---|---|---|")
    seq = {"Dolma (OLMo-7B)": 2048, "Pile (Pythia)": 2049}
    for name, N, per_block, _ in CORPORA:
        K = math.ceil(N / per_block)
        for layout, size_b, probes in (
                ("one table", N, (hits + misses) * math.log2(N)),
                (f"{K} blocks of {per_block / 1e9:.2f}B", per_block,
                 (hits + misses * K) * math.log2(per_block))):
            hours = N / build["rate"] / 3600
            factor = math.log2(size_b) / math.log2(n)
            disk = (probes * read_us / 1e6, 2 * probes * read_us / 1e6)
            ram = probes * per_probe_us / 1e3
            print(f"| {name} | {layout} | {build['bytes_per_token'] * N / 1e12:.1f} TB | "
                  f"{hours:,.0f} / {hours * factor:,.0f} (x {factor:.2f}) | "
                  f"{'>= ' if 'blocks' in layout else ''}{probes:,.0f} | "
                  f"{disk[0]:,.1f}-{disk[1]:,.1f} s | {ram:,.1f} ms |")
    print("\nassumptions:")
    for name, N, per_block, source in CORPORA:
        print(f"- {name}: {N / 1e9:,.1f}B u16 tokens ({source}); blocks as build_trace_index.py's "
              f"example, {per_block:,} tokens each; infini-gram's format, one document per row, "
              f"would take {ig_bytes_per_token(N, seq[name]) * N / 1e12:.1f} TB "
              f"({ig_bytes_per_token(N, seq[name]):.2f} bytes/token: a "
              f"{ig_ptr_bytes(N, seq[name])}-byte pointer instead of our 8)")
    print(f"- index size: the {build['bytes_per_token']:.3f} bytes/token measured on this "
          f"world (2 token + 8 table + 8 per row of instance ids; the ids' share is smaller at "
          f"2048-token rows) times N")
    print(f"- build: N / the measured {build['rate']:,.0f} tokens/s on one core (n = {n:,} "
          f"tokens here; tokengrams alone {build['alone_rate']:,.0f}); suffix sorting is "
          f"O(N log N), so the linear figure is a lower bound and the second multiplies it by "
          f"log2(table tokens) / log2(n); the RAM and the disk the sort needs are not "
          f"modelled")
    print(f"- query: a contains call is one binary search, ~log2(table tokens) probes; "
          f"{hits + misses:.1f} calls per text ({hits:.1f} hits + {misses:.1f} misses) as "
          f"measured on the texts of (2); with blocks a miss searches every block and a hit "
          f"at least one (hence >=)")
    print(f"- on disk: 1-2 random 4 KB reads per probe (the table entry, then the tokens it "
          f"points to) at ~{read_us:g} µs each on NVMe, an assumption (--read_us), not measured "
          f"here; the page cache keeping the top levels of each search lowers it in practice")
    print(f"- in RAM: {per_probe_us:.3f} µs per probe = the measured time of the contains "
          f"calls / their probes by the same model ({Kw} block(s) of {n // Kw:,} tokens here; "
          f"Python's call overhead included), times the probes; it needs the whole index "
          f"({build['bytes_per_token']:.0f} bytes/token) in memory")
    if peer is not None:
        print(f"- infini-gram measured here: {peer['bytes_per_token']:.3f} bytes/token "
              f"(the formula gives {ig_bytes_per_token(n, L):.3f} at {L}-token rows), "
              f"{peer['rate']:,.0f} tokens/s on one core")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.memorization.data import open_training_data
    from anatomy.olmo_config import load_olmo_config
    from anatomy.trace.index import TraceIndex
    from anatomy.trace.run import parse_checkpoints

    config = cli.world_path(args, "config.yaml")
    if not config.is_file():
        cli.require_world(args)
    cfg = load_olmo_config(config)
    data = open_training_data(config)
    checkpoints = parse_checkpoints(cfg.checkpoints)
    t0 = time.perf_counter()
    rows = data.rows(data.ids_for_steps(0, data.n_steps), data.seq_len).astype(
        data.token_dtype)
    print(f"{args.world}: trained stream of {rows.size:,} tokens ({rows.shape[0]:,} rows of "
          f"{rows.shape[1]}, {rows.dtype}) read in {time.perf_counter() - t0:.2f} s; threads: "
          f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    with tempfile.TemporaryDirectory(prefix="bench_trace_") as tmp:
        build = part_build(data, rows, Path(tmp), args.block_steps)
        index = TraceIndex(Path(tmp) / "index")
        queries = make_queries(rows, args.queries, args.query_len, args.substitutions,
                               args.seed)
        q = part_queries(index, queries, checkpoints, args.max_occurrences)
        peer = None
        if args.skip_peer:
            print("\n(3) the peer: skipped (--skip_peer)")
        else:
            peer = part_peer(index, rows, queries, q, build, Path(tmp) / "infini_gram",
                             cfg.eos_token_id)
    cost_sheet(build, q, args.read_us, peer)
    return 0


if __name__ == "__main__":
    cli.run(main)
