"""Pipeline C's printed tables: category shares, model metrics, and the miniworld's check.

The world check reads the truth file's plant copies (:meth:`anatomy.truth.World.
planted_sequence_starts`) and compares them with the combined feature table: for the
samples that start with a planted passage, how many are memorized at each checkpoint,
whether ``sequence_duplicates`` equals the number of trained copies holding the continuation
inside one sequence, and whether templates are flagged.
"""

from __future__ import annotations

import numpy as np

from anatomy.memorization.table import ID


def markdown(df, floatfmt: str = ".3f") -> str:
    """A small DataFrame as a GitHub markdown table (no index)."""
    from pandas.api.types import is_numeric_dtype

    cols = list(df.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |",
           "|" + "|".join("---:" if is_numeric_dtype(df[c]) and df[c].dtype != bool else "---"
                          for c in cols) + "|"]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float | np.floating):
                cells.append("nan" if np.isnan(v) else format(float(v), floatfmt))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def world_check(world, combined, prompt_len: int = 32, cont_len: int = 32):
    """One row per plant kind: sampled sequence starts, memorized share per checkpoint,
    duplicates equal to the truth's count, templating flags, and the category each plant is
    built for (truth: ``intended``) against the category the taxonomy gives its memorized
    samples (``taxonomy.categorize`` of the measured features), at every checkpoint."""
    import pandas as pd

    from anatomy.memorization.taxonomy import categorize
    from anatomy.truth import World

    w = World.open(world)
    has_ck = "checkpoint" in combined.columns
    ckpts = list(dict.fromkeys(combined["checkpoint"])) if has_ck else [None]
    rows = []
    for kind in w.memorization_plants:
        plants = w.planted_sequence_starts(kind, prompt_len, cont_len)
        intended = {i: p.get("intended") for p in plants for i in p["sequence_ids"]}
        exp = {i: p["expected_duplicates"] for p in plants for i in p["sequence_ids"]}
        ids = [i for i in exp if i in set(combined[ID])]
        if not ids:
            continue
        built = sorted({str(p.get("intended", "-")) for p in plants})
        row: dict = {"plant": kind, "built for": "/".join(built), "passages": len(plants),
                     "samples": len(ids)}
        for ck in ckpts:
            sub = combined[combined["checkpoint"] == ck] if has_ck else combined
            sub = sub.set_index(ID).loc[ids]
            mem = sub[sub["memorization_score"] == 1.0]
            row[f"memorized {ck}" if ck else "memorized"] = f"{len(mem)}/{len(ids)}"
            if "is_incrementing" in sub and "sequence_duplicates" in sub:
                # "-" where nothing is memorized, so every row has every column, in order
                agree = "-"
                if len(mem):
                    got = categorize(mem).to_numpy()
                    want = np.array([intended[i] for i in mem.index])
                    agree = f"{int(sum(g == x for g, x in zip(got, want, strict=True)))}/" \
                            f"{len(mem)}"
                row[f"as intended {ck}" if ck else "as intended"] = agree
        one = (combined.drop_duplicates(ID).set_index(ID).loc[ids])
        if "sequence_duplicates" in one:
            match = one["sequence_duplicates"].to_numpy() == np.array([exp[i] for i in ids])
            row["duplicates = truth"] = f"{int(match.sum())}/{len(ids)}"
            row["median duplicates"] = float(np.median(one["sequence_duplicates"]))
        if "is_incrementing" in one:
            row["templating"] = f"{int((one['is_incrementing'] | one['is_repeating']).sum())}" \
                                f"/{len(ids)}"
        rows.append(row)
    return pd.DataFrame(rows)
