"""The OLMoMIA paper-style results tables from ``run_mia.py`` outputs, and AUROC by exposure count.

:func:`build_table` reads ``RESULTS/DATASET/CHECKPOINT/metrics.json`` for every dataset
(split) and checkpoint: rows = methods (score names, the blind baseline among them),
columns = checkpoints (ordered by the step in their revision name, ``step100000-tokens442B``
-> 100000) x splits (in the order given), cells = the metric x 100 with one decimal. The
Markdown prints one table per checkpoint (methods x splits), as OLMoMIA (Kim et al. 2024)
reports AUROC per target checkpoint, best cell per column in bold; also CSV and a heat-map
PNG of all columns.

:func:`auroc_by_count`: for a split whose scored records carry an integer field (the
miniworld's planted split: ``planted`` = k copies for members, 0 for controls), the AUROC of
members planted k times against all controls, per k and checkpoint (Carlini et al. 2023's
"memorization grows with duplication", read through membership scores).
"""

from __future__ import annotations

import csv
import io as _io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatomy import io
from anatomy.io import InputError
from anatomy.mia.attack import METHODS, score_names

METRICS = ("auroc", "tpr@0.1%", "tpr@1%", "tpr@5%", "bal_acc")
METRIC_TITLES = {"auroc": "AUROC", "tpr@0.1%": "TPR@0.1%FPR", "tpr@1%": "TPR@1%FPR",
                 "tpr@5%": "TPR@5%FPR", "bal_acc": "balanced accuracy"}
COUNT_SCORES = ("loss", "minkpp_20")
_STEP_RE = re.compile(r"step(\d+)")


def checkpoint_step(name: str) -> int | None:
    """The step in a revision name (``step40-tokens82K`` -> 40); None without one."""
    m = _STEP_RE.search(name)
    return int(m.group(1)) if m else None


def checkpoint_order(names: Sequence[str]) -> list[str]:
    """By step; names without a step (e.g. a final ``model`` folder) last, by name."""
    return sorted(set(names), key=lambda n: (checkpoint_step(n) is None,
                                             checkpoint_step(n) or 0, n))


def checkpoint_label(name: str) -> str:
    s = checkpoint_step(name)
    if s is None:
        return name
    return f"{s // 1000}k" if s >= 1000 and s % 1000 == 0 else f"step{s}"


def split_labels(datasets: Sequence[str]) -> list[str]:
    """Short split names: the part after the datasets' common ``_``-prefix
    (``OLMo-7B_128_1000_hard`` -> ``hard``); one dataset: the part after its last ``_``."""
    if len(datasets) == 1:
        return [datasets[0].rsplit("_", 1)[-1]]
    common = os.path.commonprefix(list(datasets))
    cut = common.rfind("_") + 1
    return [d[cut:] or d for d in datasets]


def method_label(name: str) -> str:
    """Display name: ``minkpp_20`` -> ``Min-K%++ 20%``, ``emmia`` -> ``EM-MIA``."""
    fixed = {"loss": "Loss", "ref": "Ref", "zlib": "Zlib", "emmia": "EM-MIA",
             "recall_wavg": "ReCaLL-Avg (weighted, prefix subset)",
             "blind": "Blind (bag of words, no model)"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"(minkpp|mink)_(.+)", name)
    if m:
        return f"Min-K%{'++' if m.group(1) == 'minkpp' else ''} {m.group(2)}%"
    return name


def _canonical_order(names: set[str]) -> list[str]:
    known = [n for n in score_names(METHODS) if n in names]
    return known + sorted(names - set(known))


def _select_methods(names: list[str], methods: Sequence[str] | None) -> list[str]:
    """Keep score names matching ``methods`` (a family like ``minkpp`` or a name)."""
    if not methods:
        return names
    fam = lambda n: n.split("_")[0] if n.startswith("mink") else n
    return [n for n in names if n in methods or fam(n) in methods]


# ---------------------------------------------------------------------------------------
# the table


@dataclass
class Table:
    metric: str
    methods: list[str]  # score names (rows)
    columns: list[tuple[str, str]]  # (checkpoint, dataset)
    values: np.ndarray  # [rows, columns], NaN where missing
    datasets: list[str]
    # uncertainty: each cell's bootstrap interval [rows, columns, 2] and each column's chance
    # band [columns, 2] (NaN where the metrics file predates them), EM-MIA cells that
    # converged to the labelling opposite to their start
    ci: np.ndarray | None = None
    band: np.ndarray | None = None
    inverted: np.ndarray | None = None

    def column_labels(self) -> list[str]:
        splits = dict(zip(self.datasets, split_labels(self.datasets), strict=True))
        return [f"{checkpoint_label(c)} {splits[d]}" for c, d in self.columns]


def _results(results_dir: Path, dataset: str) -> dict[str, Path]:
    folder = results_dir / dataset
    if not folder.is_dir():
        raise InputError(folder, "no results for this dataset (run run_mia.py first)")
    found = {p.parent.name: p for p in sorted(folder.glob("*/metrics.json"))}
    if not found:
        raise InputError(folder, "no CHECKPOINT/metrics.json here (run run_mia.py first)")
    return found


def build_table(results_dir: io.PathLike, datasets: Sequence[str], metric: str = "auroc",
                methods: Sequence[str] | None = None) -> Table:
    """Collect ``metric`` for every (checkpoint, dataset) found under ``results_dir``."""
    if metric not in METRICS:
        raise InputError(None, f'unknown metric "{metric}" (choose from {", ".join(METRICS)})')
    results_dir = Path(results_dir)
    cells: dict[tuple[str, str], dict[str, float]] = {}
    docs: dict[tuple[str, str], dict] = {}
    for d in datasets:
        for ckpt, path in _results(results_dir, d).items():
            doc = io.read_json(path)
            try:
                cells[ckpt, d] = {k: v[metric] for k, v in doc["metrics"].items()}
            except (KeyError, TypeError, AttributeError):
                raise InputError(path, f'not a run_mia metrics file (no "{metric}" per '
                                       "method under \"metrics\")") from None
            docs[ckpt, d] = doc
    ckpts = checkpoint_order([c for c, _ in cells])
    columns = [(c, d) for c in ckpts for d in datasets if (c, d) in cells]
    rows = _select_methods(_canonical_order({m for v in cells.values() for m in v}), methods)
    values = np.full((len(rows), len(columns)), np.nan)
    ci = np.full((len(rows), len(columns), 2), np.nan)
    band = np.full((len(columns), 2), np.nan)
    inverted = np.zeros((len(rows), len(columns)), bool)
    for j, col in enumerate(columns):
        doc = docs[col]
        b = (doc.get("null_band") or {}).get(metric)
        if b is not None:
            band[j] = b
        for i, m in enumerate(rows):
            v = cells[col].get(m)
            values[i, j] = np.nan if v is None else float(v)
            c = ((doc["metrics"].get(m) or {}).get("ci") or {}).get(metric)
            if c is not None:
                ci[i, j] = c
            inverted[i, j] = bool(((doc.get("emmia") or {}).get(m) or {}).get("inverted"))
    return Table(metric, rows, columns, values, list(datasets), ci, band, inverted)


def _cell(v: float) -> str:
    return "" if np.isnan(v) else f"{100 * v:.1f}"


def beyond_chance(t: Table) -> np.ndarray:
    """``[rows, columns]``: the value lies outside its split's chance band (the label-
    permutation null, :func:`anatomy.metrics.null_band`); False where no band is known."""
    lo, hi = t.band[:, 0], t.band[:, 1]
    with np.errstate(invalid="ignore"):
        return (t.values < lo[None, :]) | (t.values > hi[None, :])


def table_markdown(t: Table) -> str:
    """One table per checkpoint, as OLMoMIA reports them: rows = methods, columns = splits,
    the metric x 100 with its 95 % bootstrap interval over the split's texts; a value in
    bold lies outside the split's chance band (given under the table), not merely the
    column's maximum; † marks an EM-MIA run that ended inverted (its final scores rank
    against its initial ones)."""
    splits = dict(zip(t.datasets, split_labels(t.datasets), strict=True))
    marked = beyond_chance(t)
    blocks = []
    for ckpt in dict.fromkeys(c for c, _ in t.columns):
        cols = [j for j, (c, _) in enumerate(t.columns) if c == ckpt]
        head = (f"| {METRIC_TITLES[t.metric]} x100 [95 % interval], "
                f"{checkpoint_label(ckpt)} | "
                + " | ".join(splits[t.columns[j][1]] for j in cols) + " |")
        lines = [head, "|---|" + "---:|" * len(cols)]
        for i, m in enumerate(t.methods):
            cells = []
            for j in cols:
                c = _cell(t.values[i, j]) or "-"
                if c != "-" and not np.isnan(t.ci[i, j]).any():
                    c += f" [{100 * t.ci[i, j, 0]:.0f}, {100 * t.ci[i, j, 1]:.0f}]"
                if marked[i, j]:
                    c = f"**{c}**"
                if t.inverted[i, j]:
                    c += " †"
                cells.append(c)
            lines.append(f"| {method_label(m)} | " + " | ".join(cells) + " |")
        bands = [f"{splits[t.columns[j][1]]} {100 * t.band[j, 0]:.1f}-{100 * t.band[j, 1]:.1f}"
                 for j in cols if not np.isnan(t.band[j]).any()]
        if bands:
            lines += ["", "chance band (95 % of label permutations; bold = outside it): "
                      + ", ".join(bands)]
        if t.inverted[:, cols].any():
            lines += ["", "† EM-MIA's final scores rank against its initial scores (Spearman "
                          "< 0): the update converged to the inverted labelling."]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def table_csv(t: Table) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method"] + [f"{c}/{d}" for c, d in t.columns])
    for i, m in enumerate(t.methods):
        w.writerow([m] + [_cell(v) for v in t.values[i]])
    return buf.getvalue()


def _save_png(fig, path: io.PathLike) -> None:
    import matplotlib.pyplot as plt

    with io.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def table_heatmap(t: Table, path: io.PathLike) -> None:
    """Heat map of the table (AUROC centred at 50 = chance), values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    v = 100 * t.values
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * max(1, len(t.columns)),
                                    1.0 + 0.35 * max(1, len(t.methods))))
    if t.metric == "auroc":
        norm, cmap = TwoSlopeNorm(vcenter=50, vmin=0, vmax=100), "RdBu_r"
    else:
        norm, cmap = None, "viridis"
    im = ax.imshow(np.ma.masked_invalid(v), aspect="auto", cmap=cmap, norm=norm)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            if not np.isnan(v[i, j]):
                ax.text(j, i, f"{v[i, j]:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(t.columns)), t.column_labels(), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(t.methods)), [method_label(m) for m in t.methods], fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{METRIC_TITLES[t.metric]} x100")
    _save_png(fig, path)


# ---------------------------------------------------------------------------------------
# AUROC by exposure count


@dataclass
class ByCount:
    dataset: str
    field: str
    counts: list[int]  # k > 0 present among members
    checkpoints: list[str]
    auroc: dict[str, np.ndarray]  # score name -> [checkpoints, counts]


def auroc_by_count(results_dir: io.PathLike, dataset: str, field: str = "planted",
                   scores: Sequence[str] = COUNT_SCORES) -> ByCount | None:
    """AUROC of members with ``field`` == k against all records with ``field`` == 0, per k
    and checkpoint; None when the scored records carry no such integer field."""
    from anatomy.metrics import auroc

    per_ckpt = {}
    for ckpt, path in _results(Path(results_dir), dataset).items():
        rows = io.read_jsonl(path.parent / "scores.jsonl", required=("scores",))
        vals = [r.get(field) for r in rows]
        if not rows or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return None
        per_ckpt[ckpt] = (np.array(vals), rows)
    ckpts = checkpoint_order(list(per_ckpt))
    counts = sorted({int(k) for v, _ in per_ckpt.values() for k in v if k > 0})
    have = [s for s in scores if all(s in r["scores"] for _, rows in per_ckpt.values()
                                     for r in rows)]
    out = {s: np.full((len(ckpts), len(counts)), np.nan) for s in have}
    for a, c in enumerate(ckpts):
        k_of, rows = per_ckpt[c]
        ctrl = k_of == 0
        if not ctrl.any():
            return None
        for s in have:
            sc = np.array([r["scores"][s] for r in rows], dtype=np.float64)
            for b, k in enumerate(counts):
                pick = ctrl | (k_of == k)
                out[s][a, b] = auroc(sc[pick], (k_of == k)[pick])
    return ByCount(dataset, field, counts, ckpts, out)


def by_count_markdown(bc: ByCount) -> str:
    head = "| score | checkpoint | " + " | ".join(f"{bc.field}={k}" for k in bc.counts) + " |"
    lines = [head, "|---|---|" + "---:|" * len(bc.counts)]
    for s, m in bc.auroc.items():
        for a, c in enumerate(bc.checkpoints):
            lines.append(f"| {method_label(s)} | {c} | " + " | ".join(
                _cell(v) or "-" for v in m[a]) + " |")
    return "\n".join(lines)


def by_count_csv(bc: ByCount) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["score", "checkpoint"] + [str(k) for k in bc.counts])
    for s, m in bc.auroc.items():
        for a, c in enumerate(bc.checkpoints):
            w.writerow([s, c] + [_cell(v) for v in m[a]])
    return buf.getvalue()


def by_count_plot(bc: ByCount, path: io.PathLike) -> None:
    """AUROC vs count (log2 axis), one line per checkpoint, one panel per score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(bc.auroc))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for ax, (s, m) in zip(axes[0], bc.auroc.items(), strict=False):
        for a, c in enumerate(bc.checkpoints):
            ax.plot(bc.counts, 100 * m[a], "o-", label=checkpoint_label(c))
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        if bc.counts and max(bc.counts) > 2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(bc.counts, [str(k) for k in bc.counts])
        ax.minorticks_off()
        ax.set_xlabel(f"{bc.field} (copies seen)")
        ax.set_title(method_label(s))
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("AUROC x100")
    axes[0][0].legend(fontsize=7, title="checkpoint", title_fontsize=7)
    fig.suptitle(bc.dataset, fontsize=9)
    _save_png(fig, path)


# ---------------------------------------------------------------------------------------
# the script's entry point


def emmia_runs(results_dir: io.PathLike, dataset: str) -> dict[str, dict[str, dict]]:
    """``{checkpoint: {run name: report}}`` of the EM-MIA runs a dataset's metrics.json
    files record (:func:`anatomy.mia.emmia.trajectory`, without the scores); empty if none."""
    out = {}
    for ckpt, path in _results(Path(results_dir), dataset).items():
        em = {k: v for k, v in (io.read_json(path).get("emmia") or {}).items()
              if v.get("auroc")}  # runs on labelled splits
        if em:
            out[ckpt] = em
    return {c: out[c] for c in checkpoint_order(list(out))}


def emmia_markdown(runs: dict[str, dict[str, dict]]) -> str:
    """AUROC x100 after each EM-MIA iteration (0 = the initial scores), per checkpoint and
    initial score, with the stability line."""
    n = max(len(r.get("auroc", [])) for em in runs.values() for r in em.values())
    lines = ["| checkpoint | EM-MIA from | " + " | ".join(str(i) for i in range(n))
             + " | Spearman final vs init |", "|---|---|" + "---:|" * (n + 1)]
    for ckpt, em in runs.items():
        for r in em.values():
            a = [f"{100 * x:.1f}" for x in r.get("auroc", [])]
            rho = r["spearman_final_vs_init"]
            flag = " (inverted)" if r.get("inverted") else ""
            lines.append(f"| {checkpoint_label(ckpt)} | {method_label(r['init'])} | "
                         + " | ".join(a + [""] * (n - len(a))) + f" | {rho:.2f}{flag} |")
    return "\n".join(lines)


def emmia_plot(runs: dict[str, dict[str, dict]], path: io.PathLike, title: str = "") -> None:
    """AUROC against EM-MIA iteration, one line per (checkpoint, initial score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for ckpt, em in runs.items():
        for r in em.values():
            a = 100 * np.asarray(r.get("auroc", []), dtype=float)
            ax.plot(range(len(a)), a, marker="o", ms=3,
                    label=f"{checkpoint_label(ckpt)}, from {method_label(r['init'])}"
                    + (" (inverted)" if r.get("inverted") else ""))
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("EM-MIA iteration (0 = initial scores)")
    ax.set_ylabel("AUROC x100")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save_png(fig, path)


def make_tables(results_dir: io.PathLike, datasets: Sequence[str], metric: str = "auroc",
                out: io.PathLike | None = None, methods: Sequence[str] | None = None,
                count_field: str = "planted", overwrite: bool = False) -> str:
    """Write ``OUT.md``, ``OUT.csv``, ``OUT.png`` (default OUT: RESULTS/table, or
    RESULTS/table_{metric} for other metrics) and, for every dataset whose records carry
    ``count_field``, ``RESULTS/DATASET/by_{field}.{md,csv,png}``; returns all Markdown.

    The files follow the output policy of :mod:`anatomy.execution` (inputs: every
    ``metrics.json`` and ``scores.jsonl`` read; marker ``OUT.done.json``): the same inputs
    and flags leave them untouched, others are refused unless ``overwrite``.
    """
    from anatomy import execution

    results_dir = Path(results_dir)
    if out is None:
        slug = "" if metric == "auroc" else "_" + re.sub(r"[^0-9a-z]+", "", metric)
        out = results_dir / f"table{slug}"
    t = build_table(results_dir, datasets, metric, methods)
    md = table_markdown(t)
    if metric.startswith("tpr@") and np.isnan(t.values).any():
        x = float(metric[4:-1]) / 100
        md += (f"\n\nEmpty cells: splits with fewer than {round(1 / x)} non-members, where "
               f"{METRIC_TITLES[metric]} is undefined (one false positive is already an FPR "
               f"above {100 * x:g}%).")
    counts = {}
    for d in datasets:
        bc = auroc_by_count(results_dir, d, count_field)
        if bc is not None and bc.counts and bc.auroc:
            counts[d] = bc
    inputs = {f"{d}/{p.parent.name}/{p.name}": p for d in datasets
              for name in ("metrics.json", "scores.jsonl")
              for p in sorted((results_dir / d).glob(f"*/{name}"))}
    fp = execution.fingerprint("make_table", inputs, {"datasets": list(datasets),
                                                      "metric": metric, "methods": methods,
                                                      "count_field": count_field})
    files = [Path(f"{out}.{x}") for x in ("md", "csv", "png")]
    files += [results_dir / d / f"by_{count_field}.{x}" for d in counts
              for x in ("md", "csv", "png")]
    em_runs = {d: r for d in datasets if (r := emmia_runs(results_dir, d))}
    files += [results_dir / d / f"emmia_iterations.{x}" for d in em_runs for x in ("md", "png")]
    output = execution.Output(files, Path(f"{out}.done.json"))
    write = execution.check_output(output, fp, overwrite)
    if write:
        io.write_text(f"{out}.md", md + "\n")
        io.write_text(f"{out}.csv", table_csv(t))
        table_heatmap(t, f"{out}.png")
    parts = [md]
    for d, bc in counts.items():
        base = results_dir / d / f"by_{count_field}"
        text = by_count_markdown(bc)
        if write:
            io.write_text(f"{base}.md", text + "\n")
            io.write_text(f"{base}.csv", by_count_csv(bc))
            by_count_plot(bc, f"{base}.png")
        parts.append(f"AUROC x100 by {count_field} count, {d}:\n\n{text}")
    for d, runs in em_runs.items():
        base = results_dir / d / "emmia_iterations"
        text = emmia_markdown(runs)
        if write:
            io.write_text(f"{base}.md", text + "\n")
            emmia_plot(runs, f"{base}.png", d)
        parts.append(f"EM-MIA, AUROC x100 after each iteration, {d}:\n\n{text}")
    if write:
        execution.mark_output(output, fp)
    return "\n\n".join(parts)
