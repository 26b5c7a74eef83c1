"""Consistency filtering of (query, document) pairs (pipeline E), as contrastors v1 does it.

Mirrors nomic contrastors' v1 scripts/text/index_filtering.py (b0e94ca; E5's consistency
filter): embed every query and document, search each block of --index_size rows exactly
(inner product of L2-normalised embeddings), and keep a pair when its own document is among
the query's top --k (published: k = 2; there --k is parsed but ignored).

Unlike the published script: --k is honoured; identical documents (equal after Unicode
NFKC, case folding and whitespace collapsing) are one index entry, so duplicates never push
their own pairs out (--by_position compares by row position, as published); the last block
keeps every row (published: rounded down to a multiple of batch x world size); the search
is exact on the CPU or a GPU, and each text is embedded once.

Inputs: .jsonl / .jsonl.gz, a folder of shard-*.jsonl[.gz], lines as objects or
[query, document] lists, a saved datasets folder or an HF dataset name. A bad line (invalid
JSON, a missing key) is one error naming its file and line.

Outputs in --output_dir: the kept rows in the input's format (each JSONL file's kept lines
byte for byte, same names; a datasets input: dataset/), ids_to_keep.json (kept global row
ids, 0-based over the files in name order), ranks.npy (each row's document rank; ties by
the lower entry), dropped.jsonl.gz (id, file, line, rank and score of each dropped pair),
report.json (kept / total per block and file, kept for k = 1, 2, 3, 5, 10, 20, 100, the
rank histogram of dropped pairs, per-label counts with --label_key). With --mine_negatives
K the kept rows also get K hard negatives (negatives/, as mine_negatives.py writes them)
from the same embeddings and, with one block, the same search.

Embeddings and searches are cached in --work_dir under a digest of the texts, model and
flags, so rerunning with another --k costs only the writing. Embedding and search run as
ranks (--rank/--world_size, torchrun, a Slurm array); the rank that merges the search
writes the outputs.
"""

from __future__ import annotations

from anatomy import cli
from anatomy.contrastive import flags

EXAMPLES = """examples:
  python filter_pairs.py --dataset data/contrastive/pairs.jsonl.gz \\
      --output_dir data/contrastive/filtered-k2 --query_key query --document_key document
  python filter_pairs.py --dataset shards/ --output_dir filtered/ --k 5 --index_size 100000 \\
      --model thenlper/gte-base --device cuda --mine_negatives 7 --relative_margin 0.05
  torchrun --nproc-per-node 8 filter_pairs.py --dataset shards/ --output_dir filtered/ \\
      --wait 3600
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    flags.add_pair_args(p)
    p.add_argument("--k", type=int, default=2,
                   help="keep a pair when its document ranks in the query's top k")
    p.add_argument("--index_size", type=int, default=1_000_000,
                   help="rows per block; each block is searched on its own (published)")
    p.add_argument("--by_position", action="store_true",
                   help="one index entry per row, as published (duplicate documents tie)")
    p.add_argument("--label_key", default=None,
                   help="report kept / total per value of this record field")
    p.add_argument("--mine_negatives", type=int, default=0, metavar="K",
                   help="also mine K hard negatives for the kept rows into OUTPUT_DIR/negatives")
    flags.add_embed_args(p)
    flags.add_mine_args(p, k_flag=None)
    cli.add_rank_args(p)
    cli.add_run_args(p, seed=0, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.contrastive.index import NotReady
    from anatomy.contrastive.run import filter_pairs

    mine = None
    if args.mine_negatives:
        args.num_negatives = args.mine_negatives
        mine = flags.mine_options(args)
    try:
        s = filter_pairs(args.dataset, args.output_dir, query_key=args.query_key,
                         document_key=args.document_key, k=args.k, index_size=args.index_size,
                         embed=flags.embed_options(args), by_position=args.by_position,
                         add_title=args.add_title, label_key=args.label_key,
                         work_dir=args.work_dir, mine=mine, mine_format=args.output_format,
                         negatives_key=args.negatives_key, output_scores=args.output_scores,
                         ranks=args.ranks, overwrite=args.overwrite, merge=args.merge,
                         wait_s=args.wait, progress=not args.quiet)
    except NotReady as e:
        print(f"{args.ranks.label}: {e} (run the same command again, or pass --wait)")
        return 0
    print(f"kept {s['kept']} of {s['rows']} pairs at k={s['k']} ({s['dropped']} dropped) -> "
          f"{args.output_dir} ({s['status']})")
    at = s.get("kept_at_k", {})
    if at:
        print("kept at k: " + ", ".join(f"{k}: {v}" for k, v in at.items()))
    for key, counts in (s.get("labels") or {}).items():
        print(f"by {key}: " + ", ".join(f"{v}: {c['kept']}/{c['rows']} kept"
                                        for v, c in counts.items()))
    neg = s.get("negatives")
    if neg:
        print(f"negatives: {neg['rows_written']} rows, per row {neg['negatives_per_row']}, "
              f"leaks {neg['leaks']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
