"""Semantic and textual matches of trained samples (pipeline C).

Embeds every decoded sample (a trained sequence's first --prompt_len + --cont_len tokens)
with a sentence encoder (the offline all-MiniLM-L6-v2 by default, as published) and counts,
exactly, the corpus samples at cosine >= 0.8 and >= 0.9 (``0_8_snowclones``,
``0_9_snowclones``: semantic matches), and among those the ones whose decoded 32-token prompts
are within Levenshtein distance 0 < d < 20 characters (``0_8_templates``, ``0_9_templates``:
textual matches; rapidfuzz). The corpus is the samples themselves (the published scheme,
each sample matching itself), or --corpus_ids.

Writes --output (.parquet or .jsonl) keyed by sequence_id.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python filter_semantic.py --all_sequences --output data/memorization/semantic.parquet
  python filter_semantic.py --pythia_data pile/document --sequence_ids samples.npy \\
      --tokenizer EleutherAI/pythia-70m-deduped --device cuda --output semantic.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    p.add_argument("--tokenizer", default=None, help="HF tokenizer (default: the config's)")
    p.add_argument("--embedder", default=None,
                   help="sentence encoder (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--corpus_ids", default=None,
                   help="sequence ids of the corpus to match against (default: the samples)")
    p.add_argument("--batch_size", type=int, default=64, help="texts per encoder pass")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if any)")
    p.add_argument("--output", default="data/memorization/semantic.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.memorization.pipeline import semantic_table
    from anatomy.memorization.table import sequence_ids_from_file

    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    corpus = None
    if args.corpus_ids is not None:
        corpus = sequence_ids_from_file(args.corpus_ids)
        data.check_ids(corpus, args.corpus_ids)
    tok, src = cli.data_tokenizer(args)
    s = semantic_table(data, ids, tok, src, args.output, args.embedder, corpus,
                       args.prompt_len, args.cont_len, args.batch_size, args.device,
                       overwrite=args.overwrite, progress=not args.quiet)
    print(f"{s['rows']} samples -> {args.output} ({s['status']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
