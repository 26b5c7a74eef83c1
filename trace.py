"""Trace texts to the training steps that taught them.

For each text (JSONL field "text", or "input_ids" when it is already tokens of the
training tokenizer): the maximal spans of at least --min_len tokens that occur verbatim in
the trained stream (OLMoTrace's definition: not extendable left or right while still
occurring; its unigram-probability filter with --unigram_filter), each span's every
occurrence as {"instance", "offset", "step", "slot"} (the first --max_occurrences listed,
the exact total in "count"), and "exposures": per checkpoint revision, how many occurrences
lie in steps before it. --score adds each span's mean loss under each checkpoint (one
batched pass per checkpoint). --html writes a static page: the texts with their spans
highlighted by exposure; a click lists a span's occurrences with step, first checkpoint and
context, and plots exposures and loss per checkpoint.

The index comes from build_trace_index.py; the training data named here (--config, default
the world's, or --pythia_data) must be the data it was built from. A text longer than the
model's context, a character the tokenizer cannot encode, or an index of other data is one
clear error line, and nothing is written.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python trace.py --index data/trace/world --texts generations.jsonl \\
      --output data/trace/generations.jsonl --html data/trace/generations.html --score
  python trace.py --config configs/OLMo-7B.yaml --index /scratch/olmo7b-trace \\
      --texts test_items.jsonl --checkpoints step1000-tokens4B,step5000-tokens21B \\
      --output contamination.jsonl
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p, samples=False)
    p.add_argument("--index", default="data/trace/index", help="build_trace_index.py's folder")
    p.add_argument("--texts", required=True, help="JSONL with text (or input_ids) per line")
    p.add_argument("--output", required=True, help="output JSONL")
    p.add_argument("--html", default=None, help="also write the page here")
    p.add_argument("--tokenizer", default=None,
                   help="training tokenizer (default: the config's, else the world's)")
    p.add_argument("--checkpoints", default=None,
                   help="comma list of revisions (step read from stepN, or NAME=STEP; "
                        "default: the config's data_anatomy.checkpoints)")
    p.add_argument("--model", default=None,
                   help="model folder or hub name whose revisions are the checkpoints "
                        "(default: the config's data_anatomy.model)")
    p.add_argument("--score", action="store_true",
                   help="each span's loss under each checkpoint")
    p.add_argument("--min_len", type=int, default=8, help="shortest span (tokens)")
    p.add_argument("--max_occurrences", type=int, default=100,
                   help="occurrences listed per span (count is always exact)")
    p.add_argument("--unigram_filter", action="store_true",
                   help="OLMoTrace's filter: keep the ceil(fraction x tokens) spans of lowest "
                        "unigram probability")
    p.add_argument("--unigram_fraction", type=float, default=0.05)
    p.add_argument("--context", type=int, default=None,
                   help="tokens of context per listed occurrence (default 24 with --html, "
                        "else 0)")
    p.add_argument("--batch_size", type=int, default=16, help="texts per scoring pass")
    p.add_argument("--device", default=None)
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    import shlex
    import sys
    from pathlib import Path

    from anatomy.trace.run import TraceOptions, parse_checkpoints, run_trace

    if args.min_len < 1 or args.max_occurrences < 0:
        raise cli.InputError(None, "--min_len must be >= 1 and --max_occurrences >= 0")
    data = cli.training_data(args)
    tokenizer, tok_src = cli.data_tokenizer(args)
    cfg = None
    if args.pythia_data is None or args.config is not None or \
            Path(cli.world_path(args, "config.yaml")).is_file():
        cfg = cli.olmo_config(args)
    if args.checkpoints is not None:
        ckpts = parse_checkpoints(args.checkpoints)
    else:
        ckpts = parse_checkpoints(cfg.checkpoints) if cfg is not None else []
    model = args.model
    if model is None and cfg is not None and cfg.extra.get("model"):
        model = cfg.resolve_name(str(cfg.extra["model"]))
    context = args.context if args.context is not None else (24 if args.html else 0)
    opts = TraceOptions(args.min_len, args.max_occurrences, args.unigram_filter,
                        args.unigram_fraction, context)
    s = run_trace(args.index, args.texts, args.output, tokenizer=tokenizer,
                  tokenizer_source=tok_src, data=data, checkpoints=ckpts, opts=opts,
                  html=args.html, model=model, score=args.score, batch_size=args.batch_size,
                  device=args.device, overwrite=args.overwrite,
                  command="python trace.py " + shlex.join(argv if argv is not None
                                                          else sys.argv[1:]))
    empty = f" ({s['empty']} empty, kept with no spans)" if s.get("empty") else ""
    print(f"{s['texts']} texts{empty}, {s['spans']} spans ({s['with_spans']} texts with spans, "
          f"{s['occurrences']} occurrences) -> {args.output}"
          + (f", {args.html}" if args.html else "") + f" ({s['status']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
