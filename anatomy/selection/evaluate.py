"""Evaluate selections the way DsDm does: train one model per selection, measure the target.

Engstrom et al. 2024, Sec. 4: every selection is trained on with the same architecture, budget
and seed, and scored by the held-out target loss; random selections trained with 1x, 2x, 4x
... the budget give the **compute multiplier** of a method (Sec. 4.2, the paper's headline
measure: the random-data compute that matches its target loss). Here the budget is one epoch
over the selection (:mod:`anatomy.selection.training`), so a random selection of b·n rows costs
b times a method's n; the multiplier inverts the least-squares line of random's target loss
against log2(b) (log-linear interpolation that tolerates noise between budgets), and says
when it extrapolates past the measured budgets.

Every (selection, seed) model is one unit of a step on the execution layer, so ranks train
them in parallel and a killed run resumes; each model is evaluated on every target given.

Held out means held out: before any model is trained, each target's held-out documents that
share more than 20 % of their word 8-grams with a pool row or with the selection half are
removed (:mod:`anatomy.selection.decontaminate`); ``results.json`` (``held_out``), every
summary row and the table say how many and why, and the fingerprint depends on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.selection import indices as rules
from anatomy.selection.decontaminate import DEFAULT as DEFAULT_HELD_OUT
from anatomy.selection.decontaminate import (
    HeldOutFilter,
    decontaminate_targets,
    describe,
    disabled_report,
)
from anatomy.selection.pool import CandidatePool
from anatomy.selection.targets import Target, groups_digest
from anatomy.selection.training import Arch, group_losses, tokenize_docs, train_lm

_ONE = execution.Ranks()


@dataclass
class Selection:
    """A selection to evaluate: its indices, a label, the target it was made for, and which
    draw of its rule's randomness it is (``draw``: the rule's seed; None for a deterministic
    rule). Draws of one selection share its label."""

    label: str
    indices: np.ndarray
    method: str
    target: str | None = None  # None: untargeted (random, semdedup)
    budget: float = 1.0  # random baselines: multiples of n
    draw: int | None = None
    # what a redraw needs: the per-row scores and the rule's options (select_data's sidecar)
    scores: np.ndarray | None = None
    rule_options: dict[str, Any] | None = None
    compute: dict[str, Any] | None = None  # the selection's own FLOPs (anatomy.selection.cost)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.method, "target": self.target,
                "budget": self.budget, "n": int(len(self.indices)), "draw": self.draw,
                "compute": self.compute}

    @property
    def stochastic(self) -> bool:
        """The rule draws at random from the scores: DSIR's Gumbel top-k, the classifier's
        Pareto rule (select_data.py's seed is one draw of it)."""
        rule = (self.rule_options or {}).get("rule", "pareto")
        return self.scores is not None and (
            self.method == "dsir" or (self.method == "classifier" and rule == "pareto"))

    def redraw(self, seed: int) -> Selection:
        """The same rule on the same scores with another seed (``select_from_scores``)."""
        from anatomy.selection.select import select_from_scores

        if not self.stochastic:
            raise ValueError(f"{self.label}: a deterministic rule has one draw")
        opts = {k: v for k, v in (self.rule_options or {}).items() if k in ("rule", "alpha")}
        idx = select_from_scores(self.method, self.scores, len(self.indices), seed, **opts)
        return Selection(self.label, np.asarray(idx, np.int64), self.method, self.target,
                         self.budget, seed, self.scores, self.rule_options, self.compute)


def selection_draws(sel: Selection, seeds: Sequence[int]) -> list[Selection]:
    """``sel`` once per seed of its rule when the rule is random (the file's own draw where
    a seed equals its seed), else ``sel`` alone."""
    if not sel.stochastic or not seeds:
        return [sel]
    return [sel if s == sel.draw else sel.redraw(s) for s in seeds]


def read_selection(path: PathLike) -> Selection:
    """A ``select_data.py`` output: ``F.npy`` and its sidecar ``F.json``."""
    p = io.require_file(path, "selection")
    if str(p).endswith(".scores.npy"):
        raise InputError(p, "this is a selection's score file: give the indices file beside it")
    idx = io.load_npy(p)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(p, f"a selection is a 1-D integer array, got {idx.dtype} {idx.shape}")
    if len(np.unique(idx)) != len(idx):
        raise InputError(p, "the selection repeats indices")
    stem = str(p)[: -len(".npy")]
    side = Path(stem + ".json")
    meta = io.read_json(side) if side.is_file() else {}
    method = meta.get("method", p.stem)
    target = meta.get("target")
    label = f"{method}" + (f" ({target})" if target else "")
    scores_file = Path(stem + ".scores.npy")
    scores = io.load_npy(scores_file) if scores_file.is_file() and meta else None
    opts = meta.get("options") or {}
    return Selection(label, idx.astype(np.int64), method, target, draw=meta.get("seed"),
                     scores=scores, rule_options={k: opts[k] for k in ("rule", "alpha")
                                                  if k in opts}, compute=meta.get("compute"))


def random_baselines(n_pool: int, n: int, budgets: Sequence[float], seed: int,
                     selectable: np.ndarray | None = None) -> list[Selection]:
    """Uniform selections of ``b * n`` rows for each budget ``b`` (nested draws: the same
    permutation's prefixes, so a bigger budget only adds rows), among ``selectable`` rows
    (default: all; a text pool's empty records are never drawn)."""
    out = []
    n_ok = n_pool if selectable is None else len(selectable)
    biggest = int(round(max(budgets) * n))
    if biggest > n_ok:
        raise InputError(None, f"random budget {max(budgets)} x {n} = {biggest} rows is more "
                               f"than the pool's {n_ok} selectable rows")
    perm = rules.uniform(n_pool, biggest, seed, selectable)
    for b in budgets:
        k = int(round(b * n))
        out.append(Selection(f"random x{b:g}", perm[:k], "random", None, float(b), draw=seed))
    return out


LDS_ALPHA = 0.5  # TRAK's subset fraction for the LDS (Park et al. 2023, Sec. 2.2)


def lds_halves(n_pool: int, n_halves: int, seed: int, selectable: np.ndarray | None = None
               ) -> list[np.ndarray]:
    """The subsets of TRAK's linear datamodeling score: ``n_halves`` seeded uniform draws of
    ``LDS_ALPHA`` of the selectable rows (each sorted)."""
    ok = np.arange(n_pool) if selectable is None else np.asarray(selectable)
    k = int(round(LDS_ALPHA * len(ok)))
    return [np.sort(rules.uniform(n_pool, k, seed * 1000 + 7 * j + 1, ok))
            for j in range(n_halves)]


def datamodel_lds(scores: np.ndarray, halves: Sequence[np.ndarray], losses: Sequence[float]
                  ) -> float:
    """A selection's scores read as a linear datamodel (DsDm: higher score = lower target
    loss), checked as TRAK checks one (Park et al. 2023, Def. 2.1): Spearman's rho over the
    halves between each half's summed score and minus the target loss of the model trained on
    it. The target is the selection's aggregate (its mean document loss, the groups averaged
    — the quantity DsDm minimises), not each document separately."""
    from anatomy.selection.trak import linear_datamodeling_score

    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    masks = np.zeros((len(halves), len(s)), bool)
    for j, h in enumerate(halves):
        masks[j, h] = True
    return linear_datamodeling_score(masks, s, -np.asarray(losses, dtype=np.float64))[0]


class _EvalStep:
    name = "eval_selection"
    on_cpu = True

    def __init__(self, pool: CandidatePool, selections: list[Selection],
                 targets: list[Target], arch: Arch, seeds: Sequence[int], out: Path,
                 fp: execution.Fingerprint, held_out: dict[str, dict[str, Any]],
                 halves: Sequence[np.ndarray] = (), lds_seed: int = 0):
        self.pool, self.selections, self.targets = pool, selections, targets
        self.held_out = held_out
        self.arch, self.seeds, self.out = arch, list(seeds), out
        self.halves, self.lds_seed = list(halves), lds_seed
        self.n_sel_units = len(selections) * len(self.seeds)
        self.n_units = self.n_sel_units + len(self.halves)
        self.output = execution.Output.folder(out, ["results.json"])
        self.fingerprint = fp
        L = pool.seq_len or 128
        self.eval_docs = {t.name: {g: tokenize_docs(pool.tokenizer, texts, L)
                                   for g, texts in t.eval_groups.items()} for t in targets}

    def _train_eval(self, idx: np.ndarray, seed: int) -> tuple[dict, dict]:
        vocab, eos, pad = self.pool.lm_ids()
        rows = self.pool.token_matrix(np.sort(idx))
        model, info = train_lm(rows, self.arch, vocab_size=vocab, eos_id=eos, pad_id=pad,
                               seed=seed)
        model.eval()
        return info, {t: group_losses(model, docs) for t, docs in self.eval_docs.items()}

    def compute_unit(self, u: int) -> dict[str, Any]:
        if u >= self.n_sel_units:  # an LDS half: one model, the first seed for every half
            h = u - self.n_sel_units  # (common random numbers: only the data differ)
            info, losses = self._train_eval(self.halves[h], self.seeds[0])
            return {"result": json.dumps({"half": h, "seed": self.seeds[0], "train": info,
                                          "losses": losses})}
        j, s = divmod(u, len(self.seeds))
        sel, seed = self.selections[j], self.seeds[s]
        info, losses = self._train_eval(sel.indices, seed)
        return {"result": json.dumps({"selection": j, "seed": seed, "train": info,
                                      "losses": losses})}

    def _lds(self, half_runs: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Every DsDm selection's LDS on its own target over the halves."""
        from anatomy.selection.trak import lds_chance_band

        if not self.halves:
            return None
        out: dict[str, Any] = {"halves": len(self.halves), "alpha": LDS_ALPHA,
                               "seed": self.lds_seed, "train_seed": self.seeds[0],
                               "chance_band": lds_chance_band(len(self.halves), CI),
                               "digests": [_digest(h) for h in self.halves],
                               "runs": half_runs, "selections": {}}
        for sel in self.selections:
            if sel.method != "dsdm" or sel.scores is None or sel.target is None \
                    or sel.label in out["selections"]:
                continue
            losses = [r["losses"][sel.target]["mean"] for r in half_runs]
            out["selections"][sel.label] = {
                "target": sel.target, "lds": datamodel_lds(sel.scores, self.halves, losses)}
        return out

    def merge(self, load) -> dict[str, Any]:
        results = [json.loads(str(load(u)["result"])) for u in range(self.n_units)]
        runs, half_runs = results[: self.n_sel_units], results[self.n_sel_units:]
        res = {"selections": [s.to_dict() for s in self.selections],
               "targets": [t.name for t in self.targets], "seeds": self.seeds,
               "arch": self.arch.to_dict(), "pool": self.pool.source,
               "held_out": self.held_out, "runs": runs, "lds": self._lds(half_runs)}
        with execution.staged(self.output) as stage:
            io.write_json(stage(self.out / "results.json"), res)
        return {"models": len(runs)}


def evaluate_selections(pool: CandidatePool, selections: list[Selection],
                        targets: list[Target], arch: Arch, seeds: Sequence[int],
                        out: PathLike, ranks: execution.Ranks = _ONE, overwrite: bool = False,
                        merge: bool = False, progress: bool = True,
                        held_out: HeldOutFilter | None = DEFAULT_HELD_OUT,
                        lds_halves_n: int = 0, lds_seed: int = 0
                        ) -> execution.StepResult:
    """Train ``len(selections) x len(seeds)`` models, evaluate each on every target;
    ``out/results.json`` holds every run.

    ``lds_halves_n``: also train one model (the first seed) on each of that many random halves
    of the pool (:func:`lds_halves`, seeded by ``lds_seed``) and give every DsDm selection its
    datamodel's LDS on its target (``results["lds"]``; :func:`datamodel_lds`), with the 95 %
    band of an uninformative datamodel's.

    ``held_out``: the decontamination rule applied to each target's held-out documents
    first (default: drop those sharing more than 20 % of their word 8-grams with the pool's
    rows or the selection half); None evaluates on every held-out document, as before."""
    if not selections:
        raise InputError(None, "no selections to evaluate")
    for s in selections:
        if len(s.indices) and (s.indices.min() < 0 or s.indices.max() >= len(pool)):
            raise InputError(None, f"selection {s.label} has indices outside the pool's "
                                   f"{len(pool)} rows")
    out = Path(out)
    if held_out is not None:
        targets, reports = decontaminate_targets(targets, pool, held_out)
    else:
        reports = {t.name: disabled_report() for t in targets}
    if 0 < lds_halves_n < 3:
        raise InputError(None, f"an LDS needs 3 or more halves, got {lds_halves_n}")
    halves = lds_halves(len(pool), lds_halves_n, lds_seed, pool.selectable()) \
        if lds_halves_n else []
    key = {"pool": pool.identity(), "arch": arch.to_dict(), "seeds": list(seeds),
           "selections": [{**s.to_dict(), "digest": _digest(s.indices)} for s in selections],
           "targets": [{"name": t.name, "digest": groups_digest(t.eval_groups),
                        "held_out": _held_out_key(reports[t.name])} for t in targets]}
    if halves:  # (absent without halves: earlier evaluations stay up to date)
        key["lds"] = {"halves": [_digest(h) for h in halves],
                      "scores": {s.label: _digest(np.nan_to_num(s.scores).view(np.int32))
                                 for s in selections if s.method == "dsdm"
                                 and s.scores is not None}}
    fp = execution.fingerprint("eval_selection", None, key)
    step = _EvalStep(pool, selections, targets, arch, seeds, out, fp, reports, halves,
                     lds_seed)
    return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)


def _held_out_key(rep: dict[str, Any]) -> dict[str, Any]:
    """What of a decontamination report a fingerprint records: the rule, the counts and
    which documents went (the kept texts are in the target's digest already)."""
    if not rep.get("enabled"):
        return {"enabled": False}
    keep = ("enabled", "n", "threshold", "words", "hash", "version", "pool_rows",
            "selection_half", "docs", "kept", "removed", "by_reason")
    return {**{k: rep[k] for k in keep},
            "removed_docs": {g: [d["index"] for d in v["removed_docs"]]
                             for g, v in rep["groups"].items()}}


def _compact(rep: dict[str, Any] | None) -> dict[str, Any] | None:
    """A summary row's copy of its target's decontamination report (no per-document list)."""
    if rep is None:
        return None
    if not rep.get("enabled"):
        return {"enabled": False}
    return {**{k: v for k, v in rep.items() if k != "groups"},
            "groups": {g: {k: v for k, v in x.items() if k != "removed_docs"}
                       for g, x in rep["groups"].items()}}


def _digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype="<i8").tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# the table, the multiplier, the plot


def compute_multiplier(loss: float, budgets: Sequence[float], losses: Sequence[float]
                       ) -> tuple[float, bool]:
    """The random budget whose fitted loss equals ``loss``: least squares of random's loss
    on log2(budget), inverted. Returns ``(multiplier, extrapolated)``; NaN when random's
    loss does not fall with budget (no compute scale to read a multiplier on)."""
    b = np.log2(np.asarray(budgets, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if len(b) < 2 or np.ptp(b) == 0:
        return float("nan"), False
    slope, icpt = np.polyfit(b, y, 1)
    if slope >= 0:
        return float("nan"), False
    x = (loss - icpt) / slope
    return float(2.0 ** x), bool(x < b.min() - 1e-9 or x > b.max() + 1e-9)


BOOTSTRAP = 2000  # resamples of the runs behind each multiplier's interval
CI = 0.95


def summarize(results: dict[str, Any], n_boot: int = BOOTSTRAP, seed: int = 0
              ) -> dict[str, list[dict[str, Any]]]:
    """Per target: one row per selection (its draws of the rule's randomness and its training
    seeds pooled: mean and std of the target loss over those runs, and per group), the compute
    multiplier of every non-random selection with a bootstrap interval, and (``held_out``)
    what was removed from the target's held-out documents, and why.

    The multiplier is read off random's least-squares line through its budgets' mean losses
    (:func:`compute_multiplier`). Its interval resamples, ``n_boot`` times, each selection's
    runs and each random budget's runs with replacement (runs: every (draw, training seed)
    pair, treated as exchangeable), recomputing the line and the multiplier: the central
    ``CI`` share of those multipliers (NaN resamples, where random's loss does not fall with
    budget, count as neither end)."""
    sels = results["selections"]
    held = results.get("held_out") or {}
    out: dict[str, list[dict[str, Any]]] = {}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    for t in results["targets"]:
        labels = list(dict.fromkeys(x["label"] for x in sels if x["target"] in (None, t)))
        rows, samples = [], {}
        for label in labels:
            js = [j for j, x in enumerate(sels) if x["label"] == label]
            runs = [r for r in results["runs"] if r["selection"] in js]
            if not runs:
                continue
            vals = np.array([r["losses"][t]["mean"] for r in runs])
            groups = {g: float(np.mean([r["losses"][t][g] for r in runs]))
                      for g in runs[0]["losses"][t] if g != "mean"}
            first = sels[js[0]]
            draws = sorted({x["draw"] for x in (sels[j] for j in js) if x["draw"] is not None})
            row = {**{k: first[k] for k in ("label", "method", "target", "budget", "n")},
                   "loss": float(vals.mean()),
                   "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                   "runs": len(vals), "draws": len(draws) or 1,
                   "seeds": len({r["seed"] for r in runs}), "groups": groups}
            if t in held:
                row["held_out"] = _compact(held[t])
            rows.append(row)
            samples[label] = vals
        rand = [r for r in rows if r["method"] == "random" and r["target"] is None]
        budgets = [r["budget"] for r in rand]
        for r in rows:
            if len(rand) >= 2 and not (r["method"] == "random" and r["target"] is None):
                m, ext = compute_multiplier(r["loss"], budgets, [x["loss"] for x in rand])
                r["multiplier"], r["extrapolated"] = m, ext
                boot = np.empty(n_boot)
                for i in range(n_boot):
                    mine = rng.choice(samples[r["label"]], len(samples[r["label"]])).mean()
                    base = [rng.choice(samples[x["label"]], len(samples[x["label"]])).mean()
                            for x in rand]
                    boot[i] = compute_multiplier(mine, budgets, base)[0]
                ok = boot[np.isfinite(boot)]
                lo, hi = (np.quantile(ok, [(1 - CI) / 2, (1 + CI) / 2]) if len(ok)
                          else (np.nan, np.nan))
                r["multiplier_ci"] = [float(lo), float(hi)]
                r["multiplier_ci_defined"] = round(len(ok) / n_boot, 4)
                _add_cost(r, sels, results["runs"])
            lds = (results.get("lds") or {}).get("selections", {}).get(r["label"])
            if lds is not None and lds["target"] == t:
                r["lds"] = {"lds": lds["lds"], "halves": results["lds"]["halves"],
                            "chance_band": results["lds"]["chance_band"]}
        out[t] = rows
    return out


def _add_cost(row: dict[str, Any], sels: list[dict[str, Any]], runs: list[dict[str, Any]]
              ) -> None:
    """The selection's own compute in evaluation-model training steps, and the net
    multiplier after it (:mod:`anatomy.selection.cost`); nothing when the selection or the
    runs do not record it."""
    from anatomy.selection.cost import eval_step_flops, net_multiplier, train_flops

    js = [j for j, x in enumerate(sels) if x["label"] == row["label"]]
    comp = next((sels[j].get("compute") for j in js if sels[j].get("compute")), None)
    mine = [r for r in runs if r["selection"] in js and "params" in r.get("train", {})]
    if comp is None or not mine:
        return
    t = mine[0]["train"]
    step = eval_step_flops(t["params"], t["batch_size"], t["seq_len"])
    used = train_flops(t["params"], t["steps"] * t["batch_size"] * t["seq_len"])
    row["selection_steps"] = float(comp["flops"]) / step
    row["selection_note"] = comp.get("note", "")
    row["train_steps"] = int(t["steps"])
    m = row.get("multiplier")
    if m is not None and np.isfinite(m):
        row["net_multiplier"] = net_multiplier(m, used, float(comp["flops"]))
        lo, hi = row.get("multiplier_ci", [np.nan, np.nan])
        row["net_multiplier_ci"] = [net_multiplier(lo, used, float(comp["flops"])),
                                    net_multiplier(hi, used, float(comp["flops"]))]


def format_table(summary: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per target, loss ± std per selection, its compute multiplier."""
    lines = []
    for t, rows in summary.items():
        seeds = rows[0]["seeds"] if rows else 0
        lines += [f"target {t} (held-out loss, nats/token; mean ± std over each selection's "
                  f"runs: its draws x {seeds} training seeds; multiplier with its "
                  f"{CI:.0%} bootstrap interval over runs):", "",
                  "| selection | n | runs (draws x seeds) | loss | ± | compute multiplier | "
                  f"{CI:.0%} interval | selection compute (eval steps) | net multiplier |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m = r.get("multiplier")
            ci = "—"
            if m is None:
                mult = "—"
            elif np.isnan(m):
                mult = "n/a"
            else:
                mult = f"{m:.2f}x" + (" (extrapolated)" if r.get("extrapolated") else "")
                lo, hi = r.get("multiplier_ci", [np.nan, np.nan])
                ci = "n/a" if np.isnan(lo) else f"{lo:.2f}x - {hi:.2f}x"
            draws = r.get("draws", 1)
            cost, net = "—", "—"
            if "selection_steps" in r:
                cost = f"{r['selection_steps']:,.0f} (training: {r['train_steps']})"
                if r.get("selection_note"):
                    cost += f"; {r['selection_note']}"
            if "net_multiplier" in r:
                lo, hi = r["net_multiplier_ci"]
                net = f"{r['net_multiplier']:.2f}x" + (
                    "" if np.isnan(lo) else f" [{lo:.2f}x - {hi:.2f}x]")
            lines.append(f"| {r['label']} | {r['n']} | {r.get('runs', seeds)} ({draws} x "
                         f"{seeds}) | {r['loss']:.4f} | {r['std']:.4f} | {mult} | {ci} | "
                         f"{cost} | {net} |")
        for r in rows:
            if "lds" in r:
                x = r["lds"]
                lines += ["", f"{r['label']}: the datamodel's LDS over {x['halves']} random "
                              f"halves of the pool is {x['lds']:.3f} (an uninformative "
                              f"datamodel's lies within ±{x['chance_band']:.3f}, {CI:.0%})."]
        if rows and "held_out" in rows[0]:
            lines += ["", describe(rows[0]["held_out"]) + "."]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_summary(summary: dict[str, list[dict[str, Any]]], path: PathLike) -> None:
    """The paper's main-figure shape: per target, bars of target loss per method with the
    random budgets beside them (error bars: std over seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(1, len(summary)), 3.8))
    axes = fig.subplots(1, max(1, len(summary)), squeeze=False)[0]
    for ax, (t, rows) in zip(axes, summary.items(), strict=False):
        labels = [r["label"].replace(f" ({t})", "") for r in rows]
        vals = [r["loss"] for r in rows]
        colors = ["#bbbbbb" if r["method"] == "random" else "#3b6ea8" for r in rows]
        ax.bar(range(len(rows)), vals, yerr=[r["std"] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=8)
        lo, hi = min(vals), max(vals)
        ax.set_ylim(lo - 0.15 * (hi - lo + 1e-6), hi + 0.1 * (hi - lo + 1e-6))
        ax.set_title(f"target: {t}")
        ax.set_ylabel("held-out target loss")
    fig.tight_layout()
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
