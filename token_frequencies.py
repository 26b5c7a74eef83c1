"""Corpus token frequencies over the trained stream, and per-sample statistics (pipeline C).

Map: every storage block of the training data (token files or Pythia rows, trained
sequences only) -> np.bincount of its tokens; reduce: the sum, saved as --counts (int64 NPY,
one count per token id). Ranks split the blocks (torchrun, a Slurm array, --rank/--world_size)
and the last rank to finish merges; a rerun with the same inputs is skipped.

Then, per sample (a trained sequence's first --prompt_len + --cont_len tokens),
max_frequency, avg_frequency, min_frequency, median_frequency, p25_frequency and
p75_frequency of its tokens' corpus counts, written to --output (.parquet or .jsonl) keyed by
sequence_id (--keep_frequencies adds the raw per-token list, ``frequencies``). p25 and p75
interpolate linearly (numpy); --published_percentiles takes Spark's percentile_approx, a
nearest rank, as the published filter did.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python token_frequencies.py --all_sequences --output data/memorization/frequencies.parquet
  python token_frequencies.py --pythia_data pile/document --counts pile_counts.npy \\
      --counts_only --rank 0 --world_size 64
  python token_frequencies.py --pythia_data pile/document --counts pile_counts.npy \\
      --sequence_ids samples.npy --output frequencies.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--counts", default=None,
                   help="corpus counts NPY (default: beside --output, token_counts.npy)")
    g.add_argument("--counts_only", action="store_true",
                   help="only the corpus counts (no samples needed)")
    g.add_argument("--rows_per_unit", type=int, default=16384,
                   help="sequences per map unit (fixed by the data, not by the ranks)")
    g.add_argument("--keep_frequencies", action="store_true",
                   help="also write each sample's per-token counts")
    g.add_argument("--published_percentiles", action="store_true",
                   help="p25/p75 as Spark's percentile_approx (nearest rank), as published")
    g.add_argument("--output", default="data/memorization/frequencies.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p, seed=None)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy.memorization.pipeline import sample_frequency_table, token_count_step

    out = Path(args.output)
    counts_path = Path(args.counts) if args.counts else out.with_name("token_counts.npy")
    data = cli.training_data(args)
    ids = None if args.counts_only else cli.sample_ids(args, data)
    res = token_count_step(data, counts_path, args.rows_per_unit, args.ranks,
                           overwrite=args.overwrite, merge=args.merge, progress=not args.quiet)
    if not res.final:
        return 0  # this rank's part is done; the last rank merges
    if res.lead:
        s = res.summary
        print(f"corpus counts: {s['tokens']} tokens of {s['rows']} trained sequences, "
              f"{s['distinct']} distinct ids -> {counts_path} ({res.status})")
    if ids is None or not res.lead:
        return 0
    n = sample_frequency_table(data, ids, counts_path, out, args.prompt_len, args.cont_len,
                               keep_frequencies=args.keep_frequencies,
                               overwrite=args.overwrite,
                               published_percentiles=args.published_percentiles)
    print(f"{n} samples -> {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
