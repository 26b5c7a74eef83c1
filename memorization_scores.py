"""Memorization scores of trained sequences (pipeline C step 1), at one or more checkpoints.

For each sample (a trained sequence's first --prompt_len + --cont_len tokens, 32 + 32):
greedy decoding from the prompt with a KV cache, ``memorization_score`` = the fraction of the
continuation reproduced position by position (1.0 = memorized, 32-extractable; Biderman et
al. 2023), and one teacher-forced pass for ``loss``, ``prompt_perplexity``,
``generation_perplexity`` and ``sequence_perplexity``, each normalised by its own token count
(--published_normalisation: as EleutherAI's inference.py, every part divided by the count of
predictions kept, 63 less the sample's special tokens, and the prompt part their first half).

Writes --output (.parquet or .jsonl): one row per sample and checkpoint, keyed by
sequence_id (OLMo: instance number; Pythia: row), with a ``checkpoint`` column. Ranks split
(checkpoint, batch) units (torchrun, a Slurm array or --rank/--world_size); the last rank
to finish merges; a rerun with the same inputs is skipped.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python memorization_scores.py --all_sequences --step 400 900 --output data/mem/scores.parquet
  python memorization_scores.py --pythia_data pile-deduped/document --steps 0:1000 \\
      --model EleutherAI/pythia-70m-deduped --revision step143000 --output scores.parquet
  torchrun --nproc_per_node 8 memorization_scores.py --config configs/OLMo-7B.yaml \\
      --steps 0:100 --model allenai/OLMo-7B --step 100000 --output olmo_scores.parquet
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="HF folder or hub name (default: WORLD/model)")
    rev = g.add_mutually_exclusive_group()
    rev.add_argument("--revision", nargs="+", default=None,
                     help="checkpoint(s), e.g. step143000 (Pythia), step100000-tokens442B")
    rev.add_argument("--step", nargs="+", type=int, default=None,
                     help="bare step(s), each resolved to a revision")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    g.add_argument("--batch_size", type=int, default=64, help="samples per unit")
    g.add_argument("--published_normalisation", action="store_true",
                   help="as inference.py: drop the last k predictions of a sample holding k "
                        "special tokens, split the rest in half, divide each part by the "
                        "whole's count (63 without special tokens)")
    g.add_argument("--published_special_id", type=int, default=0,
                   help="the token id --published_normalisation counts as special (upstream: "
                        "0, Pythia's <|endoftext|>)")
    g = p.add_argument_group("output")
    g.add_argument("--output", default="data/memorization/scores.parquet",
                   help=".parquet or .jsonl")
    cli.add_run_args(p)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.lm import load_causal_lm, model_source, resolve_device, resolve_revision
    from anatomy.memorization.extraction import run_memorization_scores
    from anatomy.memorization.table import out_path

    out = out_path(args.output)
    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    samples = data.samples(ids, args.prompt_len, args.cont_len)
    model = args.model or str(cli.require_world(args) / "model")
    given = args.revision or args.step or [None]
    revs = [resolve_revision(model, r) for r in given]
    names = [r or "main" for r in revs]
    dev = resolve_device(args.device, args.ranks.local_rank)
    res = run_memorization_scores(
        ids, samples, names,
        lambda i: load_causal_lm(model, revision=revs[i], dtype=args.dtype, device=str(dev)),
        out, {"data": data.sources(), **{f"model{i}": model_source(model, r)
                                         for i, r in enumerate(revs)}},
        {"data": data.layout(), "dtype": args.dtype, "device": dev.type},
        prompt_len=args.prompt_len,
        batch_size=args.batch_size, published_normalisation=args.published_normalisation,
        special_id=args.published_special_id,
        on_cpu=dev.type == "cpu", ranks=args.ranks, overwrite=args.overwrite,
        merge=args.merge, progress=not args.quiet)
    if res.lead:
        s = res.summary
        for ck, n in s.get("memorized", {}).items():
            print(f"{ck}: {n} of {s['samples']} samples memorized (score 1.0)")
        print(f"written to {out} ({res.status})")
    return 0


if __name__ == "__main__":
    cli.run(main)
