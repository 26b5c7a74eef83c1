"""Estimate a model's training-data mixture from membership scores (pipeline B, Min-K%++ arm).

Scores every local category sample (one <category>.jsonl per category) with Min-K%++
(k = 100 * --mink_ratio, the first --max_tokens tokens; the membership pipeline's scoring
code, batched with padding masked; ranks share whole batches), estimates the fraction of
members per category and normalises the rates by the sampled pools' sizes into
global_mixture_over_sampled_pool: the category mixture of the pool's members, a relative
quantity, not the training mixture itself.

Two rate estimators: the published 2-component GMM (weight of the higher-mean component; it
separates score distributions, not memberships, and finds a "member" component even when
there is none), and, given --reference_nonmembers (a JSONL of texts KNOWN not to be in the
training data, with an optional "category" field), a calibrated rate: conformal p-values
against the reference scores and Storey's estimate of the non-member share. The calibrated
rate is the primary estimate when a reference is given; trust it over the GMM. On the
miniworld "--reference_nonmembers world" builds a reference from corpus text the world never
trained on (this uses the world's ground truth).

Writes OUTPUT_DIR/RUN_NAME/: summary.json, per_category.csv, global_mixture.csv, scores.jsonl.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python run_minkpp_mix.py --world data/world --reference_nonmembers world \\
      --output_dir data/world/out --run_name minkpp
  python run_minkpp_mix.py --local_samples_dir data_samples --merge_web \\
      --target_model EleutherAI/pythia-1.4b --mink_ratio 0.1 --max_tokens 128 --half \\
      --output_dir out --run_name minkpp_pythia
  python run_minkpp_mix.py --local_samples_dir data_samples --target_model allenai/OLMo-1B-hf \\
      --int8 --reference_nonmembers data/after_cutoff.jsonl --output_dir out --run_name olmo
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("input")
    g.add_argument("--local_samples_dir", default=None,
                   help="folder of <category>.jsonl samples (default: WORLD/data_samples)")
    g.add_argument("--merge_web", action="store_true",
                   help="merge commoncrawl + c4 into one web class")
    g.add_argument("--max_per_class", type=int, default=None, help="samples per class at most")
    g.add_argument("--reference_nonmembers", default=None, metavar="F.jsonl|world",
                   help="known non-member texts for the calibrated rate")
    g.add_argument("--n_reference", type=int, default=200,
                   help="with 'world': reference texts per category")
    g = p.add_argument_group("model")
    g.add_argument("--target_model", default=None,
                   help="HF model folder or hub name (default: WORLD/model)")
    g.add_argument("--hf_revision", default=None, help="checkpoint revision or bare step")
    g.add_argument("--half", action="store_true", help="fp16 weights on GPU, bf16 on CPU")
    g.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (CPU)")
    g.add_argument("--batch_size", type=int, default=16, help="texts per forward pass")
    g = p.add_argument_group("scoring")
    g.add_argument("--mink_ratio", type=float, default=0.1, help="k as a fraction of tokens")
    g.add_argument("--max_tokens", type=int, default=128, help="tokens scored per text")
    g.add_argument("--n_boot", type=int, default=200, help="bootstrap rounds")
    g.add_argument("--ci", type=float, default=0.9, help="interval level")
    g.add_argument("--storey_lambda", type=float, default=0.5,
                   help="p-value threshold of the calibrated estimator")
    g = p.add_argument_group("output")
    g.add_argument("--output_dir", default="out", help="parent of the run folder")
    g.add_argument("--run_name", default="minkpp", help="run folder name")
    cli.add_run_args(p)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mixture.pipeline import run_minkpp_mix

    samples = args.local_samples_dir or cli.world_path(args, "data_samples")
    model = args.target_model or str(cli.require_world(args) / "model")
    if args.reference_nonmembers == "world":
        cli.require_world(args)
    s = run_minkpp_mix(
        samples, args.output_dir, args.run_name, target_model=model, revision=args.hf_revision,
        merge_web=args.merge_web, mink_ratio=args.mink_ratio, max_tokens=args.max_tokens,
        half=args.half, int8=args.int8, reference_nonmembers=args.reference_nonmembers,
        world=args.world, n_reference=args.n_reference, n_boot=args.n_boot, ci=args.ci,
        seed=args.seed, batch_size=args.batch_size, max_per_class=args.max_per_class,
        storey_lambda=args.storey_lambda, ranks=args.ranks, overwrite=args.overwrite,
        merge=args.merge, progress=not args.quiet)
    if s is None:  # this rank computed its part; the last rank to finish reports
        return 0
    cal = "pi_calibrated" in s["per_category"][0]
    print(f"{'category':14s} {'n':>5s} {'gmm rate':>9s}" + (f" {'calibrated':>11s}" if cal else "")
          + f" {'mixture':>8s} {'interval':>17s}")
    for r in s["per_category"]:
        c = r["category"]
        p = s["priors"][c]
        print(f"{c:14s} {r['n']:5d} {r['pi_hat']:9.3f}" +
              (f" {r['pi_calibrated']:11.3f}" if cal else "") +
              f" {p['point']:8.3f} [{p['ci_lo']:.3f}, {p['ci_hi']:.3f}]")
    print(f"mixture = {s['method']} rates x pool sizes ({s['pool_sizes_from']}); "
          f"written to {args.output_dir}/{args.run_name}/")
    return 0


if __name__ == "__main__":
    cli.run(main)
