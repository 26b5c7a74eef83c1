"""Estimate a model's training-data mixture by label shift (pipeline B, label-shift arm).

Trains a domain classifier on local category samples (one <category>.jsonl per category, from
fetch_category_samples.py; 70% train, a stratified 30% held out for calibration and the
confusion matrix), samples --num_prompts texts from the target LM (unconditional: each starts
after the document separator, the model config's eos_token_id, and stops at it), classifies
them and solves for the category priors. Every estimator is reported side by side (em_bcts:
EM on bias-corrected temperature-scaled posteriors; em_ts; em; bbse_hard; bbse_soft; cls:
simplex-constrained least squares; pbar: the unadjusted mean probability), with bootstrap
intervals for --estimator (its default is shown below) that resample the validation set and
the generations. Writes OUTPUT_DIR/RUN_NAME/: generations.jsonl, summary.json, summary.csv,
estimators/<method>/summary.json, confusion_matrix.png, priors.png, pbar_vs_ctpi.png.
Without --target_model / --local_samples_dir the miniworld's final model and
WORLD/data_samples are used. Generation is split into whole batches shared by ranks
(torchrun, a Slurm array, --rank/--world_size); the last rank to finish merges the
generations and estimates. Outputs whose recorded fingerprint matches are skipped.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python run_labelshift.py --world data/world --num_prompts 500 --max_new_tokens 128 \\
      --output_dir data/world/out --run_name labelshift
  python run_labelshift.py --local_samples_dir data_samples --merge_web --classifier tfidf \\
      --target_model allenai/OLMo-1B-hf --num_prompts 2000 --max_new_tokens 256 \\
      --output_dir out --run_name olmo1b
  torchrun --nproc_per_node 4 run_labelshift.py --local_samples_dir data_samples \\
      --classifier distilbert --target_model EleutherAI/pythia-1.4b --hf_revision step143000 \\
      --num_prompts 4000 --output_dir out --run_name pythia
"""


def build_parser():
    from anatomy.mixture.labelshift import DEFAULT_METHOD, METHODS

    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("classifier")
    g.add_argument("--local_samples_dir", default=None,
                   help="folder of <category>.jsonl samples (default: WORLD/data_samples)")
    g.add_argument("--merge_web", action="store_true",
                   help="merge commoncrawl + c4 into one web class (7 -> 6 classes)")
    g.add_argument("--classifier", default="tfidf",
                   help="tfidf, minilm (offline all-MiniLM-L6-v2), distilbert, or an HF "
                        "encoder name/folder to fine-tune")
    g.add_argument("--encoder_epochs", type=int, default=3, help="fine-tuning epochs")
    g.add_argument("--max_per_class", type=int, default=5000, help="texts per class at most")
    g.add_argument("--val_fraction", type=float, default=0.3, help="held-out share per class")
    g = p.add_argument_group("generation")
    g.add_argument("--target_model", default=None,
                   help="HF model folder or hub name (default: WORLD/model)")
    g.add_argument("--hf_revision", default=None, help="checkpoint revision or bare step")
    g.add_argument("--num_prompts", type=int, default=500, help="texts to sample")
    g.add_argument("--max_new_tokens", type=int, default=128, help="tokens per text at most")
    g.add_argument("--prompt_mode", choices=("unconditional", "neutral"),
                   default="unconditional", help="start after the separator, or after it "
                   "plus one of a few fixed neutral openings")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    g.add_argument("--top_k", type=int, default=None, help="sample from the top k only")
    g.add_argument("--stop_id", type=int, default=None,
                   help="document separator id (default: the model config's eos_token_id)")
    g.add_argument("--batch_size", type=int, default=32, help="samples generated together")
    g.add_argument("--dtype", default="float32", help="model weights: float32, bfloat16 ...")
    g.add_argument("--use_cached_generations", default=None, metavar="F.jsonl",
                   help="classify these {\"text\": ...} lines instead of generating")
    g = p.add_argument_group("estimation")
    g.add_argument("--estimator", choices=METHODS, default=DEFAULT_METHOD,
                   help="the estimator with bootstrap intervals (all are reported)")
    g.add_argument("--n_boot", type=int, default=200, help="bootstrap rounds")
    g.add_argument("--ci", type=float, default=0.9, help="interval level")
    g = p.add_argument_group("output")
    g.add_argument("--output_dir", default="out", help="parent of the run folder")
    g.add_argument("--run_name", default="labelshift", help="run folder name")
    g.add_argument("--no_plots", action="store_true", help="no PNG plots")
    cli.add_run_args(p)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mixture.pipeline import run_labelshift

    samples = args.local_samples_dir or cli.world_path(args, "data_samples")
    model = args.target_model
    if model is None and args.use_cached_generations is None:
        model = str(cli.require_world(args) / "model")
    s = run_labelshift(
        samples, args.output_dir, args.run_name, target_model=model, revision=args.hf_revision,
        classifier=args.classifier, merge_web=args.merge_web, num_prompts=args.num_prompts,
        max_new_tokens=args.max_new_tokens, cached_generations=args.use_cached_generations,
        estimator=args.estimator, n_boot=args.n_boot, ci=args.ci, seed=args.seed,
        batch_size=args.batch_size, prompt_mode=args.prompt_mode, stop_id=args.stop_id,
        temperature=args.temperature, top_k=args.top_k, val_fraction=args.val_fraction,
        max_per_class=args.max_per_class, dtype=args.dtype, encoder_epochs=args.encoder_epochs,
        ranks=args.ranks, overwrite=args.overwrite, merge=args.merge, plots=not args.no_plots,
        progress=lambda it: cli.progress(it, "bootstrap", "round", total=args.n_boot))
    if s is None:  # this rank computed its part; the last rank to finish reports
        return 0
    print(f"validation accuracy {s['val_metrics']['val_acc']:.3f}, condition number "
          f"{s['condition_number']['soft']:.2f} (soft C), {s['generations']['n']} generations")
    methods = list(s["estimates"])
    print(f"{'category':14s} {s['estimator'] + ' [CI]':>26s} " + " ".join(f"{m:>9s}"
                                                                        for m in methods))
    for c in s["categories"]:
        p = s["priors"][c]
        print(f"{c:14s} {p['point']:8.4f} [{p['ci_lo']:.4f}, {p['ci_hi']:.4f}] " +
              " ".join(f"{s['estimates'][m][c]:9.4f}" for m in methods))
    print(f"written to {args.output_dir}/{args.run_name}/")
    return 0


if __name__ == "__main__":
    cli.run(main)
