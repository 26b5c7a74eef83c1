"""Membership attacks on a labelled dataset (OLMoMIA step 5, em-mia's ``run.py`` + ``emmia.py``).

One batched :func:`anatomy.lm.token_stats` pass of the target model feeds every one-pass score
(:func:`anatomy.scores.all_scores`: loss, zlib, Min-K% and Min-K%++ for k in 10..50), one
pass of a reference model adds ``ref`` = LL(target) - LL(ref) (Carlini et al. 2021), and
EM-MIA (Kim et al. 2024, arXiv 2410.07582) runs on the ReCaLL matrix of the dataset's own
texts as prefixes (:func:`anatomy.mia.emmia.recall_matrix`, prefix KV cache reused), started
from a baseline score (default Min-K%++ 20%, as in the paper's headline runs). Metrics are
em-mia's ``eval.py`` (:func:`anatomy.metrics.summarize`). Every score: higher = member.

Ranks (``--rank/--world_size``, torchrun, a Slurm array) share the work as units
(:class:`MiaWork`): whole batches of the single-process length-sorted plan (so every batch,
its padding included, is the one a single process runs) and blocks of ReCaLL prefixes; the
last rank to finish merges, so any number of ranks writes the bytes of one.

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

METHODS = ("loss", "zlib", "mink", "minkpp", "ref", "emmia", "recall_wavg", "blind")
# run by default: everything that needs nothing more (ref needs a reference model,
# recall_wavg a prefix count)
DEFAULT_METHODS = ("loss", "zlib", "mink", "minkpp", "emmia", "blind")
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


def _resolve_methods(methods: Iterable[str] | None, has_ref: bool,
                     n_prefix: int | None = None) -> list[str]:
    if methods is None:  # the defaults, plus ref with a reference model
        return [m for m in METHODS if m in DEFAULT_METHODS or (m == "ref" and has_ref)
                or (m == "recall_wavg" and n_prefix is not None)]
    asked = set(methods)
    bad = sorted(asked - set(METHODS))
    methods = [m for m in METHODS if m in asked]
    if bad:
        raise InputError(None, f'unknown method "{bad[0]}" (choose from {", ".join(METHODS)})')
    if "ref" in methods and not has_ref:
        raise InputError(None, 'method "ref" needs a reference model (--ref_model)')
    if "recall_wavg" in methods and n_prefix is None:
        raise InputError(None, 'method "recall_wavg" needs --n_prefix (its prefix count); '
                               "EM-MIA (emmia) always uses every text as a prefix")
    return methods


# ---------------------------------------------------------------------------------------
# EM-MIA


def recall_weighted_avg(recall: np.ndarray, init_scores: np.ndarray,
                        n_iter: int = 10) -> np.ndarray:
    """A prefix-weighted ReCaLL-Avg over a subset of prefixes (``recall`` is [m, n], m < n):
    our own estimator, method ``recall_wavg``, not EM-MIA.

    EM-MIA's NegPref update f(p) = -r(p) scores only texts that are prefixes, so it needs
    every text as a prefix (method ``emmia``). With a prefix subset every target x is scored
    by the prefixes' ReCaLL rows instead, each weighted by how well it currently works as a
    ReCaLL prefix (a prefix-score-weighted version of em-mia's ``ReCaLL-Avg``):

    1. pseudo-labels y = f > median(f) over all n targets;
    2. r(p) = AUROC(ReCaLL_p(.), y) (:func:`anatomy.mia.emmia.prefix_scores`);
    3. f(x) = mean_p (r(p) - 1/2) (rank_p(x) / n - 1/2), rank_p the rank of x in row p.

    A non-member prefix (r > 1/2) votes for its ranking, an uninformative member prefix
    (r ~ 1/2) has no weight. Higher = member.
    """
    from scipy.stats import rankdata

    from anatomy.mia.emmia import clean_scores, prefix_scores

    m = clean_scores(np.asarray(recall, dtype=np.float64))
    f = clean_scores(np.asarray(init_scores, dtype=np.float64))
    if m.ndim != 2 or f.shape != (m.shape[1],):
        raise ValueError(f"ReCaLL matrix {m.shape} does not match {f.size} initial scores")
    centred = rankdata(m, axis=1) / m.shape[1] - 0.5
    for _ in range(n_iter):
        r = np.nan_to_num(prefix_scores(m, f), nan=0.5)
        f = (r - 0.5) @ centred / m.shape[0]
    return f


def prefix_indices(n: int, n_prefix: int | None, seed: int) -> np.ndarray:
    """ReCaLL prefixes: all ``n`` texts (None; EM-MIA's), or a subset of ``n_prefix`` drawn
    with ``np.random.default_rng(seed)``, sorted (``recall_wavg``'s)."""
    if n_prefix is None or n_prefix >= n:
        return np.arange(n)
    if n_prefix < 2:
        raise InputError(None, f"n_prefix must be at least 2, got {n_prefix}")
    return np.sort(np.random.default_rng(seed).choice(n, n_prefix, replace=False))


# ---------------------------------------------------------------------------------------
# scoring, as units


class MiaWork:
    """One dataset scored by one target model, as W-independent units.

    Units, numbered kind after kind (:class:`anatomy.execution.UnitPlan`):

    - ``score``: one batch of the target's length-sorted plan
      (:func:`anatomy.lm.length_batches`): :func:`anatomy.lm.token_stats` of those texts;
    - ``ref``: the same for the reference model (when ``ref`` or a ``ref`` init is asked);
    - ``recall``: a block of ``prefix_block`` EM-MIA prefixes: their rows of LL(x | p)
      (:func:`anatomy.mia.emmia.conditional_lls`), so the ReCaLL matrix resumes by block.

    :meth:`finish` turns the units' results into per-record scores and metrics; dividing by
    LL(x) and EM-MIA happen there, so no unit depends on another.
    """

    def __init__(self, records: Sequence[dict[str, Any]], tokenizer, ref_tokenizer=None, *,
                 has_ref: bool = False, methods: Iterable[str] | None = None,
                 max_tokens: int | None = None, batch_size: int = 16,
                 emmia_init: str = DEFAULT_EMMIA_INIT, emmia_iters: int = 10,
                 n_prefix: int | None = None, seed: int = 42, prefix_block: int = 8,
                 ks: Sequence[float] = DEFAULT_KS, blind_folds: int = 5):
        from anatomy.execution import UnitPlan
        from anatomy.lm import length_batches

        self.records = list(records)
        self.labels = check_records(self.records)
        self.methods = _resolve_methods(methods, has_ref, n_prefix)
        self.ks = tuple(ks)
        self.names = score_names(self.methods, self.ks)
        # several initial scores, as em-mia runs (emmia.py --init): the first is "emmia",
        # each other one "emmia:<score>"
        self.emmia_inits = [x.strip() for x in str(emmia_init).split(",") if x.strip()]
        if not self.emmia_inits:
            raise InputError(None, "--emmia_init names no score")
        if emmia_iters < 1:
            raise InputError(None, f"--emmia_iters must be >= 1, got {emmia_iters}")
        emmia_init = self.emmia_inits[0]
        if "emmia" in self.methods:
            self.names += [f"emmia:{x}" for x in self.emmia_inits[1:]]
        self.emmia_init, self.emmia_iters = emmia_init, emmia_iters
        self.emmia_report: dict[str, Any] = {}
        self.null: dict[str, Any] = {}
        self.batch_size, self.seed, self.blind_folds = batch_size, seed, blind_folds
        if n_prefix is not None and "recall_wavg" not in self.methods:
            raise InputError(None, "--n_prefix sets the prefixes of recall_wavg (not asked "
                                   "for); EM-MIA always uses every text as a prefix")
        self.ids, self.token_source = record_token_ids(self.records, tokenizer, max_tokens)
        _require_tokens(self.ids, "target")
        self.texts = scored_texts(self.records, self.ids, tokenizer, max_tokens)
        self.needs_ref = has_ref and ("ref" in self.methods or "ref" in self.emmia_inits)
        self.ref_ids: list[list[int]] = []
        self.ref_token_source = None
        if self.needs_ref:
            self.ref_ids, self.ref_token_source = record_token_ids(
                self.records, ref_tokenizer or tokenizer, max_tokens)
            _require_tokens(self.ref_ids, "reference")
        if "emmia" in self.methods or "recall_wavg" in self.methods:
            known = {"loss", "zlib", *(f"{m}_{k:g}" for m in ("mink", "minkpp")
                                       for k in self.ks)} | ({"ref"} if self.needs_ref else set())
            for x in self.emmia_inits:
                if x not in known:
                    raise InputError(None, f'EM-MIA init "{x}" is not a score here '
                                           f'(choose from {", ".join(sorted(known))})')
        if prefix_block < 1:
            raise InputError(None, f"prefix_block must be >= 1, got {prefix_block}")
        self.score_batches = length_batches([len(t) for t in self.ids], batch_size)
        self.ref_batches = (length_batches([len(t) for t in self.ref_ids], batch_size)
                            if self.needs_ref else [])
        n = len(self.ids)
        # EM-MIA needs every text as a prefix; recall_wavg alone a seeded subset
        self.subset = (prefix_indices(n, n_prefix, seed) if "recall_wavg" in self.methods
                       else np.zeros(0, np.int64))
        self.prefixes = (np.arange(n) if "emmia" in self.methods else self.subset)
        self.blocks = [self.prefixes[a:a + prefix_block]
                       for a in range(0, len(self.prefixes), prefix_block)]
        self.plan = UnitPlan(score=len(self.score_batches), ref=len(self.ref_batches),
                             recall=len(self.blocks))
        self.model = None  # set (by the caller) before units are computed
        self.ref_model = None

    @property
    def n_units(self) -> int:
        return self.plan.n_units

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.lm import batch_token_stats, pack_token_stats
        from anatomy.mia.emmia import conditional_lls

        kind, i = self.plan.locate(u)
        if kind == "recall":
            block = [self.ids[j] for j in self.blocks[i]]
            return {"lls": conditional_lls(self.model, block, self.ids, self.batch_size,
                                           progress=False)}
        model, ids, batch = ((self.model, self.ids, self.score_batches[i]) if kind == "score"
                             else (self.ref_model, self.ref_ids, self.ref_batches[i]))
        return pack_token_stats(batch_token_stats(model, ids, batch))

    def _stats(self, kind: str, load) -> list:
        from anatomy.lm import unpack_token_stats

        batches = self.score_batches if kind == "score" else self.ref_batches
        out: list = [None] * len(self.ids)
        for i, batch in enumerate(batches):
            for j, st in zip(batch, unpack_token_stats(load(self.plan.unit(kind, i))),
                             strict=True):
                out[j] = st
        return out

    def finish(self, load) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
        """``(rows, metrics)`` from the units (``load(u)`` -> unit result)."""
        from anatomy.metrics import summarize
        from anatomy.mia.emmia import em_mia
        from anatomy.scores import all_scores, loss, reference

        stats = self._stats("score", load)
        per = [all_scores(s, t, self.ks) for s, t in zip(stats, self.texts, strict=True)]
        if self.needs_ref:
            for p, s in zip(per, self._stats("ref", load), strict=True):
                p["ref"] = float(reference(p["loss"], loss(s.logprob)))
        if len(self.blocks):
            init = np.array([p[self.emmia_init] for p in per])
            target_ll = np.array([p["loss"] for p in per])
            lls = np.concatenate([load(self.plan.unit("recall", i))["lls"]
                                  for i in range(len(self.blocks))])
            recall = lls / target_ll[None, :]  # rows: self.prefixes
            if "emmia" in self.methods:
                from anatomy.mia.emmia import trajectory

                for j, x in enumerate(self.emmia_inits):
                    start = np.array([p[x] for p in per])
                    final, hist = em_mia(recall, start, n_iter=self.emmia_iters,
                                         return_history=True)
                    name = "emmia" if j == 0 else f"emmia:{x}"
                    for p, v in zip(per, final, strict=True):
                        p[name] = float(v)
                    self.emmia_report[name] = trajectory(hist, self.labels, x)
            if "recall_wavg" in self.methods:
                rows = recall[np.searchsorted(self.prefixes, self.subset)]
                for p, v in zip(per, recall_weighted_avg(rows, init, self.emmia_iters),
                                strict=True):
                    p["recall_wavg"] = float(v)
        if "blind" in self.methods:
            from anatomy.classifiers import cross_val_scores

            blind = cross_val_scores([r["input"] for r in self.records], self.labels,
                                     spec="bow", folds=self.blind_folds, seed=self.seed)
            for p, v in zip(per, blind, strict=True):
                p["blind"] = float(v)
        rows = []
        for i, (rec, p) in enumerate(zip(self.records, per, strict=True)):
            row = {("index" if k == "input" else k): (i if k == "input" else v)
                   for k, v in rec.items()}
            row["scores"] = {n: p[n] for n in self.names}
            rows.append(row)
        from anatomy.metrics import bootstrap_intervals, null_band

        # every figure with its uncertainty: a bootstrap interval over the split's texts per
        # method, and the split's chance band (it depends on the label counts alone)
        metrics = {n: {**summarize([p[n] for p in per], self.labels),
                       "ci": bootstrap_intervals([p[n] for p in per], self.labels,
                                                 seed=self.seed)}
                   for n in self.names}
        y = np.asarray(self.labels)
        self.null = null_band(int((y == 1).sum()), int((y == 0).sum()), seed=self.seed)
        return rows, metrics


def score_records(records: Sequence[dict[str, Any]], model, tokenizer, ref_model=None,
                  ref_tokenizer=None, methods: Iterable[str] | None = None,
                  max_tokens: int | None = None, batch_size: int = 16,
                  emmia_init: str = DEFAULT_EMMIA_INIT, emmia_iters: int = 10,
                  n_prefix: int | None = None, seed: int = 42, progress: bool = True,
                  ks: Sequence[float] = DEFAULT_KS, prefix_block: int = 8
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Score labelled records with every requested attack, in this process; ``(rows, metrics)``.

    The same units and :meth:`MiaWork.finish` as a sharded ``run_mia.py``, so the numbers
    are the ones any number of ranks writes.

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
    from anatomy.progress import progress as bar

    work = MiaWork(records, tokenizer, ref_tokenizer, has_ref=ref_model is not None,
                   methods=methods, max_tokens=max_tokens, batch_size=batch_size,
                   emmia_init=emmia_init, emmia_iters=emmia_iters, n_prefix=n_prefix,
                   seed=seed, prefix_block=prefix_block, ks=ks)
    work.model, work.ref_model = model, ref_model
    done = {u: work.compute_unit(u) for u in bar(range(work.n_units), "score", "unit",
                                                work.n_units, None if progress else True)}
    return work.finish(done.__getitem__)


def record_token_ids(records: Sequence[dict[str, Any]], tokenizer, max_tokens: int | None
                     ) -> tuple[list[list[int]], str]:
    """The token ids to score, and where they come from.

    The records' own ``input_ids`` (the tokens as trained, from ``sample.py``) when every
    record has them and their ``tokenizer`` digest is this tokenizer's
    (:func:`anatomy.lm.vocab_digest`); otherwise the texts tokenized by ``tokenizer`` (a
    decode/encode round trip that BPE does not always invert), said in the returned source.
    Both truncated to ``max_tokens``.
    """
    from anatomy.lm import tokenize_texts, vocab_digest

    vocab = vocab_digest(tokenizer)
    have = [r.get("input_ids") is not None for r in records]
    if all(have) and all(r.get("tokenizer") == vocab for r in records):
        ids = []
        for i, r in enumerate(records):
            t = r["input_ids"]
            if not isinstance(t, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                  and x >= 0 for x in t):
                raise InputError(None, f'record {i + 1}: "input_ids" must be a list of '
                                       "non-negative integers")
            ids.append(t[:max_tokens] if max_tokens is not None else list(t))
        return ids, "the records' input_ids (the tokens as trained)"
    why = ("the records carry no input_ids" if not any(have) else
           "the records' input_ids are of another vocabulary" if all(have) else
           "some records carry no input_ids")
    return (tokenize_texts(tokenizer, [r["input"] for r in records], max_tokens),
            f"re-tokenized texts ({why})")


def scored_texts(records: Sequence[dict[str, Any]], ids: Sequence[Sequence[int]], tokenizer,
                 max_tokens: int | None) -> list[str]:
    """The text each score sees: the record's, or the decoded ids where ``max_tokens``
    truncated them (zlib then compresses what the model scored)."""
    if max_tokens is None:
        return [r["input"] for r in records]
    return [tokenizer.decode(t) if len(t) == max_tokens else r["input"]
            for r, t in zip(records, ids, strict=True)]


def _require_tokens(ids: Sequence[Sequence[int]], which: str) -> None:
    short = [i for i, t in enumerate(ids) if len(t) < 2]
    if short:
        raise InputError(None, f"record {short[0] + 1} (and {len(short) - 1} more) has fewer "
                               f"than 2 {which}-model tokens: nothing to score")


# ---------------------------------------------------------------------------------------
# the script's entry point


@dataclass
class MiaRun:
    """One (dataset, checkpoint) result of :func:`run_mia` in this process."""

    dataset: str
    out_dir: Path
    status: str  # skipped (up to date) | merged | part (other ranks still running)
    metrics: dict[str, Any] | None = None  # metrics.json, in the process that reports it


def versions() -> dict[str, str]:
    """Package versions recorded with results (they can change the last digits)."""
    from importlib.metadata import PackageNotFoundError, version

    from anatomy import __version__

    out = {"python": platform.python_version(), "data-anatomy": __version__}
    for pkg in ("torch", "transformers", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def run_dir(output_dir: io.PathLike, dataset: str, model: io.PathLike,
            revision: str | None) -> Path:
    """``OUTPUT_DIR/DATASET/<revision, else the model's base name>``."""
    return Path(output_dir) / dataset / (revision or Path(str(model).rstrip("/")).name)


class _MiaStep:
    """:class:`MiaWork` as an execution step writing ``scores.jsonl`` and ``metrics.json``."""

    name = "run_mia"

    def __init__(self, work: MiaWork, out: Path, fp, config: dict[str, Any]):
        from anatomy.execution import Output

        self.work, self.config, self.fingerprint = work, config, fp
        self.output = Output.folder(out, ["scores.jsonl", "metrics.json",
                                          "emmia_iterations.json"])
        self.n_units = work.n_units
        self.compute_unit = work.compute_unit
        self.on_cpu = config["device"] == "cpu"

    def merge(self, load) -> dict[str, Any]:
        rows, metrics = self.work.finish(load)
        out = self.output.marker.parent
        io.write_jsonl(out / "scores.jsonl", rows)
        em = self.work.emmia_report
        io.write_json(out / "metrics.json", {
            "config": self.config, "metrics": metrics, "null_band": self.work.null,
            "emmia": {k: {a: b for a, b in v.items() if a != "scores"} for k, v in em.items()}})
        # every iteration's scores (init first), per EM-MIA run
        io.write_json(out / "emmia_iterations.json",
                      {k: {"init": v["init"], "scores": v["scores"]} for k, v in em.items()},
                      indent=None)
        return {"n_examples": len(rows)}


def run_mia(datasets: str | Sequence[str], *, data_dir: io.PathLike = "data",
            target_model: str | None = None,
            revisions: Sequence[str | int | None] = (None,), ref_model: str | None = None,
            ref_revision: str | int | None = None, methods: Iterable[str] | None = None,
            output_dir: io.PathLike = "results", batch_size: int = 16,
            max_tokens: int | None = None, dtype: str = "float32", device: str = "auto",
            n_prefix: int | None = None, world: io.PathLike = "data/world",
            emmia_init: str = DEFAULT_EMMIA_INIT, emmia_iters: int = 10, seed: int = 42,
            prefix_block: int = 8, ranks=None, overwrite: bool = False, merge: bool = False,
            progress: bool = True) -> list[MiaRun]:
    """Score every ``data_dir/DATASET.jsonl`` with every checkpoint; write the results.

    For each (dataset, checkpoint): ``OUTPUT_DIR/DATASET/REVISION/scores.jsonl`` and
    ``metrics.json`` (and the ``done.json`` marker), computed as units by this process's
    ``ranks`` (:func:`anatomy.execution.run_step`): the last rank to finish a pair merges it.
    Each model is loaded once per process, and only when a unit needs it. ``revisions``
    are full revision names or bare steps (:func:`anatomy.lm.resolve_revision`);
    ``target_model`` defaults to the miniworld's ``WORLD/model``.
    """
    from anatomy.execution import Ranks, fingerprint, run_step
    from anatomy.lm import (
        load_causal_lm,
        load_tokenizer,
        model_source,
        resolve_device,
        resolve_revision,
    )

    ranks = ranks or Ranks()
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if target_model is None:
        target_model = str(Path(world) / "model")
        if not Path(target_model).is_dir():
            raise InputError(world, "no miniworld model here: pass --target_model (or --world)")
    revs = [resolve_revision(target_model, r) if r is not None else None for r in revisions]
    ref_rev = resolve_revision(ref_model, ref_revision) if ref_model else None
    dev = resolve_device(device, ranks.local_rank)
    data: dict[str, tuple[Path, list[dict[str, Any]]]] = {}
    for d in datasets:
        path = io.require_file(Path(data_dir) / f"{d}.jsonl", "dataset")
        recs = io.read_jsonl(path, required=("input", "label"))
        check_records(recs, path)
        data[d] = (path, recs)
    ref_tok = load_tokenizer(ref_model, revision=ref_rev) if ref_model else None
    loaded: dict[str, Any] = {}

    def ref_loader():
        if "ref" not in loaded:
            loaded["ref"] = load_causal_lm(ref_model, revision=ref_rev, dtype=dtype,
                                           device=str(dev))
        return loaded["ref"]

    results = []
    for rev in revs:
        tok = load_tokenizer(target_model, revision=rev)
        target: dict[str, Any] = {}
        for d in datasets:
            path, recs = data[d]
            try:
                work = MiaWork(recs, tok, ref_tok, has_ref=ref_model is not None,
                               methods=methods, max_tokens=max_tokens, batch_size=batch_size,
                               emmia_init=emmia_init, emmia_iters=emmia_iters,
                               n_prefix=n_prefix, seed=seed, prefix_block=prefix_block)
            except InputError as e:
                raise InputError(path, e.problem) from None
            params = {"revision": rev, "ref_revision": ref_rev, "methods": work.methods,
                      "emmia_init": emmia_init if "emmia" in work.methods else None,
                      **({"emmia_iters": emmia_iters} if "emmia" in work.methods
                         and emmia_iters != 10 else {}),
                      "n_prefix": n_prefix, "max_tokens": max_tokens, "batch_size": batch_size,
                      "dtype": dtype, "device": dev.type, "seed": seed,
                      "prefix_block": prefix_block, "ks": list(work.ks)}
            fp = fingerprint("run_mia", {"dataset": path,
                                         "model": model_source(target_model, rev),
                                         "ref_model": (model_source(ref_model, ref_rev)
                                                       if ref_model else None)}, params)
            config = {"dataset": d, "data_file": str(path), "model": str(target_model),
                      "ref_model": ref_model, **params, "n_examples": len(recs),
                      "n_members": int(work.labels.sum()), "tokens": work.token_source,
                      "ref_tokens": work.ref_token_source, "versions": versions()}
            if not work.token_source.startswith("the records'"):
                log.info("%s: scoring %s", d, work.token_source)

            def prepare(work=work, target=target, rev=rev):
                if "model" not in target:
                    target["model"] = load_causal_lm(target_model, revision=rev, dtype=dtype,
                                                     device=str(dev))
                work.model = target["model"]
                if work.needs_ref:
                    work.ref_model = ref_loader()

            out = run_dir(output_dir, d, target_model, rev)
            res = run_step(_MiaStep(work, out, fp, config), ranks, overwrite=overwrite,
                           merge_only=merge, prepare=prepare, show_progress=progress)
            doc = io.read_json(out / "metrics.json") if res.lead else None
            results.append(MiaRun(d, out, res.status, doc))
        target.clear()  # free this checkpoint before loading the next
    return results


def metrics_markdown(metrics: dict[str, dict[str, float]]) -> str:
    """A small Markdown table: AUROC and TPR@1%FPR (percent, one decimal) per score."""
    lines = ["| method | AUROC | TPR@1%FPR |", "|---|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {_pct(m.get('auroc'))} | {_pct(m.get('tpr@1%'))} |")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"
