"""Build the balanced member / non-member pool from sampled documents (OLMoMIA step 2).

Published semantics: each class's sample files in (S0 asc, S1 desc) order, overlapping
intervals skipped; documents with L//2 < length <= L, at most one per training instance;
(N+1)//2 members (label 1) then N//2 non-members (label 0). Output data/{model}_{L}_{N}.jsonl
with {"input", "label"} plus provenance (idx, length, step). Too few samples: one error
saying how many were found and which interval to sample next; nothing is written.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python filter.py --member_step_start 0 --member_step_end 200 --nonmember_step_start 800 \\
      --nonmember_step_end 900 --num_data 400 --max_length 64          # the miniworld
  python filter.py --config configs/OLMo-7B.yaml --member_step_start 0 --member_step_end 100000 \\
      --nonmember_step_start 400000 --nonmember_step_end 450000 --num_data 100000 --max_length 128
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("pool")
    for k in ("member_step_start", "member_step_end", "nonmember_step_start",
              "nonmember_step_end"):
        g.add_argument(f"--{k}", type=int, required=True)
    g.add_argument("--num_data", type=int, default=1000, help="pool size N")
    g.add_argument("--max_length", type=int, default=2048, help="L: keep L//2 < length <= L")
    g.add_argument("--batch_size", type=int, default=None,
                   help="B used when sampling (default: the config's true batch size)")
    g.add_argument("--data_dir", default="data")
    cli.add_data_args(p)
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.construct import run_filter

    cfg = cli.olmo_config(args)
    out, n, skipped = run_filter(
        data_dir=args.data_dir, model_name=args.model_name or cfg.model_name,
        member_steps=(args.member_step_start, args.member_step_end),
        nonmember_steps=(args.nonmember_step_start, args.nonmember_step_end),
        num_data=args.num_data, max_length=args.max_length,
        batch_size=args.batch_size or cfg.batch_size, overwrite=args.overwrite)
    print(f"{out}: {n} records ({(n + 1) // 2} members, {n // 2} non-members)"
          + (" (up to date, skipped)" if skipped else ""))
    return 0


if __name__ == "__main__":
    cli.run(main)
