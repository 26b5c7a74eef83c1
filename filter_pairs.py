"""Consistency filtering of (query, document) pairs (pipeline E), as contrastors v1 does it.

Mirrors nomic contrastors' v1 scripts/text/index_filtering.py (b0e94ca; E5's consistency
filter): embed every query and document, search each block of --index_size rows exactly
(inner product of L2-normalised embeddings), and keep a pair when its own document is among
the query's top --k (published: k = 2; there --k is parsed but ignored).

Unlike the published script: --k is honoured; identical documents (equal after Unicode
NFKC, case folding and whitespace collapsing) are one index entry, so duplicates never push
their own pairs out (--by_position compares by row position, as published); the last block
keeps every row (published: floor(N / index_size) blocks of whole batches per GPU, the last
absorbing the remainder rounded down to a multiple of batch x world size, the rest dropped;
--published_blocks GPUS reproduces it); the search is exact on the CPU or a GPU, each text
is embedded once, in fp32 by default (--precision bf16 is faster; its disagreement with fp32
is measured on a sample and printed).

Inputs: .jsonl / .jsonl.gz, a folder of shard-*.jsonl[.gz], lines as objects or
[query, document] lists, a saved datasets folder or an HF dataset name. A bad line (invalid
JSON, a missing key) is one error naming its file and line.

Outputs in --output_dir: the kept rows in the input's format (each JSONL file's kept lines
byte for byte, same names; a datasets input: dataset/), ids_to_keep.json (kept global row
ids, 0-based over the files in name order) and, per block b, ids_to_keep_{b}.json (what
contrastors' index_filtering.py writes and its filter_rows.py reads), ranks.npy (each
row's document rank; ties by the lower entry, copies of a vector tie exactly; -1 outside
every block), dropped.jsonl.gz (id, file, line, rank and score of each dropped pair),
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
    p.add_argument("--published_blocks", type=int, default=0, metavar="GPUS",
                   help="contrastors' blocks as its index_filtering.py forms them on GPUS "
                        "GPUs: floor(N / index_size) blocks of whole batches per GPU, the "
                        "last absorbing the remainder rounded down to batch x GPUS (those "
                        "rows dropped); default: blocks of index_size, the last the "
                        "remainder, nothing dropped")
    p.add_argument("--published_batch_size", type=int, default=256,
                   help="with --published_blocks: contrastors' per-GPU --batch_size")
    p.add_argument("--precision_sample", type=int, default=500, metavar="ROWS",
                   help="below fp32 (--precision bf16/fp16/auto): measure how many ranks and "
                        "keep decisions differ from fp32 on this many rows (0: unmeasured)")
    p.add_argument("--label_key", default=None,
                   help="report kept / total per value of this record field")
    p.add_argument("--mine_negatives", type=int, default=0, metavar="K",
                   help="also mine K hard negatives for the kept rows into OUTPUT_DIR/negatives")
    flags.add_embed_args(p)
    flags.add_mine_args(p, k_flag=None)
    cli.add_rank_args(p)
    cli.add_run_args(p, seed=0, world=False)
    return p


def _precision_line(prec: dict, k: int) -> str:
    """The low-precision run's measured disagreement with fp32, in one line."""
    head = f"precision {prec['precision']}: "
    if not prec.get("measured"):
        return head + "disagreement with fp32 unmeasured (--precision_sample 0)"
    shift = prec["max_rank_shift"]
    return (head + f"on a sample of {prec['sample_rows']} rows ranked among their "
            f"{prec['sample_entries']} documents, {prec['ranks_differ']} ranks (up to "
            f"{shift} place{'' if shift == 1 else 's'}) and {prec['kept_differ']} keep "
            f"decisions at k={k} differ from fp32 (max |score diff| "
            f"{prec['max_abs_score_diff']:.2g}); --precision fp32 for exact ranks")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.contrastive.index import NotReady
    from anatomy.contrastive.run import filter_pairs

    mine = None
    if args.mine_negatives:
        args.num_negatives = args.mine_negatives
        mine = flags.mine_options(args)
    published = None
    if args.published_blocks:
        from anatomy.contrastive.filtering import PublishedBlocking
        from anatomy.io import InputError

        if args.published_blocks < 1 or args.published_batch_size < 1:
            raise InputError(None, "--published_blocks and --published_batch_size must be >= 1")
        published = PublishedBlocking(args.published_blocks, args.published_batch_size)
    try:
        s = filter_pairs(args.dataset, args.output_dir, query_key=args.query_key,
                         document_key=args.document_key, k=args.k, index_size=args.index_size,
                         embed=flags.embed_options(args), by_position=args.by_position,
                         add_title=args.add_title, label_key=args.label_key,
                         work_dir=args.work_dir, mine=mine, mine_format=args.output_format,
                         negatives_key=args.negatives_key, output_scores=args.output_scores,
                         ranks=args.ranks, overwrite=args.overwrite, merge=args.merge,
                         wait_s=args.wait, progress=not args.quiet,
                         published_blocks=published, precision_sample=args.precision_sample)
    except NotReady as e:
        print(f"{args.ranks.label}: {e} (run the same command again, or pass --wait)")
        return 0
    print(f"kept {s['kept']} of {s['rows']} pairs at k={s['k']} ({s['dropped']} dropped) -> "
          f"{args.output_dir} ({s['status']})")
    pub = s.get("published_blocks")
    if pub:
        print(f"published blocks ({pub['world_size']} GPUs x batch {pub['batch_size']}): "
              f"{pub['rows_outside_blocks']} rows in no block, dropped")
    prec = s.get("precision") or {}
    if prec.get("precision", "fp32") != "fp32":
        print(_precision_line(prec, s["k"]))
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
