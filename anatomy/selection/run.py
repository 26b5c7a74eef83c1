"""What ``select_data.py`` does, as one library call: scores, the rule, three output files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.selection import indices as rules
from anatomy.selection.pool import PACKED_SEQ_LEN, CandidatePool
from anatomy.selection.select import (
    _Waiting,
    method_scores,
    random_indices,
    select_from_scores,
)
from anatomy.selection.targets import Target, groups_digest

_ONE = execution.Ranks()
# the options each method's scores depend on (the rest are other methods' flags)
SCORE_OPTIONS = {
    "dsir": ("mode", "min_example_length", "num_buckets", "hash"),
    "classifier": (),
    "semdedup": ("n_clusters", "model", "kind"),
    "dsdm": ("n_proxies", "proxy_models", "fraction", "proxy_epochs", "proj_dim", "proj_seed",
             "lambda_reg", "compat", "scale_inverse", "target_per_token", "batch_size", "arch",
             "device"),
    "random": (),
}
RULE_OPTIONS = {"classifier": ("rule", "alpha"), "semdedup": ("keep_fraction",)}
# how the scores are computed, not what they are (left out of the fingerprint)
RUN_OPTIONS = {"dsdm": ("max_projection_gb",)}


def default_out(method: str, target: str | None, n: int) -> Path:
    name = Path(target).stem if target and ("/" in target or "." in target) else target
    return Path("data/selections") / (f"{method}_{name}_{n}.npy" if name else
                                      f"{method}_{n}.npy")


def companions(out: PathLike) -> tuple[Path, Path, Path]:
    """``F.npy`` -> (``F.npy``, ``F.scores.npy``, ``F.json``)."""
    out = Path(out)
    if out.suffix != ".npy":
        raise InputError(out, "the selection output must be a .npy file")
    stem = str(out)[: -len(".npy")]
    return out, Path(stem + ".scores.npy"), Path(stem + ".json")


def load_scores(path: PathLike) -> np.ndarray:
    p = io.require_file(path, "scores file")
    if str(p).endswith(".pt"):
        from anatomy.selection.published import _load_tensor

        return _load_tensor(p).astype(np.float32)
    a = io.load_npy(p)
    if a.ndim != 1:
        raise InputError(p, f"scores must be 1-D (one per pool row), got shape {a.shape}")
    return a.astype(np.float32)


def select_to_files(method: str, n: int, pool: CandidatePool | None, target: Target | None,
                    out: PathLike, *, seed: int = 0, target_name: str | None = None,
                    scores_file: PathLike | None = None, published_dir: PathLike | None = None,
                    standardize: bool = False, work_dir: PathLike = "data/selections/work",
                    ranks: execution.Ranks = _ONE, overwrite: bool = False,
                    merge: bool = False, progress: bool = True,
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Select and write ``out`` (indices), ``out.scores.npy`` and ``out.json``.

    Returns ``{"status": "done"|"skipped"|"part", "report": str, ...}``."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    out, scores_out, side = companions(out)
    score_opts = {k: options[k] for k in SCORE_OPTIONS.get(method, ()) if k in options}
    rule_opts = {k: options[k] for k in RULE_OPTIONS.get(method, ()) if k in options}
    given = scores_file or published_dir
    inputs = {"scores": scores_file} if scores_file else {}
    if published_dir:
        inputs["published"] = published_dir
    fp = execution.fingerprint(
        "select_data", inputs,
        {"method": method, "n": int(n), "seed": seed, "target": target_name,
         "target_texts": None if target is None else groups_digest(target.groups),
         "pool": pool.identity() if pool is not None else None,
         "score_options": {} if given else score_opts, "rule": rule_opts,
         "standardize": standardize})
    output = execution.Output.file(out, scores_out, side)
    if not execution.check_output(output, fp, overwrite):
        s = execution.recorded_summary(output)
        return {"status": "skipped", **s, "report": s.get("report", "") + " (up to date)"}

    among = None
    info: dict[str, Any] = {}
    if published_dir is not None:
        from anatomy.selection.published import published_scores, published_semdedup

        if method == "semdedup":
            among = published_semdedup(published_dir)
            N = len(pool) if pool is not None else int(among.max()) + 1
            scores = np.full(N, np.nan, np.float32)
            info = {"published": "sdd.pt", "kept": int(len(among))}
        elif method == "random":
            raise InputError(None, "random needs no published scores: give --pool")
        else:
            scores = published_scores(published_dir, method, str(target_name), standardize)
            info = {"published": f"{method}/{target_name}.pt"}
    elif scores_file is not None:
        scores = load_scores(scores_file)
        info = {"scores": str(scores_file)}
    else:
        if pool is None:
            raise InputError(None, "give a --pool (or given scores)")
        try:
            scores, info = method_scores(method, pool, target, seed=seed, work_dir=work_dir,
                                         ranks=ranks, overwrite=overwrite, merge=merge,
                                         progress=progress, **score_opts,
                                         **{k: options[k] for k in RUN_OPTIONS.get(method, ())
                                            if k in options})
        except _Waiting as w:
            return {"status": "part", "report": "", "missing": w.missing}
    if pool is not None and len(scores) != len(pool):
        raise InputError(scores_file or published_dir, f"{len(scores)} scores for a pool of "
                                                       f"{len(pool)} rows")
    if method == "random":
        n_eligible = len(pool.selectable()) if pool is not None else len(scores)
    else:
        n_eligible = len(among) if among is not None else len(rules.eligible(scores))
    if method == "random":
        idx = random_indices(pool, len(scores), n, seed)
    else:
        idx = select_from_scores(method, scores, n, seed, among=among, **rule_opts)
    shares = pool.category_shares(idx) if pool is not None else None
    base = pool.category_shares() if pool is not None else None
    label = f"{method}" + (f" ({target_name})" if target_name else "")
    n_empty = int(len(pool.empty_rows)) if pool is not None else 0
    empty = f"; {n_empty} empty records never selected" if n_empty else ""
    report = (f"{label}: {len(idx)} of {len(scores)} rows ({n_eligible} eligible{empty}) -> "
              f"{out} (+ {scores_out.name}, {side.name})")
    if shares:
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:4]
        report += "\n  categories of the selection: " + ", ".join(
            f"{k} {v:.2f} (pool {base[k]:.2f})" for k, v in top)
    agree = info.get("agreement") or {}
    if agree.get("models", 0) >= 2:
        report += (f"\n  proxies agree at Spearman {agree['mean_pairwise_spearman']:.2f} "
                   f"(mean over pairs): the {agree['models']}-proxy ranking's reliability is "
                   f"{agree['reliability']:.2f} (Spearman-Brown); its LDS: eval_selection.py")
    compute = None
    if pool is not None and not given:
        from anatomy.selection.cost import selection_compute

        compute = selection_compute(method, len(pool), pool.seq_len or PACKED_SEQ_LEN, info,
                                    info.get("proxies_record"), info.get("embedder_params"))
    meta = {"method": method, "target": target_name, "n": int(len(idx)), "seed": seed,
            "compute": compute,
            "pool": pool.source if pool is not None else None,
            "pool_rows": len(scores), "eligible": int(n_eligible), "empty_rows": n_empty,
            "options": {**score_opts, **rule_opts}, "info": info,
            "category_shares": shares, "pool_category_shares": base,
            "nested_across_n": method == "dsdm" or (method == "classifier" and
                                                    rule_opts.get("rule") == "topk") or
            (method == "semdedup" and "keep_fraction" not in rule_opts and among is None)}
    io.save_npy(out, np.asarray(idx, dtype=np.int64))
    io.save_npy(scores_out, np.asarray(scores, dtype=np.float32))
    io.write_json(side, meta)
    summary = {"n": int(len(idx)), "eligible": int(n_eligible), "report": report}
    execution.mark_output(output, fp, summary)
    return {"status": "done", **summary}
