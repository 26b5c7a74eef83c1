"""Cluster a pool into benchmark splits (OLMoMIA step 4): Random, Mix-1, Mix-2, Easy, Medium, Hard.

Published semantics: L2-normalised embeddings; members and non-members clustered separately
(faiss spherical k-means, K clusters, 50 iterations, seed); inside each cluster a greedy
scan keeps points at least --min_inter_dist apart (cosine distance); member x non-member
cluster pairs ranked by mean cross distance: Hard = closest, Medium = median, Easy =
farthest; within the pair Easy/Hard take the farthest/nearest points, Medium draws at random
(seeds 43/44). Random draws M/2 per class from the pool; Mix-1 = random members + Hard
non-members; Mix-2 = Hard members + random non-members. Writes
data/{model}_{L}_{M}_{split}.jsonl, a distance histogram PNG and a stats line per split.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python clustering.py --model_name miniworld-small --max_length 64 --num_data 400 \\
      --num_sample 100 --num_cluster 4 --min_inter_dist 0.3
  python clustering.py --model_name OLMo-7B --max_length 128 --num_data 100000 \\
      --num_sample 1000 --num_cluster 50 --min_inter_dist 0.6
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("clustering")
    g.add_argument("--model_name", default="OLMo-7B")
    g.add_argument("--max_length", type=int, default=128)
    g.add_argument("--num_data", type=int, default=100000, help="pool size N")
    g.add_argument("--num_sample", type=int, default=1000, help="split size M")
    g.add_argument("--num_cluster", type=int, default=50)
    g.add_argument("--min_inter_dist", type=float, default=0.6)
    g.add_argument("--min_cross_dist", type=float, default=None)
    g.add_argument("--niter", type=int, default=50, help="k-means iterations")
    g.add_argument("--data_dir", default="data")
    g.add_argument("--world", default=None,
                   help="a miniworld: count each split's planted passages (its truth file)")
    cli.add_run_args(p, seed=42, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.construct import run_clustering

    stats = run_clustering(data_dir=args.data_dir, model_name=args.model_name,
                           max_length=args.max_length, num_data=args.num_data,
                           num_sample=args.num_sample, num_cluster=args.num_cluster,
                           min_inter_dist=args.min_inter_dist, seed=args.seed,
                           min_cross_dist=args.min_cross_dist, niter=args.niter,
                           world=args.world, overwrite=args.overwrite)
    planted = args.world is not None
    print("| split | members | non-members | cross dist | within members | within non-members |"
          + (" planted | fillers |" if planted else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if planted else ""))
    for s in stats:
        extra = (f" {s['planted']['n']} | {s['planted'].get('fillers', '?')} |" if planted
                 else "")
        print(f"| {s['split']} | {s['members']} | {s['nonmembers']} | {s['cross_dist']:.3f} | "
              f"{s['within_member_dist']:.3f} | {s['within_nonmember_dist']:.3f} |{extra}")
    return 0


if __name__ == "__main__":
    cli.run(main)
