"""The memorization taxonomy and its model (pipeline C, last step; Prashanth et al. 2024).

Reads the combined feature table (combine_filters.py). Categories of memorized samples
(memorization_score == 1.0): recitation if sequence_duplicates > --threshold (5), else
reconstruction if templated (is_incrementing or is_repeating), else recollection; their
counts and shares at every checkpoint in the table. At one checkpoint (--checkpoint, default
the last) a baseline logistic regression for "memorized" over the 13 + 1 published features
and a taxonomic one (a model per category), standardised on the training split only, L2,
balanced classes; ROC AUC, PR AUC, precision, recall, F1 and ECE from probabilities per
category and aggregated, mean +- sd over --folds training folds (--published_metrics: the
published conventions, named in the report); Pearson / Spearman / Chatterjee-xi correlations
of each feature with the 0/1 memorized label, per category and natural-language / code subset
(as published; --correlate memorization_score for the score); --search runs the published
feature/quantile partition search.

Rows of ds_type "memories" (the sequences memorization_samples.py --add_planted adds) are
used as published: the memorized ones join training only, the rest are left out, so the test
split holds random samples alone. The report says which rows went where (test_split.csv lists
the test rows), which conventions each figure uses, and which models are constant.

Writes OUTPUT_DIR/: report.md (printed), category_shares.csv, metrics.csv,
coefficients.csv, correlations.csv, test_split.csv, summary.json and PNG plots (model_performance,
model_weights, correlations, category_shares). --world adds the miniworld's check of its
planted sequences.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python train_taxonomy.py --combined data/memorization/combined.parquet \\
      --output_dir data/memorization/taxonomy --world data/world
  python train_taxonomy.py --combined pythia12b_features.parquet --folds 100 --search \\
      --output_dir taxonomy_12b
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--combined", required=True, help="combined feature table")
    p.add_argument("--output_dir", default="data/memorization/taxonomy")
    p.add_argument("--checkpoint", default=None, help="checkpoint of the model (default: last)")
    p.add_argument("--threshold", type=float, default=5,
                   help="recitation when sequence_duplicates > this (published: > 5)")
    p.add_argument("--folds", type=int, default=None,
                   help="folds for the +- (default 10; with --published_metrics 100)")
    p.add_argument("--published_metrics", action="store_true",
                   help="model_training.py's conventions: the full fit's test predictions "
                        "subsampled by KFold training parts, AUCs of 0/1 predictions, ECE 5 "
                        "bins, F1 of the mean precision and recall")
    p.add_argument("--correlate", default="memorized",
                   choices=["memorized", "memorization_score"],
                   help="the correlations' target (published: the 0/1 memorized label)")
    p.add_argument("--search", action="store_true", help="the partition search (810 rules)")
    p.add_argument("--max_rules", type=int, default=None, help="stop the search after N rules")
    p.add_argument("--published_scaling", action="store_true",
                   help="fit the scaler on every row before the split (as published)")
    cli.add_run_args(p, seed=1024, world=False)
    p.add_argument("--world", default=None, help="miniworld: check its planted sequences")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.memorization.pipeline import run_taxonomy

    folds = args.folds if args.folds is not None else 100 if args.published_metrics else 10
    print(run_taxonomy(args.combined, args.output_dir, args.checkpoint, args.threshold,
                       folds, args.seed, args.search, args.max_rules,
                       args.published_scaling, args.world, args.overwrite,
                       published_metrics=args.published_metrics, correlate=args.correlate))
    return 0


if __name__ == "__main__":
    cli.run(main)
