"""Semantic and textual matches of trained samples (pipeline C).

Embeds every decoded sample (a trained sequence's first --prompt_len + --cont_len tokens)
with a sentence encoder (the offline all-MiniLM-L6-v2 by default, as published) and counts,
exactly, the corpus samples at cosine >= 0.8 and >= 0.9 (``0_8_snowclones``,
``0_9_snowclones``: semantic matches), and among those the ones whose decoded 32-token prompts
are within Levenshtein distance 0 < d < 20 characters (``0_8_templates``, ``0_9_templates``:
textual matches; rapidfuzz). The corpus is a uniform random --corpus_sample of every trained
sequence (default 10,000; --corpus_seed 1), drawn independently of the samples as the
published snowclones_maker.py compares the samples with a random sample of the corpus; or
--corpus_ids; or --corpus_is_samples (the samples themselves: a sample set that oversamples
planted copies then counts each copy's siblings). A sample's own sequence in the corpus is
never counted.

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
    g = p.add_argument_group("the corpus the matches are counted in (one of)")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--corpus_sample", type=int, default=10_000, metavar="N",
                   help="a uniform random N trained sequences (all if fewer; default 10000)")
    c.add_argument("--corpus_ids", default=None, help="these sequence ids (.npy or table)")
    c.add_argument("--corpus_is_samples", action="store_true",
                   help="the samples themselves (counts the samples' own siblings)")
    g.add_argument("--corpus_seed", type=int, default=1, help="seed of --corpus_sample")
    p.add_argument("--batch_size", type=int, default=64, help="texts per encoder pass")
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda if any)")
    p.add_argument("--output", default="data/memorization/semantic.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    import numpy as np

    from anatomy.memorization.pipeline import semantic_corpus, semantic_table
    from anatomy.memorization.table import sequence_ids_from_file

    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    corpus = None
    if args.corpus_ids is not None:
        corpus = sequence_ids_from_file(args.corpus_ids)
        data.check_ids(corpus, args.corpus_ids)
        which = f"{len(corpus)} sequences of {args.corpus_ids}"
    elif not args.corpus_is_samples:
        if args.corpus_sample < 1:
            raise cli.InputError(None, "--corpus_sample must be >= 1")
        corpus = semantic_corpus(data, args.corpus_sample, args.corpus_seed)
        which = (f"{len(corpus)} trained sequences drawn uniformly (seed {args.corpus_seed})"
                 if len(corpus) == args.corpus_sample else
                 f"every trained sequence ({len(corpus)})")
    else:
        which = "the samples themselves"
    if corpus is not None:
        both = int(np.isin(ids, corpus).sum())
        which += f"; {both} samples are in it, their own rows not counted"
    tok, src = cli.data_tokenizer(args)
    s = semantic_table(data, ids, tok, src, args.output, args.embedder, corpus,
                       args.prompt_len, args.cont_len, args.batch_size, args.device,
                       overwrite=args.overwrite, progress=not args.quiet)
    print(f"{s['rows']} samples -> {args.output} ({s['status']}); corpus: {which}")
    return 0


if __name__ == "__main__":
    cli.run(main)
