"""Sample documents from a training run's data order (OLMoMIA step 1).

Draws data-order positions exactly as the published OLMoMIA tool does
(``random.Random(seed).sample(range(T0*B, T1*B), S1)[S0:]``: every S1 is a prefix of the same
sequence, so disjoint [S0, S1) jobs in a bash loop agree with one big job), reads each
position's training instance (local files or HTTP range requests), and writes one record per
whole document between two separator (EOS) ids: {"input", "idx": [position, paragraph], "length"}
plus "input_ids" (the document's tokens as trained) and "tokenizer" (a digest of the vocabulary
they belong to), so run_mia.py scores the trained ids rather than a re-tokenized text.

The batch size B defaults to the config's true batch size: for OLMo-7B the file says 2048 but
its checkpoint names (step100000-tokens442B) imply 2160, which configs/OLMo-7B.yaml records.
Failed fetches are counted and written to {S0}:{S1}.failures.jsonl, never dropped. Each
interval file gets a completion marker {S0}:{S1}.jsonl.done.json recording what produced it
(config, data order, tokenizer, B, EOS id, seed): a rerun of a bash loop skips finished
intervals, and a rerun with another --batch_size or --seed is refused unless --overwrite.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  # the miniworld (build it first: make world), members in 4 disjoint jobs
  for s in 0 80 160 240; do python sample.py --step_start 0 --step_end 200 \\
      --sample_start $s --sample_end $((s+80)); done
  # OLMo-7B members, as published
  python sample.py --config configs/OLMo-7B.yaml --step_start 0 --step_end 100000 \\
      --sample_start 0 --sample_end 1000
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("sampling")
    g.add_argument("--step_start", type=int, required=True)
    g.add_argument("--step_end", type=int, required=True)
    g.add_argument("--sample_start", type=int, required=True)
    g.add_argument("--sample_end", type=int, required=True)
    g.add_argument("--batch_size", type=int, default=None,
                   help="global batch size B (default: the config's true batch size)")
    g.add_argument("--eos_id", type=int, default=None,
                   help="document separator id (default: the config's model.eos_token_id; "
                        "OLMo-7B: 50279, never the tokenizer's eos_token_id)")
    g.add_argument("--tokenizer", default=None, help="tokenizer (default: from the config)")
    g.add_argument("--num_workers", type=int, default=8, help="concurrent fetches")
    g.add_argument("--out_dir", default="data")
    cli.add_data_args(p)
    cli.add_run_args(p, seed=42)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.io import InputError
    from anatomy.lm import load_tokenizer, vocab_digest
    from anatomy.mia.construct import run_sample
    from anatomy.olmo_data import OlmoData

    cfg = cli.olmo_config(args)
    if args.tokenizer is None and cfg.tokenizer is None:
        raise InputError(cfg.path, "no tokenizer: pass --tokenizer")
    tok_src = args.tokenizer or cfg.resolve_name(cfg.tokenizer)
    tok = load_tokenizer(tok_src)
    with OlmoData(cfg, args.global_indices, args.batch_size, retries=args.retries,
                  backoff=args.retry_backoff, num_workers=args.num_workers) as data:
        res = run_sample(data, lambda ids: tok.decode(ids), step_start=args.step_start,
                         step_end=args.step_end, sample_start=args.sample_start,
                         sample_end=args.sample_end, seed=args.seed,
                         eos_id=cfg.eos_token_id if args.eos_id is None else args.eos_id,
                         out_dir=args.out_dir, model_name=args.model_name or cfg.model_name,
                         tokenizer=tok_src, vocab=vocab_digest(tok), overwrite=args.overwrite)
    if res.skipped:
        print(f"{res.path}: up to date (same config, data order, B, EOS id and seed), skipped")
    else:
        print(f"{res.path}: {res.n_records} documents from {res.n_positions} positions, "
              f"{res.n_failures} failed fetches")
    return 0


if __name__ == "__main__":
    cli.run(main)
