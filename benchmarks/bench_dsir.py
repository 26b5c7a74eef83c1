"""Benchmark DSIR weights (not a test: prints a markdown table).

The ``data-selection`` package (1.0.3, ``HashedNgramDSIR``, ``num_proc=1``: one process,
fit_importance_estimator + compute_importance_weights, reading jsonl from a temporary
folder) against ``anatomy.selection.dsir.dsir_scores`` in compat and fast mode on the same
documents (in memory), each timed end to end: p_raw over the pool, p_tgt over the target,
weights over the pool. Ours runs in this process, one core; the fast mode's character
table (built once per process) is built before the timing and reported apart.

Documents: with ``--world``, the miniworld's pool texts (``WORLD/pools/**/*.jsonl.zst``) as
the pool and its never-trained documents of ``--target_category`` as the target
(``World.unseen()``); without it (or to top the pool up to ``--mb``), chunks of the
standard library's ``*.py`` files, with license prose (``/usr/share/common-licenses``, else
the Python docs' ``pydoc_data``) as the target. "Spearman" and "top 10%" compare each mode's
weights with the package's over the rows its length filter keeps (``--min_length`` words):
rank correlation and the overlap of the two top-10% sets. Compat must be identical.
"fast, hash_seed 1" is the fast mode with another hash function: its agreement with the
default fast mode is the noise floor of 10,000-bucket hashing (what bucket collisions alone
change), the bound for any hash that is not the package's sha256.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import cli, io  # noqa: E402
from anatomy.selection import dsir  # noqa: E402
from anatomy.selection.pool import ListTexts  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_dsir.py
  python benchmarks/bench_dsir.py --world data/world --mb 3
  python benchmarks/bench_dsir.py --mb 8 --doc_chars 4000
"""

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--world", default=None, help="miniworld folder whose texts to use")
    p.add_argument("--target_category", default="docs",
                   help="with --world: the unseen documents' category used as the target")
    p.add_argument("--mb", type=float, default=4.0,
                   help="pool size in MB of UTF-8 (topped up with stdlib source)")
    p.add_argument("--doc_chars", type=int, default=2000,
                   help="characters per stdlib document")
    p.add_argument("--min_length", type=int, default=dsir.MIN_EXAMPLE_LENGTH,
                   help="the length filter (estimated words) for the comparison")
    p.add_argument("--floor_buckets", type=int, default=100_000,
                   help="also compare fast and compat at this many buckets (0: skip)")
    p.add_argument("--skip_package", action="store_true", help="time ours only")
    return p


def stdlib_docs(doc_chars: int, mb: float, skip: int = 0) -> list[str]:
    docs, size = [], 0
    for f in sorted(STDLIB.glob("*.py"))[skip:]:
        t = f.read_text(encoding="utf-8", errors="replace")
        for i in range(0, len(t), doc_chars):
            docs.append(t[i: i + doc_chars])
            size += len(docs[-1].encode())
            if size >= mb * 1e6:
                return docs
    return docs


def prose_docs(words: int = 300) -> list[str]:
    lic = Path("/usr/share/common-licenses")
    if lic.is_dir():
        text = " ".join(p.read_text(errors="replace") for p in sorted(lic.iterdir())
                        if p.is_file())
    else:
        from pydoc_data.topics import topics

        text = " ".join(topics.values())
    w = text.split()
    return [" ".join(w[i: i + words]) for i in range(0, len(w) - words, words)]


def load_docs(args) -> tuple[list[str], list[str], str]:
    if args.world:
        from anatomy.truth import World

        world = World.open(args.world)
        pool = [r["text"] for p in sorted((Path(args.world) / "pools").rglob("*.jsonl.zst"))
                for r in io.iter_jsonl(p, required=("text",))]
        target = [r["text"] for r in world.unseen() if r["category"] == args.target_category]
        if not target:
            raise io.InputError(args.world, f"no unseen documents of category "
                                            f"{args.target_category!r}")
        what = (f"pool: {len(pool):,} miniworld pool texts; target: {len(target)} unseen "
                f"'{args.target_category}' documents of {world.describe()}")
    else:
        pool, target = [], prose_docs()[:60]
        what = f"target: {len(target)} license-prose documents"
    have = sum(len(t.encode()) for t in pool)
    if have < args.mb * 1e6:
        extra = stdlib_docs(args.doc_chars, args.mb - have / 1e6)
        what += f"; pool topped up with {len(extra):,} stdlib chunks of {args.doc_chars} chars"
        pool += extra
    return pool, target, what


def run_package(pool, target, tmp: Path):
    from data_selection import HashedNgramDSIR

    for name, texts in (("raw", pool), ("target", target)):
        with open(tmp / f"{name}.jsonl", "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
    t0 = time.perf_counter()
    d = HashedNgramDSIR([str(tmp / "raw.jsonl")], [str(tmp / "target.jsonl")],
                        str(tmp / "cache"), num_proc=1)
    d.fit_importance_estimator(num_tokens_to_fit="auto")
    d.compute_importance_weights()
    s = time.perf_counter() - t0
    w = np.load(tmp / "cache" / "log_importance_weights" / "0.npy")
    length = np.load(tmp / "cache" / "perexample_metadata" / "0.npy")
    return w, length, s


def run_ours(pool, target, mode, **kw):
    t0 = time.perf_counter()
    # min_example_length 0: every row's weight, for the comparison
    scores, info = dsir.dsir_scores(ListTexts(pool), ListTexts(target), mode,
                                    min_example_length=0, **kw)
    return scores, info, time.perf_counter() - t0


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def top_overlap(a, b, frac: float = 0.1) -> float:
    k = max(1, int(len(a) * frac))
    ta, tb = np.argsort(-a, kind="stable")[:k], np.argsort(-b, kind="stable")[:k]
    return len(np.intersect1d(ta, tb)) / k


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    pool, target, what = load_docs(args)
    n, mb = len(pool), sum(len(t.encode()) for t in pool) / 1e6
    t0 = time.perf_counter()
    dsir.char_classes()
    table_s = time.perf_counter() - t0
    lines = [f"{n:,} pool documents, {mb:.2f} MB; {what}; 10,000 buckets, uni+bigrams; "
             f"tokeniser engine '{dsir.wordpunct_engine()}'; numpy {np.__version__}; "
             f"{os.cpu_count()} CPUs; character table built in {table_s:.2f} s (once per "
             "process, not timed below)\n"]
    runs = {"compat": ("compat", {}), "fast": ("fast", {}),
            "fast, hash_seed 1": ("fast", {"hash_seed": 1})}
    results = {name: run_ours(pool, target, mode, **kw) for name, (mode, kw) in runs.items()}
    pkg = None
    if not args.skip_package:
        with tempfile.TemporaryDirectory() as tmp:
            pkg = run_package(pool, target, Path(tmp))
    lines.append(row("method", "seconds", "docs/s", "MB/s", "speed-up", "Spearman vs package",
                     "top 10% overlap", "weights"))
    lines.append(row(*["---"] * 8))
    if pkg is not None:
        w, length, s_pkg = pkg
        keep = length >= args.min_length
        lines.append(row("data-selection 1.0.3 (num_proc=1)", f"{s_pkg:.2f}",
                         f"{n / s_pkg:,.0f}", f"{mb / s_pkg:.2f}", "1.0x", "1", "100%", "-"))
    for name, (scores, _, s) in results.items():
        cells = [f"ours, {name}", f"{s:.2f}", f"{n / s:,.0f}", f"{mb / s:.2f}"]
        if pkg is not None:
            same = np.array_equal(scores, w.astype(np.float32))
            if name == "compat":
                assert same, "compat weights differ from the package's"
            cells += [f"{s_pkg / s:.1f}x", f"{spearman(scores[keep], w[keep]):.4f}",
                      f"{100 * top_overlap(scores[keep], w[keep]):.1f}%",
                      "identical" if same else "other buckets"]
        else:
            cells += ["-", "-", "-", "-"]
        lines.append(row(*cells))
    if pkg is not None:
        f0, f1 = results["fast"][0][keep], results["fast, hash_seed 1"][0][keep]
        lines.append(f"\ncompared on the {int(keep.sum()):,} of {n:,} rows with >= "
                     f"{args.min_length} estimated words (the package's length filter; "
                     f"{int((~keep).sum()):,} excluded)")
        lines.append(f"hash noise floor at 10,000 buckets: fast vs fast with hash_seed 1: "
                     f"Spearman {spearman(f0, f1):.4f}, top 10% overlap "
                     f"{100 * top_overlap(f0, f1):.1f}%")
        if args.floor_buckets:
            nb = args.floor_buckets
            fa = run_ours(pool, target, "fast", num_buckets=nb)[0][keep]
            ca = run_ours(pool, target, "compat", num_buckets=nb)[0][keep]
            lines.append(f"at {nb:,} buckets: fast vs compat (= the package's hashing) "
                         f"Spearman {spearman(fa, ca):.4f}, top 10% overlap "
                         f"{100 * top_overlap(fa, ca):.1f}%")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
