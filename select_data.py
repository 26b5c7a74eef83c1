"""Select n training examples from a candidate pool for a target (pipeline D, DsDm and baselines).

Methods (``get_indices`` of DsDm's README, computed here instead of downloaded):
  dsdm        TRAK datamodel of the target loss on proxy models; top n (Engstrom et al. 2024)
  classifier  hashed n-gram logistic regression, target vs pool; GPT-3's Pareto(9) keep rule
              (--classifier_rule topk: DsDm's released top-n)
  dsir        hashed-n-gram importance weights, Gumbel top-k (Xie et al. 2023); --dsir_mode
              compat reproduces the data-selection package's weights exactly, fast is default
  random      uniform without replacement (untargeted)
  semdedup    embeddings -> spherical k-means -> drop near-duplicates, epsilon chosen so that
              n remain (Abbas et al. 2023; untargeted)

The pool is a miniworld (its OLMo token files, row i = stored instance i), an OLMo config, a
datasets folder, parquet shards or a hub name (fixed-length input_ids rows, as DsDm's tokenized
C4), or a JSONL/parquet file of texts (--text_key). A target is a JSONL file of texts or a named
miniworld target (a category, or "mix"). Outputs: F.npy (int64 indices, best first), F.scores.npy
(float32 per pool row, higher = keep, NaN where the method gives no score) and F.json (what made
them). Given scores (--scores, or DsDm's released files with --published_dir) skip the
computation. The heavy stages (DsDm's proxies and gradients, SemDeDup's embeddings, DSIR's pass)
run as ranks: torchrun, a Slurm array, or --rank/--world_size.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python select_data.py --method dsir --n 1024 --target license --pool_rows 4096
  python select_data.py --method dsdm --n 1024 --target mix --pool_rows 4096 --proxies 8
  python select_data.py --method semdedup --n 1024 --pool_rows 4096
  python select_data.py --method dsdm --n 1000000 --target lm_task_mix \\
      --published_dir DsDm/data
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--method", required=True,
                   choices=["dsdm", "classifier", "dsir", "random", "semdedup"])
    p.add_argument("--n", type=int, required=True, help="how many examples to select")
    p.add_argument("--target", default=None,
                   help="JSONL/parquet of target texts, or a miniworld target name")
    p.add_argument("--pool", default=None, help="candidate pool (default: --world)")
    p.add_argument("--pool_rows", type=int, default=None,
                   help="use the first N rows of the pool (default: all)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer of a token pool (default: the world's / the config's)")
    p.add_argument("--text_key", default="text", help="text field of JSONL pools and targets")
    p.add_argument("--out", default=None,
                   help="indices .npy (default: data/selections/{method}_{target}_{n}.npy)")
    p.add_argument("--work_dir", default="data/selections/work",
                   help="proxies, features and embeddings, reused across n and targets")
    g = p.add_argument_group("given scores")
    g.add_argument("--scores", default=None, help="a .npy (or torch .pt) of one score per row")
    g.add_argument("--published_dir", default=None,
                   help="DsDm's data/ folder: read {method}/{target}.pt (sdd.pt for semdedup)")
    g.add_argument("--standardize", action="store_true",
                   help="lm_task_mix: z-score each task before the mean (published: raw mean)")
    g = p.add_argument_group("dsir")
    g.add_argument("--dsir_mode", default="fast", choices=["fast", "compat"])
    g.add_argument("--dsir_min_length", type=int, default=100,
                   help="examples with fewer words get no weight (the package's default 100)")
    g.add_argument("--dsir_buckets", type=int, default=10000)
    g.add_argument("--dsir_hash", default="sha256", choices=["sha256", "fast64"],
                   help="fast mode's bucket hash: the package's sha256 (same weights, cached "
                        "per distinct n-gram) or a vectorised 64-bit hash (3x faster, other "
                        "buckets)")
    g = p.add_argument_group("classifier")
    g.add_argument("--classifier_rule", default="pareto", choices=["pareto", "topk"])
    g.add_argument("--pareto_alpha", type=float, default=9.0)
    g = p.add_argument_group("semdedup")
    g.add_argument("--semdedup_clusters", type=int, default=None,
                   help="k-means clusters (default: sqrt(N/2))")
    g.add_argument("--semdedup_keep", type=float, default=None,
                   help="DsDm's way: epsilon for this kept fraction, then n uniformly inside")
    g.add_argument("--embedder", default=None,
                   help="HF encoder or causal LM (default: the offline all-MiniLM-L6-v2)")
    g.add_argument("--embedder_kind", default="encoder", choices=["encoder", "causal_lm"])
    g = p.add_argument_group("dsdm (TRAK)")
    g.add_argument("--proxies", type=int, default=4,
                   help="proxy models to train (4: chosen by measured LDS against 1, 2, 4, 8; "
                        "benchmarks/bench_trak.py)")
    g.add_argument("--proxy_models", nargs="+", default=None,
                   help="HF checkpoints (paths) to use as proxies instead of training them")
    g.add_argument("--proxy_fraction", type=float, default=0.5,
                   help="share of the pool each proxy trains on")
    g.add_argument("--proxy_epochs", type=float, default=2.0)
    g.add_argument("--proxy_d_model", type=int, default=64)
    g.add_argument("--proxy_layers", type=int, default=2)
    g.add_argument("--proxy_heads", type=int, default=2)
    g.add_argument("--proj_dim", type=int, default=512, help="TRAK projection dimension")
    g.add_argument("--proj_seed", type=int, default=0)
    g.add_argument("--lambda_reg", type=float, default=0.0, help="ridge on the TRAK kernel")
    g.add_argument("--trak_compat", action="store_true",
                   help="traker 0.3.2's float32 arithmetic (default: float64)")
    g.add_argument("--trak_unscaled_inverse", action="store_true",
                   help="leave out traker's division of each model's kernel inverse by its "
                        "mean |value| (which reweights the proxies of the ensemble)")
    g.add_argument("--dsdm_summed_target", action="store_true",
                   help="the target margin summed over tokens (long target documents weigh "
                        "more) instead of per token, as the evaluation's per-document loss")
    g.add_argument("--grad_batch", type=int, default=32, help="rows per gradient batch")
    g.add_argument("--max_projection_gb", type=float, default=2.0,
                   help="keep each model's projection matrix (grad_dim x proj_dim float32) "
                        "while under this size, else regenerate it block by block per batch "
                        "(traker's way: bounded memory, about half the speed)")
    g.add_argument("--device", default=None,
                   help="per-example gradients on this device (default: cuda:LOCAL_RANK if "
                        "there is a GPU, else the CPU)")
    cli.add_run_args(p, seed=0)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy.selection.run import default_out, select_to_files
    from anatomy.selection.select import resolve_pool, resolve_target

    if args.pool is None and args.published_dir is not None and args.method != "random":
        pool = None  # released scores: the pool (216M rows of C4) need not be read
    else:
        pool = resolve_pool(args.pool or cli.require_world(args),
                            tokenizer=cli.default_tokenizer(args), text_key=args.text_key,
                            rows=args.pool_rows)
    target_name = args.target
    targeted = args.method in ("dsdm", "classifier", "dsir")
    if not targeted and args.target is not None:
        from anatomy.io import InputError

        raise InputError(None, f"{args.method} is untargeted: drop --target")
    published = args.published_dir is not None
    target = None
    if targeted and not published:
        target = resolve_target(args.target, pool, world=Path(args.world), text_key=args.text_key)
    elif targeted and args.target is None:
        from anatomy.io import InputError

        raise InputError(None, f"{args.method} needs --target")
    options = {
        "mode": args.dsir_mode, "min_example_length": args.dsir_min_length,
        "num_buckets": args.dsir_buckets, "hash": args.dsir_hash, "rule": args.classifier_rule,
        "alpha": args.pareto_alpha, "n_clusters": args.semdedup_clusters,
        "keep_fraction": args.semdedup_keep, "model": args.embedder,
        "kind": args.embedder_kind, "n_proxies": args.proxies,
        "proxy_models": args.proxy_models, "fraction": args.proxy_fraction,
        "proxy_epochs": args.proxy_epochs, "proj_dim": args.proj_dim,
        "proj_seed": args.proj_seed, "lambda_reg": args.lambda_reg,
        "compat": args.trak_compat, "scale_inverse": not args.trak_unscaled_inverse,
        "target_per_token": not args.dsdm_summed_target, "batch_size": args.grad_batch,
        "device": args.device, "max_projection_gb": args.max_projection_gb,
        "arch": {"d_model": args.proxy_d_model, "n_layers": args.proxy_layers,
                 "n_heads": args.proxy_heads}}
    if target is not None:
        target_name = target.name  # a file target goes by its stem, as eval_selection names it
    out = Path(args.out) if args.out else default_out(args.method, target_name, args.n)
    res = select_to_files(args.method, args.n, pool, target, out, seed=args.seed,
                          target_name=target_name, scores_file=args.scores,
                          published_dir=args.published_dir, standardize=args.standardize,
                          work_dir=args.work_dir, ranks=args.ranks, overwrite=args.overwrite,
                          merge=args.merge, progress=not args.quiet, options=options)
    if res["status"] == "part":
        return 0
    print(res["report"])
    return 0


if __name__ == "__main__":
    cli.run(main)
