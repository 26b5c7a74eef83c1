"""Score estimated training mixtures against a ground-truth spec (``bench/specs/*.yaml``).

Inputs: one or more estimates, each a run folder's ``summary.json`` in any of three formats

* ours (``run_labelshift.py``): ``priors: {cat: {point, mean, ci_lo, ci_hi}}``;
* the published label-shift tool: ``categories: [...]`` and
  ``priors: {point: [...], mean: [...], ci_lo: [...], ci_hi: [...]}`` (lists in category
  order);
* the published Min-K%++ tool: ``categories`` and ``global_mixture_over_sampled_pool``
  (a list in category order, or a mapping), no intervals;

and a spec whose ``category_weights`` (any positive scale, e.g. percent) are renormalised.

Category names are matched case- and punctuation-insensitively (``StackExchange`` =
``stackexchange`` = ``stack_exchange``; a ``RedPajama`` prefix is ignored), plus the
published evaluator's aliases ``Code`` -> GitHub and ``Papers`` -> Arxiv. When either side
has 6 classes (a ``Web`` class, or only one of CommonCrawl / C4) every side is scored on
the 6-class scheme: ``web = commoncrawl + c4`` (interval bounds are summed, a conservative
approximation the published evaluator also makes).

Metrics (mixture.md section 6.4; ``t`` = truth, ``e`` = estimate, both over the K scored
categories, the estimate not renormalised):

* ``accuracy = 1 - L1 / 2`` (one minus the total-variation distance);
* ``acc_tol`` = fraction of categories with ``|e_c - t_c| <= tol`` (the published
  "within-tolerance rate");
* ``l1``, ``l2``, ``max_abs``, ``mean_abs``;
* ``kl = sum_c t_c log((t_c + eps) / (e_c + eps))``, ``eps = 1e-10`` (as published);
* ``coverage`` = fraction of categories whose ``[ci_lo, ci_hi]`` contains ``t_c``, and
  ``ci_width`` the mean interval width (only for estimates with intervals).

Trivial baselines (mixture.md section 4.6), none of which looks at the truth beyond its
category list: ``uniform`` over the scored categories; ``pool_priors``, the sampling pool's
own mixture (e.g. SlimPajama's, given as a spec); ``pool_largest``, all mass on the pool's
largest category (e.g. "all web"). Taking the largest category of the *truth* would leak
the answer, so without a pool that baseline is omitted.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatomy.io import InputError, PathLike, atomic_write, read_json, read_yaml, write_text

log = logging.getLogger("anatomy")

CATEGORIES_7 = ("commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange")
CATEGORIES_6 = ("web", "github", "wikipedia", "books", "arxiv", "stackexchange")
WEB_PARTS = ("commoncrawl", "c4")
ALIASES = {"code": "github", "papers": "arxiv", "book": "books"}
KL_EPS = 1e-10
METRICS = ("accuracy", "acc_tol", "l1", "l2", "kl", "max_abs", "mean_abs", "coverage",
           "ci_width")


def category_key(name: str) -> str:
    """Matching key: lower case, letters and digits only, no ``redpajama`` prefix.

    ``"RedPajamaStackExchange"`` -> ``"stackexchange"``; ``"Common Crawl"`` -> ``"commoncrawl"``.
    """
    k = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return k[len("redpajama"):] if k.startswith("redpajama") and len(k) > 9 else k


# ---------------------------------------------------------------------------------------
# loading


def _weights(path: PathLike, raw: object, what: str) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(path, f"{what} must be a non-empty mapping of category: weight")
    out: dict[str, float] = {}
    seen: dict[str, str] = {}
    for name, w in raw.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise InputError(path, f"{what}: weight of {name!r} is not a finite number: {w!r}")
        if w < 0:
            raise InputError(path, f"{what}: weight of {name!r} is negative ({w})")
        key = category_key(name)
        if key in seen:
            raise InputError(path, f"{what}: categories {seen[key]!r} and {name!r} clash")
        seen[key] = str(name)
        out[str(name)] = float(w)
    return out


def load_spec(path: PathLike) -> dict[str, float]:
    """Ground-truth mixture from a spec: ``category_weights`` renormalised to sum 1.

    Schema ``category-mixture-v1`` (the published tool's): ``name``, ``categories`` (optional;
    must then list exactly the weighted categories), ``category_weights`` (non-negative,
    any scale). The miniworld's ``truth.json`` also works: its ``mixture`` is used when there
    is no ``category_weights``. Raises InputError naming the file for anything else.
    """
    spec = read_yaml(path)  # YAML or JSON
    if not isinstance(spec, Mapping):
        raise InputError(path, 'not a mixture spec (no "category_weights" mapping)')
    key = "category_weights" if "category_weights" in spec else "mixture"
    if key not in spec:
        raise InputError(path, 'not a mixture spec (no "category_weights" mapping)')
    w = _weights(path, spec[key], key)
    cats = spec.get("categories")
    if cats is not None and (not isinstance(cats, list) or {category_key(c) for c in cats}
                             != {category_key(c) for c in w}):
        raise InputError(path, '"categories" does not list exactly the weighted categories')
    total = sum(w.values())
    if total <= 0:
        raise InputError(path, "category_weights sum to zero")
    return {c: v / total for c, v in w.items()}


@dataclass
class Estimate:
    """One method's mixture estimate, optionally with per-category intervals."""

    name: str
    values: dict[str, float]
    ci_lo: dict[str, float] | None = None
    ci_hi: dict[str, float] | None = None
    source: str | None = None
    fmt: str = ""


def _floats(path: PathLike, xs: object, n: int | None, what: str) -> list[float]:
    if not isinstance(xs, list) or (n is not None and len(xs) != n):
        want = "a list" if n is None else f"a list of {n} numbers (one per category)"
        raise InputError(path, f"{what} must be {want}")
    out = []
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise InputError(path, f"{what} holds a non-number {x!r}")
        out.append(float(x))
    return out


def load_priors(path: PathLike, name: str | None = None, field: str = "point") -> Estimate:
    """Read an estimate from a run folder (its ``summary.json``) or a summary file.

    ``field`` picks ``point`` (default) or ``mean`` (the bootstrap mean, which the published
    evaluator prefers) where both exist; the other is the fallback.
    """
    if field not in ("point", "mean"):
        raise ValueError("field must be 'point' or 'mean'")
    p = Path(path)
    f = p / "summary.json" if p.is_dir() else p
    data = read_json(f)
    name = name or (p.name if p.is_dir() else f.parent.name or f.stem)
    if not isinstance(data, Mapping):
        raise InputError(f, "expected a JSON object")
    order = (field, "mean" if field == "point" else "point")
    priors = data.get("priors")
    if isinstance(priors, Mapping) and priors and all(isinstance(v, Mapping)
                                                      for v in priors.values()):
        values, lo, hi = {}, {}, {}
        for cat, d in priors.items():
            key = next((k for k in order if k in d), None)
            if key is None:
                raise InputError(f, f'priors["{cat}"] has neither "point" nor "mean"')
            values[cat] = _floats(f, [d[key]], 1, f'priors["{cat}"].{key}')[0]
            if "ci_lo" in d and "ci_hi" in d:
                lo[cat] = _floats(f, [d["ci_lo"]], 1, f'priors["{cat}"].ci_lo')[0]
                hi[cat] = _floats(f, [d["ci_hi"]], 1, f'priors["{cat}"].ci_hi')[0]
        has_ci = len(lo) == len(values)
        return Estimate(name, values, lo if has_ci else None, hi if has_ci else None, str(f),
                        "ours")
    cats = data.get("categories")
    if isinstance(priors, Mapping) and any(k in priors for k in order):
        if not isinstance(cats, list) or not cats:
            raise InputError(f, 'priors are lists but "categories" is missing')
        key = next(k for k in order if k in priors)
        vals = _floats(f, priors[key], len(cats), f"priors.{key}")
        lo = hi = None
        if priors.get("ci_lo") is not None and priors.get("ci_hi") is not None:
            lo = dict(zip(cats, _floats(f, priors["ci_lo"], len(cats), "priors.ci_lo"),
                          strict=True))
            hi = dict(zip(cats, _floats(f, priors["ci_hi"], len(cats), "priors.ci_hi"),
                          strict=True))
        return Estimate(name, dict(zip(cats, vals, strict=True)), lo, hi, str(f), "labelshift")
    mix = data.get("global_mixture_over_sampled_pool")
    if mix is not None:
        if isinstance(mix, Mapping):
            values = _weights(f, mix, "global_mixture_over_sampled_pool")
        else:
            if not isinstance(cats, list) or not cats:
                raise InputError(f, 'global_mixture_over_sampled_pool is a list but '
                                    '"categories" is missing')
            values = dict(zip(cats, _floats(f, mix, len(cats),
                                            "global_mixture_over_sampled_pool"), strict=True))
        return Estimate(name, values, None, None, str(f), "minkpp")
    raise InputError(f, 'no mixture estimate found (expected "priors" or '
                        '"global_mixture_over_sampled_pool")')


# ---------------------------------------------------------------------------------------
# alignment


def _has_web(names: Sequence[str]) -> bool:
    keys = {category_key(n) for n in names}
    return "web" in keys or (len(keys & set(WEB_PARTS)) == 1)


def needs_web_merge(truth: Sequence[str], estimates: Sequence[Estimate]) -> bool:
    """The published rule: score on 6 classes if any side has ``web`` or only one of
    CommonCrawl / C4 (a 6-class classifier or a merged spec)."""
    return _has_web(truth) or any(_has_web(list(e.values)) for e in estimates)


def merge_web(values: Mapping[str, float]) -> dict[str, float]:
    """``commoncrawl`` + ``c4`` (+ an existing ``web``) -> ``web``, placed where the first of
    them was; other categories keep their order."""
    out: dict[str, float] = {}
    for name, v in values.items():
        if category_key(name) in (*WEB_PARTS, "web"):
            out["web"] = out.get("web", 0.0) + v
        else:
            out[name] = v
    return out


def _match(names: Sequence[str], target: Sequence[str]) -> dict[str, str]:
    """Map each name to the target name with the same key (or alias); unmatched -> absent."""
    by_key = {category_key(t): t for t in target}
    out = {}
    for n in names:
        k = category_key(n)
        if k not in by_key and ALIASES.get(k) in by_key:
            k = ALIASES[k]
        if k in by_key:
            out[n] = by_key[k]
    return out


def align(est: Estimate, categories: Sequence[str], web: bool) -> dict[str, np.ndarray | None]:
    """The estimate (and intervals) as arrays in ``categories`` order.

    Categories the estimate lacks score 0 (logged); categories the truth lacks are an
    InputError (their mass would silently vanish).
    """
    parts = {"values": est.values, "ci_lo": est.ci_lo, "ci_hi": est.ci_hi}
    if web:
        parts = {k: None if v is None else merge_web(v) for k, v in parts.items()}
    vals = parts["values"]
    m = _match(list(vals), categories)
    extra = [n for n in vals if n not in m]
    if extra:
        raise InputError(est.source, f"categories {extra} are not in the ground truth "
                                     f"({', '.join(categories)})")
    if len(set(m.values())) < len(m):
        raise InputError(est.source, "two estimate categories map to the same truth category")
    missing = [c for c in categories if c not in m.values()]
    if missing:
        log.warning("%s: no estimate for %s; scored as 0", est.name, ", ".join(missing))
    out: dict[str, np.ndarray | None] = {}
    for k, d in parts.items():
        if d is None:
            out[k] = None
            continue
        inv = {m[n]: v for n, v in d.items() if n in m}
        out[k] = np.array([inv.get(c, 0.0) for c in categories], dtype=np.float64)
    out["missing"] = missing  # type: ignore[assignment]
    return out


# ---------------------------------------------------------------------------------------
# metrics and baselines


def metrics(truth: np.ndarray, est: np.ndarray, ci_lo: np.ndarray | None = None,
            ci_hi: np.ndarray | None = None, tol: float = 0.02) -> dict[str, float | None]:
    """All metrics of the module docstring for one estimate (arrays in the same order)."""
    t, e = np.asarray(truth, dtype=np.float64), np.asarray(est, dtype=np.float64)
    err = np.abs(e - t)
    l1 = float(err.sum())
    out: dict[str, float | None] = {
        "accuracy": 1.0 - 0.5 * l1,
        "acc_tol": float(np.mean(err <= tol + 1e-12)),
        "l1": l1,
        "l2": float(np.sqrt(np.sum(err ** 2))),
        "kl": float(np.sum(t * np.log((t + KL_EPS) / (e + KL_EPS)))),
        "max_abs": float(err.max()),
        "mean_abs": float(err.mean()),
        "coverage": None,
        "ci_width": None,
    }
    if ci_lo is not None and ci_hi is not None:
        lo, hi = np.minimum(ci_lo, ci_hi), np.maximum(ci_lo, ci_hi)
        out["coverage"] = float(np.mean((lo <= t) & (t <= hi)))
        out["ci_width"] = float(np.mean(hi - lo))
    return out


def trivial_baselines(categories: Sequence[str],
                      pool: Mapping[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Estimates that need no model (see the module docstring): ``uniform``, and with a pool
    mixture ``pool_priors`` (renormalised over ``categories``) and ``pool_largest``."""
    k = len(categories)
    out = {"uniform": dict.fromkeys(categories, 1.0 / k)}
    if pool:
        m = _match(list(pool), categories)
        w = {c: 0.0 for c in categories}
        for n, v in pool.items():
            if n in m:
                w[m[n]] += v
        s = sum(w.values())
        if s > 0:
            out["pool_priors"] = {c: v / s for c, v in w.items()}
            top = max(categories, key=lambda c: w[c])  # first of equals, in category order
            out["pool_largest"] = {c: float(c == top) for c in categories}
    return out


def compare(results: Mapping[str, Estimate], truth: Mapping[str, float],
            pool: Mapping[str, float] | None = None, tol: float = 0.02,
            merge: bool | None = None, baselines: bool = True) -> list[dict]:
    """One row per method, then one per trivial baseline (``kind`` says which).

    ``merge``: score on the 6-class (web) scheme; ``None`` decides by :func:`needs_web_merge`
    over the truth, the results and the pool.
    Baselines are built over the categories actually scored (so 6-class uniform is 1/6).
    Each row holds ``name``, ``kind``, ``categories``, ``truth``, ``estimate``, ``ci_lo``,
    ``ci_hi`` (lists), ``missing`` and the :data:`METRICS`.
    """
    if merge is None:
        sides = list(results.values()) + ([Estimate("pool", dict(pool))] if pool else [])
        web = needs_web_merge(list(truth), sides)
    else:
        web = merge
    t = merge_web(truth) if web else dict(truth)
    cats = list(t)
    tv = np.array([t[c] for c in cats])
    tv = tv / tv.sum()
    todo = list(results.values())
    if baselines:
        pool_t = (merge_web(pool) if web else pool) if pool else None
        todo += [Estimate(n, v, fmt="baseline")
                 for n, v in trivial_baselines(cats, pool_t).items()]
    rows = []
    for est in todo:
        a = align(est, cats, web)
        row = {"name": est.name, "kind": "baseline" if est.fmt == "baseline" else "method",
               **metrics(tv, a["values"], a["ci_lo"], a["ci_hi"], tol),
               "categories": cats, "truth": tv.tolist(), "estimate": a["values"].tolist(),
               "ci_lo": None if a["ci_lo"] is None else a["ci_lo"].tolist(),
               "ci_hi": None if a["ci_hi"] is None else a["ci_hi"].tolist(),
               "missing": a["missing"], "tol": tol}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------
# output


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.4f}"


def format_table(rows: Sequence[Mapping]) -> str:
    """The comparison as a Markdown table (also what the script prints)."""
    tol = rows[0]["tol"] if rows else 0.02
    head = ["method", "kind", "accuracy", f"acc_tol({tol:g})", "L1", "L2", "KL", "max_abs",
            "coverage", "ci_width"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], r["kind"], _fmt(r["accuracy"]), _fmt(r["acc_tol"], True),
                 _fmt(r["l1"]), _fmt(r["l2"]), _fmt(r["kl"]), _fmt(r["max_abs"]),
                 _fmt(r["coverage"], True), _fmt(r["ci_width"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _details(r: Mapping) -> list[str]:
    out = [f"### {r['name']} ({r['kind']})", "",
           "| category | estimate | interval | truth | abs error |", "|---|---|---|---|---|"]
    for i, c in enumerate(r["categories"]):
        ci = "-" if r["ci_lo"] is None else f"[{r['ci_lo'][i]:.4f}, {r['ci_hi'][i]:.4f}]"
        out.append(f"| {c} | {r['estimate'][i]:.4f} | {ci} | {r['truth'][i]:.4f} | "
                   f"{abs(r['estimate'][i] - r['truth'][i]):.4f} |")
    if r["missing"]:
        out.append(f"\nNo estimate for {', '.join(r['missing'])} (scored as 0).")
    return out + [""]


def spec_title(path: PathLike) -> str:
    """A spec's ``name`` (or the file's stem), to label a table scored against it."""
    p = Path(path)
    if p.suffix in (".yaml", ".yml"):
        data = read_yaml(p)
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            return data["name"]
    return p.stem


PLOTS = ("comparison.png", "errors.png")


def write_report(rows: Sequence[Mapping], out_dir: PathLike, title: str = "ground truth",
                 plots: bool = True, report: bool = True) -> list[Path]:
    """Write ``report.md`` (tables, definitions) and ``comparison.png`` / ``errors.png``.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    written = []
    if report and rows:
        r0 = rows[0]
        lines = [f"# Mixture estimates vs {title}", "",
                 f"Scored on {len(r0['categories'])} categories. accuracy = 1 - L1/2; "
                 f"acc_tol = fraction of categories with |error| <= {r0['tol']:g}; "
                 f"KL(truth||estimate) with eps = {KL_EPS:g}; coverage = fraction of "
                 "categories whose interval contains the truth. Baselines use no model "
                 "(uniform; the sampling pool's mixture; all mass on the pool's largest "
                 "category).", "", "## Comparison", "", format_table(rows), "## Details", ""]
        for r in rows:
            lines += _details(r)
        path = out_dir / "report.md"
        write_text(path, "\n".join(lines))
        written.append(path)
    if plots and rows:
        written += _plots(rows, out_dir, title)
    return written


def _plots(rows: Sequence[Mapping], out_dir: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = rows[0]["categories"]
    x = np.arange(len(cats))
    shown = [r for r in rows if r["kind"] == "method"] or list(rows)
    width = 0.8 / (len(shown) + 1)
    paths = []

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(cats)), 4.5))
    ax.bar(x, rows[0]["truth"], width, label="truth", color="black", alpha=0.75)
    for i, r in enumerate(shown, 1):
        est = np.array(r["estimate"])
        yerr = None
        if r["ci_lo"] is not None:
            yerr = np.vstack([np.clip(est - r["ci_lo"], 0, None),
                              np.clip(np.array(r["ci_hi"]) - est, 0, None)])
        ax.bar(x + i * width, est, width, yerr=yerr, capsize=2, label=r["name"])
    ax.set_xticks(x + width * len(shown) / 2, cats, rotation=30, ha="right")
    ax.set_ylabel("share")
    ax.set_title(f"estimated vs {title}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_savefig(fig, out_dir / "comparison.png"))

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(cats)), 4.5))
    for r in rows:
        err = np.abs(np.array(r["estimate"]) - np.array(r["truth"]))
        ax.plot(x, err, "o-" if r["kind"] == "method" else "x--", label=r["name"])
    ax.set_xticks(x, cats, rotation=30, ha="right")
    ax.set_ylabel("absolute error")
    ax.set_title("absolute error per category")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_savefig(fig, out_dir / "errors.png"))
    plt.close("all")
    return paths


def _savefig(fig, path: Path) -> Path:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, metadata={"Software": None})
    return path


def run_benchmark(result_paths: Sequence[PathLike], spec_path: PathLike, tol: float = 0.02,
                  out_dir: PathLike | None = "benchmark_output", plots: bool = True,
                  report: bool = True, pool_priors: PathLike | None = None,
                  merge: bool | None = None, field: str = "point",
                  overwrite: bool = False) -> list[dict]:
    """Load the spec, the estimates and the optional pool; compare; write the report.

    Method names are the run folders' names (made unique with ``#2``, ``#3`` ...). The
    report follows the output policy of :mod:`anatomy.execution` (inputs: the run folders'
    summaries and the specs): unchanged inputs leave it untouched, other inputs or flags are
    refused unless ``overwrite``.
    """
    truth = load_spec(spec_path)
    pool = load_spec(pool_priors) if pool_priors else None
    results: dict[str, Estimate] = {}
    for p in result_paths:
        est = load_priors(p, field=field)
        name, i = est.name, 2
        while name in results:
            name, i = f"{est.name}#{i}", i + 1
        est.name = name
        results[name] = est
    rows = compare(results, truth, pool, tol, merge)
    if out_dir is not None and (plots or report):
        from anatomy import execution

        files = ([Path(out_dir) / "report.md"] if report else []) + \
            ([Path(out_dir) / f for f in PLOTS] if plots else [])
        output = execution.Output(files, Path(out_dir) / "benchmark_evaluation.done.json")
        inputs = {f"estimate{i}": p for i, p in enumerate(result_paths)}
        fp = execution.fingerprint(
            "benchmark_evaluation", {**inputs, "ground_truth": spec_path,
                                     "pool_priors": pool_priors},
            {"tol": tol, "merge": merge, "field": field, "plots": plots, "report": report})
        if execution.check_output(output, fp, overwrite):
            write_report(rows, out_dir, Path(spec_path).stem, plots, report)
            execution.mark_output(output, fp)
    return rows
