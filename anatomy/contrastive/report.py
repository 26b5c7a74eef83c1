"""Tables of pipeline E's outputs (for ``make demo`` and the README)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from anatomy import io


def filter_table(outputs: Sequence[str | os.PathLike], label_key: str = "planted") -> str:
    """A Markdown table of consistency-filter runs (``filter_pairs.py --label_key``): per run
    k, kept / rows, the share of true pairs kept (label null or "duplicate"), of planted
    mismatches removed, and of planted duplicate rows kept."""
    lines = ["| run | k | kept / rows | true pairs kept | mismatches removed | "
             "duplicate rows kept |", "|---|---:|---:|---:|---:|---:|"]
    for out in outputs:
        r = io.read_json(Path(out) / "report.json")
        lab = r.get("labels", {}).get(label_key, {})
        true_rows = sum(c["rows"] for v, c in lab.items() if v != "mismatch")
        true_kept = sum(c["kept"] for v, c in lab.items() if v != "mismatch")
        mis = lab.get("mismatch", {"rows": 0, "kept": 0})
        dup = lab.get("duplicate", {"rows": 0, "kept": 0})

        def pct(a: int, b: int) -> str:
            return f"{100 * a / b:.1f}%" if b else "-"

        name = Path(out).name + (" (by position, as published)" if r["by_position"] else "")
        lines.append(f"| {name} | {r['k']} | {r['kept']} / {r['rows']} | "
                     f"{pct(true_kept, true_rows)} | {pct(mis['rows'] - mis['kept'], mis['rows'])}"
                     f" | {pct(dup['kept'], dup['rows'])} |")
    return "\n".join(lines)


def negatives_line(out: str | os.PathLike) -> str:
    """One line on a mining run: rows, negatives per row, fills, false negatives dropped,
    repeated pairs, empty texts skipped, and the leak check."""
    r = io.read_json(Path(out) / "report.json")
    r = r.get("negatives", r)
    c, per, leaks = r["counts"], r["negatives_per_row"], r["leaks"]
    empty = r.get("empty_texts", {})
    return (f"{r['rows_written']} rows mined ({r['queries']} queries, corpus {r['corpus']}): "
            f"negatives per row {per['mean']} (min {per['min']}, max {per['max']}); "
            f"{c['excluded_positive']} hits excluded as positives or their duplicates, "
            f"{c['excluded_query']} as the query; {c['relative_margin']} removed by the relative "
            f"margin; {c['filled_negatives']} random fill-ups ({c['unfillable_groups']} queries "
            "left short: no document passes the margin); "
            f"{c.get('false_negatives', 0)} at or above their positive dropped (contrastors' "
            f"post-filter); {r.get('repeated_pairs', 0)} repeated (query, positive) rows "
            f"written once (ST formats); {empty.get('rows_skipped', 0)} rows with an empty "
            f"query or document skipped; "
            f"{leaks['negatives_equal_to_a_positive']} negatives equal a positive, "
            f"{leaks['negatives_duplicating_a_positive_or_query']} duplicate one")
