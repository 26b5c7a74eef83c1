"""Benchmark DsDm's TRAK on the miniworld (not a test: prints markdown tables).

(a) Featurisation throughput: projected per-example gradients (rows/s) of our
    ``anatomy.selection.trak`` against ``traker`` 0.3.2's TRAKer (CPU: BasicProjector, which
    regenerates its projection blocks for every batch) on the same model, rows, projection
    and batch size, both on all the cores; features compared (max relative difference).
(b) The datamodel's linear datamodeling score (LDS; Park et al. 2023, Def. 2.1) against the
    number of proxies: the largest of --proxies is trained and featurised once, and DsDm's
    scores taken from its first M proxies for each M (the same proxies a run with M would
    train: proxy m's subset and seed do not depend on M); --subsets models trained on random
    halves of the pool (eval_selection.py's LDS halves, one epoch, seed 0); per target the
    Spearman correlation between each half's summed score and minus its model's target loss,
    on the documents that made the query and on the held-out ones; with the proxies'
    agreement (mean pairwise Spearman, Spearman-Brown reliability) select_data.py prints.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import cli  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_trak.py --world data/world
  python benchmarks/bench_trak.py --parts a --rows 256 --proj_dim 1024
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--world", default="data/world")
    p.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    p.add_argument("--rows", type=int, default=256, help="(a) rows featurised by each")
    p.add_argument("--peer_rows", type=int, default=64, help="(a) rows for traker (slow)")
    p.add_argument("--proj_dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pool_rows", type=int, default=2048, help="(b) the pool")
    p.add_argument("--targets", nargs="+", default=["license", "mix"])
    p.add_argument("--proxies", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="(b) ensemble sizes (the first M of the largest)")
    p.add_argument("--subsets", type=int, default=16)
    p.add_argument("--quiet", action="store_true")
    return p


def part_a(args, pool) -> str:
    import torch
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput

    from anatomy.selection.training import Arch, make_lm
    from anatomy.selection.trak import Projection, Projector, lm_features, lm_margin_output

    tok = pool.tokenizer
    model = make_lm(Arch(), len(tok), pool.seq_len, tok.eos_token_id or 0, 0, seed=0).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rows = pool.token_matrix(np.arange(args.rows))
    ours_fn = lm_margin_output(model)

    class LMOutput(AbstractModelOutput):
        def __init__(self):
            super().__init__()

        def get_output(self, model, weights, buffers, ids, mask):
            return ours_fn(weights, buffers, ids, mask)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            return torch.ones(batch[0].shape[0], 1)

    torch.set_num_threads(2)
    proj = Projector(Projection(n_params, args.proj_dim, seed=0))
    t = time.time()
    proj(torch.zeros(1, n_params))  # the one-off matrix, timed with ours
    ours = []
    for a in range(0, len(rows), args.batch):
        ours.append(lm_features(model, list(rows[a:a + args.batch]), proj)[0])
    ours_s = time.time() - t
    ours = np.concatenate(ours)

    peer_rows = rows[: args.peer_rows]
    with tempfile.TemporaryDirectory() as d:
        tr = TRAKer(model=make_lm(Arch(), len(tok), pool.seq_len, tok.eos_token_id or 0, 0, 0),
                    task=LMOutput(), train_set_size=len(peer_rows), save_dir=d, device="cpu",
                    proj_dim=args.proj_dim, use_half_precision=False, projector_seed=0)
        tr.load_checkpoint(model.state_dict(), model_id=0)
        t = time.time()
        for a in range(0, len(peer_rows), args.batch):
            b = torch.as_tensor(peer_rows[a:a + args.batch])
            tr.featurize(batch=(b, torch.ones(len(b), b.shape[1] - 1)), num_samples=len(b))
        peer_s = time.time() - t
        tr.saver.load_current_store(0)
        theirs = np.asarray(tr.saver.current_store["grads"])
    diff = np.abs(theirs - ours[: len(theirs)]).max() / np.abs(theirs).max()
    r_ours, r_peer = len(rows) / ours_s, len(peer_rows) / peer_s
    return "\n".join([
        f"(a) TRAK featurisation, {n_params:,}-parameter model, {pool.seq_len}-token rows, "
        f"k = {args.proj_dim}, batch {args.batch}, 2 threads", "",
        "| featuriser | rows | seconds | rows/s | ratio |", "|---|---|---|---|---|",
        f"| traker 0.3.2 (BasicProjector) | {len(peer_rows)} | {peer_s:.1f} | {r_peer:.1f} "
        f"| 1.0x |",
        f"| ours (matrix generated once) | {len(rows)} | {ours_s:.1f} | {r_ours:.1f} | "
        f"{r_ours / r_peer:.1f}x |", "",
        f"features: max |ours - traker| / max |traker| = {diff:.1e}", ""])


def part_b(args, pool) -> str:
    from anatomy import io
    from anatomy.selection.dsdm import DsdmConfig, dsdm_scores, pool_features, train_proxies
    from anatomy.selection.evaluate import (
        Selection,
        datamodel_lds,
        evaluate_selections,
        lds_halves,
    )
    from anatomy.selection.targets import Target, world_target
    from anatomy.selection.training import Arch
    from anatomy.selection.trak import lds_chance_band

    counts = sorted(set(args.proxies))
    halves = lds_halves(len(pool), args.subsets, 0, pool.selectable())
    band = lds_chance_band(args.subsets)
    lines = [f"(b) linear datamodeling score against the number of proxies, pool {len(pool)} "
             f"rows, {args.subsets} random halves (one model each, seed 0), k = "
             f"{args.proj_dim}; an uninformative datamodel's LDS lies within ±{band:.3f} "
             "(95 %); reliability: the proxies' mean pairwise Spearman, Spearman-Brown to M",
             "", "| target | proxies | LDS (query docs) | LDS (held-out docs) | pairwise rho "
             "| reliability |", "|---|---|---|---|---|---|"]
    cfg = DsdmConfig(n_proxies=max(counts), proj_dim=args.proj_dim)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        models, _ = train_proxies(pool, cfg, Arch(), Path(d) / "proxies",
                                  progress=not args.quiet)
        t_proxies = time.time() - t0
        t0 = time.time()
        pool_features(pool, models, cfg, Path(d) / "features", progress=not args.quiet)
        t_feat = time.time() - t0
        targets = [world_target(args.world, t) for t in args.targets]
        scores = {}
        for t in targets:
            for M in counts:
                scores[t.name, M] = dsdm_scores(pool, t, models[:M], Path(d) / "features",
                                                DsdmConfig(n_proxies=M, proj_dim=args.proj_dim))
        # each half's model on the documents that made the query and on the held-out ones
        evals = [Target(f"{t.name}:select", t.groups, t.groups) for t in targets] + \
            [Target(f"{t.name}:heldout", t.groups, t.eval_groups) for t in targets]
        sels = [Selection(f"half {j}", h, "random") for j, h in enumerate(halves)]
        t0 = time.time()
        evaluate_selections(pool, sels, evals, Arch(), [0], Path(d) / "eval",
                            progress=not args.quiet, held_out=None)
        t_train = time.time() - t0
        res = io.read_json(Path(d) / "eval" / "results.json")
    for t in targets:
        for M in counts:
            s, info = scores[t.name, M]
            lds = [datamodel_lds(s, halves, [r["losses"][f"{t.name}:{kind}"]["mean"]
                                             for r in res["runs"]])
                   for kind in ("select", "heldout")]
            a = info["agreement"]
            lines.append(f"| {t.name} | {M} | {lds[0]:.3f} | {lds[1]:.3f} | "
                         f"{a['mean_pairwise_spearman']:.3f} | {a['reliability']:.3f} |")
    lines += ["", f"({max(counts)} proxies trained in {t_proxies:.0f} s, featurised in "
                  f"{t_feat:.0f} s; {args.subsets} half models {t_train:.0f} s)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from anatomy.progress import set_quiet

    set_quiet(args.quiet)
    from anatomy.selection.pool import open_pool

    pool = open_pool(args.world, rows=args.pool_rows)
    if "a" in args.parts:
        print(part_a(args, pool))
    if "b" in args.parts:
        print(part_b(args, pool))
    return 0


if __name__ == "__main__":
    cli.run(main)
