"""Membership attacks on a labelled dataset (OLMoMIA step 5, em-mia's ``run.py`` + ``emmia.py``).

One batched :func:`anatomy.lm.token_stats` pass of the target model feeds every one-pass score
(:func:`anatomy.scores.all_scores`: loss, zlib, Min-K% and Min-K%++ for k in 10..50), one
pass of a reference model adds ``ref`` = LL(target) - LL(ref) (Carlini et al. 2021), and
EM-MIA (Kim et al. 2024, arXiv 2410.07582) runs on the ReCaLL matrix of the dataset's own
texts as prefixes (:func:`anatomy.mia.emmia.recall_matrix`, prefix KV cache reused), started
from a baseline score (default Min-K%++ 20%, as in the paper's headline runs). Metrics are
em-mia's ``eval.py`` (:func:`anatomy.metrics.summarize`). Every score: higher = member.

Under ``torchrun`` the one-pass scores are sharded by whole length-sorted batches of the
single-process plan (so every batch, its padding included, is the one a single process would
run) and the ReCaLL matrix by prefixes; :func:`anatomy.lm.gather_ordered` reassembles both,
so every rank gets exactly the single-process result.

Outputs (:func:`run_mia`): ``OUTPUT_DIR/DATASET/REVISION/scores.jsonl`` (per example: the
record's fields with ``input`` replaced by its index, plus ``scores``) and ``metrics.json``
(per score: AUROC, TPR@0.1/1/5% FPR, balanced accuracy; plus the run's config).
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.io import InputError
from anatomy.scores import DEFAULT_KS

log = logging.getLogger("anatomy")

METHODS = ("loss", "zlib", "mink", "minkpp", "ref", "emmia")
DEFAULT_EMMIA_INIT = "minkpp_20"


# ---------------------------------------------------------------------------------------
# inputs


def check_records(records: Sequence[dict[str, Any]], source: io.PathLike | None = None
                  ) -> np.ndarray:
    """Labels (int8, 1 = member) of records with a string ``input`` and a 0/1 ``label``.

    Raises InputError naming the record for a bad field, and when a class is missing (no
    AUROC without members and non-members).
    """
    labels = np.zeros(len(records), dtype=np.int8)
    for i, rec in enumerate(records):
        if not isinstance(rec.get("input"), str):
            raise InputError(source, f'record {i + 1}: "input" must be a string')
        lab = rec.get("label")
        if isinstance(lab, bool) or lab not in (0, 1):
            raise InputError(source, f'record {i + 1}: "label" must be 0 or 1, got {lab!r}')
        labels[i] = int(lab)
    if len(records) == 0 or labels.all() or not labels.any():
        raise InputError(source, f"needs members (label 1) and non-members (label 0); found "
                                 f"{int(labels.sum())} and {int((labels == 0).sum())}")
    return labels


def score_names(methods: Iterable[str], ks: Sequence[float] = DEFAULT_KS) -> list[str]:
    """Score keys of the methods, in :data:`METHODS` order (``mink`` -> ``mink_10`` ...)."""
    methods = set(methods)
    names: list[str] = []
    for m in METHODS:
        if m in methods:
            names += [f"{m}_{k:g}" for k in ks] if m in ("mink", "minkpp") else [m]
    return names


def _resolve_methods(methods: Iterable[str] | None, has_ref: bool) -> list[str]:
    if methods is None:  # everything that can run: ref only with a reference model
        return [m for m in METHODS if m != "ref" or has_ref]
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError(None, f'unknown method "{bad[0]}" (choose from {", ".join(METHODS)})')
    if "ref" in methods and not has_ref:
        raise InputError(None, 'method "ref" needs a reference model (--ref_model)')
    return methods


# ---------------------------------------------------------------------------------------
# sharded passes


def sharded_token_stats(model, token_ids: Sequence[Sequence[int]], batch_size: int = 16,
                        progress: bool = True) -> list:
    """:func:`anatomy.lm.token_stats` of every text, each rank running whole batches.

    The single-process plan (length-sorted batches) is split batch-wise with
    :func:`anatomy.lm.shard_indices`; a rank's texts in ascending input order re-sort into
    exactly its batches, so results are bit-identical to one process.
    """
    from anatomy.lm import _length_batches, dist_info, gather_ordered, shard_indices, token_stats

    rank, world_size = dist_info()
    if world_size == 1:
        return token_stats(model, token_ids, batch_size=batch_size, progress=progress)
    batches = _length_batches([len(t) for t in token_ids], batch_size)
    mine = sorted(i for b in shard_indices(len(batches), rank, world_size) for i in batches[b])
    stats = token_stats(model, [token_ids[i] for i in mine], batch_size=batch_size,
                        progress=progress)
    return gather_ordered(stats, mine, len(token_ids))


def sharded_recall_matrix(model, prefix_ids: Sequence[Sequence[int]],
                          target_ids: Sequence[Sequence[int]], target_ll: np.ndarray,
                          batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """:func:`anatomy.mia.emmia.recall_matrix`, rows (prefixes) sharded over ranks."""
    from anatomy.lm import dist_info, gather_ordered, shard_indices
    from anatomy.mia.emmia import recall_matrix

    rank, world_size = dist_info()
    mine = shard_indices(len(prefix_ids), rank, world_size)
    rows = recall_matrix(model, [prefix_ids[i] for i in mine], target_ids, batch_size=batch_size,
                         progress=progress, target_ll=target_ll)
    return np.stack(gather_ordered(list(rows), mine, len(prefix_ids)))


# ---------------------------------------------------------------------------------------
# EM-MIA


def em_mia_subset(recall: np.ndarray, init_scores: np.ndarray, n_iter: int = 10) -> np.ndarray:
    """EM-MIA when the prefixes are a subset of the targets (``recall`` is [m, n], m < n).

    em-mia's NegPref update f(p) = -r(p) scores only texts that are prefixes, so with a
    prefix subset every target x is scored by the prefixes' ReCaLL rows instead, each
    weighted by how well it currently works as a ReCaLL prefix (a prefix-score-weighted
    version of em-mia's ``ReCaLL-Avg``):

    1. pseudo-labels y = f > median(f) over all n targets;
    2. r(p) = AUROC(ReCaLL_p(.), y) (:func:`anatomy.mia.emmia.prefix_scores`);
    3. f(x) = mean_p (r(p) - 1/2) (rank_p(x) / n - 1/2), rank_p the rank of x in row p.

    A non-member prefix (r > 1/2) votes for its ranking, an uninformative member prefix
    (r ~ 1/2) has no weight. Higher = member.
    """
    from scipy.stats import rankdata

    from anatomy.mia.emmia import prefix_scores

    m = np.asarray(recall, dtype=np.float64)
    f = np.nan_to_num(np.asarray(init_scores, dtype=np.float64).copy(), nan=0.0)
    if m.ndim != 2 or f.shape != (m.shape[1],):
        raise ValueError(f"ReCaLL matrix {m.shape} does not match {f.size} initial scores")
    centred = rankdata(m, axis=1) / m.shape[1] - 0.5
    for _ in range(n_iter):
        r = np.nan_to_num(prefix_scores(m, f), nan=0.5)
        f = (r - 0.5) @ centred / m.shape[0]
    return f


def emmia_scores(model, token_ids: Sequence[Sequence[int]], init_scores: np.ndarray,
                 target_ll: np.ndarray, n_prefix: int | None = None, n_iter: int = 10,
                 seed: int = 42, batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """EM-MIA scores of every text, the prefixes being the texts themselves.

    All texts (em-mia's ReCaLL-all + NegPref, :func:`anatomy.mia.emmia.em_mia`), or a
    subset of ``n_prefix`` drawn with ``np.random.default_rng(seed)`` (:func:`em_mia_subset`).
    """
    from anatomy.mia.emmia import em_mia

    n = len(token_ids)
    if n_prefix is None or n_prefix >= n:
        prefix_idx = np.arange(n)
    elif n_prefix < 2:
        raise InputError(None, f"n_prefix must be at least 2, got {n_prefix}")
    else:
        prefix_idx = np.sort(np.random.default_rng(seed).choice(n, n_prefix, replace=False))
    recall = sharded_recall_matrix(model, [token_ids[i] for i in prefix_idx], token_ids,
                                   target_ll, batch_size=batch_size, progress=progress)
    if len(prefix_idx) == n:
        return em_mia(recall, init_scores, n_iter=n_iter)
    return em_mia_subset(recall, init_scores, n_iter=n_iter)


# ---------------------------------------------------------------------------------------
# scoring


def score_records(records: Sequence[dict[str, Any]], model, tokenizer, ref_model=None,
                  ref_tokenizer=None, methods: Iterable[str] | None = None,
                  max_tokens: int | None = None, batch_size: int = 16,
                  emmia_init: str = DEFAULT_EMMIA_INIT, emmia_iters: int = 10,
                  n_prefix: int | None = None, seed: int = 42, progress: bool = True,
                  ks: Sequence[float] = DEFAULT_KS
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Score labelled records with every requested attack; ``(rows, metrics)``.

    Args:
        records: dicts with ``input`` (text) and ``label`` (1 member, 0 non-member); other
            fields are kept in the rows.
        ref_tokenizer: the reference model's tokenizer (default: ``tokenizer``).
        methods: subset of :data:`METHODS`; None = all, ``ref`` only with a ``ref_model``.
        max_tokens: truncate texts to this many tokens (zlib then uses the decoded
            truncated text, so every score sees the same text).
        emmia_init: score that starts EM-MIA (any score name, e.g. ``loss``, ``ref``).
        n_prefix: EM-MIA prefixes: all texts (None) or a seeded subset of this many.

    Returns:
        rows: per record, its fields with ``input`` replaced by ``index``, plus
            ``scores`` {name: float} for :func:`score_names` of the methods;
        metrics: {score name: :func:`anatomy.metrics.summarize`}.
    """
    from anatomy.lm import tokenize_texts
    from anatomy.metrics import summarize
    from anatomy.scores import all_scores, loss, reference

    records = list(records)
    labels = check_records(records)
    methods = _resolve_methods(methods, ref_model is not None)
    names = score_names(methods, ks)
    texts = [r["input"] for r in records]
    ids = tokenize_texts(tokenizer, texts, max_tokens)
    _require_tokens(ids, "target")
    if max_tokens is not None:  # the text the model actually scores
        full = tokenize_texts(tokenizer, texts)
        texts = [tokenizer.decode(t) if len(t) < len(f) else x
                 for t, f, x in zip(ids, full, texts, strict=True)]
    stats = sharded_token_stats(model, ids, batch_size=batch_size, progress=progress)
    per = [all_scores(s, t, ks) for s, t in zip(stats, texts, strict=True)]
    if ref_model is not None and ("ref" in methods or emmia_init == "ref"):
        ref_ids = tokenize_texts(ref_tokenizer or tokenizer, texts, max_tokens)
        _require_tokens(ref_ids, "reference")
        ref_stats = sharded_token_stats(ref_model, ref_ids, batch_size=batch_size,
                                        progress=progress)
        for p, s in zip(per, ref_stats, strict=True):
            p["ref"] = float(reference(p["loss"], loss(s.logprob)))
    if "emmia" in methods:
        if emmia_init not in per[0]:
            raise InputError(None, f'EM-MIA init "{emmia_init}" is not a score here '
                                   f'(choose from {", ".join(per[0])})')
        init = np.array([p[emmia_init] for p in per])
        target_ll = np.array([p["loss"] for p in per])
        em = emmia_scores(model, ids, init, target_ll, n_prefix=n_prefix, n_iter=emmia_iters,
                          seed=seed, batch_size=batch_size, progress=progress)
        for p, v in zip(per, em, strict=True):
            p["emmia"] = float(v)
    rows = []
    for i, (rec, p) in enumerate(zip(records, per, strict=True)):
        row = {("index" if k == "input" else k): (i if k == "input" else v)
               for k, v in rec.items()}
        row["scores"] = {n: p[n] for n in names}
        rows.append(row)
    metrics = {n: summarize([p[n] for p in per], labels) for n in names}
    return rows, metrics


def _require_tokens(ids: Sequence[Sequence[int]], which: str) -> None:
    short = [i for i, t in enumerate(ids) if len(t) < 2]
    if short:
        raise InputError(None, f"record {short[0] + 1} (and {len(short) - 1} more) has fewer "
                               f"than 2 {which}-model tokens: nothing to score")


# ---------------------------------------------------------------------------------------
# the script's entry point


@dataclass
class MiaRun:
    out_dir: Path
    metrics: dict[str, Any]  # the metrics.json document: {"config": ..., "metrics": ...}
    skipped: bool = False
    rank: int = 0  # under torchrun only rank 0 writes and reports


def versions() -> dict[str, str]:
    """Package versions recorded with results (they can change the last digits)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("data-anatomy", "torch", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def run_dir(output_dir: io.PathLike, dataset: str, model: io.PathLike,
            revision: str | None) -> Path:
    """``OUTPUT_DIR/DATASET/<revision, else the model's base name>``."""
    return Path(output_dir) / dataset / (revision or Path(str(model).rstrip("/")).name)


def run_mia(dataset: str, *, data_dir: io.PathLike = "data", target_model: str | None = None,
            revision: str | None = None, step: int | None = None, ref_model: str | None = None,
            ref_revision: str | None = None, ref_step: int | None = None,
            methods: Iterable[str] | None = None, output_dir: io.PathLike = "results",
            batch_size: int = 16, max_tokens: int | None = None, dtype: str = "float32",
            device: str = "auto", n_prefix: int | None = None, world: io.PathLike = "data/world",
            emmia_init: str = DEFAULT_EMMIA_INIT, seed: int = 42, progress: bool = True,
            overwrite: bool = False) -> MiaRun:
    """Score ``data_dir/DATASET.jsonl`` and write ``scores.jsonl`` and ``metrics.json``.

    ``target_model`` defaults to the miniworld's ``WORLD/model`` (checkpoint subfolders
    picked by ``revision``/``step``). An existing ``metrics.json`` (written last) means the
    run is done: it is returned, not redone, unless ``overwrite``. Only rank 0 writes.
    """
    from anatomy.lm import dist_info, load_causal_lm, load_tokenizer, resolve_revision

    data_path = io.require_file(Path(data_dir) / f"{dataset}.jsonl", "dataset")
    if target_model is None:
        target_model = str(Path(world) / "model")
        if not Path(target_model).is_dir():
            raise InputError(world, "no miniworld model here: pass --target_model (or --world)")
    rev = resolve_revision(target_model, revision, step)
    ref_rev = resolve_revision(ref_model, ref_revision, ref_step) if ref_model else None
    out = run_dir(output_dir, dataset, target_model, rev)
    if (out / "metrics.json").is_file() and not overwrite:
        log.info("%s exists, skipping (pass --overwrite to redo)", out / "metrics.json")
        return MiaRun(out, io.read_json(out / "metrics.json"), skipped=True)
    records = io.read_jsonl(data_path, required=("input", "label"))
    labels = check_records(records, data_path)
    model = load_causal_lm(target_model, revision=rev, dtype=dtype, device=device)
    tok = load_tokenizer(target_model, revision=rev)
    ref = ref_tok = None
    if ref_model:
        ref = load_causal_lm(ref_model, revision=ref_rev, dtype=dtype, device=device)
        ref_tok = load_tokenizer(ref_model, revision=ref_rev)
    methods = _resolve_methods(methods, ref is not None)
    try:
        rows, metrics = score_records(records, model, tok, ref, ref_tok, methods=methods,
                                      max_tokens=max_tokens, batch_size=batch_size,
                                      emmia_init=emmia_init, n_prefix=n_prefix, seed=seed,
                                      progress=progress)
    except InputError as e:
        raise InputError(data_path, e.problem) from None
    config = {"dataset": dataset, "data_file": str(data_path), "model": str(target_model),
              "revision": rev, "ref_model": ref_model, "ref_revision": ref_rev,
              "methods": methods, "emmia_init": emmia_init if "emmia" in methods else None,
              "n_prefix": n_prefix, "max_tokens": max_tokens, "batch_size": batch_size,
              "dtype": dtype, "seed": seed, "n_examples": len(records),
              "n_members": int(labels.sum()), "versions": versions()}
    doc = {"config": config, "metrics": metrics}
    rank = dist_info()[0]
    if rank == 0:
        io.write_jsonl(out / "scores.jsonl", rows)
        io.write_json(out / "metrics.json", doc)
    return MiaRun(out, doc, rank=rank)


def metrics_markdown(metrics: dict[str, dict[str, float]]) -> str:
    """A small Markdown table: AUROC and TPR@1%FPR (percent, one decimal) per score."""
    lines = ["| method | AUROC | TPR@1%FPR |", "|---|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {_pct(m.get('auroc'))} | {_pct(m.get('tpr@1%'))} |")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"
