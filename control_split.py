"""Known-answer membership splits from a miniworld's truth file (OLMoMIA on the miniworld).

Documents seen once are near chance at miniworld scale (as OLMoMIA finds for its Random
split), so the demo also scores a control split: passages planted >= --min_count times in
the member window (label 1) vs passages of the same candidate pool seen once in the
non-member window (label 0); and a "planted" split with every planted count (field
"planted") for AUROC by exposure count.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python control_split.py                      # data/miniworld-small_control.jsonl, _planted.jsonl
  python control_split.py --world data/world-tiny --data_dir /tmp/d
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--min_count", type=int, default=8, help="members: planted >= this often")
    p.add_argument("--data_dir", default="data")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.construct import control_splits

    cli.require_world(args)
    for name, path in control_splits(args.world, args.data_dir, args.min_count,
                                     args.overwrite).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
