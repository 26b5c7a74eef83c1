"""Exact duplicate counts in the trained stream (pipeline C): sequence_duplicates, or any n-gram.

``sequence_duplicates`` of a sample = how many times its --cont_len-token continuation (tokens
32..63 of a trained sequence) occurs at any offset of the trained stream, counting windows
that lie inside one training sequence (as EleutherAI's pipeline counts them), every trained
occurrence counted, the sample's own included; more than 5 makes a memorized sample
"recitation" (Prashanth et al. 2024).

Exact, not approximate: 64-bit rolling hashes of every window of every trained sequence are
matched against the sorted query hashes and every hash-equal candidate is verified token by
token. Map: storage blocks of the training data (--rows_per_unit sequences each, read in
order) -> counts per query; reduce: the sum. Ranks split the blocks (a Slurm array,
torchrun, --rank/--world_size on several machines); each block is its own part file, so a
killed rank resumes; the last rank to finish merges.

--ngrams FILE counts arbitrary n-grams instead (the infini-gram "count" query): a .npy of
shape (K, n) or a JSONL with "tokens" (lists of ids, all of one length n); counts go to
--output as JSONL/parquet with "ngram" (row number) and "count".
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python filter_duplicates.py --all_sequences --output data/memorization/duplicates.parquet
  python filter_duplicates.py --pythia_data pile/document --sequence_ids samples.npy \\
      --rank 0 --world_size 256 --output duplicates.parquet
  python filter_duplicates.py --ngrams spans.jsonl --output span_counts.jsonl
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    p.add_argument("--ngrams", default=None,
                   help="count these n-grams (.npy (K, n) or JSONL with tokens) instead")
    p.add_argument("--rows_per_unit", type=int, default=16384,
                   help="sequences per map unit (fixed by the data, not by the ranks)")
    p.add_argument("--counts", default=None,
                   help="raw counts NPY, one per query (default: OUTPUT.counts.npy)")
    p.add_argument("--output", default="data/memorization/duplicates.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p, seed=None)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    import numpy as np

    from anatomy.memorization.pipeline import (
        duplicate_count_step,
        duplicates_table,
        ids_digest,
        load_ngrams,
        ngram_table,
    )
    from anatomy.memorization.table import out_path

    out = out_path(args.output)
    counts = Path(args.counts) if args.counts else Path(f"{out}.counts.npy")
    data = cli.training_data(args)
    if args.ngrams is not None:
        queries, digest = load_ngrams(args.ngrams)
        ids = None
    else:
        ids = cli.sample_ids(args, data)
        samples = data.samples(ids, args.prompt_len, args.cont_len)
        queries = np.ascontiguousarray(samples[:, args.prompt_len:])
        digest = ids_digest(ids) + f":{args.prompt_len}:{args.cont_len}"
    res = duplicate_count_step(data, queries, counts, args.rows_per_unit, digest, args.ranks,
                               overwrite=args.overwrite, merge=args.merge,
                               progress=not args.quiet)
    if not res.lead:
        return 0
    s = res.summary
    print(f"{s['queries']} queries counted over {s['tokens']} tokens of {s['rows']} trained "
          f"sequences (max {s['max']}, {s['zero']} never seen) ({res.status})")
    if ids is None:
        t = ngram_table(counts, out, digest, overwrite=args.overwrite)
    else:
        t = duplicates_table(ids, counts, out, overwrite=args.overwrite)
    print(f"{t['rows']} rows -> {out} ({t['status']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
