"""Train one model per selection and compare their held-out target loss (pipeline D).

As DsDm evaluates (Engstrom et al. 2024, Sec. 4): every selection is trained on with the same
architecture, budget (one epoch over its n rows, so compute is proportional to n) and seeds,
and scored by the loss on the target's held-out documents (a mix: its groups averaged).
--random_budgets 1 2 4 also trains random selections of n, 2n, 4n rows and prints each method's
compute multiplier: the random-data compute that reaches the method's target loss (least
squares of random's loss on log2(budget), inverted; marked when it extrapolates).

Every figure comes with its spread: each selection is trained with every --seeds (default 3)
and, where its rule draws at random (DSIR's Gumbel top-k, the classifier's Pareto rule, the
random baselines), redrawn from its score file with every --selection_seeds (default 3);
losses are mean ± std over those runs and each multiplier has a 95 % bootstrap interval over
them. A random budget that takes the whole pool is said so.

Every DsDm selection comes with its datamodel's linear datamodeling score (TRAK's LDS, Park
et al. 2023, Def. 2.1): one model (the first seed) trained on each of --lds_halves random
halves of the pool, Spearman's rho between each half's summed DsDm score and minus its
model's held-out target loss, beside the band an uninformative datamodel falls in.

Held out means held out: a held-out target document that shares more than 20 % of its word
8-grams (words: lowercased runs of letters, digits and _) with any pool row (the first
--pool_rows) or with the target's selection half is removed before any model is trained;
the table, summary.json and results.json say how many and why (--decontaminate_ngram,
--decontaminate_threshold; --no_decontaminate evaluates on every held-out document, as
before).

Each (selection, seed) model is a unit on the execution layer: ranks (torchrun, a Slurm array,
--rank/--world_size) train them in parallel, a killed run resumes, the last rank merges.
Outputs in --output_dir: results.json (every run), table.md, summary.json, plot.png.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python eval_selection.py --pool_rows 4096 --target license \\
      --selections data/selections/dsir_license_1024.npy data/selections/dsdm_license_1024.npy \\
      --random_budgets 1 2 4 --seeds 0 1
  python eval_selection.py --selections data/selections/*.npy --target license mix \\
      --pool_rows 4096 --random_budgets 1 2 4 --output_dir data/selections/eval
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--pool", default=None, help="the pool the selections index (default: --world)")
    p.add_argument("--pool_rows", type=int, default=None,
                   help="the first N rows, as given to select_data.py")
    p.add_argument("--tokenizer", default=None,
                   help="the pool's tokenizer (default: the world's, or the OLMo config's)")
    p.add_argument("--selections", nargs="+", default=[], help="select_data.py outputs (.npy)")
    p.add_argument("--target", nargs="+", required=True,
                   help="targets to evaluate on: miniworld target names or JSONL files of "
                        "held-out target texts")
    p.add_argument("--text_key", default="text")
    p.add_argument("--random_budgets", nargs="*", type=float, default=[],
                   help="also train random selections of b*n rows for each b")
    p.add_argument("--selection_seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="draws of each selection rule's own randomness: DSIR's Gumbel top-k "
                        "and the classifier's Pareto rule are redrawn from their score files, "
                        "the random baselines drawn anew (deterministic rules: one draw)")
    p.add_argument("--random_seed", type=int, default=None,
                   help="draw the random baselines with this one seed only")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="training seeds (each draw of each selection trained once per seed)")
    p.add_argument("--lds_halves", type=int, default=16,
                   help="train one model on each of this many random halves of the pool and "
                        "give every DsDm selection its datamodel's linear datamodeling score "
                        "(TRAK's LDS) with the band of chance; 0: none")
    p.add_argument("--lds_seed", type=int, default=0, help="the halves' draw")
    g = p.add_argument_group("held-out decontamination (anatomy/selection/decontaminate.py)")
    g.add_argument("--decontaminate_ngram", type=int, default=8,
                   help="word n-gram length (GPT-3 App. C: 8 to 13)")
    g.add_argument("--decontaminate_threshold", type=float, default=0.2,
                   help="remove a held-out document when more than this fraction of its word "
                        "n-grams is in a pool row or the selection half")
    g.add_argument("--no_decontaminate", action="store_true",
                   help="evaluate on every held-out document (some may also be in the pool)")
    g = p.add_argument_group("evaluation model (the miniworld's OLMo architecture)")
    g.add_argument("--d_model", type=int, default=64)
    g.add_argument("--n_layers", type=int, default=2)
    g.add_argument("--n_heads", type=int, default=2)
    g.add_argument("--lr", type=float, default=4e-3)
    g.add_argument("--batch_size", type=int, default=16)
    g.add_argument("--epochs", type=float, default=1.0, help="passes over each selection")
    p.add_argument("--output_dir", default="data/selections/eval")
    cli.add_run_args(p, seed=None)
    cli.add_rank_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy import io
    from anatomy.selection.decontaminate import HeldOutFilter
    from anatomy.selection.evaluate import (
        evaluate_selections,
        format_table,
        plot_summary,
        random_baselines,
        read_selection,
        selection_draws,
        summarize,
    )
    from anatomy.selection.select import resolve_pool, resolve_target
    from anatomy.selection.training import Arch

    pool = resolve_pool(args.pool or cli.require_world(args),
                        tokenizer=cli.default_tokenizer(args), text_key=args.text_key,
                        rows=args.pool_rows)
    targets = [resolve_target(t, pool, world=Path(args.world), text_key=args.text_key)
               for t in args.target]
    sels = [read_selection(f) for f in args.selections]
    names = [t.name for t in targets]
    for f, sel in zip(args.selections, sels, strict=True):
        if sel.target is not None and sel.target not in names:
            raise io.InputError(f, f"selected for target {sel.target!r}, which is not among "
                                   f"--target ({', '.join(names)}): add it, or leave this "
                                   "selection out")
    sizes = sorted({len(s.indices) for s in sels})
    if len(sizes) > 1:
        raise io.InputError(None, f"selections of different sizes {sizes}: compare equal n")
    sels = [d for s in sels for d in selection_draws(s, args.selection_seeds)]
    if args.random_budgets:
        if not sizes:
            raise io.InputError(None, "--random_budgets needs a selection to take n from")
        rseeds = [args.random_seed] if args.random_seed is not None else args.selection_seeds
        biggest = max(args.random_budgets) * sizes[0]
        if biggest >= len(pool.selectable()):
            print(f"note: random x{max(args.random_budgets):g} is the whole pool "
                  f"({len(pool.selectable())} rows): its draws differ only in order")
        for rs in rseeds:
            sels += random_baselines(len(pool), sizes[0], args.random_budgets, rs,
                                     pool.selectable())
    if not sels:
        raise io.InputError(None, "nothing to evaluate: give --selections")
    arch = Arch(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads, lr=args.lr,
                batch_size=args.batch_size, epochs=args.epochs)
    held_out = None if args.no_decontaminate else HeldOutFilter(
        n=args.decontaminate_ngram, threshold=args.decontaminate_threshold)
    out = Path(args.output_dir)
    res = evaluate_selections(pool, sels, targets, arch, args.seeds, out, args.ranks,
                              overwrite=args.overwrite, merge=args.merge,
                              progress=not args.quiet, held_out=held_out,
                              lds_halves_n=args.lds_halves if any(
                                  s.method == "dsdm" for s in sels) else 0,
                              lds_seed=args.lds_seed)
    if not res.lead:
        return 0
    summary = summarize(io.read_json(out / "results.json"))
    table = format_table(summary)
    io.write_text(out / "table.md", table)
    io.write_json(out / "summary.json", summary)
    plot_summary(summary, out / "plot.png")
    print(table, end="")
    print(f"({res.status}: {len(sels)} selection draws x {len(args.seeds)} seeds -> {out}/)")
    return 0


if __name__ == "__main__":
    cli.run(main)
