"""Write an OLMo-format training run's trained stream in Pythia's format (pipeline C).

Pythia's pre-shuffled Pile is a GPT-NeoX MMapIndexedDataset (PREFIX.bin + PREFIX.idx) with
one row per training sequence in training order, so step s trains rows [s*B, (s+1)*B)
(EleutherAI utils/batch_viewer.py). This reads the OLMo config's token files in data order
(global_indices) and writes each trained instance as one row, so both readers of pipeline C
(--config and --pythia_data) can be run, and checked, on the same tokens. On the miniworld:
--pythia_batch_size is the world's batch size and --pythia_seq_len its sequence length.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python convert_to_pythia.py --world data/world --out data/memorization/pythia/document
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_data_args(p)
    p.add_argument("--trained_steps", type=int, default=None,
                   help="steps to write (default: the config's data_anatomy.trained_steps)")
    p.add_argument("--out", default="data/memorization/pythia/document",
                   help="output PREFIX (never inside the world, an input)")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy.memorization.data import open_training_data, write_pythia

    cfg = cli.olmo_config(args)
    data = open_training_data(cfg.path, global_indices=args.global_indices,
                              n_steps=args.trained_steps, retries=args.retries)
    out = Path(args.out)
    if not args.overwrite and (Path(f"{out}.idx").exists() or Path(f"{out}.bin").exists()):
        raise cli.InputError(f"{out}.idx", "exists; pass --overwrite to replace it")
    n = write_pythia(data, out, progress=not args.quiet)
    print(f"{n} rows of {data.seq_len} tokens ({data.n_steps} steps x {data.batch_size}) -> "
          f"{out}.bin/.idx")
    return 0


if __name__ == "__main__":
    cli.run(main)
