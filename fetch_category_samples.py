"""Draw a uniform sample of N texts per category from SlimPajama-style shards (pipeline B, step 1).

Reads ROOT/train/chunkN/*.jsonl.zst (category from meta.redpajama_set_name, meta as a dict or
a JSON string) or one folder per set (ROOT/train/RedPajamaC4/ ..., SlimPajama-627B-DC), and
writes OUT/<category>.jsonl, one file per category (commoncrawl, c4, github, books, arxiv,
wikipedia, stackexchange by default; --set_map for other corpora). The sample is a bottom-k
sample on a hash of (seed, shard, line): uniform without replacement, and identical for any
--num_proc and any number of ranks (--rank/--world_size, torchrun, a Slurm array: rank r
reads shards r, r+W, ... and the last to finish merges). Without --slimpajama_root the
miniworld's pools are used (--world).
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python fetch_category_samples.py --out_dir data/world/data_samples --n_per_category 200
  python fetch_category_samples.py --slimpajama_root /data/SlimPajama-627B --n_per_category 5000 \\
      --out_dir data_samples --num_proc 8
  python fetch_category_samples.py --slimpajama_root /data/SlimPajama-627B-DC/train \\
      --set_map RedPajamaCommonCrawl=web,RedPajamaC4=web,RedPajamaGithub=github --skip_bad
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("input")
    g.add_argument("--slimpajama_root", default=None,
                   help="SlimPajama root (holding train/) or its train/ folder; "
                        "default: the miniworld's pools")
    g.add_argument("--set_map", default=None,
                   help="set name -> category: a YAML/JSON file or 'SET=name,SET2=name2' "
                        "(default: the 7 RedPajama sets, or the miniworld's sets)")
    g.add_argument("--skip_bad", action="store_true",
                   help="skip corrupt shards (counted and reported) instead of stopping")
    g.add_argument("--min_chars", type=int, default=300, help="drop shorter texts")
    g.add_argument("--max_chars", type=int, default=2000, help="cut texts (0: keep whole)")
    g.add_argument("--no_dedup", action="store_true", help="keep duplicate texts")
    g = p.add_argument_group("output")
    g.add_argument("--out_dir", default="data_samples", help="one <category>.jsonl per category")
    g.add_argument("--n_per_category", type=int, default=5000, help="texts per category")
    g = p.add_argument_group("parallelism")
    g.add_argument("--num_proc", type=int, default=2,
                   help="worker processes per rank (shards in parallel)")
    cli.add_run_args(p, seed=42)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.io import read_json
    from anatomy.mixture.slimpajama import fetch_category_samples

    root, set_map = args.slimpajama_root, args.set_map
    if root is None:
        truth = read_json(cli.require_world(args) / "truth.json")
        root = cli.world_path(args, truth["pools"]["root"])
        set_map = set_map or truth["pools"]["set_names"]
    stats = fetch_category_samples(
        root, args.n_per_category, args.out_dir, seed=args.seed, num_proc=args.num_proc,
        mapping=set_map, skip_bad=args.skip_bad, min_chars=args.min_chars,
        max_chars=args.max_chars or None, dedup=not args.no_dedup, ranks=args.ranks,
        overwrite=args.overwrite, merge=args.merge,
        progress=lambda it, n: cli.progress(it, "shards", "shard", total=n))
    if stats is None:  # this rank wrote its part; the last rank to finish merges
        return 0
    print(f"{stats['shards']} shards ({stats['layout']} layout), {stats['records']} records; "
          f"{len(stats['bad_shards'])} bad shards skipped")
    for cat, n in stats["kept"].items():
        dropped = [f"{stats['too_short'][cat]} shorter than --min_chars {args.min_chars}",
                   f"{stats['duplicates'][cat]} duplicates"]
        print(f"{cat}: {n} of {stats['distinct'][cat]} distinct eligible records "
              f"({'; '.join(dropped)}) -> {args.out_dir}/{stats['files'][cat]}")
    if stats["unmapped"]:
        print("records of sets outside the map: " + ", ".join(
            f"{k} {v}" for k, v in stats["unmapped"].items()))
    return 0


if __name__ == "__main__":
    cli.run(main)
