"""(query, document) pairs from the miniworld's real text, with planted errors (pipeline E).

The world's corpus was cut from files that ship with Python and the toolkit's dependencies;
this reads those files (each checked against the sha256 the world's manifest recorded) and
pairs each function's docstring (first paragraph) with the function's source minus the
docstring, and each Markdown / reStructuredText heading with its section. Seeded: --n_pairs
pairs (--heading_share of them heading pairs), --mismatch of them given another row's
document (planted="mismatch"), and --duplicate x n_pairs exact copies of true pairs
(planted="duplicate"). --stdlib pairs the standard library's docstrings instead (the
prototype's data, the same on every machine with this Python).

Output: JSONL (.gz by suffix) with query, document, kind, source and planted, ready for
filter_pairs.py --label_key planted and mine_negatives.py; a rerun with the same inputs and
flags is skipped.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python make_pairs.py --world data/world --out data/contrastive/pairs.jsonl.gz
  python make_pairs.py --stdlib --n_pairs 2000 --heading_share 0 --duplicate 0 \\
      --out data/contrastive/stdlib-pairs.jsonl.gz
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--out", required=True, help="output .jsonl / .jsonl.gz")
    p.add_argument("--n_pairs", type=int, default=2000, help="pairs before the copies")
    p.add_argument("--mismatch", type=float, default=0.1,
                   help="share of rows given another row's document")
    p.add_argument("--duplicate", type=float, default=0.05,
                   help="exact copies of true pairs, as a share of --n_pairs")
    p.add_argument("--heading_share", type=float, default=0.2,
                   help="share of heading -> section pairs (the rest: docstring -> source)")
    p.add_argument("--keep_docstring", action="store_true",
                   help="leave the docstring in the source (an easier task)")
    p.add_argument("--stdlib", action="store_true",
                   help="the standard library's files instead of the world's sources")
    cli.add_run_args(p, seed=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy import execution, io
    from anatomy.contrastive import world_pairs as wp

    params = {"n_pairs": args.n_pairs, "mismatch": args.mismatch, "duplicate": args.duplicate,
              "heading_share": args.heading_share, "seed": args.seed, "stdlib": args.stdlib,
              "keep_docstring": args.keep_docstring}
    out = Path(args.out)
    if args.stdlib:
        inputs = {"stdlib": [str(p) for _, p in wp.stdlib_files()]}
    else:
        world = cli.require_world(args)
        inputs = {"manifest": str(world / "corpus" / "manifest.json")}
    fp = execution.fingerprint("make_pairs", inputs, params)
    output = execution.Output.file(out)
    if not execution.check_output(output, fp, args.overwrite):
        _report(execution.recorded_summary(output), out)
        return 0
    if args.stdlib:
        rows, stats = wp.pairs_from_files(wp.stdlib_files(), args.n_pairs, args.mismatch,
                                          args.duplicate, args.heading_share, args.seed,
                                          args.keep_docstring)
    else:
        rows, stats = wp.world_pairs(args.world, args.n_pairs, args.mismatch, args.duplicate,
                                     args.heading_share, args.seed, args.keep_docstring)
    if not rows:
        raise io.InputError(args.world, "no docstring or heading pairs in these sources")
    io.write_jsonl(out, rows)
    execution.mark_output(output, fp, stats)
    _report(stats, out)
    return 0


def _report(stats: dict, out) -> None:
    print(f"{stats['rows']} pairs ({stats['docstring']} docstring, {stats['heading']} heading; "
          f"planted: {stats['mismatch']} mismatched, {stats['duplicate']} duplicated) of "
          f"{stats['candidates']['docstring']} + {stats['candidates']['heading']} candidates "
          f"-> {out}")


if __name__ == "__main__":
    cli.run(main)
