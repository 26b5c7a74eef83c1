"""Headline figures over several miniworld seeds: mean and spread, and the label-shift default.

A miniworld depends on its seed and on the machine (the corpus is read from the installed
files; training uses the CPU's bf16 kernels where it has them), so one world's numbers cannot
tell a regression from a different world. This reads the outputs of ``demo.sh`` run on
several worlds (``OUT=data/demo-seedS WORLD=data/world-seedS bash demo.sh``) and prints, per
figure, every world's value and the mean +- standard deviation over the worlds:

- A: AUROC x100 of Loss, Min-K%++ 20% and the blind baseline on the Random, Hard and control
  splits at the first target checkpoint;
- B: the accuracy (1 - L1/2) of every label-shift estimator against the training mixture,
  and of the Min-K%++ arm against its pool's member mixture and the training mixture.

The label-shift default is the estimator with the best mean accuracy over the --select
worlds, reported on the others as held out (the demo world stays out of the choice).

    python benchmarks/world_seeds.py --runs data/demo-seed1 data/demo-seed2 data/demo-seed3 \\
        --select data/demo-seed1 data/demo-seed2 data/demo-seed3 --held_out data/demo \\
        --out data/demo/seeds.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import io  # noqa: E402


def _table_rows(md: str) -> dict[str, dict[str, float]]:
    """``benchmark_evaluation`` table rows: method -> {accuracy, ...} (first table only)."""
    out: dict[str, dict[str, float]] = {}
    head = None
    for line in md.splitlines():
        if not line.startswith("|"):
            if head is not None and out:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "method":
            head = cells
        elif head is not None and not set(cells[0]) <= set("-"):
            out[cells[0]] = {h: _num(v) for h, v in zip(head[1:], cells[1:], strict=False)}
    return out


def _num(v: str) -> float:
    try:
        return float(v.rstrip("%"))
    except ValueError:
        return float("nan")


def _tables(md: str) -> list[str]:
    return [b for b in re.split(r"\n\s*\n", md) if b.lstrip().startswith("|")]


def attack_figures(run: Path) -> dict[str, float]:
    """AUROC x100 at the first checkpoint: the first table of attacks.md."""
    first = _tables((run / "attacks.md").read_text())[0].splitlines()
    splits = [c.strip() for c in first[0].strip("|").split("|")][1:]
    out = {}
    for line in first[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        for split, v in zip(splits, cells[1:], strict=True):
            split = split.rsplit("_", 1)[-1]  # 64_100_random -> random
            if split in ("random", "hard", "control") and cells[0] in (
                    "Loss", "Min-K%++ 20%", "Blind (bag of words, no model)"):
                out[f"A {cells[0].split(' (')[0]} / {split}"] = _num(v)
    return out


def mixture_figures(run: Path) -> dict[str, float]:
    out = {}
    for name, row in _table_rows((run / "labelshift.md").read_text()).items():
        if name == "uniform":
            out["B uniform vs training mixture"] = row.get("accuracy", float("nan"))
        elif not name.startswith("pool"):
            out[f"B label shift {name}"] = row.get("accuracy", float("nan"))
    for pool in ("matched", "rates"):
        tables = re.split(r"\nagainst ", (run / f"minkpp_{pool}.md").read_text())
        for block in tables[1:]:
            truth = "training mixture" if "members of" not in block.split("\n", 1)[0] \
                else "pool members"
            for name, row in _table_rows(block).items():
                if name.startswith("minkpp"):
                    out[f"B {name} ({pool} pool) vs {truth}"] = row.get("accuracy")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="demo output folders")
    p.add_argument("--select", nargs="*", default=None,
                   help="runs whose mean chooses the label-shift default (default: all)")
    p.add_argument("--held_out", nargs="*", default=[], help="runs reported as held out")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    args = p.parse_args(argv)
    runs = [Path(r) for r in dict.fromkeys([*args.runs, *args.held_out])]
    per: dict[Path, dict[str, float]] = {}
    worlds: dict[Path, str] = {}
    for r in runs:
        if not (r / "attacks.md").is_file() or not (r / "labelshift.md").is_file():
            raise SystemExit(f"{r}: no demo output (run demo.sh with OUT={r})")
        per[r] = {**attack_figures(r), **mixture_figures(r)}
        fig = (r / "figures.md").read_text()
        m = re.search(r"World: (.+)", fig)
        worlds[r] = m.group(1) if m else "?"
    keys = list(dict.fromkeys(k for v in per.values() for k in v))
    lines = ["| figure | " + " | ".join(r.name for r in runs) + " | mean +- sd |",
             "|---|" + "---:|" * (len(runs) + 1)]
    for k in keys:
        vals = np.array([per[r].get(k, np.nan) for r in runs], dtype=float)
        ok = vals[np.isfinite(vals)]
        stat = f"{ok.mean():.3f} +- {ok.std(ddof=1):.3f}" if ok.size > 1 else "-"
        lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {stat} |")
    select = [Path(r) for r in (args.select or args.runs)]
    est = [k for k in keys if k.startswith("B label shift ")]
    means = {k: float(np.mean([per[r][k] for r in select])) for k in est}
    best = max(means, key=means.get)
    text = ["Worlds:", *(f"- {r.name}: {worlds[r]}" for r in runs), "", *lines, "",
            f"Label-shift estimators by mean accuracy over {', '.join(r.name for r in select)}:",
            *(f"- {k[len('B label shift '):]}: {v:.3f}" for k, v in
              sorted(means.items(), key=lambda kv: -kv[1])),
            f"Chosen: {best[len('B label shift '):]}"]
    for r in map(Path, args.held_out):
        text.append(f"Held out ({r.name}): {best[len('B label shift '):]} "
                    f"{per[r][best]:.3f}; best there "
                    f"{max(est, key=lambda k: per[r][k])[len('B label shift '):]} "
                    f"{max(per[r][k] for k in est):.3f}")
    md = "\n".join(text) + "\n"
    print(md, end="")
    if args.out:
        io.write_text(args.out, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
