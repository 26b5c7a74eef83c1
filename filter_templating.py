"""Templating filters of trained samples (pipeline C): is_incrementing, is_repeating, Huffman.

Decodes each sample (a trained sequence's first --prompt_len + --cont_len tokens) with the
data's tokenizer and applies EleutherAI semantic-memorization's filters/pattern.py rules
(Prashanth et al. 2024: templated text is "reconstruction"): ``is_incrementing`` (numbers,
decimal or hex, or strings repeating with a constant step, the first and last elements
allowed to be partial) and ``is_repeating`` (the characters exactly periodic, less the
characters the window cut at either edge), plus ``huffman_coding_length`` (bits per character
of a Shannon code over the text's characters).

Three published behaviours are fixed here, and --published reproduces all three exactly, as
filters/pattern.py reads at EleutherAI/semantic-memorization 84ab8c0 (older revisions
differ): the 3-element incrementing check lacks an absolute value (any negative second
difference passes); the period scan carries its step from one period to the next; the
character test inherits the incrementing rules (under 4 characters never repeats, the first
and last characters are always dropped).

Writes --output (.parquet or .jsonl) keyed by sequence_id.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python filter_templating.py --all_sequences --output data/memorization/templating.parquet
  python filter_templating.py --pythia_data pile/document --sequence_ids samples.npy \\
      --tokenizer EleutherAI/pythia-70m-deduped --output templating.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    p.add_argument("--tokenizer", default=None,
                   help="HF tokenizer (default: the config's, e.g. WORLD/tokenizer)")
    p.add_argument("--published", action="store_true",
                   help="filters/pattern.py at 84ab8c0 exactly: the 3-element rule without abs(), "
                        "the step carried across periods, the character test's trimming")
    p.add_argument("--output", default="data/memorization/templating.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.memorization.pipeline import templating_table

    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    tok, src = cli.data_tokenizer(args)
    s = templating_table(data, ids, tok, src, args.output, args.prompt_len, args.cont_len,
                         published=args.published, overwrite=args.overwrite)
    print(f"{s['rows']} samples: {s.get('is_incrementing_true', 0)} incrementing, "
          f"{s.get('is_repeating_true', 0)} repeating -> {args.output} ({s['status']})")
    return 0


if __name__ == "__main__":
    cli.run(main)
