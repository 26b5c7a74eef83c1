"""Score estimated training mixtures against a ground-truth spec (pipeline B, last step).

Reads each run folder's summary.json (ours: run_labelshift.py / run_minkpp_mix.py; or the
published label-shift and Min-K%++ tools' formats) and a bench/specs/*.yaml spec, and prints
one row per method plus trivial baselines (uniform; with --pool_priors, the sampling pool's
mixture and all mass on its largest category): accuracy = 1 - L1/2, the fraction of
categories within --tol, L1, L2, KL(truth||estimate), max abs error, CI coverage. Scores on
6 classes (web = commoncrawl + c4) when any side has 6. Writes report.md and PNG plots.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python benchmark_evaluation.py --results_dir out/labelshift_olmo1b \\
      --ground_truth bench/specs/olmo1b.yaml --pool_priors bench/specs/slimpajama.yaml
  python benchmark_evaluation.py --compare out/labelshift_pythia out/minkpp_pythia \\
      --ground_truth bench/specs/pythia.yaml --tol 0.02 --merge_web
  python benchmark_evaluation.py --results_dir data/world/out/labelshift \\
      --ground_truth data/world/truth/mixture_spec.yaml --no_plots
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("input")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--results_dir", help="one run folder (or its summary.json)")
    src.add_argument("--compare", nargs="+", metavar="DIR", help="several run folders")
    g.add_argument("--ground_truth", required=True, nargs="+",
                   help="spec YAML(s) with category_weights (or a miniworld truth.json); with "
                        "several (e.g. the training mixture and a pool's member mixture) "
                        "every method is scored against each, one table per truth")
    g.add_argument("--pool_priors", default=None,
                   help="spec of the sampling pool's mixture (e.g. bench/specs/slimpajama.yaml)"
                        " for the pool baselines")
    g.add_argument("--estimate", choices=("point", "mean"), default="point",
                   help="which estimate to score where a summary has both")
    g = p.add_argument_group("scoring")
    g.add_argument("--tol", type=float, default=0.02, help="absolute tolerance for acc_tol")
    g.add_argument("--merge_web", action="store_true",
                   help="always score on 6 classes (default: only when a side has 6)")
    g = p.add_argument_group("output")
    g.add_argument("--output_dir", default="benchmark_output", help="report.md and plots")
    g.add_argument("--no_plots", action="store_true", help="no PNG plots")
    g.add_argument("--no_report", action="store_true", help="no report.md")
    cli.add_run_args(p, seed=None, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.io import InputError
    from anatomy.mixture.evaluate import format_table, run_benchmark

    if args.tol < 0:
        raise InputError(None, "--tol must be >= 0")
    from pathlib import Path

    from anatomy.mixture.evaluate import spec_title

    several = len(args.ground_truth) > 1
    for spec in args.ground_truth:
        out = Path(args.output_dir) / Path(spec).stem if several else args.output_dir
        rows = run_benchmark(args.compare or [args.results_dir], spec, tol=args.tol,
                             out_dir=out, plots=not args.no_plots, report=not args.no_report,
                             pool_priors=args.pool_priors,
                             merge=True if args.merge_web else None, field=args.estimate,
                             overwrite=args.overwrite)
        if several:
            print(f"\nagainst {spec_title(spec)} ({spec}):")
        print(f"{len(rows[0]['categories'])} categories: {', '.join(rows[0]['categories'])}")
        print(format_table(rows), end="")
    if not (args.no_plots and args.no_report):
        cli.log.info("report and plots in %s", args.output_dir)
    return 0


if __name__ == "__main__":
    cli.run(main)
