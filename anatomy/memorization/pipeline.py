"""Pipeline C's steps as the scripts call them: inputs resolved, outputs under the policy.

Each function takes the training data (:mod:`anatomy.memorization.data`), the samples'
sequence ids and an output path; it writes one per-sample feature table keyed by
``sequence_id`` (:mod:`anatomy.memorization.table`) with a completion marker, so a rerun with
the same inputs and flags is skipped, a different one refused without ``overwrite``
(:func:`anatomy.execution.check_output`). Corpus-wide passes are map steps over ranks
(:mod:`anatomy.memorization.corpus`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.memorization.table import ID, write_table

_ONE = execution.Ranks()  # one process

log = logging.getLogger(__name__)


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def table_step(name: str, output: PathLike, inputs: Mapping[str, Any], params: Mapping[str, Any],
               compute: Callable[[], Mapping[str, Any]], overwrite: bool = False,
               key: str = ID) -> dict[str, Any]:
    """One cheap per-sample step: skip when up to date, else ``compute()`` the columns, write
    the table and its marker. Returns the marker's summary (rows, and per-column sums of
    boolean columns)."""
    out = execution.Output.file(output)
    fp = execution.fingerprint(name, inputs, params)
    if not execution.check_output(out, fp, overwrite):
        return {**execution.recorded_summary(out), "status": "skipped"}
    cols = compute()
    n = write_table(output, cols, key)
    summary: dict[str, Any] = {"rows": n}
    for k, v in cols.items():
        a = np.asarray(v)
        if a.dtype == bool:
            summary[f"{k}_true"] = int(a.sum())
    execution.mark_output(out, fp, summary)
    return {**summary, "status": "written"}


# ---------------------------------------------------------------------------------------
# token frequencies


def token_count_step(data, counts_path: PathLike, rows_per_unit: int,
                     ranks: execution.Ranks = _ONE, overwrite: bool = False,
                     merge: bool = False, progress: bool = True) -> execution.StepResult:
    """Corpus token counts of the trained stream, summed over storage blocks, to an NPY."""
    from anatomy.memorization.corpus import CorpusCountStep, run_corpus_count
    from anatomy.memorization.frequencies import token_counts

    counts_path = Path(counts_path)

    def finish(total: np.ndarray, rows: int) -> dict[str, Any]:
        io.save_npy(counts_path, total)
        return {"distinct": int((total > 0).sum()), "vocab": len(total)}

    out = execution.Output.file(counts_path)
    fp = execution.fingerprint("token_counts", {"data": data.sources()},
                               {"data": data.layout(), "rows_per_unit": rows_per_unit})
    step = CorpusCountStep("token_counts", data, token_counts, finish, out, fp, rows_per_unit)
    return run_corpus_count(step, ranks, overwrite, merge, progress)


def sample_frequency_table(data, ids: np.ndarray, counts_path: PathLike, output: PathLike,
                           prompt_len: int = 32, cont_len: int = 32,
                           keep_frequencies: bool = False, overwrite: bool = False,
                           published_percentiles: bool = False) -> int:
    from anatomy.memorization.frequencies import frequency_stats

    def compute():
        counts = io.load_npy(counts_path)
        samples = data.samples(ids, prompt_len, cont_len)
        cols = {ID: ids, **frequency_stats(samples, counts, published_percentiles)}
        if keep_frequencies:
            cols["frequencies"] = counts[samples]
        return cols

    s = table_step("token_frequencies", output, {"counts": counts_path},
                   {"ids": ids_digest(ids), "prompt_len": prompt_len, "cont_len": cont_len,
                    "keep_frequencies": keep_frequencies,
                    "published_percentiles": published_percentiles}, compute, overwrite)
    return int(s["rows"])


# ---------------------------------------------------------------------------------------
# templating, Huffman coding length


def decode_samples(tokenizer, samples: np.ndarray) -> list[str]:
    return tokenizer.batch_decode(np.asarray(samples).tolist())


def templating_table(data, ids: np.ndarray, tokenizer, tokenizer_source: str, output: PathLike,
                     prompt_len: int = 32, cont_len: int = 32, published: bool = False,
                     overwrite: bool = False) -> dict[str, Any]:
    from anatomy.memorization.templating import templating_columns

    def compute():
        texts = decode_samples(tokenizer, data.samples(ids, prompt_len, cont_len))
        return {ID: ids, **templating_columns(texts, published=published)}

    return table_step("filter_templating", output,
                      {"data": data.sources(), "tokenizer": tokenizer_source},
                      {"data": data.layout(), "ids": ids_digest(ids), "prompt_len": prompt_len,
                       "cont_len": cont_len, "published": published}, compute, overwrite)



# ---------------------------------------------------------------------------------------
# exact duplicate counts


def duplicate_count_step(data, queries: np.ndarray, counts_path: PathLike, rows_per_unit: int,
                         query_digest: str, ranks: execution.Ranks = _ONE,
                         overwrite: bool = False, merge: bool = False, progress: bool = True
                         ) -> execution.StepResult:
    """How often each query n-gram (rows of ``queries``) occurs inside one trained sequence,
    at any offset, over the whole trained stream: exact counts, summed over storage blocks,
    saved as an int64 NPY in query order."""
    from anatomy.memorization.corpus import CorpusCountStep, run_corpus_count
    from anatomy.memorization.ngram_counts import NgramQuery, count_shard

    query = NgramQuery(queries)
    counts_path = Path(counts_path)

    def count(rows: np.ndarray) -> np.ndarray:
        return count_shard(rows, query)

    def finish(total: np.ndarray, rows: int) -> dict[str, Any]:
        total = np.concatenate([total, np.zeros(len(queries) - len(total), np.int64)])
        io.save_npy(counts_path, total)
        return {"queries": len(queries), "zero": int((total == 0).sum()),
                "max": int(total.max()) if len(total) else 0}

    out = execution.Output.file(counts_path)
    fp = execution.fingerprint("ngram_counts", {"data": data.sources()},
                               {"data": data.layout(), "rows_per_unit": rows_per_unit,
                                "queries": query_digest, "n": int(queries.shape[1])})
    step = CorpusCountStep("ngram_counts", data, count, finish, out, fp, rows_per_unit)
    return run_corpus_count(step, ranks, overwrite, merge, progress)


def duplicates_table(ids: np.ndarray, counts_path: PathLike, output: PathLike,
                     overwrite: bool = False) -> dict[str, Any]:
    """``sequence_duplicates`` per sample from the continuation counts."""
    def compute():
        c = io.load_npy(counts_path)
        if len(c) != len(ids):
            raise InputError(counts_path, f"{len(c)} counts for {len(ids)} samples")
        return {ID: ids, "sequence_duplicates": c.astype(np.int64)}

    return table_step("filter_duplicates", output, {"counts": counts_path},
                      {"ids": ids_digest(ids)}, compute, overwrite)


def load_ngrams(path: PathLike) -> tuple[np.ndarray, str]:
    """Query n-grams from a ``.npy`` (K, n) or JSONL with ``tokens``; and their digest."""
    p = io.require_file(path, "n-gram file")
    if str(p).endswith(".npy"):
        q = io.load_npy(p)
        if q.ndim != 2 or not np.issubdtype(q.dtype, np.integer):
            raise InputError(p, f"expected a 2-D integer array (K, n), got {q.dtype} {q.shape}")
    else:
        rows = []
        for i, rec in enumerate(io.iter_jsonl(p, required=("tokens",)), 1):
            t = rec["tokens"]
            if not isinstance(t, list) or not t or not all(isinstance(x, int) and x >= 0
                                                           for x in t):
                raise InputError(p, '"tokens" must be a non-empty list of token ids', i)
            if rows and len(t) != len(rows[0]):
                raise InputError(p, f"n-grams of one length only: {len(t)} tokens here, "
                                    f"{len(rows[0])} on line 1", i)
            rows.append(t)
        if not rows:
            raise InputError(p, "no n-grams")
        q = np.array(rows, dtype=np.int64)
    q = np.ascontiguousarray(q.astype(np.int64))
    return q, hashlib.sha1(q.tobytes()).hexdigest() + f":{q.shape[1]}"


def ngram_table(counts_path: PathLike, output: PathLike, digest: str,
                overwrite: bool = False) -> dict[str, Any]:
    def compute():
        c = io.load_npy(counts_path).astype(np.int64)
        return {"ngram": np.arange(len(c)), "count": c}

    return table_step("ngram_counts_table", output, {"counts": counts_path},
                      {"queries": digest}, compute, overwrite, key="ngram")


# ---------------------------------------------------------------------------------------
# semantic and textual matches


def semantic_corpus(data, n: int, seed: int) -> np.ndarray:
    """The corpus the samples' semantic and textual matches are counted in: a uniform random
    ``n`` of every trained sequence (all of them when the stream holds fewer), drawn with its
    own ``seed``, independently of the samples, in training order.

    The published counts compare the sampled sequences with a random sample of the corpus
    (``working_dirs/rintarou/snowclones_maker.py`` lines 88-100 at 84ab8c0). Counting against
    the samples themselves instead inflates every sequence the sample set oversamples (the
    planted copies a study adds): each would count its own siblings.
    """
    from anatomy.memorization.data import select_ids

    every = select_ids(data, all_sequences=True)
    if n >= len(every):
        return every
    return select_ids(data, all_sequences=True, sample=n, seed=seed)


def semantic_table(data, ids: np.ndarray, tokenizer, tokenizer_source: str, output: PathLike,
                   embedder_source: str | None = None, corpus_ids: np.ndarray | None = None,
                   prompt_len: int = 32, cont_len: int = 32, batch_size: int = 64,
                   device: str | None = None, overwrite: bool = False, progress: bool = True
                   ) -> dict[str, Any]:
    """``0_8_snowclones``, ``0_9_snowclones`` (semantic matches), ``0_8_templates``,
    ``0_9_templates`` (textual matches) of each sample against a corpus of trained sequences
    (``corpus_ids``; see :func:`semantic_corpus`), each sample's own sequence excluded when
    the corpus holds it. ``corpus_ids=None`` matches the samples against themselves (the
    scheme of the published ``templating.py``, each sample matching itself once)."""
    from anatomy.lm import load_embedder
    from anatomy.memorization.semantic import self_rows, semantic_columns

    def compute():
        samples = data.samples(ids, prompt_len, cont_len)
        texts = decode_samples(tokenizer, samples)
        prompts = decode_samples(tokenizer, samples[:, :prompt_len])
        c_texts = c_prompts = exclude = None
        if corpus_ids is not None:
            cs = data.samples(corpus_ids, prompt_len, cont_len)
            c_texts = decode_samples(tokenizer, cs)
            c_prompts = decode_samples(tokenizer, cs[:, :prompt_len])
            exclude = self_rows(ids, corpus_ids)
        emb = load_embedder(embedder_source, device=device)
        cols = semantic_columns(emb, texts, prompts, c_texts, c_prompts,
                                batch_size=batch_size, exclude_self_ids=exclude,
                                progress=progress)
        return {ID: ids, **cols}

    from anatomy.lm import default_embedder_path

    return table_step("filter_semantic", output,
                      {"data": data.sources(), "tokenizer": tokenizer_source,
                       "embedder": embedder_source or str(default_embedder_path())},
                      {"data": data.layout(), "ids": ids_digest(ids),
                       "corpus": None if corpus_ids is None else ids_digest(corpus_ids),
                       "exclude_self": True,
                       "prompt_len": prompt_len, "cont_len": cont_len,
                       "batch_size": batch_size}, compute, overwrite)


# ---------------------------------------------------------------------------------------
# code vs natural language


def world_code_and_prose(world: PathLike, tokenizer, n_per_class: int = 400,
                         window: int = 64, seed: int = 0) -> tuple[list[str], list[str]]:
    """Training texts for the code-vs-NL classifier from a miniworld's corpus: ``window``-token
    pieces of its code documents and of its prose (docs, reference) documents, decoded."""
    from anatomy.truth import World

    w = World.open(world)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"code": [], "prose": []}
    docs = sorted(w.docs.values(), key=lambda r: r["doc"])
    for cls, cats in (("code", {"code"}), ("prose", {"docs", "reference"})):
        pick = [r["doc"] for r in docs if r["category"] in cats and r["length"] >= window
                and "filler" not in r["kinds"]]
        for d in rng.permutation(pick)[:n_per_class]:
            toks = w.doc_tokens(int(d))
            if len(toks) < window:  # the stream's last document, cut short
                continue
            a = int(rng.integers(0, len(toks) - window + 1))
            out[cls].append(tokenizer.decode(toks[a:a + window].tolist()))
    if not out["code"] or not out["prose"]:
        raise InputError(world, "the world has no code or no prose documents to train on")
    return out["code"], out["prose"]


def code_vs_nl_table(data, ids: np.ndarray, tokenizer, tokenizer_source: str, output: PathLike,
                     classifier, classifier_id: Mapping[str, Any],
                     thresholds: tuple[float, float], prompt_len: int = 32, cont_len: int = 32,
                     overwrite: bool = False) -> dict[str, Any]:
    """``nl_scores`` (probability of natural language) and ``nl_label`` (nl / code /
    uncertain by the two thresholds) per sample."""
    from anatomy.memorization.code_vs_nl import nl_label, nl_scores

    def compute():
        texts = decode_samples(tokenizer, data.samples(ids, prompt_len, cont_len))
        s = nl_scores(classifier, texts)
        return {ID: ids, "nl_scores": s, "nl_label": nl_label(s, thresholds)}

    return table_step("classify_code_vs_nl", output,
                      {"data": data.sources(), "tokenizer": tokenizer_source},
                      {"data": data.layout(), "ids": ids_digest(ids), "classifier": classifier_id,
                       "thresholds": list(thresholds), "prompt_len": prompt_len,
                       "cont_len": cont_len}, compute, overwrite)


# ---------------------------------------------------------------------------------------
# the taxonomic model

TAXONOMY_FILES = ("category_shares.csv", "metrics.csv", "coefficients.csv",
                  "correlations.csv", "test_split.csv", "summary.json", "report.md",
                  "model_performance.png", "model_weights.png", "correlations.png",
                  "category_shares.png")


def run_taxonomy(combined: PathLike, out_dir: PathLike, checkpoint: str | None = None,
                 threshold: float = 5, folds: int = 10, seed: int = 1024,
                 search: bool = False, max_rules: int | None = None,
                 published_scaling: bool = False, world: PathLike | None = None,
                 overwrite: bool = False, published_metrics: bool = False,
                 correlate: str = "memorized") -> str:
    """Category shares at every checkpoint, baseline vs taxonomic models at one (default:
    the last), correlations and plots; the report as markdown (also ``report.md``).

    Rows with ``ds_type`` "memories" (memorization_samples.py --add_planted) are used as
    published (:func:`anatomy.memorization.taxonomy.model_rows`): the memorized ones to
    training only, the others left out. ``published_metrics`` computes every metric by the
    published conventions (:data:`anatomy.memorization.taxonomy.PUBLISHED`); ``correlate``
    is the correlations' target (published: the 0/1 label "memorized").
    """
    import pandas as pd

    from anatomy.memorization import taxonomy as tx
    from anatomy.memorization.report import markdown, world_check
    from anatomy.memorization.table import read_table

    out = Path(out_dir)
    files = [*TAXONOMY_FILES, *(["partition_search.csv"] if search else [])]
    output = execution.Output.folder(out, files)
    conv = tx.PUBLISHED if published_metrics else tx.OURS
    fp = execution.fingerprint("train_taxonomy", {"combined": combined, "world": world},
                               {"checkpoint": checkpoint, "threshold": threshold,
                                "folds": folds, "seed": seed, "search": search,
                                "max_rules": max_rules, "published_scaling": published_scaling,
                                "conventions": conv.name, "correlate": correlate})
    if not execution.check_output(output, fp, overwrite):
        return (out / "report.md").read_text()
    df = read_table(combined)
    need = [c for c in (*tx.CONTINUOUS_FEATURES, "is_incrementing", "is_repeating",
                        "memorization_score") if c not in df.columns]
    if need:
        raise InputError(combined, f"no column(s) {', '.join(need)}: combine every filter's "
                                   "table first (combine_filters.py)")
    has_ck = "checkpoint" in df.columns
    ckpts = list(dict.fromkeys(df["checkpoint"])) if has_ck else []
    if has_ck:
        ck = checkpoint or ckpts[-1]
        if ck not in ckpts:
            raise InputError(combined, f"no checkpoint {ck!r} (has {', '.join(ckpts)})")
        # the models and correlations are fitted at one checkpoint: without its column
        one = df[df["checkpoint"] == ck].drop(columns=["checkpoint"]).reset_index(drop=True)
    else:
        ck, one = None, df
    try:
        rows = tx.model_rows(one)
    except ValueError as e:
        raise InputError(combined, str(e)) from None
    used = one[rows.used].reset_index(drop=True)
    shares = tx.category_shares(df, "checkpoint" if has_ck else None, threshold)
    result = tx.fit_taxonomy(used, threshold=threshold, folds=folds, seed=seed,
                             published_scaling=published_scaling, train_only=rows.train_only,
                             conventions=conv)
    corr = tx.correlations(used, target=correlate, threshold=threshold, seed=seed)
    n_mem = int(tx.memorized(used).sum())
    at = ck or "the table"
    with execution.staged(output) as stage:
        shares.to_csv(stage(out / "category_shares.csv"), index=False)
        result.metrics.to_csv(stage(out / "metrics.csv"), index=False)
        result.coefficients.to_csv(stage(out / "coefficients.csv"))
        corr.to_csv(stage(out / "correlations.csv"), index=False)
        test = result.test.copy()
        test.insert(0, ID, used.loc[result.test_index, ID].to_numpy())
        test.to_csv(stage(out / "test_split.csv"), index=False)
        tx.plot_model_performance(result.metrics, stage(out / "model_performance.png"))
        tx.plot_weights(result, stage(out / "model_weights.png"))
        tx.plot_correlations(corr, stage(out / "correlations.png"))
        tx.plot_category_shares(shares, stage(out / "category_shares.png"))
        if search and not n_mem:
            # the candidates are quantiles of the memorized rows: none, no rules
            io.write_text(stage(out / "partition_search.csv"), "rank\n")
            search_lines = [f"Partition search: no memorized samples at {at}, no rules.", ""]
        elif search:
            rules = tx.partition_search(used, threshold=threshold, seed=seed,
                                        max_rules=max_rules, train_only=rows.train_only,
                                        ece_bins=conv.ece_bins)
            rules.to_csv(stage(out / "partition_search.csv"), index=False)
            top = rules.head(5)[["rank", "feature_1", "quantile_1", "threshold_1",
                                 "feature_2", "quantile_2", "threshold_2", "f1", "pr_auc"]]
            search_lines = [f"Partition search ({len(rules)} rules: class 1 if f1 >= t1, else "
                            "class 2 if f2 >= t2, else class 3; one fit each, metrics from "
                            "probabilities), best aggregate F1 first:", "",
                            markdown(top), ""]
        else:
            search_lines = []
        lines = []
        if not n_mem:
            lines += [f"**WARNING: no memorized sample (memorization_score 1.0) at {at}.** "
                      "Every model is a constant and every metric undefined; the tables below "
                      "hold category counts only.", ""]
        lines += [f"Memorized samples by category (recitation: sequence_duplicates > "
                  f"{threshold:g}; reconstruction: templating; else recollection), every row "
                  "of the table (random and added samples alike):", ""]
        tab = []
        for key, g in (shares.groupby("checkpoint", sort=False) if has_ck
                       else [(None, shares)]):
            r = {"checkpoint": key} if has_ck else {}
            n_m, n = int(g["n_memorized"].iloc[0]), int(g["n_samples"].iloc[0])
            r.update(memorized=f"{n_m}/{n}")
            for _, row in g.iterrows():
                share = row["share"]
                r[row["category"]] = (f"{int(row['count'])} ({100 * share:.1f}%)"
                                      if n_m else "0")
            tab.append(r)
        lines += [markdown(pd.DataFrame(tab)), ""]
        lines += [f"Rows of the models at {at}: {rows.describe()}. Test split: "
                  f"{len(result.test_index)} rows ({int(result.test['label'].sum())} "
                  f"memorized), stratified on {result.stratify}, listed in test_split.csv.",
                  "", f"{conv.describe(folds)[0].upper()}{conv.describe(folds)[1:]}.", ""]
        if n_mem:
            m = result.metrics
            agg = m[m.metric.isin(["roc_auc", "pr_auc", "precision", "recall", "f1", "ece"])]
            table_rows = []
            for (model, cat), g in agg.groupby(["model", "category"], sort=False):
                const = ("baseline" if model == "baseline" else cat) in result.constant
                r = {"model": model + (" (constant)" if const else ""), "category": cat,
                     "n test (memorized)": f"{int(g['n_test'].iloc[0])} "
                                           f"({int(g['n_positive'].iloc[0])})"}
                for _, row in g.iterrows():
                    mean, std = row["mean"], row["std"]
                    r[row["metric"]] = ("nan" if np.isnan(row["value"]) and np.isnan(mean)
                                        else f"{row['value']:.3f}" if np.isnan(mean) else
                                        f"{mean:.3f} +- {std:.3f}")
                table_rows.append(r)
            lines += [f"Taxonomic vs baseline model at {at}:", "",
                      markdown(pd.DataFrame(table_rows)), ""]
        lines += search_lines
        if result.constant:
            lines += ["Models scoring by a constant prior (one class, or none, in training): "
                      + ", ".join(f"{k} ({v:.3f})" for k, v in result.constant.items()), ""]
        lines += [f"Correlations (correlations.csv): Pearson, Spearman and Chatterjee xi of "
                  f"each feature with {correlate!r}, per group (baseline, each category) and "
                  f"subset ({', '.join(dict.fromkeys(corr['subset']))}), on the model rows.",
                  ""]
        if world is not None:
            lines += ["The miniworld's planted sequences (truth file) in the table:", "",
                      markdown(world_check(world, df)), ""]
        report = "\n".join(lines)
        io.write_text(stage(out / "report.md"), report)
        io.write_json(stage(out / "summary.json"), {
            "checkpoint": ck, "checkpoints": ckpts, "threshold": threshold, "folds": folds,
            "conventions": conv.name, "n_rows": len(one), "n_model_rows": len(used),
            "n_test": len(result.test_index), "n_memorized": n_mem,
            "rows": {"representative": rows.n_representative, "memories": rows.n_memories,
                     "memories_memorized": rows.n_memories_memorized},
            "constant": result.constant, "correlate": correlate,
            "aggregate": {f"{mo}_{me}": result.metric(mo, "aggregate", me, "value")
                          for mo in ("taxonomic", "baseline") for me in tx.METRICS}})
    execution.mark_output(output, fp, {"rows": len(one)})
    return report
