"""Code vs natural language of trained samples (pipeline C): nl_scores and a label.

``nl_scores`` = the probability that the decoded sample is natural language. By default a
classifier of the shared classifier module (TF-IDF n-grams + logistic regression) trained on
64-token pieces of the world's code documents and of its prose documents (--code_samples /
--nl_samples: JSONL files with "text" for other data); --model loads any HF sequence
classifier instead, e.g. usvsnsp/code-vs-nl (the published DistilBERT; its column 0 is NL:
--nl_label_index). Labels as published: nl if nl_scores >= 0.525, code if <= 0.4, else
uncertain (--thresholds). As in the paper, nl_scores is not a taxonomy feature: it splits
the analyses into code and natural language.

Writes --output (.parquet or .jsonl) keyed by sequence_id.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python classify_code_vs_nl.py --all_sequences --output data/memorization/code_vs_nl.parquet
  python classify_code_vs_nl.py --pythia_data pile/document --sequence_ids samples.npy \\
      --tokenizer EleutherAI/pythia-70m-deduped --model usvsnsp/code-vs-nl --output nl.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    p.add_argument("--tokenizer", default=None, help="HF tokenizer (default: the config's)")
    g = p.add_argument_group("classifier")
    g.add_argument("--model", default=None,
                   help="HF sequence classifier (name or folder); default: train one locally")
    g.add_argument("--nl_label_index", type=int, default=0,
                   help="the HF classifier's natural-language column")
    g.add_argument("--code_samples", default=None, help="JSONL of code texts (field text)")
    g.add_argument("--nl_samples", default=None, help="JSONL of prose texts (field text)")
    g.add_argument("--classifier", default="tfidf", help="shared classifier spec")
    g.add_argument("--thresholds", type=float, nargs=2, default=(0.525, 0.4),
                   metavar=("NL", "CODE"), help="nl at >= NL, code at <= CODE")
    p.add_argument("--output", default="data/memorization/code_vs_nl.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy import io
    from anatomy.memorization.code_vs_nl import load_hf_code_vs_nl, train_code_vs_nl
    from anatomy.memorization.pipeline import code_vs_nl_table, world_code_and_prose

    nl, code = args.thresholds
    if not 0 <= code <= nl <= 1:
        raise cli.InputError(None, f"--thresholds NL CODE need 0 <= CODE <= NL <= 1, got "
                                   f"{nl} {code}")
    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    tok, src = cli.data_tokenizer(args)
    if args.model is not None:
        from anatomy.lm import model_source

        clf = load_hf_code_vs_nl(args.model, nl_label_index=args.nl_label_index)
        clf_id = {"model": model_source(args.model), "nl_label_index": args.nl_label_index}
    else:
        if (args.code_samples is None) != (args.nl_samples is None):
            raise cli.InputError(None, "give both --code_samples and --nl_samples, or neither")
        if args.code_samples is not None:
            code_t = [r["text"] for r in io.iter_jsonl(args.code_samples, required=("text",))]
            nl_t = [r["text"] for r in io.iter_jsonl(args.nl_samples, required=("text",))]
            from anatomy.execution import identity

            clf_id = {"code": identity(args.code_samples), "nl": identity(args.nl_samples)}
        else:
            world = cli.require_world(args)
            code_t, nl_t = world_code_and_prose(world, tok, seed=args.seed)
            clf_id = {"world": str(world), "seed": args.seed}
        clf = train_code_vs_nl(code_t, nl_t, spec=args.classifier, seed=args.seed)
        clf_id.update(spec=args.classifier, n_code=len(code_t), n_nl=len(nl_t))
    s = code_vs_nl_table(data, ids, tok, src, args.output, clf, clf_id, (nl, code),
                         args.prompt_len, args.cont_len, overwrite=args.overwrite)
    print(f"{s['rows']} samples -> {args.output} ({s['status']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
