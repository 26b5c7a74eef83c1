"""``get_indices``: one entry point for every selection method, computed on any pool.

Mirrors DsDm's ``get_indices(method, selection_size, target_task)`` (``dsdm/selections.py``),
which only reads released score files; here each method computes its scores on the given pool
and target (or reads given scores, e.g. the released ones), then applies its rule:

=========== ========== ============================================ ====================
method      target     rule on the scores                            nested across n
=========== ========== ============================================ ====================
dsdm        required   top-n of the TRAK datamodel score              yes
classifier  required   GPT-3's Pareto(9) keep rule, or top-n          top-n only
dsir        required   Gumbel top-k of the log importance weights     no (seeded)
random      ignored    uniform without replacement                    no (seeded)
semdedup    ignored    top-n of 1 − max earlier similarity (ε so n    yes (uniform within
                       remain), or uniform within a kept fraction     the kept set: no)
=========== ========== ============================================ ====================

Returned: ``n`` unique in-range int64 indices, best first (ties by index). Untargeted methods
refuse a target (as the published asserts do) unless ``ignore_target=True``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution
from anatomy.io import InputError, PathLike
from anatomy.selection import indices as rules
from anatomy.selection.pool import CandidatePool, open_pool
from anatomy.selection.targets import Target, load_target

TARGETED = ("dsdm", "classifier", "dsir")
UNTARGETED = ("random", "semdedup")
METHODS = TARGETED + UNTARGETED
_ONE = execution.Ranks()


def check_method(method: str, target: Any, ignore_target: bool = False) -> None:
    if method not in METHODS:
        raise InputError(None, f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method in TARGETED and target is None:
        raise InputError(None, f"{method} is a targeted method: give a target")
    if method in UNTARGETED and target is not None and not ignore_target:
        raise InputError(None, f"{method} is untargeted: it takes no target (the published "
                               "get_indices asserts this too)")


def resolve_pool(pool: CandidatePool | PathLike, **kw: Any) -> CandidatePool:
    return pool if isinstance(pool, CandidatePool) else open_pool(pool, **kw)


def resolve_target(target: Target | str | None, pool: CandidatePool | None,
                   world: PathLike | None = None, text_key: str = "text") -> Target | None:
    if target is None or isinstance(target, Target):
        return target
    w = world if world is not None else (pool.world if pool is not None else None)
    t = load_target(str(target), w, text_key)
    if not t.texts():
        raise InputError(None, f"target {target!r} is empty")
    return t


def method_scores(method: str, pool: CandidatePool, target: Target | None, *, seed: int = 0,
                  work_dir: PathLike = "data/selections/work", ranks: execution.Ranks = _ONE,
                  overwrite: bool = False, merge: bool = False, progress: bool = False,
                  **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-candidate scores (float32, higher = keep, NaN = no score) and what made them.

    A text pool's empty records get NaN, whatever the method (they are never selected), and
    ``info["empty_rows"]`` counts them."""
    s, info = _method_scores(method, pool, target, seed=seed, work_dir=work_dir, ranks=ranks,
                             overwrite=overwrite, merge=merge, progress=progress, **options)
    empty = pool.empty_rows
    if len(empty):
        s = np.array(s, dtype=np.float32, copy=True)
        s[empty] = np.nan
    info["empty_rows"] = int(len(empty))
    return s, info


def random_indices(pool: CandidatePool | None, n_rows: int, n: int, seed: int) -> np.ndarray:
    """A uniform draw of ``n`` rows (seeded), never an empty record of a text pool."""
    among = pool.selectable() if pool is not None and len(pool.empty_rows) else None
    return rules.uniform(n_rows, n, seed, among)


def _method_scores(method: str, pool: CandidatePool, target: Target | None, *, seed: int = 0,
                   work_dir: PathLike = "data/selections/work", ranks: execution.Ranks = _ONE,
                   overwrite: bool = False, merge: bool = False, progress: bool = False,
                   **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    check_method(method, target, ignore_target=True)
    work = Path(work_dir)
    if method == "random":
        return np.full(len(pool), np.nan, np.float32), {"rule": "uniform"}
    if method in TARGETED and (target is None or not target.texts()):
        raise InputError(None, f"{method}: the target has no texts")
    if method == "dsir":
        from anatomy.selection.dsir import dsir_scores
        from anatomy.selection.targets import groups_digest

        opts = _pick(options, ("mode", "min_example_length", "num_buckets", "ngrams", "laplace",
                               "hash"))
        # both passes as map steps over row blocks (ranks, parts, resume), cached by pool,
        # target and flags
        pid = execution.fingerprint("dsir_pool", None, {"pool": pool.identity()}).digest()[:16]
        tid = groups_digest(target.groups)
        # the flags name the work file too: another --dsir_min_length or --dsir_mode is
        # another file, never a clash with the first run's
        fid = execution.fingerprint("dsir_flags", None, _jsonable(opts)).digest()[:8]
        s, info = dsir_scores(pool, target.source_texts(), ranks=ranks,
                              output=work / "dsir" / f"{pid}-{tid}-{fid}.npy", pool_id=pid,
                              target_id=tid, overwrite=overwrite, merge=merge,
                              progress=progress, **opts)
        if s is None:  # this rank's share is done; the last rank merges and selects
            raise _Waiting(None)
        return np.asarray(s, np.float32), {"rule": "gumbel_top_k", **_jsonable(info)}
    if method == "classifier":
        from anatomy.selection.classifier import classifier_scores

        s = classifier_scores(pool, target.source_texts(), seed=seed,
                              **_pick(options, ("negatives",)))
        return np.asarray(s, np.float32), {"rule": options.get("rule", "pareto")}
    if method == "semdedup":
        from anatomy.selection.semdedup import semdedup_embeddings, semdedup_scores

        emb_opts = _pick(options, ("model", "kind", "batch_size", "max_length"))
        ident = execution.fingerprint("semdedup_embeddings", None,
                                      {"pool": pool.identity(), **emb_opts}).digest()[:16]
        emb = semdedup_embeddings(pool, out=work / "embeddings" / f"{ident}.npy", ranks=ranks,
                                  progress=progress, overwrite=overwrite, merge=merge,
                                  **emb_opts)
        if emb is None:  # this rank's share is done; the last rank merges and selects
            raise _Waiting(None)
        k = options.get("n_clusters") or max(1, int(round(np.sqrt(len(pool) / 2))))
        s, info = semdedup_scores(emb, k, seed=options.get("kmeans_seed", 1234),
                                  **_pick(options, ("order", "niter")))
        return np.asarray(s, np.float32), {"rule": "top_n (epsilon so that n remain)",
                                           "n_clusters": k,
                                           "embedder_params": _embedder_params(
                                               emb_opts.get("model")), **_jsonable(info)}
    # dsdm
    from anatomy.selection.dsdm import DsdmConfig, dsdm_scores, pool_features, train_proxies
    from anatomy.selection.training import Arch

    cfg = DsdmConfig(**_pick(options, tuple(f.name for f in fields(DsdmConfig))))
    arch = Arch(**_pick(options.get("arch", {}) or {}, tuple(f.name for f in fields(Arch))))
    models = options.get("proxy_models")
    # folders keyed by what their contents depend on, so a changed flag gets its own folder
    # (rather than "exists from other inputs") and the target-side flags reuse the features
    pdig = execution.fingerprint("dsdm", None, {
        "pool": pool.identity(), "n_proxies": cfg.n_proxies, "fraction": cfg.fraction,
        "epochs": cfg.proxy_epochs, "arch": arch.to_dict(), "seed": seed}).digest()[:12]
    record = None
    if not models:
        models, res = train_proxies(pool, cfg, arch, work / "proxies" / pdig, seed=seed,
                                    ranks=ranks, overwrite=overwrite, progress=progress)
        if not res.final:
            raise _Waiting(res)
        record = str(work / "proxies" / pdig / "proxies.json")
    fdig = execution.fingerprint("dsdm_features", {"models": list(map(str, models))}, {
        "pool": pool.identity(), **{k: getattr(cfg, k) for k in (
            "proj_dim", "proj_seed", "batch_size", "rows_per_unit", "grad_wrt", "device")}}
    ).digest()[:12]
    res = pool_features(pool, models, cfg, work / "features" / f"{pdig}-{fdig}", ranks=ranks,
                        overwrite=overwrite, merge=merge, progress=progress)
    if not res.final:
        raise _Waiting(res)
    s, info = dsdm_scores(pool, target, models, work / "features" / f"{pdig}-{fdig}", cfg)
    return s, {"rule": "top_n", "proxies": [str(m) for m in models],
               "proxies_record": record, **info}


def _embedder_params(model: str | None) -> int | None:
    """The embedder's parameter count from its local safetensors (None if not local)."""
    from anatomy.lm import default_embedder_path
    from anatomy.selection.cost import param_count

    try:
        return param_count(model or default_embedder_path())
    except (FileNotFoundError, OSError, InputError, ValueError):
        return None


class _Waiting(Exception):
    """This rank finished its share of a sharded step; another rank (or --merge) merges."""

    def __init__(self, result: execution.StepResult | None):
        super().__init__("waiting for other ranks")
        self.result = result
        self.missing = result.missing if result is not None else []


def _pick(options: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in names and v is not None}


def _jsonable(info: Any) -> dict[str, Any]:
    if not isinstance(info, dict):
        return {}
    out = {}
    for k, v in info.items():
        if isinstance(v, np.ndarray):
            continue  # per-row arrays (cluster ids) are not provenance
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def select_from_scores(method: str, scores: np.ndarray, n: int, seed: int = 0,
                       rule: str | None = None, keep_fraction: float | None = None,
                       among: np.ndarray | None = None, alpha: float = 9.0) -> np.ndarray:
    """Apply ``method``'s rule to its scores (see the table above)."""
    s = np.asarray(scores)
    if method == "random":
        return rules.uniform(len(s), n, seed, among)
    if method == "dsir":
        ok = len(rules.eligible(s))
        if isinstance(n, int | np.integer) and n > ok:  # name the flag that made them few
            rules.check_n(n, ok, "candidates: rows shorter than --dsir_min_length (words) get "
                                 "no DSIR weight; lower it")
        return rules.gumbel_top_n(s, n, seed)
    if method == "classifier":
        if (rule or "pareto") == "pareto":
            return rules.pareto_keep(s, n, seed, alpha)
        if rule != "topk":
            raise InputError(None, f"classifier rule must be pareto or topk, got {rule!r}")
        return rules.top_n(s, n)
    if method == "semdedup":
        if among is not None:  # the released sdd.pt: uniform within the kept rows
            return rules.uniform(len(s), n, seed, among)
        if keep_fraction is not None:
            from anatomy.selection.semdedup import dsdm_style_select

            return np.asarray(dsdm_style_select(s, keep_fraction, n, seed), dtype=np.int64)
        return rules.top_n(s, n)
    if method == "dsdm":
        return rules.top_n(s, n)
    raise InputError(None, f"unknown method {method!r} (choose from {', '.join(METHODS)})")


def get_indices(method: str, n: int, target: Target | str | None = None,
                pool: CandidatePool | PathLike | None = None, seed: int = 0, *,
                scores: np.ndarray | None = None, ignore_target: bool = False,
                **options: Any) -> np.ndarray:
    """``n`` candidate indices chosen by ``method`` for ``target`` from ``pool``, best first.

    ``scores`` (one per pool row, e.g. :func:`anatomy.selection.published.published_scores`)
    skips the computation. Options go to the method (see :func:`method_scores`) and the rule
    (``rule``, ``keep_fraction``, ``alpha``)."""
    check_method(method, target, ignore_target)
    rules.check_n(n, np.iinfo(np.int64).max)  # a bad n is refused before any work
    if method in UNTARGETED:
        target = None
    rule_opts = {k: options.pop(k) for k in ("rule", "keep_fraction", "alpha", "among")
                 if k in options}
    if scores is None:
        if pool is None:
            raise InputError(None, "give a pool (or precomputed scores)")
        p = resolve_pool(pool)
        t = resolve_target(target, p)
        if method == "random":
            return random_indices(p, len(p), n, seed)
        scores, _ = method_scores(method, p, t, seed=seed, rule=rule_opts.get("rule"),
                                  **options)
    elif method == "random":
        return rules.uniform(len(scores), n, seed)
    return select_from_scores(method, scores, n, seed, **rule_opts)
