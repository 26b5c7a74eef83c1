"""Build the trace index of a training run's trained stream (trace.py's input).

The trained stream is every training sequence in training order (an OLMo config's token
files through its data order, global_indices.npy, or Pythia's pre-shuffled
MMapIndexedDataset, whose rows are in training order). It is cut into blocks of
--block_steps steps; each block becomes a raw token file and its suffix array
(tokengrams' table format: u64 token positions in suffix order), from which any match maps
back to (instance or row, offset) and through the data order to (step, slot). Blocks are
the units of the execution layer: run it as W ranks (--rank/--world_size, torchrun or a
Slurm array), each writing its blocks; the last rank to finish writes index.json, which
records the data's fingerprint (trace.py refuses an index of other data). The same data
gives the same bytes with 1 or W ranks.

Size: 10 bytes per token of the stream for u16 tokens (2 for the tokens, 8 for the table),
12 for u32; see README "Tracing" for the cost of Dolma or the Pile.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python build_trace_index.py --world data/world --index data/trace/world
  python build_trace_index.py --config configs/OLMo-7B.yaml --block_steps 1000 \\
      --index /scratch/olmo7b-trace --world_size 64      # e.g. as a 64-task Slurm array
  python build_trace_index.py --pythia_data pile-deduped-preshuffled/document \\
      --index /scratch/pile-trace --block_steps 500
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p, samples=False)
    p.add_argument("--index", default="data/trace/index", help="output folder")
    p.add_argument("--block_steps", type=int, default=None,
                   help="steps per block (one suffix array each; default: the whole run in "
                        "one block)")
    p.add_argument("--max_text_tokens", type=int, default=None,
                   help="longest text trace.py accepts: every occurrence up to this long is "
                        "whole in one block (default: four sequences)")
    cli.add_run_args(p, seed=None)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.trace.index import build_trace_index

    data = cli.training_data(args)
    res = build_trace_index(data, args.index, args.block_steps, args.ranks,
                            overwrite=args.overwrite, merge=args.merge,
                            progress=not args.quiet, max_text=args.max_text_tokens)
    if res.lead:
        s = res.summary
        print(f"trace index of {s.get('tokens', '?')} tokens ({s.get('steps', '?')} steps) in "
              f"{s.get('blocks', '?')} blocks -> {args.index} ({res.status})")
    return 0


if __name__ == "__main__":
    cli.run(main)
