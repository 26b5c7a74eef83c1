"""Infer a training mixture from a BPE tokenizer's merge list (pipeline B, third arm).

Hayase, Liu, Choi, Oh, Smith (2024), "Data Mixture Inference: What do BPE Tokenizers Reveal
about their Training Data?": the t-th merge was the most frequent pair of the tokenizer's
training text after the first t-1 merges, so per-category sample text turns every merge
into linear inequalities on the categories' byte proportions. Pair counts are replayed
merge by merge over each category's sample (the tokenizer's own normalizer and
pre-tokenizer, byte-level included; distinct words weighted by their counts; only the words
holding a merged pair updated), and the paper's LP (a slack per merge and per pair, minimised
over the simplex) is solved by HiGHS with violated constraints added lazily (up to
--competitors per merge and round) until none is left.

Samples: DIR/<category>.jsonl (fetch_category_samples.py's output; --bytes_per_category
caps each category's text, drawn in a seeded order). --bootstrap B resamples each
category's texts with replacement B times and reports the 2.5/97.5 percentiles as CIs.

Output: OUTPUT_DIR/RUN_NAME/summary.json in the evaluator's format (priors per category:
point, mean, ci_lo, ci_hi), so benchmark_evaluation.py --compare scores it beside label shift
and Min-K%++; on the miniworld the ground truth of this arm is
WORLD/truth/tokenizer_mixture_spec.yaml (the byte mixture of the tokenizer's training text,
written here when missing). A WordPiece / Unigram tokenizer, or a category with too little
text, is one clear error.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python infer_tokenizer_mixture.py --local_samples_dir data/demo/samples_tokenizer
  # a tokenizer.json file (GPT-2's layout: model.type BPE, model.merges), 5 MB per category
  python infer_tokenizer_mixture.py --tokenizer gpt2/tokenizer.json --local_samples_dir samples/ \\
      --merges 30000 --bytes_per_category 5000000 --output_dir out --run_name gpt2
  # a model folder holding tokenizer.json (a Pythia or OLMo checkpoint's snapshot), or a hub name
  python infer_tokenizer_mixture.py --tokenizer ~/models/pythia-160m --local_samples_dir samples/
  python infer_tokenizer_mixture.py --tokenizer allenai/OLMo-7B-hf --local_samples_dir samples/
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json, a folder with one, or a hub name (default: the "
                        "world's tokenizer)")
    p.add_argument("--local_samples_dir", required=True,
                   help="DIR/<category>.jsonl sample texts (field text)")
    p.add_argument("--merges", type=int, default=30000, help="first T merges (default 30000)")
    p.add_argument("--bytes_per_category", type=int, default=None,
                   help="cap on each category's sample text (bytes)")
    p.add_argument("--competitors", type=int, default=5,
                   help="violated constraints added per merge and LP round")
    p.add_argument("--drop_after", type=int, default=1,
                   help="LP rounds a constraint may stay slack before it leaves the model "
                        "(it comes back when violated; 0: never drop)")
    p.add_argument("--gap", type=float, default=0.0,
                   help="stop once the objective is certified within this relative gap of "
                        "the full LP's optimum (each round bounds it from both sides; "
                        "default 0: solve to the end)")
    p.add_argument("--pair_weight", type=float, default=1.0,
                   help="objective weight of the per-pair slacks (the paper: 1; lower is more "
                        "robust to samples unlike the training documents, see README)")
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for the CIs")
    p.add_argument("--merge_web", action="store_true",
                   help="fold commoncrawl + c4 samples into one web class (6 classes)")
    p.add_argument("--output_dir", default="results/tokenizer_mixture")
    p.add_argument("--run_name", default="tokenizer")
    cli.add_run_args(p, seed=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy.mixture.tokenizer_mixture import run_tokenizer_mixture

    tok = args.tokenizer
    spec = None
    if tok is None:
        world = cli.require_world(args)
        tok = str(world / "tokenizer")
        spec = world / "truth" / "tokenizer_mixture_spec.yaml"
        if not spec.is_file():
            from anatomy.world.build import write_tokenizer_spec

            write_tokenizer_spec(world)
    out = Path(args.output_dir) / args.run_name
    s = run_tokenizer_mixture(tok, args.local_samples_dir, out, merges=args.merges,
                              bytes_per_category=args.bytes_per_category,
                              competitors=args.competitors, drop_after=args.drop_after,
                              gap=args.gap,
                              bootstrap=args.bootstrap,
                              merge_web=args.merge_web, seed=args.seed,
                              pair_weight=args.pair_weight,
                              overwrite=args.overwrite)
    pri = s["priors"]
    moved = (f" ({s['rows_added']} added, {s['rows_dropped']} dropped once slack)"
             if "rows_added" in s else "")
    print(f"{s['merges']} merges, {s['constraints']} constraints in the final LP{moved}, "
          f"{s['rounds']} LP rounds "
          f"({s['status']}) -> {out / 'summary.json'}")
    if s.get("stop"):
        print(f"LP stopped: {s['stop']} (the objective is within {s['gap']:.2g} of the full "
              "LP's optimum)")
    if s.get("seconds"):
        t = s["seconds"]
        print(f"time: pre-tokenization {t['pretokenize']:.1f} s, replay {t['replay']:.1f} s, "
              f"LP {t['lp']:.1f} s ({t['lp_solver']:.1f} s in HiGHS)")
    print("mixture: " + ", ".join(
        f"{c} {v['point']:.3f}" + (f" [{v['ci_lo']:.3f}, {v['ci_hi']:.3f}]"
                                  if v.get("ci_lo") is not None else "")
        for c, v in pri.items()))
    if spec is not None:
        print(f"ground truth of this arm: {spec}")
    return 0


if __name__ == "__main__":
    cli.run(main)
