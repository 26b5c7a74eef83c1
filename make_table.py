"""The OLMoMIA paper-style table from run_mia.py results: methods x (checkpoints x splits).

Reads RESULTS_DIR/DATASET/CHECKPOINT/metrics.json for each dataset (split) given. Rows =
methods, columns = checkpoints (ordered by the step in the revision name) x splits, cells =
the metric x 100 with one decimal and its 95 % bootstrap interval over the split's texts, in
bold only where it lies outside the split's chance band (95 % of label permutations, printed
under each table), a dagger on an EM-MIA run that ended inverted. Writes OUT.md, OUT.csv and
a heat-map OUT.png, and prints the Markdown. For a split with EM-MIA runs it also writes
RESULTS_DIR/DATASET/emmia_iterations.{md,png}: AUROC after every iteration, per initial
score, with the final scores' Spearman rho against the initial ones. For a split whose
scored records carry an integer count field (the miniworld's planted split: "planted" =
copies seen, 0 = control) it also prints AUROC of loss and Min-K%++ 20% per count and
checkpoint, and writes RESULTS_DIR/DATASET/by_FIELD.{md,csv,png} (AUROC vs count, one
line per checkpoint).
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python make_table.py --datasets miniworld-small_control miniworld-small_planted
  python make_table.py --datasets OLMo-7B_128_1000_{random,mix1,mix2,easy,medium,hard}
  python make_table.py --datasets OLMo-7B_64_1000_hard --metric tpr@1% --methods loss minkpp
"""


def build_parser():
    from anatomy.mia.table import METRICS

    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--results_dir", default="results")
    p.add_argument("--datasets", nargs="+", required=True, help="splits, in column order")
    p.add_argument("--metric", choices=METRICS, default="auroc")
    p.add_argument("--out", default=None,
                   help="output path without extension (default: RESULTS_DIR/table, "
                        "RESULTS_DIR/table_METRIC for other metrics)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="rows to keep: families (loss zlib mink minkpp ref emmia) or score "
                        "names (minkpp_20); default all")
    p.add_argument("--count_field", default="planted",
                   help="integer record field for AUROC by count")
    cli.add_run_args(p, seed=None, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.table import make_tables

    print(make_tables(args.results_dir, args.datasets, metric=args.metric, out=args.out,
                      methods=args.methods, count_field=args.count_field,
                      overwrite=args.overwrite))
    return 0


if __name__ == "__main__":
    cli.run(main)
