"""Score membership attacks on a benchmark split (OLMoMIA step 5): one pass, every score.

Reads DATA_DIR/DATASET.jsonl ({"input", "label"}: 1 member, 0 non-member). One batched
forward pass of the target model (length-sorted, padding masked, log-prob statistics in fp32
whatever --dtype the weights use) feeds loss, zlib, Min-K% and Min-K%++ (k = 10..50); a
reference model adds ref = LL(target) - LL(ref); EM-MIA (Kim et al. 2024, all texts as
prefixes, NegPref) refines a baseline (default Min-K%++ 20%) with the ReCaLL matrix of the
dataset's own texts (prefix KV cache reused); "blind" is the cross-validated AUROC of a
bag-of-words classifier that never sees the model (Das et al. 2024), the baseline every
attack should beat. Records with "input_ids" of the model's vocabulary (from sample.py) are
scored on those trained ids, other records re-tokenized (said in metrics.json "tokens").
Every score: higher = member.

Writes OUTPUT_DIR/DATASET/REVISION/scores.jsonl (raw per-example scores) and metrics.json
(AUROC, TPR@0.1/1/5%FPR where the split has enough non-members, balanced accuracy, config),
prints AUROC and TPR@1%FPR. Several --dataset names and --step/--revision values score every
pair with each model loaded once. The target defaults to the miniworld's model folder, whose
checkpoints are named like OLMo's branches (step{S}-tokens{T}K); --step S picks one by its
step. Results whose recorded fingerprint (inputs, flags, version) matches are skipped;
different ones are refused unless --overwrite. Under torchrun, a Slurm array or
--rank/--world_size the ranks share whole batches and blocks of EM-MIA prefixes; the last
rank to finish merges, and any number of ranks writes the bytes of one.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python run_mia.py --dataset miniworld-small_control --step 200
  python run_mia.py --dataset miniworld-small_64_100_{hard,random} --step 200 400 600 800
  torchrun --nproc_per_node 4 run_mia.py --dataset OLMo-7B_128_1000_hard \\
      --target_model allenai/OLMo-7B --step 100000 --ref_model EleutherAI/pythia-70m
"""


def build_parser():
    from anatomy.mia.attack import METHODS

    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("data and models")
    g.add_argument("--dataset", nargs="+", required=True,
                   help="split name(s): DATA_DIR/DATASET.jsonl")
    g.add_argument("--data_dir", default="data")
    g.add_argument("--target_model", default=None,
                   help="HF folder or hub name (default: WORLD/model)")
    rev = g.add_mutually_exclusive_group()
    rev.add_argument("--revision", nargs="+", default=None,
                     help="checkpoint(s), e.g. step100000-tokens442B")
    rev.add_argument("--step", nargs="+", type=int, default=None,
                     help="bare step(s), each resolved to a revision")
    g.add_argument("--ref_model", default=None,
                   help="reference model for ref (e.g. an early checkpoint: WORLD/model)")
    ref = g.add_mutually_exclusive_group()
    ref.add_argument("--ref_revision", default=None)
    ref.add_argument("--ref_step", type=int, default=None)
    g = p.add_argument_group("attacks")
    g.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                   help="default: loss zlib mink minkpp emmia blind, plus ref with --ref_model "
                        "and recall_wavg with --n_prefix")
    g.add_argument("--emmia_init", default="minkpp_20",
                   help="score(s) that start EM-MIA, comma-separated as em-mia runs several "
                        "(e.g. loss,zlib,mink_20,minkpp_20): the first is 'emmia', each other "
                        "'emmia:<score>'; every iteration's scores go to emmia_iterations.json, "
                        "each iteration's AUROC and the stability line to metrics.json")
    g.add_argument("--emmia_iters", type=int, default=10, help="EM-MIA iterations (em-mia: 10)")
    g.add_argument("--n_prefix", type=int, default=None,
                   help="prefixes of recall_wavg (a prefix-weighted ReCaLL-Avg over a seeded "
                        "subset of this many texts, our estimator; EM-MIA itself, emmia, "
                        "always uses every text)")
    g.add_argument("--prefix_block", type=int, default=8,
                   help="EM-MIA prefixes per unit (the ReCaLL matrix resumes by block)")
    g.add_argument("--max_tokens", type=int, default=None, help="truncate texts (tokens)")
    g.add_argument("--batch_size", type=int, default=16)
    g.add_argument("--dtype", default="float32", help="weights: float32, bfloat16, float16")
    g.add_argument("--device", default="auto")
    g.add_argument("--output_dir", default="results")
    cli.add_run_args(p, seed=42)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.attack import metrics_markdown, run_mia

    ref_rev = args.ref_revision if args.ref_revision is not None else args.ref_step
    runs = run_mia(args.dataset, data_dir=args.data_dir, target_model=args.target_model,
                   revisions=args.revision or args.step or [None], ref_model=args.ref_model,
                   ref_revision=ref_rev, methods=args.methods, output_dir=args.output_dir,
                   batch_size=args.batch_size, max_tokens=args.max_tokens, dtype=args.dtype,
                   device=args.device, n_prefix=args.n_prefix, world=args.world,
                   emmia_init=args.emmia_init, emmia_iters=args.emmia_iters, seed=args.seed,
                   prefix_block=args.prefix_block, ranks=args.ranks,
                   overwrite=args.overwrite, merge=args.merge, progress=not args.quiet)
    for r in runs:
        if r.metrics is not None:
            print(f"{r.out_dir} ({r.status})")
            print(metrics_markdown(r.metrics["metrics"]))
    return 0


if __name__ == "__main__":
    cli.run(main)
