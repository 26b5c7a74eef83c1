"""Choose pipeline C's samples once and write their sequence ids (a .npy every step reads).

Samples are trained sequences: every one trained in --steps A:B, or --all_sequences, or a
uniform --sample N of those (EleutherAI's study scores a 5M-sequence random sample of
Pythia's 146M). On the miniworld, --add_planted also adds every trained sequence that
starts with a memorization plant or a template (the builder records them), as the
published study adds its set of memorized sequences to the random sample. Ids are written in
training order (random ones first, then planted ones not already drawn).

Beside the ids, --ds_type_output (default: OUTPUT's name with _ds_type.parquet) holds each
sample's ``ds_type``, the published column (model_training.py): "representative" for the
random draw, "memories" for the added ones. Pass it to combine_filters.py: train_taxonomy.py
then adds the memorized "memories" rows to training only and leaves the others out, as
published, so precision, recall and AUCs are measured on the random sample alone.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python memorization_samples.py --all_sequences --sample 3000 --add_planted \\
      --output data/memorization/samples.npy
  python memorization_samples.py --pythia_data pile/document --steps 0:143000 \\
      --sample 5000000 --output samples.npy
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    cli.add_memorization_args(p)
    p.add_argument("--add_planted", action="store_true",
                   help="miniworld: add every sequence starting with a memorization plant")
    p.add_argument("--output", default="data/memorization/samples.npy", help=".npy of ids")
    p.add_argument("--ds_type_output", default=None,
                   help="table of sequence_id, ds_type (default: OUTPUT_ds_type.parquet)")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    import numpy as np

    from anatomy import io
    from anatomy.memorization.table import ID, write_table

    data = cli.training_data(args)
    ids = cli.sample_ids(args, data)
    n_random = len(ids)
    if args.add_planted:
        from anatomy.truth import World

        if data.kind != "olmo":
            raise cli.InputError(None, "--add_planted needs the miniworld's OLMo data")
        w = World.open(cli.require_world(args))
        planted = [i for k in w.memorization_plants
                   for r in w.planted_sequence_starts(k, args.prompt_len, args.cont_len)
                   for i in r["sequence_ids"]]
        extra = np.setdiff1d(np.unique(planted), ids)
        ids = np.concatenate([ids, extra])
    ds_type = np.array(["representative"] * n_random + ["memories"] * (len(ids) - n_random))
    table = args.ds_type_output or ds_type_path(args.output)
    if not args.overwrite and Path(args.output).exists():
        old = io.load_npy(args.output)
        if old.shape != ids.shape or (old != ids).any():
            raise cli.InputError(args.output, "exists with other ids; pass --overwrite")
        if Path(table).exists() and _same_table(table, ids, ds_type):
            print(f"{args.output} is up to date ({len(ids)} ids)")
            return 0
    write_table(table, {ID: ids.astype(np.int64), "ds_type": ds_type})
    io.save_npy(args.output, ids.astype(np.int64))
    print(f"{len(ids)} samples ({n_random} drawn, {len(ids) - n_random} planted added) -> "
          f"{args.output}; ds_type -> {table}")
    return 0


def ds_type_path(output: str) -> str:
    """Where the ds_type table goes by default: ``samples.npy`` -> ``samples_ds_type.parquet``."""
    base = output[:-4] if output.endswith(".npy") else output
    return base + "_ds_type.parquet"


def _same_table(path, ids, ds_type) -> bool:
    from anatomy.memorization.table import read_table

    t = read_table(path)
    return (list(t.columns) == ["sequence_id", "ds_type"] and len(t) == len(ids)
            and (t["sequence_id"].to_numpy() == ids).all()
            and (t["ds_type"].to_numpy() == ds_type).all())


if __name__ == "__main__":
    cli.run(main)
