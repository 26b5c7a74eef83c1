"""Score membership attacks on a benchmark split (OLMoMIA step 5): one pass, every score.

Reads DATA_DIR/DATASET.jsonl ({"input", "label"}: 1 member, 0 non-member). One batched
forward pass of the target model (length-sorted, padding masked, log-prob statistics in fp32
whatever --dtype the weights use) feeds loss, zlib, Min-K% and Min-K%++ (k = 10..50); a
reference model adds ref = LL(target) - LL(ref); EM-MIA refines a baseline (default
Min-K%++ 20%) with ReCaLL scores of the dataset's own texts as prefixes (prefix KV cache
reused). Every score: higher = member. Writes OUTPUT_DIR/DATASET/REVISION/scores.jsonl (raw
per-example scores) and metrics.json (AUROC, TPR@0.1/1/5%FPR, balanced accuracy, config),
prints AUROC and TPR@1%FPR. Existing results are skipped (bash loops resume) unless
--overwrite. The target defaults to the miniworld's model folder, whose checkpoints are
named like OLMo's branches (step{S}-tokens{T}K); --step S picks one by its step.
Under torchrun (several ranks) examples and prefixes are sharded, results identical.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python run_mia.py --dataset miniworld-small_control --step 40
  for s in 40 80 120; do python run_mia.py --dataset miniworld-small_64_100_hard --step $s; done
  torchrun --nproc_per_node 4 run_mia.py --dataset OLMo-7B_128_1000_hard \\
      --target_model allenai/OLMo-7B --step 100000 --ref_model EleutherAI/pythia-70m
"""


def build_parser():
    from anatomy.mia.attack import METHODS

    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("data and models")
    g.add_argument("--dataset", required=True, help="split name: DATA_DIR/DATASET.jsonl")
    g.add_argument("--data_dir", default="data")
    g.add_argument("--target_model", default=None,
                   help="HF folder or hub name (default: WORLD/model)")
    rev = g.add_mutually_exclusive_group()
    rev.add_argument("--revision", default=None, help="e.g. step100000-tokens442B")
    rev.add_argument("--step", type=int, default=None, help="a bare step, resolved to a revision")
    g.add_argument("--ref_model", default=None,
                   help="reference model for ref (e.g. an early checkpoint: WORLD/model)")
    ref = g.add_mutually_exclusive_group()
    ref.add_argument("--ref_revision", default=None)
    ref.add_argument("--ref_step", type=int, default=None)
    g = p.add_argument_group("attacks")
    g.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                   help="default: all (ref only with --ref_model)")
    g.add_argument("--emmia_init", default="minkpp_20", help="score that starts EM-MIA")
    g.add_argument("--n_prefix", type=int, default=None,
                   help="EM-MIA prefixes: a seeded subset of this many texts (default: all)")
    g.add_argument("--max_tokens", type=int, default=None, help="truncate texts (tokens)")
    g.add_argument("--batch_size", type=int, default=16)
    g.add_argument("--dtype", default="float32", help="weights: float32, bfloat16, float16")
    g.add_argument("--device", default="auto")
    g.add_argument("--output_dir", default="results")
    cli.add_run_args(p, seed=42)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.attack import metrics_markdown, run_mia

    res = run_mia(args.dataset, data_dir=args.data_dir, target_model=args.target_model,
                  revision=args.revision, step=args.step, ref_model=args.ref_model,
                  ref_revision=args.ref_revision, ref_step=args.ref_step, methods=args.methods,
                  output_dir=args.output_dir, batch_size=args.batch_size,
                  max_tokens=args.max_tokens, dtype=args.dtype, device=args.device,
                  n_prefix=args.n_prefix, world=args.world, emmia_init=args.emmia_init,
                  seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    if res.rank == 0:
        cli.log.info("%s: %s", "skipped (exists)" if res.skipped else "wrote", res.out_dir)
        print(metrics_markdown(res.metrics["metrics"]))
    return 0


if __name__ == "__main__":
    cli.run(main)
