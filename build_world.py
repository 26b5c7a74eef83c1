"""Build the miniworld: a miniature, fully known OLMo-style pretraining run, offline, on the CPU.

Real text in six categories from pinned distribution archives (fetched by make install and
checked by sha256: one seed gives one corpus on every machine), a byte-level BPE tokenizer,
OLMo-layout token files and data order, an OLMo-architecture model trained in that order
(fp32 by default) with checkpoints at T1, 2T1, 3T1, T2 and T3, SlimPajama-layout category
pools, and truth.json recording everything (mixture, seen instances, planted passages and
the memorization category each is built for, the trained weights' digest and CPU).
"""

from __future__ import annotations

import time

from anatomy import cli

EXAMPLES = """examples:
  python build_world.py --preset tiny --out data/world-tiny      # ~2 min, used by the tests
  python build_world.py --preset small --out data/world          # the demo's world
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--preset", default="small", help="tiny | micro | small")
    p.add_argument("--out", default=cli.DEFAULT_WORLD, help="output folder")
    p.add_argument("--no_evidence", action="store_true",
                   help="skip measuring what the model learned (evidence.json)")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                   help="the model's training precision (default: $ANATOMY_WORLD_PRECISION, "
                        "else fp32, the path every CPU takes: the same world on more machines; "
                        "bf16 autocast is faster where the CPU has bf16 kernels; auto: bf16 "
                        "where supported)")
    cli.add_run_args(p, seed=0, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.world.build import build_world_once
    from anatomy.world.presets import get_preset

    preset = get_preset(args.preset)
    t = time.time()
    truth = build_world_once(preset, args.out, seed=args.seed, progress=cli.progress,
                             overwrite=args.overwrite, precision=args.precision)
    if truth is None:
        print(f"{args.out}: miniworld {preset.name} (seed {args.seed}) is up to date, kept")
        return 0
    print(f"miniworld {preset.name} -> {args.out} in {time.time() - t:.0f}s "
          f"({truth['model']['n_params'] / 1e6:.2f}M params, final loss "
          f"{truth['model']['final_loss']:.2f}, {truth['model']['precision']} training, weights "
          f"{truth['model']['weights_sha256'][:12]} on {truth['model']['cpu']['model']})")
    print("mixture: " + ", ".join(f"{c} {v:.3f}" for c, v in truth["mixture"].items()))
    if not args.no_evidence:
        from anatomy.world.evidence import format_evidence, measure_evidence

        print(format_evidence(measure_evidence(args.out)))
    return 0


if __name__ == "__main__":
    cli.run(main)
