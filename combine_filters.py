"""Join every per-sample feature table into one (pipeline C), out of core with DuckDB.

Inputs: the tables the filter scripts wrote (parquet or JSONL), each keyed by sequence_id;
a table with a ``checkpoint`` column (memorization_scores.py over several checkpoints) keys
by (sequence_id, checkpoint) and the other tables are repeated for each checkpoint. Every
input must hold exactly the first input's samples: missing, extra or duplicate ids are an
error naming the file and the ids, never a silent drop. Writes --output (parquet, or JSONL
by its suffix) sorted by sequence_id (and checkpoint) and a JSON summary beside it.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python combine_filters.py --inputs data/memorization/{scores,duplicates,templating,\\
frequencies,semantic,code_vs_nl}.parquet --output data/memorization/combined.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--inputs", nargs="+", required=True, help="feature tables")
    p.add_argument("--output", default="data/memorization/combined.parquet",
                   help=".parquet or .jsonl")
    p.add_argument("--summary", default=None, help="JSON summary (default: OUTPUT.summary.json)")
    p.add_argument("--memory_limit", default="2GB", help="DuckDB memory limit (spills to disk)")
    p.add_argument("--threads", type=int, default=1, help="DuckDB threads")
    cli.add_run_args(p, seed=None, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy import execution
    from anatomy.memorization.combine import combine_tables

    summary = args.summary or f"{args.output}.summary.json"
    out = execution.Output.file(args.output, summary)
    fp = execution.fingerprint("combine_filters",
                               {f"input{i}": p for i, p in enumerate(args.inputs)},
                               {"n_inputs": len(args.inputs)})
    if not execution.check_output(out, fp, args.overwrite):
        print(f"{args.output} is up to date (skipped)")
        return 0
    s = combine_tables(args.inputs, args.output, summary, memory_limit=args.memory_limit,
                       threads=args.threads)
    execution.mark_output(out, fp, {"rows": s["rows"]})
    print(f"{s['rows']} rows x {len(s['columns'])} columns -> {args.output}; summary {summary}")
    return 0


if __name__ == "__main__":
    cli.run(main)
